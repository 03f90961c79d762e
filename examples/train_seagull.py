#!/usr/bin/env python
"""Instruction-tune SEAGULL with LoRA and the 🤗 Trainer (plain python or ``accelerate launch``).

    python examples/train_seagull.py --model_name_or_path seagull-tiny --synthetic_train 2000 \\
        --synthetic_eval 200 --output_dir outputs/seagull-tiny --max_steps 500 --use_cpu
    python examples/train_seagull.py --model_name_or_path converted-seagull-7b --dataset_name DATA \\
        --output_dir outputs/seagull --bf16 ...

Model: a preset (``seagull-tiny``, ``seagull-7b``), a config JSON or a saved / converted folder; LoRA is
injected into every linear layer of the LLM but ``lm_head`` (``--lora_r 64 --lora_alpha 16 --lora_dropout
0.05``, the reference's), the LLM's base weights are frozen, the MFE and the projector train, the vision tower
stays frozen. ``--pretrained_vision FILE`` loads the vision tower's weights.

Data (instructions: the quality, importance and distortion questions of the reference demo, every ROI of an
image in one batch so the image is encoded once):
* ``--dataset_name``: a ``datasets`` folder (``save_to_disk``) with ``image``, ``regions`` (boxes / masks /
  RLE dicts), and per ROI ``quality`` and ``importance`` (0..100) and ``distortions`` (``{type: severity}``);
  splits ``train`` and optionally ``validation``;
* ``--synthetic_train N`` / ``--synthetic_eval N``: ROIs distorted in place from the photos of ``--photos``
  (``modeling_rsfiqa.training_seagull.synthetic_roi_samples``; evaluation photos are held out).

After training: the distortion-type accuracy of greedy answers on the evaluation ROIs (``eval_results.json``),
the model + processor + remote code, a model card ``README.md``; ``--push_to_hub --hub_model_id ORG/NAME``
uploads them (as ``examples/train.py`` does).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser, TrainingArguments, set_seed

import modeling_rsfiqa  # noqa: F401  (registers the Auto classes and the pipelines)
from modeling_rsfiqa.factory import create_model
from modeling_rsfiqa.image_io import load_image_rgb
from modeling_rsfiqa.training_seagull import (
    SeagullInstructionCollator,
    SeagullTrainer,
    configure_logging,
    distortion_type_accuracy,
    samples_from_rows,
    synthetic_roi_samples,
)

logger = logging.getLogger("rsfiqa.train_seagull")
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        default="seagull-tiny", metadata={"help": "preset, config JSON or folder"}
    )
    pretrained_vision: str | None = field(default=None, metadata={"help": "vision tower weights file"})
    lora_r: int = field(default=64)
    lora_alpha: int = field(default=16)
    lora_dropout: float = field(default=0.05)


@dataclass
class DataArguments:
    dataset_name: str | None = field(default=None, metadata={"help": "datasets folder (save_to_disk)"})
    questions: str = field(default="quality,importance,distortion")
    synthetic_train: int = field(
        default=0, metadata={"help": "synthetic training images (0: use the dataset)"}
    )
    synthetic_eval: int = field(default=0)
    photos: str = field(
        default=str(ROOT.parent / "shared" / "data" / "pristine"),
        metadata={"help": "folder of clean photos for synthetic data (the last 20%% of files are held out)"},
    )
    image_size: int = field(default=128, metadata={"help": "side of synthetic images"})
    rois_per_image: int = field(default=2)


def _photos(folder: str) -> tuple[list, list]:
    files = sorted(
        p for p in Path(folder).rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp")
    )
    if len(files) < 2:
        raise FileNotFoundError(f"need at least 2 photos under {folder}")
    cut = max(1, int(len(files) * 0.8))
    return [load_image_rgb(p) for p in files[:cut]], [load_image_rgb(p) for p in files[cut:]]


def main(argv: list[str] | None = None) -> dict:
    parser = HfArgumentParser((ModelArguments, DataArguments, TrainingArguments))
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    training_args.remove_unused_columns = False
    training_args.label_names = ["labels"]
    configure_logging(logger, training_args)
    set_seed(training_args.seed)

    overrides = {
        "lora_r": model_args.lora_r,
        "lora_alpha": model_args.lora_alpha,
        "lora_dropout": model_args.lora_dropout,
    }
    model, processor = create_model(
        model_args.model_name_or_path, pretrained_backbone=model_args.pretrained_vision or False, **overrides
    )
    if model.config.lora_r <= 0 or not model.lora_parameters():
        raise ValueError("LoRA was not injected (lora_r must be > 0)")
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"SEAGULL parameters: {total:,}; trained (LoRA + MFE + projector): {trainable:,}")

    questions = [q.strip() for q in data_args.questions.split(",") if q.strip()]
    if data_args.dataset_name:
        import datasets

        ds = datasets.load_from_disk(data_args.dataset_name)
        train = samples_from_rows(ds["train"], processor)
        evaluation = samples_from_rows(ds["validation"], processor) if "validation" in ds else []
        source = data_args.dataset_name
    elif data_args.synthetic_train > 0:
        train_photos, eval_photos = _photos(data_args.photos)
        kw = {"size": data_args.image_size, "rois_per_image": data_args.rois_per_image}
        train = synthetic_roi_samples(train_photos, data_args.synthetic_train, seed=training_args.seed, **kw)
        evaluation = synthetic_roi_samples(
            eval_photos, data_args.synthetic_eval, seed=training_args.seed + 1, **kw
        )
        source = (
            f"synthetic ROIs from {data_args.photos} ({len(train)} train / {len(evaluation)} held-out images)"
        )
    else:
        raise ValueError("give --dataset_name or --synthetic_train N")

    card = {"model_name_or_path": model_args.model_name_or_path, "dataset": source, "questions": questions}
    trainer = SeagullTrainer(
        model=model,
        args=training_args,
        train_dataset=train,
        data_collator=SeagullInstructionCollator(processor, questions),
        processing_class=processor,
        model_card_info=card,
    )
    results: dict = {}
    if training_args.do_train or training_args.max_steps > 0:
        result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
        trainer.save_model()
        trainer.save_metrics("train", result.metrics)
        results["train"] = result.metrics
    if evaluation and "distortion" in questions:
        acc = distortion_type_accuracy(trainer.model, processor, evaluation)
        metrics = {
            "eval_distortion_type_accuracy": acc["accuracy"],
            "eval_chance": acc["chance"],
            "eval_samples": len(evaluation),
        }
        trainer.save_metrics("eval", metrics)
        card["evaluation"] = {"accuracy": acc["accuracy"], "chance": acc["chance"], "n": len(evaluation)}
        trainer.model_card_info.update(card)
        results["eval"] = metrics
        print(f"held-out distortion-type accuracy {acc['accuracy']:.3f} (chance {acc['chance']:.3f})")
    if trainer.is_world_process_zero():
        os.makedirs(training_args.output_dir, exist_ok=True)
        with open(os.path.join(training_args.output_dir, "data_split.json"), "w", encoding="utf-8") as f:
            json.dump(
                {"source": source, "train_images": len(train), "eval_images": len(evaluation)}, f, indent=2
            )
    trainer.create_model_card()
    if training_args.push_to_hub:
        trainer.push_to_hub(commit_message="rsfiqa: trained SEAGULL model, processor, code and model card")
    return results


if __name__ == "__main__":
    main()
