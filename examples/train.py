#!/usr/bin/env python
"""Fine-tune an RSFIQA image-quality model with the 🤗 Trainer (plain python or ``accelerate launch``).

    python examples/train.py --model_name_or_path rsfiqa-mobile --pretrained_backbone config \\
        --train_dir ../shared/data/clive-train --output_dir outputs/rsfiqa-clive
    accelerate launch --cpu --num_processes 2 examples/train.py --dataset_name DIR_OR_HUB_ID --output_dir OUT
    python examples/train.py --recipe configuration/recipes/NAME.json --output_dir OUT   # recipe = defaults

Data: ``--dataset_name`` (Hub id, a ``save_to_disk`` folder such as the output of
``datasets_scripts/convert.py``, or an imagefolder with ``metadata.csv``) or ``--train_dir`` [/
``--validation_dir``] (imagefolder layout). Without a validation split, ``--validation_split_percentage``
of the training rows are held out with a permutation seeded by ``--split_seed`` (default ``--seed``):
identical on every rank (checked) and recorded in ``<output_dir>/data_split.json``.

Annotations (the paper's loop): ``--annotations STORE`` (an annotation store from ``rsfiqa annotate``) gives
the training and validation images their region label maps AND their MLLM region annotations (description
embeddings, distortion levels), looked up by image content; the semantic branch of RSA is switched on and
trained (``use_region_descriptions``, ``description_embed_dim`` = the store's embedding size), the model's
region settings become the store's, and the saved config and model card record the annotator, prompt and
partition. Images missing from the store are an error listing them, unless ``--allow_missing_annotations``
(they then get the model's own regions and the learned "no annotation" embedding). SAM-partitioned stores
need ``--sam_model DIR``, the SAM folder the store was made with (checked by content fingerprint): it
becomes the model's segmenter, so new images are partitioned the same way.

Model: ``--model_name_or_path`` is a preset name (``configuration/models/*.json``), a config JSON, a saved
model folder or a Hub id. Region label maps (superpixels) are computed on the fly in ``set_transform`` and
cached per image content (in memory, and on disk with ``--region_cache_dir``; ``--precompute_regions``
fills that cache first, sharded over the processes). Labels are z-scored with the training-set mean/std
(``config.label_mean/label_std``) when the model is new (``--label_normalization auto``).

Output in ``--output_dir``: checkpoints, the final (best by validation SRCC) model + processor + remote code,
``eval_results.json`` (and ``train_results.json``, ``test_results.json`` with ``--do_predict``),
``data_split.json`` and a model card ``README.md``; ``--push_to_hub --hub_model_id ORG/NAME`` uploads them.

``--recipe FILE.json``: a JSON object whose keys (any TrainingArguments / model / data argument below)
replace the defaults; arguments given on the command line still win.
"""

from __future__ import annotations

import argparse
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

import modeling_rsfiqa  # noqa: F401  (registers the Auto classes and the pipeline)
from modeling_rsfiqa.configuration_rsfiqa import RSFIQAConfig
from modeling_rsfiqa.factory import create_model, list_presets, preset_config
from modeling_rsfiqa.modeling_rsfiqa import RSFIQAForQualityScoring
from modeling_rsfiqa.processing_rsfiqa import RSFIQAProcessor
from modeling_rsfiqa.training_rsfiqa import (
    RegionLabelCache,
    RSFIQADataCollator,
    RSFIQATrainer,
    RSFIQATransform,
    add_backbone_lora,
    annotation_config_overrides,
    annotation_coverage,
    compute_metrics,
    freeze_backbone,
    freeze_backbone_stages,
    label_statistics,
    merge_lora,
    parse_config_overrides,
    parse_loss_weights,
    precompute_region_labels,
    preprocess_logits_for_metrics,
    seeded_split,
    split_digest,
    trainable_parameter_summary,
)

logger = logging.getLogger("rsfiqa.train")
ROOT = Path(__file__).resolve().parents[1]

# config fields that also decide the processor (a saved processor is rebuilt when one is overridden)
_PROCESSOR_FIELDS = {
    "image_size",
    "image_mean",
    "image_std",
    "partition_method",
    "max_regions",
    "min_region_area",
    "superpixel_segments",
    "superpixel_compactness",
    "region_label_stride",
    "sam_longest_edge",
    "sam_points_per_side",
    "sam_points_per_batch",
    "sam_pred_iou_thresh",
    "sam_stability_score_thresh",
    "superpixel_work_size",
    "distortion_dimensions",
    "level_words",
    "prompt_version",
}


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        default="rsfiqa-mobile",
        metadata={
            "help": f"Preset name ({', '.join(list_presets())}), a config JSON, a saved model folder or a Hub id."
        },
    )
    pretrained_backbone: str | None = field(
        default=None,
        metadata={
            "help": "ImageNet weights for the backbone: a weights file, 'config' (the preset's "
            "backbone_pretrained, relative to the project root) or 'timm' (needs the Hub)."
        },
    )
    config_overrides: str | None = field(
        default=None,
        metadata={"help": "RSFIQAConfig fields to change: 'max_regions=8,rsa_dropout=0.2' or a JSON object."},
    )
    loss_weights: str | None = field(
        default=None,
        metadata={"help": "Loss weights on z-scores, e.g. 'l1=1,plcc=1,rank=0.3' (default: the config's)."},
    )
    label_normalization: str = field(
        default="auto",
        metadata={
            "help": "'data': set config.label_mean/std from the training labels; 'config': keep them; "
            "'auto': 'data' for a new model (preset/JSON), 'config' for a trained one (folder/Hub).",
            "choices": ["auto", "data", "config"],
        },
    )
    freeze_backbone: bool = field(
        default=False, metadata={"help": "Freeze the whole backbone (BN statistics too)."}
    )
    freeze_backbone_stages: int = field(
        default=0, metadata={"help": "Freeze the stem and the first N feature stages of the backbone."}
    )
    backbone_learning_rate: float | None = field(
        default=None,
        metadata={"help": "Learning rate of the backbone; --learning_rate is used by RSA, head and LoRA."},
    )
    use_lora: bool = field(
        default=False,
        metadata={"help": "LoRA on the backbone: base weights frozen, LoRA + RSA + head train."},
    )
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout."})
    lora_target_modules: str | None = field(
        default=None,
        metadata={
            "help": "Regex over full module names (peft full match); default: the backbone's Linear and "
            "safe Conv2d layers (1x1 / statically padded, not depthwise)."
        },
    )
    sam_model: str | None = field(
        default=None,
        metadata={
            "help": "SAM folder (saved from transformers SamModel + SamProcessor): the model partitions with it "
            "(its weights become the model's segmenter). Required with a SAM-partitioned --annotations store."
        },
    )
    cache_dir: str | None = field(default=None, metadata={"help": "Hub / datasets download cache."})
    model_revision: str = field(default="main", metadata={"help": "Hub revision of --model_name_or_path."})


@dataclass
class DataArguments:
    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Hub dataset id, a save_to_disk folder (e.g. from datasets_scripts/convert.py) or an "
            "imagefolder (metadata.csv)."
        },
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Dataset configuration name."})
    train_dir: str | None = field(
        default=None, metadata={"help": "Imagefolder (metadata.csv + images) to train on."}
    )
    validation_dir: str | None = field(default=None, metadata={"help": "Imagefolder to validate on."})
    train_split_name: str = field(default="train", metadata={"help": "Split to train on."})
    validation_split_name: str | None = field(
        default=None,
        metadata={"help": "Split to validate on (default: 'validation' if present, else a seeded split)."},
    )
    test_split_name: str | None = field(
        default=None,
        metadata={"help": "Held-out split evaluated with --do_predict (default: 'test' if present)."},
    )
    image_column_name: str = field(default="image", metadata={"help": "Image column."})
    label_column_name: str = field(default="mos", metadata={"help": "Quality label column (MOS)."})
    validation_split_percentage: float = field(
        default=20.0,
        metadata={"help": "Percent of the training rows held out when there is no validation split."},
    )
    split_seed: int | None = field(default=None, metadata={"help": "Seed of that split (default: --seed)."})
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Use only the first N training rows."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Use only the first N validation rows."}
    )
    score_range: list[float] | None = field(
        default=None,
        metadata={
            "help": "LOW HIGH of the labels (default: dataset metadata, else observed if outside the config's)."
        },
    )
    random_hflip: bool = field(default=True, metadata={"help": "Random horizontal flips while training."})
    random_crop_scale: float | None = field(
        default=None,
        metadata={
            "help": "Random crop (sides U(s, 1) of the image) then resize while training; off by default."
        },
    )
    region_cache_dir: str | None = field(
        default=None,
        metadata={"help": "Disk cache of region label maps (keyed by image content + partition settings)."},
    )
    precompute_regions: bool = field(
        default=False, metadata={"help": "Fill --region_cache_dir before training (sharded over processes)."}
    )
    annotations: str | None = field(
        default=None,
        metadata={
            "help": "Annotation store (`rsfiqa annotate --out`): region label maps and MLLM annotations of the "
            "training and validation images; trains the semantic branch of RSA."
        },
    )
    annotation_profile: str | None = field(
        default=None,
        metadata={
            "help": "When the store holds several annotators / prompts / partitions: a substring of the one "
            "to use (its model, prompt or partition fingerprint)."
        },
    )
    allow_missing_annotations: bool = field(
        default=False,
        metadata={
            "help": "Images missing from --annotations get the model's own regions and the 'no annotation' "
            "embedding instead of stopping the run."
        },
    )


# Defaults of this script (a --recipe and the command line override them).
SCRIPT_DEFAULTS: dict[str, Any] = {
    "output_dir": "outputs/rsfiqa",
    "do_train": True,
    "do_eval": True,
    "eval_strategy": "epoch",
    "save_strategy": "epoch",
    "load_best_model_at_end": True,
    "metric_for_best_model": "srcc",
    "greater_is_better": True,
    "save_total_limit": 2,
    "learning_rate": 1e-3,
    "backbone_learning_rate": 1e-4,
    "weight_decay": 1e-4,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.05,
    "num_train_epochs": 10,
    "per_device_train_batch_size": 16,
    "per_device_eval_batch_size": 16,
    "logging_steps": 10,
    "report_to": "none",
    "remove_unused_columns": False,
}


def build_parser() -> HfArgumentParser:
    parser = HfArgumentParser(
        (ModelArguments, DataArguments, TrainingArguments),
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--recipe", default=None, help="JSON file of argument defaults (see the module docstring)."
    )
    parser.set_defaults(**SCRIPT_DEFAULTS)
    return parser


def _recipe_defaults(parser: HfArgumentParser, path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        recipe = json.load(f)
    if not isinstance(recipe, dict):
        raise ValueError(f"recipe {path} must be a JSON object of argument names to values")
    recipe = {k: v for k, v in recipe.items() if not k.startswith("_")}  # "_comment" keys are notes
    known = {a.dest for a in parser._actions}
    unknown = sorted(set(recipe) - known)
    if unknown:
        raise ValueError(f"recipe {path}: unknown argument(s) {unknown}")
    for key in ("loss_weights", "config_overrides"):
        if isinstance(recipe.get(key), dict):
            recipe[key] = json.dumps(recipe[key])
    return recipe


def parse_args(
    argv: list[str] | None = None,
) -> tuple[ModelArguments, DataArguments, TrainingArguments, dict]:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--recipe", default=None)
    pre.add_argument("--eval_strategy", default=None)
    known, _ = pre.parse_known_args(argv)
    recipe: dict[str, Any] = {}
    if known.recipe:
        recipe = _recipe_defaults(parser, known.recipe)
        parser.set_defaults(**recipe)
    if (
        known.eval_strategy or recipe.get("eval_strategy")
    ) == "no" and "load_best_model_at_end" not in recipe:
        parser.set_defaults(load_best_model_at_end=False)  # nothing to pick the best checkpoint by
    if (
        len(argv) == 1 and argv[0].endswith(".json") and not known.recipe
    ):  # HF-examples style: all args in a JSON
        return (*parser.parse_json_file(os.path.abspath(argv[0])), {})
    model_args, data_args, training_args, rest = parser.parse_args_into_dataclasses(args=argv)
    return model_args, data_args, training_args, {"recipe": known.recipe, "recipe_values": recipe}


# ----------------------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------------------
def _is_saved_dataset(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def _load_imagefolder(path: str, cache_dir: str | None) -> datasets.Dataset:
    if not (Path(path) / "metadata.csv").is_file():
        raise FileNotFoundError(f"{path} is not an imagefolder with metadata.csv")
    dd = datasets.load_dataset("imagefolder", data_dir=path, cache_dir=cache_dir)
    if len(dd) != 1:
        logger.warning(
            "imagefolder %s has splits %s; using %r",
            path,
            list(dd),
            "train" if "train" in dd else next(iter(dd)),
        )
    return dd["train"] if "train" in dd else dd[next(iter(dd))]


def load_raw_datasets(
    data_args: DataArguments, model_args: ModelArguments
) -> tuple[datasets.DatasetDict, dict, str]:
    """(DatasetDict, dataset metadata or {}, a human description of the source)."""
    meta: dict[str, Any] = {}
    if data_args.dataset_name:
        name = data_args.dataset_name
        path = Path(name)
        if path.is_dir() and _is_saved_dataset(path):
            loaded = datasets.load_from_disk(str(path))
            raw = (
                loaded
                if isinstance(loaded, datasets.DatasetDict)
                else datasets.DatasetDict({"train": loaded})
            )
            sidecar = path / "rsfiqa_dataset.json"
            if sidecar.is_file():
                meta = json.loads(sidecar.read_text())
            source = f"save_to_disk dataset `{path.name}`"
        elif path.is_dir() and (path / "metadata.csv").is_file():
            raw = datasets.DatasetDict({"train": _load_imagefolder(str(path), model_args.cache_dir)})
            source = f"imagefolder `{path.name}`"
        else:
            raw = datasets.load_dataset(name, data_args.dataset_config_name, cache_dir=model_args.cache_dir)
            if isinstance(raw, datasets.Dataset):
                raw = datasets.DatasetDict({"train": raw})
            source = f"`{name}`" + (
                f" ({data_args.dataset_config_name})" if data_args.dataset_config_name else ""
            )
            if not path.exists():
                meta["hub_dataset"] = name
    elif data_args.train_dir:
        raw = datasets.DatasetDict({"train": _load_imagefolder(data_args.train_dir, model_args.cache_dir)})
        if data_args.validation_dir:
            raw["validation"] = _load_imagefolder(data_args.validation_dir, model_args.cache_dir)
        source = f"imagefolder `{Path(data_args.train_dir).name}`" + (
            f" (validation: `{Path(data_args.validation_dir).name}`)" if data_args.validation_dir else ""
        )
    else:
        raise ValueError("give --dataset_name or --train_dir")
    for split, ds in raw.items():
        for col in (data_args.image_column_name, data_args.label_column_name):
            if col not in ds.column_names:
                raise ValueError(
                    f"split {split!r} has no column {col!r} (columns: {ds.column_names}); "
                    "see --image_column_name / --label_column_name"
                )
    return raw, meta, source


def _finite_rows(ds: datasets.Dataset, column: str) -> datasets.Dataset:
    values = np.asarray([np.nan if v is None else float(v) for v in ds[column]], dtype=np.float64)
    keep = np.flatnonzero(np.isfinite(values))
    if len(keep) < len(ds):
        logger.warning("dropping %d row(s) without a finite %r label", len(ds) - len(keep), column)
        ds = ds.select(keep.tolist(), keep_in_memory=True)
    return ds


def _row_names(ds: datasets.Dataset, image_column: str) -> list[str] | None:
    """File names of the rows (for data_split.json), when the dataset knows them."""
    for col in ("name", "file_name", "filename", "path"):
        if col in ds.column_names:
            return [str(v) for v in ds[col]]
    try:
        raw = ds.cast_column(image_column, datasets.Image(decode=False))[image_column]
        names = [os.path.basename(r["path"]) if r and r.get("path") else None for r in raw]
        return names if all(names) else None
    except Exception:  # noqa: BLE001 - names are a convenience
        return None


def make_splits(raw: datasets.DatasetDict, data_args: DataArguments, training_args: TrainingArguments):
    """train, validation (or None), test (or None) and a dict describing how they were made."""
    label = data_args.label_column_name
    if data_args.train_split_name not in raw:
        raise ValueError(f"no split {data_args.train_split_name!r}; the dataset has {list(raw)}")
    train = _finite_rows(raw[data_args.train_split_name], label)
    info: dict[str, Any] = {"train_split": data_args.train_split_name}
    need_eval = training_args.do_eval or training_args.eval_strategy != "no"
    validation = None
    val_name = data_args.validation_split_name or ("validation" if "validation" in raw else None)
    if val_name is not None:
        if val_name not in raw:
            raise ValueError(f"no split {val_name!r}; the dataset has {list(raw)}")
        validation = _finite_rows(raw[val_name], label)
        info.update(
            validation="split", validation_split=val_name, note=f"the `{val_name}` split of the dataset"
        )
    elif need_eval:
        seed = training_args.seed if data_args.split_seed is None else data_args.split_seed
        train_idx, val_idx = seeded_split(len(train), data_args.validation_split_percentage, seed)
        validation = train.select(val_idx, keep_in_memory=True)
        train = train.select(train_idx, keep_in_memory=True)
        info.update(
            validation="seeded_split",
            split_seed=seed,
            validation_split_percentage=data_args.validation_split_percentage,
            validation_indices=val_idx,
            digest=split_digest(val_idx),
            note=f"a seeded {data_args.validation_split_percentage:g}% hold-out of the training split "
            f"(seed {seed}; not an official test set)",
        )
    test_name = data_args.test_split_name or ("test" if "test" in raw else None)
    test = None
    if training_args.do_predict and test_name is not None:
        if test_name not in raw:
            raise ValueError(f"no split {test_name!r}; the dataset has {list(raw)}")
        test = _finite_rows(raw[test_name], label)
        info["test_split"] = test_name
    if data_args.max_train_samples is not None:
        train = train.select(range(min(len(train), data_args.max_train_samples)), keep_in_memory=True)
    if validation is not None and data_args.max_eval_samples is not None:
        validation = validation.select(
            range(min(len(validation), data_args.max_eval_samples)), keep_in_memory=True
        )
    info["num_rows"] = {"train": len(train)}
    if validation is not None:
        info["num_rows"]["validation"] = len(validation)
        info["validation_names"] = _row_names(validation, data_args.image_column_name)
    if test is not None:
        info["num_rows"]["test"] = len(test)
    return train, validation, test, info


def check_same_split_on_all_ranks(info: dict[str, Any]) -> None:
    """Every process must hold the same train/validation split (else metrics and training silently differ)."""
    from accelerate import PartialState
    from accelerate.utils import gather_object

    state = PartialState()
    if state.num_processes <= 1:
        return
    key = split_digest(
        [
            info["num_rows"].get("train", 0),
            info["num_rows"].get("validation", 0),
            *info.get("validation_indices", []),
        ]
    )
    keys = gather_object([key])
    if len(set(keys)) != 1:
        raise RuntimeError(f"the train/validation split differs between processes: {keys}")
    logger.info("train/validation split identical on all %d processes (%s)", state.num_processes, key)


# ----------------------------------------------------------------------------------------------------------
# model
# ----------------------------------------------------------------------------------------------------------
def _resolve_weights(spec: str) -> str | bool:
    if spec in ("config", "true", "True"):
        return True
    if spec == "timm":
        return "timm"
    for candidate in (Path(spec), ROOT / spec):
        if candidate.is_file():
            return str(candidate.resolve())
    raise FileNotFoundError(f"--pretrained_backbone {spec!r} is not a file (nor 'config' / 'timm')")


def _is_trained(model_args: ModelArguments) -> bool:
    name = model_args.model_name_or_path
    path = Path(name)
    is_saved = path.is_dir() and (path / "config.json").is_file()
    return is_saved or not ((path.suffix == ".json" and path.is_file()) or name in list_presets())


def base_config(model_args: ModelArguments) -> RSFIQAConfig:
    """The config of --model_name_or_path before any override (preset, JSON, folder or Hub id)."""
    name = model_args.model_name_or_path
    if not _is_trained(model_args):
        return preset_config(name)
    path = Path(name)
    kwargs: dict[str, Any] = (
        {} if path.is_dir() else {"revision": model_args.model_revision, "cache_dir": model_args.cache_dir}
    )
    return RSFIQAConfig.from_pretrained(name, **kwargs)


def _merge_overrides(user: dict[str, Any], derived: dict[str, Any], source: str) -> dict[str, Any]:
    """``derived`` (from the annotation store / SAM) plus the user's --config_overrides; a contradiction is an error."""
    clash = {k: (user[k], v) for k, v in derived.items() if k in user and user[k] != v}
    if clash:
        detail = ", ".join(f"{k}={a!r} (the {source} needs {b!r})" for k, (a, b) in clash.items())
        raise ValueError(f"--config_overrides contradicts the {source}: {detail}")
    return {**derived, **user}


def load_model_and_processor(
    model_args: ModelArguments,
    extra_overrides: dict[str, Any] | None = None,
    sam: tuple[Any, Any] | None = None,
) -> tuple[RSFIQAForQualityScoring, RSFIQAProcessor, bool]:
    """(model, processor, trained) where ``trained`` says the weights come from a saved model.

    ``extra_overrides``: config fields required by the annotation store (merged with --config_overrides);
    ``sam``: ``(SamModel, SamImageProcessor)`` from --sam_model, copied into the model's segmenter."""
    overrides = parse_config_overrides(model_args.config_overrides)
    derived = dict(extra_overrides or {})
    if sam is not None:
        ip = sam[1]
        derived.update(
            partition_method="sam",
            sam_config=sam[0].config,
            sam_longest_edge=int((ip.size or {}).get("longest_edge") or 1024),
        )
    if derived:
        overrides = _merge_overrides(
            {k: v for k, v in overrides.items() if k != "sam_config"}, derived, "annotation store / SAM model"
        )
    model, processor, trained = _load_model_and_processor(model_args, overrides)
    if sam is not None:
        model.segmenter.load_state_dict(sam[0].state_dict())
        processor.sam_image_processor = sam[1]
    return model, processor, trained


def _load_model_and_processor(
    model_args: ModelArguments, overrides: dict[str, Any]
) -> tuple[RSFIQAForQualityScoring, RSFIQAProcessor, bool]:
    name = model_args.model_name_or_path
    path = Path(name)
    weights = _resolve_weights(model_args.pretrained_backbone) if model_args.pretrained_backbone else False
    is_saved = path.is_dir() and (path / "config.json").is_file()
    is_preset = (path.suffix == ".json" and path.is_file()) or name in list_presets()
    if is_preset and not is_saved:
        model, processor = create_model(name, pretrained_backbone=weights, **overrides)
        return model, processor, False
    kwargs: dict[str, Any] = (
        {} if is_saved else {"revision": model_args.model_revision, "cache_dir": model_args.cache_dir}
    )
    config = RSFIQAConfig.from_pretrained(name, **kwargs)
    for key, value in overrides.items():
        if not hasattr(config, key):
            raise ValueError(f"RSFIQAConfig has no field {key!r}")
        setattr(config, key, value)
    config.validate_rsfiqa()
    model = RSFIQAForQualityScoring.from_pretrained(name, config=config, **kwargs)
    if weights:
        logger.warning("--pretrained_backbone replaces the backbone weights of the saved model %s", name)
        model.load_pretrained_backbone(None if weights is True else weights)
    if _PROCESSOR_FIELDS & set(overrides):
        processor = RSFIQAProcessor.from_model_config(model.config)
    else:
        try:
            processor = RSFIQAProcessor.from_pretrained(name, **kwargs)
        except (OSError, ValueError, TypeError):
            logger.warning("no processor saved with %s; building one from its config", name)
            processor = RSFIQAProcessor.from_model_config(model.config)
    return model, processor, True


def open_annotations(
    data_args: DataArguments,
    model_args: ModelArguments,
    training_args: TrainingArguments,
    splits: dict[str, Any],
) -> tuple[Any, dict[str, Any], dict[str, dict[str, Any]]]:
    """``(AnnotationLookup or None, config overrides, coverage per split)`` for ``--annotations``.

    Every image of every split is looked up by content; missing ones are an error listing them (the full list
    goes to ``<output_dir>/missing_annotations.json``) unless ``--allow_missing_annotations``."""
    if not data_args.annotations:
        return None, {}, {}
    from modeling_rsfiqa.annotation_store_rsfiqa import AnnotationLookup

    config = base_config(model_args)
    lookup = AnnotationLookup.for_config(data_args.annotations, config, select=data_args.annotation_profile)
    profile = lookup.profile
    logger.info("annotations: %s", profile.describe())
    for text in lookup.mismatches:
        logger.warning("annotation store %s: %s", data_args.annotations, text)
    trained = _is_trained(model_args)
    overrides, notes = annotation_config_overrides(profile, config, trained=trained)
    if not trained and "semantic_head" not in parse_config_overrides(model_args.config_overrides):
        overrides["semantic_head"] = True  # absolute distortion levels reach the score (modeling step 7)
    for text in notes:
        logger.warning("annotation store %s: %s", data_args.annotations, text)
    coverage: dict[str, dict[str, Any]] = {}
    report: dict[str, list[str]] = {}
    for split, ds in splits.items():
        if ds is None:
            continue
        found, missing = annotation_coverage(
            ds, lookup, data_args.image_column_name, progress=training_args.should_log
        )
        coverage[split] = {"annotated": len(found), "missing": len(missing), "missing_rows": missing}
        if missing:
            names = _row_names(ds, data_args.image_column_name)
            report[split] = [names[i] if names else f"row {i}" for i in missing]
    if report and training_args.should_save:
        os.makedirs(training_args.output_dir, exist_ok=True)
        with open(
            os.path.join(training_args.output_dir, "missing_annotations.json"), "w", encoding="utf-8"
        ) as f:
            json.dump(
                {"store": data_args.annotations, "profile": profile.describe(), "missing": report},
                f,
                indent=2,
            )
    if report:
        lines = []
        for split, names in report.items():
            shown = ", ".join(names[:20]) + (f", ... ({len(names) - 20} more)" if len(names) > 20 else "")
            lines.append(f"{split}: {len(names)} of {coverage[split]['annotated'] + len(names)} ({shown})")
        text = (
            f"images not in the annotation store {data_args.annotations} ({profile.describe()}): "
            + "; ".join(lines)
        )
        if not data_args.allow_missing_annotations:
            raise ValueError(
                text + ". Annotate them (`rsfiqa annotate --data ... --out STORE`), or pass "
                "--allow_missing_annotations to train them with the model's own regions and the 'no annotation' "
                "embedding (the list is in missing_annotations.json)."
            )
        logger.warning("%s; they use the 'no annotation' embedding (--allow_missing_annotations)", text)
    return lookup, overrides, coverage


def load_sam(model_args: ModelArguments, annotations: Any) -> tuple[Any, Any] | None:
    """``(SamModel, SamImageProcessor)`` from --sam_model, checked against a SAM-partitioned store."""
    settings = (annotations.profile.partition_settings or {}) if annotations is not None else {}
    if not model_args.sam_model:
        if settings.get("sam_model") and base_config(model_args).sam_config is None:
            raise ValueError(_sam_needed(settings["sam_model"], "has no SAM segmenter"))
        return None
    if annotations is not None and settings.get("partition_method") != "sam":
        raise ValueError(
            f"--sam_model is given but the annotation store's regions are not SAM's ({settings or 'unknown'}): "
            "the model would partition new images differently from the annotated ones; drop --sam_model"
        )
    from modeling_rsfiqa.partition import load_sam_model, sam_fingerprint

    sam = load_sam_model(model_args.sam_model)
    want = settings.get("sam_model")
    if want and sam_fingerprint(sam[0]) != want:
        raise ValueError(
            f"--sam_model {model_args.sam_model} is SAM {sam_fingerprint(sam[0])}, but the annotation store's "
            f"regions were made by SAM {want}: pass the SAM folder the store was annotated with"
        )
    return sam


def check_segmenter(model: RSFIQAForQualityScoring, annotations: Any, sam: Any) -> None:
    """A SAM-partitioned store needs the model to carry that SAM (from --sam_model or already trained in)."""
    want = ((annotations.profile.partition_settings or {}) if annotations is not None else {}).get(
        "sam_model"
    )
    if not want or sam is not None:
        return
    from modeling_rsfiqa.partition import sam_fingerprint

    have = sam_fingerprint(model.segmenter) if model.segmenter is not None else None
    if have != want:
        raise ValueError(_sam_needed(want, f"carries SAM {have}" if have else "has no SAM segmenter"))


def _sam_needed(want: str, model_state: str) -> str:
    return (
        f"the annotation store's regions were made by SAM {want}; the model {model_state}: pass --sam_model DIR "
        "(the SAM folder given to `rsfiqa annotate --sam-model`) so that the trained model partitions new images "
        "the same way"
    )


def annotation_card_text(annotations: Any, coverage: dict[str, dict[str, Any]], config: RSFIQAConfig) -> str:
    """One line for the model card: who annotated, with what prompt and regions, and how many images."""
    profile = annotations.profile
    cover = ", ".join(
        f"{split} {c['annotated']}/{c['annotated'] + c['missing']}" for split, c in coverage.items()
    )
    return (
        f"annotator `{profile.model}`, prompt `{profile.prompt}`, regions `{profile.partition}` "
        f"({(profile.partition_settings or {}).get('partition_method', 'see config')}); "
        f"description embeddings of size {config.description_embed_dim}; images annotated: {cover}"
    )


def configure_labels(
    model, train, data_args: DataArguments, model_args: ModelArguments, meta: dict, trained: bool
) -> str:
    """Label normalisation, score range and loss weights on ``model.config``; returns the normalisation mode."""
    config = model.config
    labels = np.asarray([float(v) for v in train[data_args.label_column_name]], dtype=np.float64)
    mode = model_args.label_normalization
    if mode == "auto":
        mode = "config" if trained else "data"
    if mode == "data":
        config.label_mean, config.label_std = label_statistics(labels)
    if data_args.score_range:
        config.score_range = [float(v) for v in data_args.score_range]
    elif meta.get("mos_range"):
        config.score_range = [float(v) for v in meta["mos_range"]]
        if "higher_is_better" in meta:
            config.higher_is_better = bool(meta["higher_is_better"])
    else:
        low, high = float(labels.min()), float(labels.max())
        if low < config.score_range[0] or high > config.score_range[1]:
            logger.warning(
                "labels span [%g, %g], outside score_range %s: using the observed range",
                low,
                high,
                config.score_range,
            )
            config.score_range = [low, high]
    weights = parse_loss_weights(model_args.loss_weights)
    if weights is not None:
        config.loss_weights = weights
    config.validate_rsfiqa()
    logger.info(
        "labels: mean %.4g std %.4g (%s), score_range %s, loss %s",
        config.label_mean,
        config.label_std,
        mode,
        config.score_range,
        config.loss_weights,
    )
    return mode


def configure_trainable(model, model_args: ModelArguments) -> dict[str, str | None]:
    frozen, lora = None, None
    if model_args.freeze_backbone and model_args.use_lora:
        raise ValueError(
            "--freeze_backbone and --use_lora exclude each other (LoRA already freezes the base weights)"
        )
    if model_args.freeze_backbone:
        freeze_backbone(model)
        frozen = "the whole backbone (BN statistics too)"
    elif model_args.freeze_backbone_stages > 0:
        names = freeze_backbone_stages(model, model_args.freeze_backbone_stages)
        frozen = f"backbone stem + first {model_args.freeze_backbone_stages} stage(s) ({len(names)} tensors)"
    if model_args.use_lora:
        add_backbone_lora(
            model,
            r=model_args.lora_r,
            alpha=model_args.lora_alpha,
            dropout=model_args.lora_dropout,
            target_modules=model_args.lora_target_modules,
        )
        lora = (
            f"r={model_args.lora_r}, alpha={model_args.lora_alpha}, dropout={model_args.lora_dropout} on the "
            f"backbone ({model_args.lora_target_modules or 'Linear + safe Conv2d layers'}); merged into the saved weights"
        )
        frozen = "backbone base weights (LoRA trains)"
    summary = trainable_parameter_summary(model)
    for kind, row in summary.items():
        logger.info("parameters %-8s trainable %9d  frozen %9d", kind, row["trainable"], row["frozen"])
    backbone = summary.get("backbone", {"trainable": 0, "frozen": 0})
    if frozen is None and backbone["frozen"]:
        frozen = (
            f"{backbone['frozen']} of {backbone['frozen'] + backbone['trainable']} backbone parameters "
            f"(model config{', backbone_freeze_prefix' if getattr(model.config, 'backbone_freeze_prefix', False) else ''})"
        )
    return {"frozen": frozen, "lora": lora}


# ----------------------------------------------------------------------------------------------------------
def configure_cpu_distributed() -> str | None:
    """Make multi-process CPU runs real; returns a warning to log, if any.

    * Several processes (``WORLD_SIZE`` > 1, e.g. ``accelerate launch --multi_gpu --num_processes 2`` or
      ``torchrun``) on a machine without CUDA: set ``ACCELERATE_USE_CPU`` so accelerate builds a gloo process
      group (MULTI_CPU) instead of N independent single-process runs writing the same output_dir.
    * ``accelerate launch --cpu --num_processes N`` (accelerate 1.x, no mpirun) starts ONE process: detected
      (the launcher sets ``MASTER_ADDR`` for N > 1 but no ``WORLD_SIZE``) and reported.
    """
    import torch

    env = os.environ
    world = max(int(env.get(k, "1") or 1) for k in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE"))
    if world > 1 and not torch.cuda.is_available() and "ACCELERATE_USE_CPU" not in env:
        env["ACCELERATE_USE_CPU"] = "true"
    elif (
        world == 1
        and env.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
        and "MASTER_ADDR" in env
    ):
        return (
            "`accelerate launch --cpu --num_processes N` starts a single process in accelerate 1.x (CPU multi-process "
            "needs mpirun): this run uses ONE process. For N gloo processes use `accelerate launch --multi_gpu "
            "--num_processes N --main_process_port 0 examples/train.py ...` or --config_file "
            "configuration/accelerate/cpu-2proc.yaml (works without GPUs)."
        )
    return None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    launch_warning = configure_cpu_distributed()
    model_args, data_args, training_args, recipe_info = parse_args(argv)
    if training_args.remove_unused_columns:
        logger.warning(
            "remove_unused_columns=True would drop the image column before set_transform: forcing False"
        )
        training_args.remove_unused_columns = False
    training_args.label_names = ["labels"]

    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    level = logging.INFO if training_args.should_log else logging.WARNING
    logger.setLevel(level)
    datasets.utils.logging.set_verbosity(level)
    transformers.utils.logging.set_verbosity(level)
    logger.info(
        "process %d/%d, device %s, distributed %s",
        training_args.process_index,
        training_args.world_size,
        training_args.device,
        training_args.parallel_mode.value,
    )
    if launch_warning:
        logger.warning(launch_warning)
    if recipe_info.get("recipe"):
        logger.info("recipe %s: %s", recipe_info["recipe"], recipe_info["recipe_values"])

    set_seed(training_args.seed)
    with training_args.main_process_first(desc="loading the dataset"):
        raw, meta, source = load_raw_datasets(data_args, model_args)
        train_ds, eval_ds, test_ds, split_info = make_splits(raw, data_args, training_args)
    check_same_split_on_all_ranks(split_info)
    logger.info("data %s: %s (validation: %s)", source, split_info["num_rows"], split_info.get("note"))

    splits = {"train": train_ds, "validation": eval_ds, "test": test_ds}
    annotations, store_overrides, coverage = open_annotations(data_args, model_args, training_args, splits)
    sam = load_sam(model_args, annotations)
    model, processor, trained = load_model_and_processor(model_args, store_overrides, sam)
    check_segmenter(model, annotations, sam)
    norm_mode = configure_labels(model, train_ds, data_args, model_args, meta, trained)
    trainable = configure_trainable(model, model_args)

    cache = RegionLabelCache(
        processor, data_args.region_cache_dir, sam_model=getattr(model, "segmenter", None)
    )
    if data_args.precompute_regions:
        if data_args.region_cache_dir is None:
            logger.warning("--precompute_regions needs --region_cache_dir to share the work; skipped")
        else:
            for split, ds in splits.items():
                if ds is None:
                    continue
                if annotations is not None:  # stored images take their regions from the store
                    ds = ds.select(coverage[split]["missing_rows"])
                n = precompute_region_labels(
                    ds,
                    cache,
                    data_args.image_column_name,
                    training_args.process_index,
                    training_args.world_size,
                    progress=training_args.should_log,
                )
                logger.info("precomputed %d region label maps", n)
            from accelerate import PartialState

            PartialState().wait_for_everyone()
    common = {
        "image_column": data_args.image_column_name,
        "label_column": data_args.label_column_name,
        "annotations": annotations,
    }
    train_ds.set_transform(
        RSFIQATransform(
            processor,
            cache,
            train=True,
            hflip=data_args.random_hflip,
            random_crop_scale=data_args.random_crop_scale,
            **common,
        )
    )
    for ds in (eval_ds, test_ds):
        if ds is not None:
            ds.set_transform(RSFIQATransform(processor, cache, train=False, **common))

    augmentation = (
        ", ".join(
            (
                [f"random crop (sides U({data_args.random_crop_scale:g}, 1)) + resize"]
                if data_args.random_crop_scale
                else []
            )
            + (["horizontal flip"] if data_args.random_hflip else [])
        )
        or "none"
    )
    card_info = {
        "model_name_or_path": model_args.model_name_or_path,
        "pretrained_backbone": model_args.pretrained_backbone,
        "backbone_learning_rate": model_args.backbone_learning_rate,
        "dataset": source,
        "hub_dataset": meta.get("hub_dataset"),
        "label_column": data_args.label_column_name,
        "num_rows": split_info["num_rows"],
        "validation_note": split_info.get("note"),
        "label_normalization": norm_mode,
        "augmentation": augmentation,
        "world_size": training_args.world_size,
        **trainable,
    }
    if annotations is not None:
        card_info["uses_annotations"] = True
        card_info["annotations"] = annotation_card_text(annotations, coverage, model.config)
    trainer = RSFIQATrainer(
        model=model,
        args=training_args,
        train_dataset=train_ds if training_args.do_train else None,
        eval_dataset=eval_ds,
        data_collator=RSFIQADataCollator(),
        processing_class=processor,
        compute_metrics=compute_metrics,
        preprocess_logits_for_metrics=preprocess_logits_for_metrics,
        backbone_learning_rate=model_args.backbone_learning_rate,
        model_card_info=card_info,
    )

    results: dict[str, Any] = {}
    if training_args.do_train:
        checkpoint = training_args.resume_from_checkpoint
        if checkpoint in ("last", "latest", "True", "true"):
            checkpoint = get_last_checkpoint(training_args.output_dir)
            if checkpoint is None:
                raise FileNotFoundError(
                    f"no checkpoint-* folder in {training_args.output_dir} to resume from"
                )
        elif (
            checkpoint is None
            and os.path.isdir(training_args.output_dir)
            and get_last_checkpoint(training_args.output_dir)
        ):
            logger.warning(
                "%s already holds checkpoints; starting from scratch (use --resume_from_checkpoint last to "
                "continue)",
                training_args.output_dir,
            )
        train_result = trainer.train(resume_from_checkpoint=checkpoint)
        if model_args.use_lora:
            logger.info("merged %d LoRA layers into the backbone", merge_lora(trainer.model))
        trainer.save_model()  # model + processor + remote code (the best checkpoint with load_best_model_at_end)
        metrics = dict(train_result.metrics)
        metrics["train_samples"] = len(train_ds)
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()
        results["train"] = metrics
        card_info["global_step"] = trainer.state.global_step
    if training_args.do_eval and eval_ds is not None:
        metrics = trainer.evaluate()
        metrics["eval_samples"] = len(eval_ds)
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
        results["eval"] = metrics
    if training_args.do_predict and test_ds is not None:
        metrics = trainer.evaluate(test_ds, metric_key_prefix="test")
        metrics["test_samples"] = len(test_ds)
        trainer.log_metrics("test", metrics)
        trainer.save_metrics("test", metrics)
        results["test"] = metrics

    if trainer.is_world_process_zero():
        os.makedirs(training_args.output_dir, exist_ok=True)
        split_record = {k: v for k, v in split_info.items()}
        split_record["source"] = source
        with open(os.path.join(training_args.output_dir, "data_split.json"), "w", encoding="utf-8") as f:
            json.dump(split_record, f, indent=2)
            f.write("\n")
    trainer.model_card_info.update(card_info)
    trainer.create_model_card()  # README.md, always (main process only)
    if training_args.push_to_hub:
        trainer.push_to_hub(commit_message="rsfiqa: trained model, processor, code and model card")
    logger.info("region label cache: %d computed, %d reused", cache.misses, cache.hits)
    return results


if __name__ == "__main__":
    main()
