"""RSFIQA processor: images -> ``pixel_values`` + region label maps + region-annotation tensors.

Wraps the backbone image processor, SAM's image processor (for SAM region partition) and the MLLM
prompting of RSFIQA's region-understanding step (the prompt is versioned; the annotation engine in
``annotation_rsfiqa`` applies it with the MLLM's own processor and chat template).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import BatchFeature
from transformers.processing_utils import ProcessorMixin

from .configuration_rsfiqa import DEFAULT_DISTORTION_DIMENSIONS, DEFAULT_LEVEL_WORDS, RSFIQAConfig
from .image_io import load_image_rgb
from .partition import partition_image, resize_label_map

__all__ = ["RSFIQAProcessor", "REGION_SETTINGS"]

#: RSFIQAConfig fields the processor mirrors (saved in processor_config.json).
REGION_SETTINGS = (
    "partition_method",
    "max_regions",
    "min_region_area",
    "superpixel_segments",
    "superpixel_compactness",
    "superpixel_work_size",
    "sam_points_per_side",
    "sam_points_per_batch",
    "sam_pred_iou_thresh",
    "sam_stability_score_thresh",
    "region_label_stride",
    "distortion_dimensions",
    "level_words",
    "prompt_version",
)


class RSFIQAProcessor(ProcessorMixin):
    r"""Prepare images for [`RSFIQAForQualityScoring`].

    Args:
        image_processor: backbone preprocessing ([`RSFIQAImageProcessor`] or its PIL twin).
        sam_image_processor: `SamImageProcessor` used when `partition_method="sam"`.
        partition_method, max_regions, min_region_area, superpixel_segments, superpixel_compactness,
        sam_points_per_side, sam_points_per_batch, sam_pred_iou_thresh, sam_stability_score_thresh,
        region_label_stride: region settings, mirrored from [`RSFIQAConfig`] (see there).
        distortion_dimensions, level_words, prompt_version: the structured region question.
    """

    def __init__(
        self,
        image_processor: Any = None,
        sam_image_processor: Any = None,
        partition_method: str = "superpixel",
        max_regions: int = 16,
        min_region_area: float = 0.005,
        superpixel_segments: int = 24,
        superpixel_compactness: float = 10.0,
        superpixel_work_size: int = 256,
        sam_points_per_side: int = 16,
        sam_points_per_batch: int = 64,
        sam_pred_iou_thresh: float = 0.86,
        sam_stability_score_thresh: float = 0.92,
        region_label_stride: int = 4,
        distortion_dimensions: list[str] | None = None,
        level_words: list[str] | None = None,
        prompt_version: str = "rsfiqa-region-v2",
        **kwargs: Any,
    ):
        self.partition_method = partition_method
        self.max_regions = int(max_regions)
        self.min_region_area = float(min_region_area)
        self.superpixel_segments = int(superpixel_segments)
        self.superpixel_compactness = float(superpixel_compactness)
        self.superpixel_work_size = int(superpixel_work_size)
        self.sam_points_per_side = int(sam_points_per_side)
        self.sam_points_per_batch = int(sam_points_per_batch)
        self.sam_pred_iou_thresh = float(sam_pred_iou_thresh)
        self.sam_stability_score_thresh = float(sam_stability_score_thresh)
        self.region_label_stride = int(region_label_stride)
        self.distortion_dimensions = list(distortion_dimensions or DEFAULT_DISTORTION_DIMENSIONS)
        self.level_words = list(level_words or DEFAULT_LEVEL_WORDS)
        self.prompt_version = prompt_version
        super().__init__(image_processor, sam_image_processor, **kwargs)

    # ------------------------------------------------------------------------------------------------
    @classmethod
    def from_model_config(cls, config: RSFIQAConfig, backend: str = "torchvision") -> RSFIQAProcessor:
        """Build the processor that matches ``config`` (image size, normalisation, region settings)."""
        from transformers import SamImageProcessor

        from .image_processing_rsfiqa import RSFIQAImageProcessor, RSFIQAImageProcessorPil

        ip_cls = RSFIQAImageProcessor if backend == "torchvision" else RSFIQAImageProcessorPil
        image_processor = ip_cls(
            size={"height": config.image_size[0], "width": config.image_size[1]},
            image_mean=list(config.image_mean),
            image_std=list(config.image_std),
        )
        sam_image_processor = SamImageProcessor(size={"longest_edge": config.sam_longest_edge})
        return cls(image_processor, sam_image_processor, **{k: getattr(config, k) for k in REGION_SETTINGS})

    @property
    def label_size(self) -> tuple[int, int]:
        size = self.image_processor.size
        s = self.region_label_stride
        return (-(-int(size["height"]) // s), -(-int(size["width"]) // s))

    @property
    def partition_settings(self) -> dict[str, Any]:
        """The settings that determine a partition (part of the annotation cache key)."""
        keys = ["partition_method", "max_regions", "min_region_area"]
        if self.partition_method == "superpixel":
            keys += ["superpixel_segments", "superpixel_compactness", "superpixel_work_size"]
        else:
            keys += ["sam_points_per_side", "sam_pred_iou_thresh", "sam_stability_score_thresh"]
        return {k: getattr(self, k) for k in keys}

    def partition_key(self, sam_model: Any = None) -> dict[str, Any]:
        """:attr:`partition_settings` plus, for SAM, what else decides the masks: the SAM model's content
        fingerprint (``partition.sam_fingerprint``) and its image processor's input size. The cache key of
        annotation stores (``rsfiqa annotate``, :meth:`annotate`) and of training label-map caches."""
        settings = dict(self.partition_settings)
        if self.partition_method == "sam":
            from .partition import sam_fingerprint

            ip = self.sam_image_processor
            size, pad = getattr(ip, "size", None) or {}, getattr(ip, "pad_size", None) or {}
            settings["sam_input"] = [size.get("longest_edge"), pad.get("height"), pad.get("width")]
            settings["sam_model"] = None if sam_model is None else sam_fingerprint(sam_model)
        return settings

    # ------------------------------------------------------------------------------------------------
    def partition(
        self, image: Any, sam_model: Any = None, output_size: tuple[int, int] | None = None
    ) -> np.ndarray:
        """Non-overlapping region label map of one image (int32, values 0..R-1, R <= max_regions)."""
        # the processor carries the config's region settings under the same names
        return partition_image(load_image_rgb(image), self, sam_model, self.sam_image_processor, output_size)

    def __call__(
        self,
        images: Any = None,
        region_labels: Sequence[np.ndarray] | None = None,
        annotations: Sequence[dict[str, Any] | None] | None = None,
        sam_model: Any = None,
        annotator: Any = None,
        annotation_store: Any = None,
        return_region_maps: bool = False,
        return_tensors: str | None = "pt",
        **kwargs: Any,
    ) -> BatchFeature:
        """Process one image or a list.

        Args:
            images: file paths, PIL images or numpy arrays (grayscale, RGBA, 16-bit and palette images are
                converted; EXIF orientation applied). Bad files raise `ImageLoadError` naming the file.
            region_labels: precomputed label maps (any resolution; resized by nearest neighbour), else
                computed with the configured partition method.
            annotations: per image, the MLLM region annotations (``ImageAnnotations.to_dict()``: arrays
                ``text_embeds (R, D)`` and ``distortion_levels (R, n_dims)`` on the 1..5 scale), or None.
            sam_model: the SAM model used when ``partition_method="sam"``.
            annotator / annotation_store: a ``RegionAnnotator`` (MLLM) and optional ``AnnotationStore``: when
                given (and ``annotations`` is not), each image's regions are annotated, the store being looked
                up first (see :meth:`annotate`); region labels then come from the annotated partition.
            return_region_maps: also return the label maps at each image's original size
                (``region_maps``, a list of int32 arrays) for reports and region boxes.

        Returns:
            `BatchFeature` with ``pixel_values (B, 3, H, W)``, ``region_labels (B, h, w)`` (int64) and, when
            annotations are given, ``region_text_embeds (B, K, D)``, ``region_distortion_levels (B, K, n)``
            (rescaled to [0, 1]) and ``region_annotation_mask (B, K)``.
        """
        if images is None:
            raise ValueError("RSFIQAProcessor needs `images`")
        single = not isinstance(images, (list, tuple))
        images = [images] if single else list(images)
        if not images:
            raise ValueError("`images` is an empty list")
        rgb = [load_image_rgb(im) for im in images]
        if annotator is not None and annotations is None:
            annotations, region_labels = self.annotate(
                rgb, annotator, annotation_store, region_labels, sam_model
            )
        if region_labels is not None and len(region_labels) != len(rgb):
            raise ValueError(f"got {len(region_labels)} region label maps for {len(rgb)} images")
        if annotations is not None and len(annotations) != len(rgb):
            raise ValueError(f"got {len(annotations)} annotations for {len(rgb)} images")

        data = dict(self.image_processor(rgb, return_tensors="pt", **kwargs))
        label_size = self.label_size
        full_maps, small_maps = [], []
        for i, image in enumerate(rgb):
            if region_labels is not None:
                full = np.asarray(region_labels[i])
                if full.ndim != 2:
                    raise ValueError(f"region_labels[{i}] must be 2-D (H, W), got shape {full.shape}")
            else:
                full = self.partition(image, sam_model=sam_model) if return_region_maps else None
            if full is None:
                small = self.partition(image, sam_model=sam_model, output_size=label_size)
            else:
                small = resize_label_map(full.astype(np.int32), label_size)
            if small.max() >= self.max_regions:
                raise ValueError(
                    f"region_labels[{i}] has label {small.max()} >= max_regions={self.max_regions}"
                )
            full_maps.append(full)
            small_maps.append(small)
        data["region_labels"] = torch.from_numpy(np.stack(small_maps).astype(np.int64))
        if annotations is not None:
            data.update(self._annotation_tensors(annotations))
        batch = BatchFeature(data=data, tensor_type=return_tensors)
        if return_region_maps:
            batch["region_maps"] = full_maps
        return batch

    def annotate(
        self,
        images: Sequence[Any],
        annotator: Any,
        store: Any = None,
        region_labels: Sequence[np.ndarray] | None = None,
        sam_model: Any = None,
        method: str = "fast",
    ) -> tuple[list[dict[str, Any]], list[np.ndarray]]:
        """MLLM region annotations (RSFIQA step 2) for each image, looked up in ``store`` before computing.

        The cache key is (image content hash, partition settings or label-map hash, MLLM id + adapter hash,
        prompt version); on a hit neither the partition nor the MLLM runs. Returns the annotation dicts and the
        label maps they refer to (region ``k`` of the annotation is label ``k`` of the map).
        """
        # imported by name, not by a relative import statement: Hub remote-code folders need only the
        # scoring code, while annotation (datasets / parquet) is a feature of the installed package
        store_module = importlib.import_module(".annotation_store_rsfiqa", __package__)
        annotations, maps = [], []
        settings = self.partition_key(sam_model) if region_labels is None else None
        for i, image in enumerate(images):
            given = None if region_labels is None else np.asarray(region_labels[i])
            ann = store_module.cached_annotate(
                image,
                annotator,
                store,
                label_map=given,
                partition_fn=None
                if given is not None
                else (lambda im: self.partition(im, sam_model=sam_model)),
                partition_settings=None if given is not None else settings,
                method=method,
            )
            data = ann.to_dict()
            annotations.append(data)
            maps.append(np.asarray(data["label_map"]) if data.get("label_map") is not None else given)
        return annotations, maps

    def _annotation_tensors(self, annotations: Sequence[dict[str, Any] | None]) -> dict[str, torch.Tensor]:
        """Pad per-image region annotations to ``max_regions`` slots."""
        k, n_dims = self.max_regions, len(self.distortion_dimensions)
        dims = [np.asarray(a["text_embeds"]).shape[-1] for a in annotations if a is not None]
        if not dims:
            return {}
        d = dims[0]
        b = len(annotations)
        text = np.zeros((b, k, d), dtype=np.float32)
        levels = np.zeros((b, k, n_dims), dtype=np.float32)
        mask = np.zeros((b, k), dtype=bool)
        for i, ann in enumerate(annotations):
            if ann is None:
                continue
            t = np.asarray(ann["text_embeds"], dtype=np.float32)
            lv = np.asarray(ann["distortion_levels"], dtype=np.float32)
            if t.ndim != 2 or t.shape[1] != d or lv.shape != (t.shape[0], n_dims) or t.shape[0] > k:
                raise ValueError(
                    f"annotations[{i}]: expected text_embeds (R, {d}) and distortion_levels (R, {n_dims}) "
                    f"with R <= {k}, got {t.shape} and {lv.shape}"
                )
            r = t.shape[0]
            text[i, :r] = t
            levels[i, :r] = (np.clip(lv, 1.0, 5.0) - 1.0) / 4.0  # Q-Align levels 1..5 -> [0, 1]
            mask[i, :r] = np.isfinite(lv).all(-1) & np.isfinite(t).all(-1)
        return {
            "region_text_embeds": torch.from_numpy(text),
            "region_distortion_levels": torch.from_numpy(levels),
            "region_annotation_mask": torch.from_numpy(mask),
        }

    # ------------------------------------------------------------------------------------------------
    @property
    def model_input_names(self) -> list[str]:
        return [
            "pixel_values",
            "region_labels",
            "region_text_embeds",
            "region_distortion_levels",
            "region_annotation_mask",
        ]
