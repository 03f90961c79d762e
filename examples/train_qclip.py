#!/usr/bin/env python
"""Train a Q-CLIP video-quality model with the 🤗 Trainer (plain python or ``accelerate launch``).

    python examples/train_qclip.py --model_name_or_path qclip-pe-core-l14-336 --pretrained_vlm PE-Core-L14-336.pt \\
        --tokenizer_name_or_path openai/clip-vit-large-patch14 --dataset_name outputs/konvid1k --output_dir outputs/qclip
    accelerate launch --config_file configuration/accelerate/cpu-2proc.yaml examples/train_qclip.py ...

Data: ``--dataset_name`` (a ``save_to_disk`` folder, e.g. from ``datasets_scripts/convert_vqa.py``, or a Hub id)
with a ``video`` column (file paths, frame folders) and a ``mos`` column; or ``--train_dir`` holding
``metadata.csv`` (``file_name,mos``) and the videos. Without a ``validation`` split, the reference's seeded 80/20
split of the training rows is used (``quality_metrics.reference_split``, seed ``--split_seed``; the 10-split
protocol runs seeds 42..51) and recorded in ``<output_dir>/data_split.json``.

Recipe (the reference's): only the adapters, the prompt context, the scales and w train (the count is printed);
loss PLCC + 0.3 rank; AdamW lr 1e-3, weight decay 1e-4, warm-up 1/8 then cosine, 8 epochs, batch 12, 8 frames.
After training, the best checkpoint's raw outputs on the training set fix the calibration ``logits -> MOS``
(:func:`calibrate_scores`), then the model, processor, remote code and a model card ``README.md`` are saved;
``--push_to_hub --hub_model_id ORG/NAME`` uploads them (as ``examples/train.py`` does).

The 10-split protocol: ``--num_splits 10`` trains once per seed 42..51 (``<output_dir>/split-<seed>``) and writes
``protocol_results.json`` (per-split metrics and their mean / std / median, the reference's evaluation as ``ref_*``).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import transformers
from transformers import HfArgumentParser, TrainingArguments, set_seed
from transformers.trainer_utils import get_last_checkpoint

import modeling_rsfiqa  # noqa: F401  (registers the Auto classes and the pipelines)
from modeling_rsfiqa.factory import create_qclip_model, list_presets
from modeling_rsfiqa.quality_metrics import reference_split
from modeling_rsfiqa.training_qclip import (
    QCLIPDataCollator,
    QCLIPTrainer,
    QCLIPVideoTransform,
    calibrate_scores,
    compute_qclip_metrics,
)
from modeling_rsfiqa.training_rsfiqa import (
    parse_config_overrides,
    parse_loss_weights,
    preprocess_logits_for_metrics,
)

logger = logging.getLogger("rsfiqa.train_qclip")


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        default="qclip-pe-core-l14-336",
        metadata={
            "help": f"Preset ({', '.join(p for p in list_presets() if p.startswith('qclip'))}), config JSON or saved folder."
        },
    )
    pretrained_vlm: str | None = field(
        default=None,
        metadata={
            "help": "VLM weights: 'config' (the preset's vlm_name_or_path), a transformers folder / Hub id, or a PE-Core .pt file."
        },
    )
    tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "Tokenizer (default: the preset's)."}
    )
    config_overrides: str | None = field(
        default=None,
        metadata={"help": "QCLIPConfig fields: 'adapter_dim=8,use_projection_adapter=false' or JSON."},
    )
    loss_weights: str | None = field(default=None, metadata={"help": "e.g. 'plcc=1,rank=0.3' (the default)."})


@dataclass
class DataArguments:
    dataset_name: str | None = field(
        default=None, metadata={"help": "save_to_disk folder or Hub dataset id."}
    )
    train_dir: str | None = field(
        default=None, metadata={"help": "Folder with metadata.csv (file_name,mos) + videos."}
    )
    video_column_name: str = field(
        default="video", metadata={"help": "Video column (paths / frame folders)."}
    )
    label_column_name: str = field(default="mos", metadata={"help": "Quality label column."})
    split_seed: int = field(
        default=42, metadata={"help": "Seed of the reference 80/20 split (protocol: 42..51)."}
    )
    train_ratio: float = field(default=0.8, metadata={"help": "Training share of the reference split."})
    frame_sampling: str | None = field(
        default=None, metadata={"help": "'uniform' or 'framediff' (default: config)."}
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Use only the first N training rows."}
    )
    calibration_samples: int | None = field(
        default=None, metadata={"help": "Training rows used to calibrate scores."}
    )
    num_splits: int = field(
        default=1,
        metadata={
            "help": "The 10-split protocol: train N times on the reference split with seeds split_seed, "
            "split_seed+1, ... (outputs in <output_dir>/split-<seed>) and write protocol_results.json "
            "(mean / std / median of every validation metric)."
        },
    )


SCRIPT_DEFAULTS: dict[str, Any] = {
    "output_dir": "outputs/qclip",
    "do_train": True,
    "do_eval": True,
    "eval_strategy": "epoch",
    "save_strategy": "epoch",
    "load_best_model_at_end": True,
    "metric_for_best_model": "srcc",
    "greater_is_better": True,
    "save_total_limit": 2,
    "learning_rate": 1e-3,
    "weight_decay": 1e-4,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.125,
    "num_train_epochs": 8,
    "per_device_train_batch_size": 12,
    "per_device_eval_batch_size": 4,
    "logging_steps": 10,
    "report_to": "none",
    "remove_unused_columns": False,
}


def parse_args(argv: list[str] | None = None):
    parser = HfArgumentParser((ModelArguments, DataArguments, TrainingArguments), description=__doc__)
    parser.set_defaults(**SCRIPT_DEFAULTS)
    return parser.parse_args_into_dataclasses(args=argv)


def load_data(data_args: DataArguments) -> tuple[datasets.DatasetDict, str, Path | None]:
    if data_args.dataset_name:
        path = Path(data_args.dataset_name)
        if path.is_dir():
            raw = datasets.load_from_disk(str(path))
            raw = raw if isinstance(raw, datasets.DatasetDict) else datasets.DatasetDict({"train": raw})
            return raw, f"save_to_disk dataset `{path.name}`", None
        raw = datasets.load_dataset(data_args.dataset_name)
        return raw, f"`{data_args.dataset_name}`", None
    if data_args.train_dir:
        root = Path(data_args.train_dir)
        if not (root / "metadata.csv").is_file():
            raise FileNotFoundError(f"{root} has no metadata.csv (file_name,mos)")
        ds = datasets.Dataset.from_csv(str(root / "metadata.csv"))
        if "file_name" in ds.column_names and data_args.video_column_name not in ds.column_names:
            ds = ds.rename_column("file_name", data_args.video_column_name)
        return datasets.DatasetDict({"train": ds}), f"video folder `{root.name}`", root
    raise ValueError("give --dataset_name or --train_dir")


def make_splits(raw: datasets.DatasetDict, data_args: DataArguments) -> tuple[Any, Any, Any, dict]:
    for col in (data_args.video_column_name, data_args.label_column_name):
        if col not in raw["train"].column_names:
            raise ValueError(f"the train split has no column {col!r} (columns: {raw['train'].column_names})")
    train = raw["train"]
    test = raw["test"] if "test" in raw else None
    if "validation" in raw:
        return (
            train,
            raw["validation"],
            test,
            {"note": "the `validation` split", "num_rows": {"train": len(train)}},
        )
    train_idx, val_idx = reference_split(len(train), data_args.split_seed, data_args.train_ratio)
    validation, train = train.select(sorted(val_idx)), train.select(sorted(train_idx))
    info = {
        "validation": "reference_split",
        "split_seed": data_args.split_seed,
        "train_ratio": data_args.train_ratio,
        "validation_indices": sorted(val_idx),
        "note": f"the reference's seeded {1 - data_args.train_ratio:.0%} hold-out of the training rows (seed {data_args.split_seed})",
    }
    if data_args.max_train_samples is not None:
        train = train.select(range(min(len(train), data_args.max_train_samples)))
    info["num_rows"] = {"train": len(train), "validation": len(validation)}
    return train, validation, test, info


def main(argv: list[str] | None = None) -> dict[str, Any]:
    model_args, data_args, training_args = parse_args(argv)
    if data_args.num_splits > 1:
        return run_protocol(model_args, data_args, training_args)
    return train_one(model_args, data_args, training_args)


def run_protocol(
    model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments
) -> dict:
    """The N-split protocol (the reference's README: 10 seeded 80/20 splits, metrics averaged)."""
    import dataclasses

    from modeling_rsfiqa.quality_metrics import summarize_split_metrics

    root = Path(training_args.output_dir)
    per_split, seeds = [], [data_args.split_seed + k for k in range(data_args.num_splits)]
    for seed in seeds:
        split_args = dataclasses.replace(data_args, split_seed=seed, num_splits=1)
        run_args = dataclasses.replace(
            training_args, output_dir=str(root / f"split-{seed}"), push_to_hub=False
        )
        results = train_one(model_args, split_args, run_args)
        per_split.append(
            {k.removeprefix("eval_"): v for k, v in results.get("eval", {}).items() if isinstance(v, float)}
        )
    summary = {"seeds": seeds, "per_split": per_split, "summary": summarize_split_metrics(per_split)}
    root.mkdir(parents=True, exist_ok=True)
    (root / "protocol_results.json").write_text(json.dumps(summary, indent=2) + "\n")
    logger.info(
        "protocol over %d splits: %s", len(seeds), {k: v["mean"] for k, v in summary["summary"].items()}
    )
    return summary


def train_one(
    model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments
) -> dict[str, Any]:
    training_args.remove_unused_columns = False
    training_args.label_names = ["labels"]
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    level = logging.INFO if training_args.should_log else logging.WARNING
    logger.setLevel(level)
    transformers.utils.logging.set_verbosity(level)
    set_seed(training_args.seed)

    raw, source, root = load_data(data_args)
    train_ds, eval_ds, test_ds, split_info = make_splits(raw, data_args)

    overrides = parse_config_overrides(model_args.config_overrides)
    weights = parse_loss_weights(model_args.loss_weights)
    if weights is not None:
        overrides["loss_weights"] = weights
    if model_args.tokenizer_name_or_path:
        overrides["tokenizer_name_or_path"] = model_args.tokenizer_name_or_path
    vlm = model_args.pretrained_vlm
    model, processor = create_qclip_model(
        model_args.model_name_or_path, pretrained_vlm=True if vlm == "config" else (vlm or False), **overrides
    )
    report = model.trainable_parameter_report()
    print(
        f"Q-CLIP trainable parameters: {report['total_trainable']:,} ({report}); frozen VLM {report['frozen_vlm']:,}"
    )

    transform = QCLIPVideoTransform(
        processor,
        data_args.video_column_name,
        data_args.label_column_name,
        root=root,
        frame_sampling=data_args.frame_sampling,
    )
    for ds in (train_ds, eval_ds, test_ds):
        if ds is not None:
            ds.set_transform(transform)
    collator = QCLIPDataCollator()
    card_info = {
        "model_name_or_path": model_args.model_name_or_path,
        "pretrained_vlm": vlm,
        "dataset": source,
        "num_rows": split_info["num_rows"],
        "validation_note": split_info.get("note"),
        "trainable_parameters": report,
        "world_size": training_args.world_size,
    }
    trainer = QCLIPTrainer(
        model=model,
        args=training_args,
        train_dataset=train_ds if training_args.do_train else None,
        eval_dataset=eval_ds,
        data_collator=collator,
        processing_class=processor,
        compute_metrics=compute_qclip_metrics,
        preprocess_logits_for_metrics=preprocess_logits_for_metrics,
        model_card_info=card_info,
    )
    results: dict[str, Any] = {}
    if training_args.do_train:
        checkpoint = training_args.resume_from_checkpoint
        if checkpoint in ("last", "latest", "True", "true"):
            checkpoint = get_last_checkpoint(training_args.output_dir)
        train_result = trainer.train(resume_from_checkpoint=checkpoint)
        stats = calibrate_scores(
            trainer.model,
            train_ds,
            collator,
            training_args.per_device_eval_batch_size,
            data_args.calibration_samples,
        )
        logger.info("score calibration %s", stats)
        trainer.save_model()  # model + processor + remote code (the best checkpoint, calibrated)
        metrics = dict(train_result.metrics)
        metrics["train_samples"] = len(train_ds)
        trainer.save_metrics("train", metrics)
        trainer.save_state()
        results["train"] = metrics
    if training_args.do_eval and eval_ds is not None:
        metrics = trainer.evaluate()
        metrics["eval_samples"] = len(eval_ds)
        trainer.save_metrics("eval", metrics)
        results["eval"] = metrics
    if training_args.do_predict and test_ds is not None:
        metrics = trainer.evaluate(test_ds, metric_key_prefix="test")
        trainer.save_metrics("test", metrics)
        results["test"] = metrics
    if trainer.is_world_process_zero():
        os.makedirs(training_args.output_dir, exist_ok=True)
        record = {**split_info, "source": source}
        with open(os.path.join(training_args.output_dir, "data_split.json"), "w", encoding="utf-8") as f:
            json.dump(
                record, f, indent=2, default=lambda o: o.tolist() if isinstance(o, np.ndarray) else str(o)
            )
            f.write("\n")
    trainer.create_model_card()
    if training_args.push_to_hub:
        trainer.push_to_hub(commit_message="rsfiqa: trained Q-CLIP model, processor, code and model card")
    return results


if __name__ == "__main__":
    main()
