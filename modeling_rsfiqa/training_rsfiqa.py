"""Training support for RSFIQA with the 🤗 Trainer (used by ``examples/train.py``).

* data: :class:`RegionLabelCache` (superpixel / SAM region label maps computed once per image content,
  in memory and optionally on disk), :class:`RSFIQATransform` (``Dataset.set_transform``: decode, optional
  horizontal flip / random crop, processor -> ``pixel_values`` + ``region_labels`` + ``labels``),
  :class:`RSFIQADataCollator`, :func:`seeded_split` (the same split on every rank), :func:`label_statistics`;
* metrics: :func:`compute_metrics` (SRCC / PLCC / logistic PLCC / KRCC / RMSE of the ``score`` output) and
  :func:`preprocess_logits_for_metrics` (keeps only ``score`` so evaluation gathers one float per image);
* parameters: :func:`freeze_backbone`, :func:`freeze_backbone_stages`, :func:`add_backbone_lora` /
  :func:`merge_lora` (peft LoRA on the backbone, base weights frozen), :func:`build_param_groups` and
  :class:`RSFIQATrainer` (separate learning rates for the backbone and the new layers);
* :func:`write_model_card`: the README.md of a trained model.

IQA labels are fragile: augmentations that change quality (blur, colour jitter, JPEG, rescaling noise) are
not offered. Horizontal flips keep quality; a random crop followed by a resize is available on request.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import Trainer

from .image_io import image_content_hash, load_image_rgb
from .quality_metrics import METRIC_NAMES, compute_iqa_metrics

__all__ = [
    "parse_loss_weights",
    "parse_config_overrides",
    "RegionLabelCache",
    "RSFIQATransform",
    "RSFIQADataCollator",
    "precompute_region_labels",
    "annotation_config_overrides",
    "annotation_coverage",
    "seeded_split",
    "split_digest",
    "label_statistics",
    "compute_metrics",
    "preprocess_logits_for_metrics",
    "freeze_backbone",
    "freeze_backbone_stages",
    "default_lora_targets",
    "add_backbone_lora",
    "merge_lora",
    "parameter_kind",
    "build_param_groups",
    "trainable_parameter_summary",
    "RSFIQATrainer",
    "model_card_text",
    "write_model_card",
]

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------
# argument parsing helpers
# ----------------------------------------------------------------------------------------------------------
def parse_loss_weights(spec: str | dict | None) -> dict[str, float] | None:
    """``"l1=1,plcc=1,rank=0.3"`` (or a dict / JSON object) -> ``{"l1": 1.0, "plcc": 1.0, "rank": 0.3}``."""
    from .losses import LOSS_NAMES

    if spec is None or spec == "":
        return None
    if isinstance(spec, str) and spec.strip().startswith("{"):
        spec = json.loads(spec)
    if isinstance(spec, dict):
        weights = {str(k): float(v) for k, v in spec.items()}
    else:
        weights = {}
        for part in str(spec).split(","):
            if not part.strip():
                continue
            if "=" not in part:
                raise ValueError(
                    f"loss weight {part!r} must look like name=value (e.g. l1=1,plcc=1,rank=0.3)"
                )
            name, value = part.split("=", 1)
            weights[name.strip()] = float(value)
    unknown = sorted(set(weights) - set(LOSS_NAMES))
    if unknown:
        raise ValueError(f"unknown loss names {unknown}; choose from {list(LOSS_NAMES)}")
    if not any(v > 0 for v in weights.values()):
        raise ValueError(f"at least one loss weight must be > 0, got {weights}")
    return weights


def parse_config_overrides(spec: str | dict | None) -> dict[str, Any]:
    """``'{"image_size": [224, 224]}'`` or ``"max_regions=8,rsa_dropout=0.2"`` -> dict (values JSON-decoded
    when possible, else kept as strings)."""
    if spec is None or spec == "":
        return {}
    if isinstance(spec, dict):
        return dict(spec)
    spec = spec.strip()
    if spec.startswith("{"):
        return dict(json.loads(spec))
    out: dict[str, Any] = {}
    for part in spec.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise ValueError(f"config override {part!r} must look like key=value")
        key, value = part.split("=", 1)
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value.strip()
    return out


# ----------------------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------------------
class RegionLabelCache:
    """Region label maps at ``processor.label_size``, computed once per image CONTENT.

    Superpixels cost ~0.05-0.3 s per image (SAM far more), every epoch: maps are kept in memory and, with
    ``cache_dir``, in ``cache_dir/<settings-key>/<hh>/<sha256>.npy`` (atomic writes, so several processes
    may fill it at once; the settings key changes whenever the partition settings or label size do).
    """

    VERSION = 1

    def __init__(self, processor: Any, cache_dir: str | os.PathLike | None = None, sam_model: Any = None):
        self.processor = processor
        self.sam_model = sam_model
        self.label_size = tuple(int(s) for s in processor.label_size)
        settings = {
            **processor.partition_key(sam_model),  # SAM: its fingerprint and input size too
            "label_size": list(self.label_size),
            "version": self.VERSION,
        }
        self.settings_key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
        self.dir = Path(cache_dir) / self.settings_key if cache_dir else None
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
            info = self.dir / "settings.json"
            if not info.exists():
                tmp = info.with_suffix(f".tmp{os.getpid()}")
                tmp.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")
                os.replace(tmp, info)
        self.memory: dict[str, np.ndarray] = {}
        self.hits = 0
        self.misses = 0

    def _path(self, key: str) -> Path | None:
        return None if self.dir is None else self.dir / key[:2] / f"{key}.npy"

    def get(self, image: Any, key: str | None = None) -> np.ndarray:
        """The label map (int32, ``label_size``) of ``image`` (any input :func:`load_image_rgb` accepts);
        ``key``: its :func:`image_content_hash` when the caller has it already."""
        image = load_image_rgb(image)
        key = key or image_content_hash(image)
        cached = self.memory.get(key)
        if cached is not None:
            self.hits += 1
            return cached
        path = self._path(key)
        if path is not None and path.exists():
            try:
                cached = np.load(path).astype(np.int32)
            except (OSError, ValueError):  # a damaged cache file is recomputed
                cached = None
            if cached is not None and cached.shape == self.label_size:
                self.hits += 1
                self.memory[key] = cached
                return cached
        self.misses += 1
        label_map = np.asarray(
            self.processor.partition(image, sam_model=self.sam_model, output_size=self.label_size),
            dtype=np.int32,
        )
        self.memory[key] = label_map
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
            np.save(tmp, label_map.astype(np.int16 if label_map.max() < 2**15 else np.int32))
            os.replace(tmp, path)
        return label_map


def _crop_box(
    width: int, height: int, min_scale: float, generator: torch.Generator | None = None
) -> tuple[int, int, int, int]:
    """A random crop ``(left, top, right, bottom)`` whose sides are ``U(min_scale, 1)`` of the image's."""
    r = torch.rand(4, generator=generator).tolist()
    cw = max(1, round(width * (min_scale + (1.0 - min_scale) * r[0])))
    ch = max(1, round(height * (min_scale + (1.0 - min_scale) * r[1])))
    left = min(width - cw, int(r[2] * (width - cw + 1)))
    top = min(height - ch, int(r[3] * (height - ch + 1)))
    return left, top, left + cw, top + ch


class RSFIQATransform:
    """``Dataset.set_transform`` function: a batch of rows -> ``pixel_values``, ``region_labels``, ``labels``.

    Region label maps come from ``cache`` (computed on the un-augmented image) and follow the augmentation:
    flipped with the image, cropped with it (the crop box scaled to the label map), then resized by the
    processor. ``train=False`` (evaluation) never augments.

    With ``annotations`` (an ``AnnotationLookup`` of an annotation store), an image found in the store takes
    its label map AND its MLLM annotations from there (``region_text_embeds``, ``region_distortion_levels``,
    ``region_annotation_mask``; region ``k`` of the annotation is label ``k`` of the stored map); an image
    that is not found gets the cache's label map and an all-False annotation mask (the model's learned
    "no description" embedding). ``annotation_embed_dim`` sizes the zero embeddings of such rows.
    """

    def __init__(
        self,
        processor: Any,
        cache: RegionLabelCache,
        image_column: str = "image",
        label_column: str | None = "mos",
        train: bool = False,
        hflip: bool = True,
        random_crop_scale: float | None = None,
        annotations: Any = None,
        annotation_embed_dim: int | None = None,
    ):
        if annotations is not None and annotation_embed_dim is None:
            annotation_embed_dim = annotations.profile.embed_dim
        self.annotations = annotations
        self.annotation_embed_dim = annotation_embed_dim
        self._stored_maps: dict[str, np.ndarray] = {}
        if random_crop_scale is not None and not 0.0 < random_crop_scale <= 1.0:
            raise ValueError(f"random_crop_scale must be in (0, 1], got {random_crop_scale}")
        self.processor = processor
        self.cache = cache
        self.image_column = image_column
        self.label_column = label_column
        self.train = train
        self.hflip = hflip
        self.random_crop_scale = random_crop_scale

    @staticmethod
    def _crop_label_map(
        label_map: np.ndarray, box: tuple[int, int, int, int], size: tuple[int, int]
    ) -> np.ndarray:
        """The part of a whole-image label map under ``box`` (pixel coordinates of an image of ``size=(w, h)``)."""
        lh, lw = label_map.shape
        w, h = size
        left, top, right, bottom = box
        x0 = min(lw - 1, int(math.floor(left * lw / w)))
        y0 = min(lh - 1, int(math.floor(top * lh / h)))
        x1 = max(x0 + 1, min(lw, int(math.ceil(right * lw / w))))
        y1 = max(y0 + 1, min(lh, int(math.ceil(bottom * lh / h))))
        return np.ascontiguousarray(label_map[y0:y1, x0:x1])

    def _stored(self, key: str) -> tuple[np.ndarray | None, dict[str, Any] | None]:
        """(label map at the cache's label size, annotation dict) of a stored image, or (None, None)."""
        ann = self.annotations.get(key)
        if ann is None or ann.label_map is None:
            return None, None
        small = self._stored_maps.get(key)
        if small is None:
            from .partition import resize_label_map

            small = resize_label_map(ann.label_map, self.cache.label_size)
            self._stored_maps[key] = small = small.astype(np.int16 if small.max() < 2**15 else np.int32)
        return small, {"text_embeds": ann.text_embeds, "distortion_levels": ann.distortion_levels}

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        images, maps, anns = [], [], []
        for raw in batch[self.image_column]:
            image = load_image_rgb(raw)
            key = image_content_hash(image)
            label_map, ann = self._stored(key) if self.annotations is not None else (None, None)
            if label_map is None:
                label_map = self.cache.get(image, key=key)
            if self.train:
                image, label_map = self._augment(image, label_map)
            images.append(image)
            maps.append(label_map)
            anns.append(ann)
        out = self.processor(
            images, region_labels=maps, annotations=anns if self.annotations is not None else None
        )
        result: dict[str, list] = {
            "pixel_values": list(out["pixel_values"]),
            "region_labels": list(out["region_labels"]),
        }
        if self.annotations is not None:
            if "region_text_embeds" not in out:  # no image of this batch is in the store
                b, k = len(images), self.processor.max_regions
                n_dims = len(self.processor.distortion_dimensions)
                out["region_text_embeds"] = torch.zeros(b, k, int(self.annotation_embed_dim))
                out["region_distortion_levels"] = torch.zeros(b, k, n_dims)
                out["region_annotation_mask"] = torch.zeros(b, k, dtype=torch.bool)
            for name in ("region_text_embeds", "region_distortion_levels", "region_annotation_mask"):
                result[name] = list(out[name])
        if self.label_column is not None and self.label_column in batch:
            result["labels"] = [torch.tensor(float(v), dtype=torch.float32) for v in batch[self.label_column]]
        return result

    def _augment(self, image: Any, label_map: np.ndarray) -> tuple[Any, np.ndarray]:
        from PIL import Image

        if self.random_crop_scale is not None and self.random_crop_scale < 1.0:
            box = _crop_box(image.width, image.height, self.random_crop_scale)
            label_map = self._crop_label_map(label_map, box, image.size)
            image = image.crop(box)
        if self.hflip and bool(torch.rand(()) < 0.5):
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            label_map = np.ascontiguousarray(label_map[:, ::-1])
        return image, label_map


class RSFIQADataCollator:
    """Stack the per-example tensors of :class:`RSFIQATransform` into a model batch."""

    keys = (
        "pixel_values",
        "region_labels",
        "region_text_embeds",
        "region_distortion_levels",
        "region_annotation_mask",
    )

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = {
            k: torch.stack([torch.as_tensor(f[k]) for f in features]) for k in self.keys if k in features[0]
        }
        if "labels" in features[0]:
            batch["labels"] = torch.stack(
                [torch.as_tensor(f["labels"], dtype=torch.float32).reshape(()) for f in features]
            )
        return batch


def precompute_region_labels(
    dataset: Any,
    cache: RegionLabelCache,
    image_column: str = "image",
    process_index: int = 0,
    num_processes: int = 1,
    progress: bool = True,
) -> int:
    """Fill ``cache`` for rows ``process_index, process_index + num_processes, ...`` of ``dataset`` (shard the
    work over ranks; call a barrier afterwards). Returns how many maps were computed (cache misses)."""
    from tqdm.auto import tqdm

    before = cache.misses
    indices = range(process_index, len(dataset), num_processes)
    column = dataset.select_columns([image_column]) if hasattr(dataset, "select_columns") else dataset
    for i in tqdm(indices, desc=f"region labels [{process_index}/{num_processes}]", disable=not progress):
        cache.get(column[int(i)][image_column])
    return cache.misses - before


#: partition settings recorded in an annotation store -> the RSFIQAConfig fields they set
_STORE_REGION_FIELDS = (
    "partition_method",
    "max_regions",
    "min_region_area",
    "superpixel_segments",
    "superpixel_compactness",
    "superpixel_work_size",
    "sam_points_per_side",
    "sam_pred_iou_thresh",
    "sam_stability_score_thresh",
)


def annotation_config_overrides(
    profile: Any, config: Any, trained: bool = False
) -> tuple[dict[str, Any], list[str]]:
    """RSFIQAConfig fields that make a model use the annotations of a store profile (``AnnotationProfile``):
    ``(overrides, warnings)``.

    The semantic branch is switched on with the store's text-embedding size, distortion dimensions, level
    words and prompt version; the region settings become the store's (so that new images are partitioned as
    the annotated ones were); the provenance (annotator, prompt and partition fingerprints) is recorded.
    A ``trained`` model whose semantic layers were trained for other annotations (another embedding size,
    other dimensions or level words) cannot take them: ``ValueError`` naming each mismatch. Changes of
    annotator, prompt or partition from what a trained model recorded are returned as warnings.
    """
    from .annotation_store_rsfiqa import provenance_mismatches

    errors, warnings = provenance_mismatches(profile, config)
    if trained and getattr(config, "use_region_descriptions", False) and errors:
        raise ValueError(
            "the annotation store does not fit the trained model's semantic layers: " + "; ".join(errors)
        )
    overrides: dict[str, Any] = {
        "use_region_descriptions": True,
        "description_embed_dim": profile.embed_dim,
        "distortion_dimensions": list(profile.dimensions),
        "level_words": list(profile.level_words),
        "prompt_version": profile.prompt_version,
        **profile.provenance(),
    }
    settings = profile.partition_settings or {}
    if settings.get("partition_method") in ("superpixel", "sam"):
        overrides.update({k: settings[k] for k in _STORE_REGION_FIELDS if k in settings})
        if settings.get("sam_input"):
            overrides["sam_longest_edge"] = int(settings["sam_input"][0])
    elif settings:
        warnings.append(
            f"the store's regions ({settings}) cannot be reproduced by the model's own partition "
            f"({config.partition_method}): images scored without the store are partitioned differently"
        )
    overrides["max_regions"] = max(int(overrides.get("max_regions", config.max_regions)), profile.max_regions)
    return overrides, warnings


def annotation_coverage(
    dataset: Any, lookup: Any, image_column: str = "image", progress: bool = True
) -> tuple[list[int], list[int]]:
    """``(found, missing)`` row indices of ``dataset`` by whether the image CONTENT is in ``lookup`` (an
    ``AnnotationLookup``)."""
    from tqdm.auto import tqdm

    column = dataset.select_columns([image_column]) if hasattr(dataset, "select_columns") else dataset
    found, missing = [], []
    for i in tqdm(range(len(dataset)), desc="annotation lookup", disable=not progress):
        key = image_content_hash(load_image_rgb(column[i][image_column]))
        (found if key in lookup else missing).append(i)
    return found, missing


def seeded_split(num_rows: int, percentage: float, seed: int) -> tuple[list[int], list[int]]:
    """(train indices, validation indices): a permutation from ``numpy.random.default_rng(seed)``; the same
    on every rank and every run. ``percentage`` of the rows (rounded, at least 1) go to validation."""
    if not 0.0 < percentage < 100.0:
        raise ValueError(f"validation_split_percentage must be in (0, 100), got {percentage}")
    if num_rows < 2:
        raise ValueError(f"cannot split {num_rows} row(s) into train and validation")
    n_val = min(num_rows - 1, max(1, round(num_rows * percentage / 100.0)))
    perm = np.random.default_rng(seed).permutation(num_rows)
    return sorted(int(i) for i in perm[n_val:]), sorted(int(i) for i in perm[:n_val])


def split_digest(indices: Iterable[int]) -> str:
    return hashlib.sha256(",".join(str(int(i)) for i in indices).encode()).hexdigest()[:16]


def label_statistics(labels: Iterable[float]) -> tuple[float, float]:
    """Mean and (population) standard deviation of the training labels; std 1.0 when they are constant."""
    arr = np.asarray([float(v) for v in labels], dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        raise ValueError("no finite training labels")
    std = float(arr.std())
    return float(arr.mean()), (std if std > 1e-8 else 1.0)


# ----------------------------------------------------------------------------------------------------------
# metrics
# ----------------------------------------------------------------------------------------------------------
def _first(predictions: Any) -> Any:
    while isinstance(predictions, (tuple, list)):
        predictions = predictions[0]
    return predictions


def preprocess_logits_for_metrics(logits: Any, labels: Any) -> torch.Tensor:
    """Keep only the ``score`` output (the first of the tuple the Trainer passes): one float per image is
    gathered across processes instead of attention maps and region scores."""
    return _first(logits)


def compute_metrics(eval_pred: Any) -> dict[str, float]:
    """Trainer ``compute_metrics``: IQA metrics of the predicted ``score`` (first output) against MOS."""
    predictions = np.asarray(_first(eval_pred.predictions), dtype=np.float64).reshape(-1)
    references = np.asarray(_first(eval_pred.label_ids), dtype=np.float64).reshape(-1)
    metrics = compute_iqa_metrics(predictions, references)
    return {k: metrics[k] for k in METRIC_NAMES}


# ----------------------------------------------------------------------------------------------------------
# which parameters train, and how fast
# ----------------------------------------------------------------------------------------------------------
def freeze_backbone(model: nn.Module) -> None:
    """Freeze every backbone weight and keep its batch-norm statistics fixed (``backbone_freeze_bn``)."""
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    model.config.backbone_freeze_bn = True


def freeze_backbone_stages(model: nn.Module, num_stages: int) -> list[str]:
    """Freeze the stem and the first ``num_stages`` feature stages of the backbone (timm ``feature_info``).

    Parameters are frozen in registration order up to the last parameter of stage ``num_stages``; the
    batch-norm layers there get ``momentum=0`` (their ImageNet statistics stay). Returns the frozen names.
    """
    if num_stages <= 0:
        return []
    info = list(model.backbone.feature_info.info)
    names = [n for n, _ in model.backbone.named_parameters()]
    if num_stages >= len(info):
        last = len(names) - 1
    else:
        prefix = info[num_stages - 1]["module"] + "."
        positions = [i for i, n in enumerate(names) if n.startswith(prefix)]
        if not positions:
            raise ValueError(f"backbone stage module {prefix[:-1]!r} has no parameters")
        last = max(positions)
    frozen = set(names[: last + 1])
    for n, p in model.backbone.named_parameters():
        if n in frozen:
            p.requires_grad_(False)
    for mod_name, module in model.backbone.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and any(
            n.startswith(mod_name + ".") for n in frozen
        ):
            module.momentum = 0.0
    return ["backbone." + n for n in names[: last + 1]]


def default_lora_targets(model: nn.Module) -> list[str]:
    """Full names of the backbone layers LoRA can wrap safely: every ``nn.Linear`` and every non-grouped
    ``nn.Conv2d`` that is 1x1 or a plain (statically padded) convolution. Depthwise convolutions and timm's
    dynamically padded ``Conv2dSame`` kxk layers are left alone."""
    targets = []
    for name, module in model.backbone.named_modules():
        if isinstance(module, nn.Linear):
            targets.append(f"backbone.{name}")
        elif isinstance(module, nn.Conv2d) and module.groups == 1:
            if tuple(module.kernel_size) == (1, 1) or type(module) is nn.Conv2d:
                targets.append(f"backbone.{name}")
    return targets


def add_backbone_lora(
    model: nn.Module,
    r: int = 8,
    alpha: int = 16,
    dropout: float = 0.0,
    target_modules: str | Sequence[str] | None = None,
    adapter_name: str = "default",
) -> nn.Module:
    """Inject peft LoRA adapters into the backbone (call after ``post_init``/``from_pretrained``) and set what
    trains: LoRA weights, RSA and head yes; backbone base weights (and SAM) no. ``target_modules``: a regex
    over full module names (peft full match) or a list of names; default :func:`default_lora_targets`."""
    from peft import LoraConfig, inject_adapter_in_model

    targets = target_modules if target_modules else default_lora_targets(model)
    if not targets:
        raise ValueError("no LoRA target layers found in the backbone; pass lora_target_modules")
    if isinstance(targets, str):
        if not any(re.fullmatch(targets, n) for n, _ in model.named_modules()):
            raise ValueError(f"LoRA target regex {targets!r} matches no module of the model")
    else:
        targets = list(targets)
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none")
    inject_adapter_in_model(config, model, adapter_name=adapter_name)
    for name, p in model.named_parameters():
        if "lora_" in name:
            p.requires_grad_(True)
        elif ".base_layer." in name or name.startswith(("backbone.", "segmenter.")):
            p.requires_grad_(False)
        else:
            p.requires_grad_(True)
    model.config.backbone_freeze_bn = True
    return model


def merge_lora(model: nn.Module) -> int:
    """Merge every LoRA adapter into its base layer and put the plain layer back (in place), so the model
    saves and loads as an ordinary RSFIQA model. Returns how many layers were merged."""
    from peft.tuners.lora import LoraLayer

    merged = 0
    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, module.get_base_layer())
            merged += 1
    if hasattr(model, "peft_config"):
        del model.peft_config
    return merged


def parameter_kind(name: str) -> str:
    """``"lora"``, ``"backbone"`` (pretrained feature extractor) or ``"new"`` (RSA, head: trained from scratch)."""
    name = name.removeprefix("module.")
    if "lora_" in name:
        return "lora"
    if name.startswith("backbone."):
        return "backbone"
    return "new"


def build_param_groups(
    model: nn.Module,
    learning_rate: float,
    backbone_learning_rate: float | None = None,
    weight_decay: float = 0.0,
    decay_parameter_names: Iterable[str] | None = None,
) -> list[dict[str, Any]]:
    """Optimizer parameter groups: the backbone at ``backbone_learning_rate`` (default ``learning_rate``),
    LoRA and new layers at ``learning_rate``; each split into weight-decay / no-decay. Frozen parameters are
    left out. Every group carries ``group_name`` (e.g. ``"backbone"``, ``"new_no_decay"``)."""
    decay = set(decay_parameter_names) if decay_parameter_names is not None else None
    lrs = {
        "backbone": learning_rate if backbone_learning_rate is None else backbone_learning_rate,
        "lora": learning_rate,
        "new": learning_rate,
    }
    buckets: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        use_decay = (name in decay) if decay is not None else (p.ndim > 1)
        buckets.setdefault((parameter_kind(name), use_decay), []).append(p)
    groups = []  # new layers first: the Trainer logs the learning rate of group 0
    for kind in ("new", "lora", "backbone"):
        for use_decay in (True, False):
            params = buckets.get((kind, use_decay))
            if params:
                groups.append(
                    {
                        "params": params,
                        "lr": lrs[kind],
                        "weight_decay": weight_decay if use_decay else 0.0,
                        "group_name": kind if use_decay else f"{kind}_no_decay",
                    }
                )
    return groups


def trainable_parameter_summary(model: nn.Module) -> dict[str, dict[str, int]]:
    """``{kind: {"trainable": n, "frozen": n}}`` parameter counts per :func:`parameter_kind`."""
    out: dict[str, dict[str, int]] = {}
    for name, p in model.named_parameters():
        row = out.setdefault(parameter_kind(name), {"trainable": 0, "frozen": 0})
        row["trainable" if p.requires_grad else "frozen"] += p.numel()
    return out


class RSFIQATrainer(Trainer):
    """``Trainer`` with a separate backbone learning rate and the RSFIQA model card.

    Args (besides the Trainer's):
        backbone_learning_rate: learning rate of the (pretrained) backbone; ``args.learning_rate`` is used by
            the new layers (RSA, head) and LoRA weights. None: one learning rate for all.
        model_card_info: facts for :func:`write_model_card` (data, recipe, ...).
    """

    def __init__(
        self,
        *args: Any,
        backbone_learning_rate: float | None = None,
        model_card_info: dict[str, Any] | None = None,
        **kwargs: Any,
    ):
        # transformers 5.23 `Trainer.train` calls `align_special_tokens`, which reads `processor.tokenizer` of any
        # ProcessorMixin: a tokenizer-free processor (ours) crashes it. Such a processor is kept here instead
        # and saved next to every checkpoint / the final model by `_save` (and before hub pushes).
        processor = kwargs.get("processing_class")
        self.rsfiqa_processor = None
        if processor is not None and not hasattr(processor, "tokenizer"):
            self.rsfiqa_processor = kwargs.pop("processing_class")
        super().__init__(*args, **kwargs)
        self.backbone_learning_rate = backbone_learning_rate
        self.model_card_info = dict(model_card_info or {})

    def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        self.broadcast_buffers()
        return super().evaluate(*args, **kwargs)

    @torch.no_grad()
    def broadcast_buffers(self) -> None:
        """Copy rank 0's buffers (batch-norm running statistics) to every process.

        DDP broadcasts buffers at the start of each TRAINING forward, so after the last step every rank holds
        statistics updated with its own last batch; evaluating with them, each process would score its shard
        with a slightly different model than the one saved (rank 0's). Called before every evaluation."""
        import torch.distributed as dist

        if self.args.world_size <= 1 or not (dist.is_available() and dist.is_initialized()):
            return
        for buffer in self.model.buffers():
            if buffer.is_floating_point() or buffer.dtype in (torch.int64, torch.int32):
                dist.broadcast(buffer.data, src=0)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        super()._save(output_dir, state_dict=state_dict)
        if self.rsfiqa_processor is not None and self.args.should_save:
            self.rsfiqa_processor.save_pretrained(
                output_dir if output_dir is not None else self.args.output_dir
            )

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        if self.rsfiqa_processor is not None and self.is_world_process_zero():
            self.rsfiqa_processor.save_pretrained(self.args.output_dir)
        return super()._push_from_checkpoint(checkpoint_folder)

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        opt_model = self.model if model is None else model
        if self.optimizer is None:
            if self.optimizer_cls_and_kwargs is not None:
                optimizer_cls, optimizer_kwargs = self.optimizer_cls_and_kwargs
            else:
                optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            optimizer_kwargs = dict(optimizer_kwargs)
            try:
                from transformers.trainer_optimizer import is_optimizer_factory
            except ImportError:  # older transformers

                def is_optimizer_factory(_cls: Any) -> bool:
                    return False

            special = any(k in optimizer_kwargs for k in ("params", "model", "optimizer_dict"))
            if special or is_optimizer_factory(optimizer_cls):
                if self.backbone_learning_rate is not None:
                    raise ValueError(f"backbone_learning_rate is not supported with optim={self.args.optim}")
                return super().create_optimizer(model)
            groups = build_param_groups(
                opt_model,
                self.args.learning_rate,
                self.backbone_learning_rate,
                self.args.weight_decay,
                self.get_decay_parameter_names(opt_model),
            )
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    def create_model_card(self, **kwargs: Any) -> None:  # also used by Trainer.push_to_hub
        if not self.is_world_process_zero():
            return
        info = {**self.model_card_info}
        if kwargs.get("model_name"):
            info.setdefault("model_name", kwargs["model_name"])
        write_model_card(self.args.output_dir, self.model.config, self.args, **info)


# ----------------------------------------------------------------------------------------------------------
# model card
# ----------------------------------------------------------------------------------------------------------
_METRIC_LABELS = {
    "srcc": "SRCC (Spearman)",
    "plcc": "PLCC (Pearson)",
    "plcc_logistic": "PLCC after 4-parameter logistic fit",
    "krcc": "KRCC (Kendall tau-b)",
    "rmse": "RMSE (after logistic fit, MOS units)",
}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _metrics_table(results: dict[str, dict[str, Any]]) -> str:
    if not results:
        return "_No evaluation was run._\n"
    splits = list(results)
    lines = ["| metric | " + " | ".join(splits) + " |", "| --- |" + " --- |" * len(splits)]
    for name in METRIC_NAMES:
        cells = []
        for split in splits:
            value = results[split].get(f"{split}_{name}", results[split].get(name))
            cells.append(
                "n/a"
                if value is None or (isinstance(value, float) and not math.isfinite(value))
                else f"{value:.4f}"
            )
        lines.append(f"| {_METRIC_LABELS[name]} | " + " | ".join(cells) + " |")
    samples = []
    for split in splits:
        n = results[split].get(f"{split}_samples")
        samples.append(str(n) if n is not None else "?")
    lines.append("| images | " + " | ".join(samples) + " |")
    return "\n".join(lines) + "\n"


def _annotation_usage(config: Any) -> str:
    partition = (getattr(config, "annotation_partition", None) or {}).get("settings") or {}
    return f"""
This model was trained WITH MLLM region annotations (RSFIQA's semantic branch):

- annotator: `{config.annotation_model}`
- prompt: `{config.annotation_prompt}` (prompt version `{config.prompt_version}`)
- regions: `{(config.annotation_partition or {}).get("key")}` ({json.dumps(partition, sort_keys=True)})

Score an image with its annotations by looking it up in an annotation store made by the same annotator
(`rsfiqa annotate --out STORE ...`); the stored regions are used, and each region gets its `description`
and `distortion_levels`:

```python
iqa("photo.jpg", annotation_store="STORE")
```
Without a store the model falls back to its learned "no annotation" embedding (scores differ).
"""


def model_card_text(
    config: Any, args: Any = None, output_dir: str | os.PathLike | None = None, **info: Any
) -> str:
    """README.md of a trained RSFIQA model: metrics table, data, training procedure, intended use, limits."""
    out = Path(output_dir) if output_dir is not None else None
    results: dict[str, dict[str, Any]] = {}
    if out is not None:
        for split in ("eval", "test"):
            metrics = _read_json(out / f"{split}_results.json")
            if metrics:
                results[split] = metrics
    model_name = info.get("model_name") or (
        getattr(args, "hub_model_id", None) or (out.name if out else "rsfiqa")
    )
    dataset = info.get("dataset") or "unspecified"
    base = info.get("model_name_or_path") or "unspecified"
    lw = ", ".join(f"{k}={v:g}" for k, v in (config.loss_weights or {}).items())
    low, high = (float(x) for x in config.score_range)
    tags = ["image-quality-assessment", "no-reference-iqa", "rsfiqa", "custom_code"]
    yaml = ["---", "library_name: transformers", "license: apache-2.0", "tags:"] + [f"- {t}" for t in tags]
    hub_dataset = info.get("hub_dataset")
    if hub_dataset:
        yaml += ["datasets:", f"- {hub_dataset}"]
    yaml += ["metrics:", "- spearmanr", "- pearsonr", "---", ""]

    def arg(name: str, default: Any = None) -> Any:
        return getattr(args, name, default) if args is not None else default

    hyper = [
        ("base model / preset", base),
        ("backbone", f"`{config.backbone_name}` (stages {list(config.backbone_out_indices)})"),
        ("pretrained backbone weights", info.get("pretrained_backbone") or "none (random init)"),
        ("image size", f"{config.image_size[0]}x{config.image_size[1]}"),
        ("regions", f"{config.partition_method}, at most {config.max_regions}"),
        ("learning rate (new layers)", arg("learning_rate")),
        ("learning rate (backbone)", info.get("backbone_learning_rate") or arg("learning_rate")),
        (
            "optimizer / schedule",
            f"{arg('optim')} / {arg('lr_scheduler_type')}, warmup {arg('warmup_steps')}",
        ),
        ("weight decay", arg("weight_decay")),
        (
            "batch size per device x processes x accumulation",
            f"{arg('per_device_train_batch_size')} x {info.get('world_size', 1)} x {arg('gradient_accumulation_steps')}",
        ),
        ("epochs / steps", f"{arg('num_train_epochs')} / {info.get('global_step', arg('max_steps'))}"),
        ("loss (on z-scored labels)", lw),
        (
            "label normalisation",
            f"mean {config.label_mean:.4g}, std {config.label_std:.4g} ({info.get('label_normalization', 'config')})",
        ),
        ("frozen", info.get("frozen") or "nothing"),
        ("LoRA", info.get("lora") or "off"),
        ("augmentation", info.get("augmentation") or "none"),
        (
            "MLLM region annotations",
            info.get("annotations") or "none (the learned 'no description' embedding)",
        ),
        (
            "checkpoint selection",
            f"best {arg('metric_for_best_model')} on the validation split"
            if arg("load_best_model_at_end")
            else "last step",
        ),
        ("seed", arg("seed")),
    ]
    rows = "\n".join(f"| {k} | {v} |" for k, v in hyper if v is not None)
    split_note = info.get("validation_note") or "the validation split"
    sizes = info.get("num_rows") or {}
    size_text = ", ".join(f"{k}: {v} images" for k, v in sizes.items()) or "unknown"
    direction = "higher is better" if config.higher_is_better else "lower is better"
    text = (
        "\n".join(yaml)
        + f"""# {model_name}

An **RSFIQA** no-reference image quality model (region-aware semantic attention, after Song et al.,
arXiv 2508.07818): the image is split into non-overlapping regions, each region gets an importance weight
from the Region-Aware Semantic Attention module, the resulting global attention map re-weights the
backbone features, and an MLP head predicts the quality score. It returns the score, the attention map
and a score per region.

The score is on the scale of the training labels: **{low:g} to {high:g}, {direction}**.

## Usage

```python
from transformers import pipeline
iqa = pipeline("image-quality", model="{getattr(args, "hub_model_id", None) or "path/to/this/folder"}", trust_remote_code=True)
iqa("photo.jpg")  # {{"score": ..., "regions": [...], "attention_map": ...}}
```
With the `rsfiqa` package installed, `import modeling_rsfiqa` registers the pipeline and the Auto classes
and `trust_remote_code` is not needed.
{_annotation_usage(config) if info.get("uses_annotations") else ""}
## Evaluation

Metrics on {split_note} (`eval`){" and on the held-out test split (`test`)" if "test" in results else ""}:

{_metrics_table(results)}
PLCC/RMSE after the VQEG 4-parameter logistic mapping are the usual IQA convention. The best checkpoint was
chosen on the same validation split, so its numbers are optimistic; only a `test` column measures
held-out performance.

## Training data

- dataset: {dataset}
- label column: `{info.get("label_column", "mos")}`; sizes: {size_text}
- validation: {split_note}

## Training procedure

| setting | value |
| --- | --- |
{rows}

Trained with `examples/train.py` of the rsfiqa project (🤗 Trainer{", accelerate" if info.get("world_size", 1) > 1 else ""}).

## Intended use

Ranking and scoring photographs by perceived technical quality (blur, noise, compression, exposure, colour)
on data that resemble the training data, and showing which regions lower the score. Use it as a
measurement aid, for filtering and for research on quality assessment.

## Limitations

- Scores live on the MOS scale of the training data; they are not comparable across datasets without
  re-fitting (e.g. the logistic map above).
- Performance outside the training distribution (other cameras, content, distortion types, synthetic
  images) was not measured here and is usually much lower for IQA models.
- Regions come from {"SAM masks" if config.partition_method == "sam" else "superpixels (an offline stand-in for the paper's SAM masks)"}
  {"and MLLM region descriptions" if info.get("uses_annotations") else "without MLLM region descriptions (the learned 'no description' embedding is used)"}.
- Human opinion scores are noisy; small score differences between two images are not meaningful.
- Not meant for judging people, or for any decision about individuals.

## Licence and citation

Code: Apache-2.0. Check the licence of the training data{" and of the pretrained backbone weights" if info.get("pretrained_backbone") else ""}
before redistributing the model. Method: Song et al., "Segmenting and Understanding: Region-aware Semantic
Attention for Fine-grained Image Quality Assessment with Large Language Models", arXiv 2508.07818.
"""
    )
    return text


def write_model_card(output_dir: str | os.PathLike, config: Any, args: Any = None, **info: Any) -> Path:
    """Write ``output_dir/README.md`` (see :func:`model_card_text`) and return its path."""
    path = Path(output_dir) / "README.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(model_card_text(config, args, output_dir, **info), encoding="utf-8")
    return path
