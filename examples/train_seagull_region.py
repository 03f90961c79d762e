#!/usr/bin/env python
"""Train the small SEAGULL ROI model (``SeagullForRegionQuality``: vision tower + MFE + heads, no LLM) with the
🤗 Trainer on a SEAGULL-100w-style ROI dataset (plain python or ``accelerate launch``).

    python datasets_scripts/seagull_synthetic.py --pristine ../shared/data/pristine --out DATA \\
        --train-per-image 6 --validation-per-image 10 --max-side 384
    python examples/train_seagull_region.py --dataset_dir DATA --output_dir outputs/seagull-region \\
        --num_train_epochs 3 --per_device_train_batch_size 8 --learning_rate 1e-3 --use_cpu

Model: ``--model_name_or_path`` is a preset (default ``seagull-region-mobile``: MobileNetV2 from
``../shared/weights``, frozen), a config JSON or a saved folder; ``--config_overrides '{"key": value}'``
changes config fields of a new model (e.g. ``loss_weights``). The vision tower's ImageNet weights are loaded
for a new model (``--pretrained_backbone``: ``config`` = the preset's file, a path, or ``none``).

Data: ``--dataset_dir``, an ROI dataset folder (``datasets_scripts/seagull_synthetic.py`` output, read with
``roi_synthesis.load_roi_dataset``): ``train`` to train on, ``validation`` (Kodak24, held out) to evaluate.
A batch holds every ROI of its images (``training_seagull.SeagullRegionCollator``); targets are quality,
importance and the per-type severities on [0, 1]. With the frozen tower, each training image is encoded once
(``VisionFeatureCache``, in memory; ``--cache_vision_features False`` to run the tower every step).

After training: the held-out properties of issue #9 on the controlled sweeps of ``--sweep_dir``
(``datasets_scripts/seagull_sweeps.py``: one factor changes per series; ``roi_synthesis.roi_sweep_figures``) and (``roi_synthesis.roi_property_figures``: severity order of
ROI quality, distortion-type top-1 at levels 4-5, importance vs severity and vs area) for the model and for the
labels themselves, in ``eval_results.json``; the model + processor in ``--output_dir`` with a model card
``README.md``; ``--push_to_hub --hub_model_id ORG/NAME`` uploads them (as ``examples/train.py`` does).
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import HfArgumentParser, TrainingArguments, set_seed

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import modeling_rsfiqa  # noqa: E402, F401  (registers the Auto classes and the pipelines)
from modeling_rsfiqa.factory import create_model  # noqa: E402
from modeling_rsfiqa.roi_synthesis import load_roi_dataset, roi_property_figures  # noqa: E402
from modeling_rsfiqa.training_seagull import (  # noqa: E402
    SeagullRegionCollator,
    SeagullTrainer,
    VisionFeatureCache,
    configure_logging,
    predict_roi_rows,
)

logger = logging.getLogger("rsfiqa.train_seagull_region")


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        default="seagull-region-mobile", metadata={"help": "preset, config JSON or saved folder"}
    )
    pretrained_backbone: str = field(
        default="config",
        metadata={
            "help": "vision tower weights of a new model: 'config' (the preset's file), a path, or 'none'"
        },
    )
    config_overrides: str | None = field(
        default=None, metadata={"help": "JSON object of config fields, e.g. '{\"loss_weights\": {...}}'"}
    )


@dataclass
class DataArguments:
    dataset_dir: str = field(
        default=None, metadata={"help": "ROI dataset folder (seagull_synthetic.py output)"}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "use the first N training rows"})
    max_eval_samples: int | None = field(default=None, metadata={"help": "use the first N validation rows"})
    sweep_dir: str | None = field(
        default=None,
        metadata={
            "help": "controlled held-out ROI sweeps (datasets_scripts/seagull_sweeps.py output) to evaluate on too"
        },
    )
    eval_batch_size: int = field(default=8, metadata={"help": "images per batch of the held-out evaluation"})
    torch_threads: int = field(default=2, metadata={"help": "torch.set_num_threads (0: leave as is)"})
    cache_vision_features: bool = field(
        default=True,
        metadata={"help": "frozen tower: encode each training image once (in memory) instead of every epoch"},
    )


def main(argv: list[str] | None = None) -> dict:
    parser = HfArgumentParser((ModelArguments, DataArguments, TrainingArguments))
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    if not data_args.dataset_dir:
        raise ValueError(
            "give --dataset_dir (an ROI dataset folder from datasets_scripts/seagull_synthetic.py)"
        )
    training_args.remove_unused_columns = False
    training_args.label_names = ["labels"]
    configure_logging(logger, training_args)
    if data_args.torch_threads > 0:
        torch.set_num_threads(data_args.torch_threads)
    set_seed(training_args.seed)

    overrides = json.loads(model_args.config_overrides) if model_args.config_overrides else {}
    backbone = model_args.pretrained_backbone
    pretrained = {"config": True, "none": False}.get(backbone, backbone)
    is_folder = Path(model_args.model_name_or_path).is_dir()
    model, processor = create_model(
        model_args.model_name_or_path, pretrained_backbone=False if is_folder else pretrained, **overrides
    )
    if model.config.model_type != "seagull_region":
        raise ValueError(
            f"{model_args.model_name_or_path} is a {model.config.model_type!r} model, not seagull_region"
        )
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"SeagullForRegionQuality parameters: {total:,}; trained: {trainable:,}")

    data = load_roi_dataset(data_args.dataset_dir)
    train = data["train"]
    if data_args.max_train_samples:
        train = train.select(range(min(data_args.max_train_samples, len(train))))
    validation = data["validation"] if "validation" in data else None
    if validation is not None and data_args.max_eval_samples:
        validation = validation.select(range(min(data_args.max_eval_samples, len(validation))))
    source = f"{data_args.dataset_dir} ({len(train)} training images" + (
        f", {len(validation)} validation images)" if validation is not None else ")"
    )

    command = "python examples/train_seagull_region.py " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)
    )
    card = {
        "model_name_or_path": model_args.model_name_or_path,
        "dataset": source,
        "eval_dataset": "validation split (Kodak24, held out)",
        "command": command,
    }
    cache = None
    if data_args.cache_vision_features and model.config.vision_frozen:
        cache = VisionFeatureCache()
        cache.fill(model, processor, train, batch_size=16, progress=True)
    trainer = SeagullTrainer(
        model=model,
        args=training_args,
        train_dataset=train,
        data_collator=SeagullRegionCollator(processor, feature_cache=cache),
        processor=processor,  # no tokenizer: saved by SeagullTrainer, not as processing_class
        model_card_info=card,
    )
    results: dict = {}
    if training_args.do_train or training_args.max_steps > 0 or training_args.num_train_epochs > 0:
        result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
        trainer.save_model()
        trainer.save_metrics("train", result.metrics)
        results["train"] = result.metrics
    if validation is not None:
        records = predict_roi_rows(
            trainer.model, processor, validation, batch_size=data_args.eval_batch_size, progress=True
        )
        figures = roi_property_figures(records, processor.distortion_types)
        label_figures = roi_property_figures(records, processor.distortion_types, prefix="")
        metrics = {f"eval_{k}": v for k, v in figures.items()}
        metrics.update({f"eval_labels_{k}": v for k, v in label_figures.items()})
        metrics["eval_samples"] = len(validation)
        trainer.save_metrics("eval", metrics)
        trainer.model_card_info.update(card, evaluation=figures, label_figures=label_figures)
        results["eval"] = metrics
        print(json.dumps(metrics, indent=2))
    if data_args.sweep_dir:
        from modeling_rsfiqa.roi_synthesis import roi_sweep_figures

        sweeps = load_roi_dataset(data_args.sweep_dir, "sweep")
        with torch.inference_mode():
            records = predict_roi_rows(
                trainer.model, processor, sweeps, batch_size=data_args.eval_batch_size, progress=True
            )
        sweep_figures = roi_sweep_figures(records, distortion_types=processor.distortion_types)
        sweep_labels = roi_sweep_figures(records, prefix="", distortion_types=processor.distortion_types)
        metrics = {f"sweep_{k}": v for k, v in sweep_figures.items()}
        metrics.update({f"sweep_labels_{k}": v for k, v in sweep_labels.items()})
        trainer.save_metrics("sweep", metrics)
        trainer.model_card_info.update(
            sweep_evaluation=sweep_figures,
            sweep_label_figures=sweep_labels,
            sweep_dataset=f"{data_args.sweep_dir} ({len(sweeps)} images)",
        )
        results["sweep"] = metrics
        print(json.dumps(metrics, indent=2))
    if trainer.is_world_process_zero():
        os.makedirs(training_args.output_dir, exist_ok=True)
        with open(os.path.join(training_args.output_dir, "data_split.json"), "w", encoding="utf-8") as f:
            json.dump(
                {
                    "dataset_dir": data_args.dataset_dir,
                    "train_images": len(train),
                    "validation_images": len(validation) if validation is not None else 0,
                },
                f,
                indent=2,
            )
    trainer.create_model_card()
    if training_args.push_to_hub:
        trainer.push_to_hub(
            commit_message="rsfiqa: trained SEAGULL ROI model, processor, code and model card"
        )
    return results


if __name__ == "__main__":
    main()
