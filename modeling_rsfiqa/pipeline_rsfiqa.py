"""``pipeline("image-quality")``: image(s) -> score, regions and the RSA attention map."""

from __future__ import annotations

import importlib
import json
import logging
import os
from collections.abc import Sized
from typing import Any

import numpy as np
import torch
from transformers import Pipeline

from .image_io import ImageLoadError, describe_source, image_content_hash, load_image_reduced, load_image_rgb
from .partition import partition_work_shape, region_summaries, resize_label_map
from .runtime import ALLOCATOR_ENV, tune_cpu_allocator

__all__ = ["ImageQualityPipeline"]

logger = logging.getLogger(__name__)

#: a reduced JPEG decode keeps at least this many times the model's input size (see decode_min_side)
DECODE_OVERSAMPLING = 2
#: annotation tensors an image may lack in a mixed batch (zeros = "no annotation" for that image)
_OPTIONAL_KEYS = ("region_text_embeds", "region_distortion_levels", "region_annotation_mask")


def _collate(items: list[dict]) -> dict:
    """Batch preprocessed images: tensors concatenated, per-image metadata in ``_meta`` (a list), and in
    ``_rows`` the positions of the images that loaded (the others carry ``_error`` and get no model row)."""
    metas = [item["_meta"] if "_meta" in item else item for item in items]
    good = [item for item in items if "_meta" in item]
    batch: dict[str, Any] = {}
    keys = [k for k in dict.fromkeys(k for item in good for k in item) if k != "_meta"]
    for key in keys:
        present = [item[key] for item in good if key in item]
        if len(present) != len(good) and key not in _OPTIONAL_KEYS:
            raise ValueError(f"cannot batch images with and without {key!r}")
        batch[key] = torch.cat([item[key] if key in item else torch.zeros_like(present[0]) for item in good])
    batch["_meta"] = metas
    batch["_rows"] = [i for i, item in enumerate(items) if "_meta" in item]
    return batch


class ImageQualityPipeline(Pipeline):
    """No-reference image quality with region-aware semantic attention (RSFIQA).

    Call with a file path, a PIL image, a numpy array, or a list of them. Per image it returns::

        {"score": float,                 # on model.config.score_range, higher_is_better as configured
         "regions": [{"label", "box": [x0, y0, x1, y1], "area", "centroid", "score", "importance"}, ...],
         "attention_map": np.ndarray,     # (h, w) in [0, 1], RSA attention at region-label resolution
         "source": str, "size": (width, height)}

    Keyword arguments: ``skip_errors=True`` returns ``{"score": None, "error": ..., "source": ...}`` for an
    image that cannot be decoded (or is missing from ``annotation_store``) instead of raising (so one bad file
    in a list does not lose the others, with or without ``batch_size``); ``return_region_map=True`` adds the
    full-resolution region label map (built only then: regions are computed at the partition's working size
    and boxes, areas and centroids are reported in full-resolution pixels without it); ``annotations=`` passes
    MLLM region annotations for a single image; ``reduced_decode=False`` decodes every pixel of large JPEG
    files (by default a JPEG at least twice the size the model needs is decoded at 1/2, 1/4 or 1/8 scale, see
    :attr:`decode_min_side`).

    ``batch_size=N`` scores N images per model call: the backbone still runs image by image on CPU
    (``config.inference_batch_pixels``), the region attention and head run over the batch.

    ``annotation_store=STORE`` (a folder made by ``rsfiqa annotate``, or an ``AnnotationStore``) looks each
    image up by CONTENT: its stored label map becomes the partition (so the regions are the annotated ones;
    the partition itself does not run) and each region gains ``description`` and ``distortion_levels``
    ({dimension: expected level on 1..5}); the result has ``"annotated": True``. The store's annotator /
    prompt / partition are checked against what the model was trained with (``config.annotation_*``):
    unusable annotations (other embedding size, dimensions or level words) raise ``ValueError``, other
    differences are logged as warnings. An image missing from the store raises ``MissingAnnotationError``,
    unless ``allow_missing_annotations=True`` (scored without annotations, ``"annotated": False``). With
    ``annotator=`` (a live ``RegionAnnotator``) the store is that annotator's cache instead: looked up under
    its own key, computed and stored on a miss.

    The pipeline changes no process-wide state. Applications that own their process (the ``rsfiqa`` command
    line, its demo and web app) may opt in to raising glibc's malloc thresholds, which keeps activation memory
    between calls instead of page-faulting it in again: ``pipeline("image-quality", tune_allocator=True)``,
    :func:`modeling_rsfiqa.tune_cpu_allocator`, or ``RSFIQA_MALLOC_TUNING=1`` in the environment (see
    :mod:`modeling_rsfiqa.runtime`; ``RSFIQA_MALLOC_TUNING=0`` refuses it everywhere).
    """

    _load_processor = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    def __init__(self, *args: Any, tune_allocator: bool | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._annotation_lookups: dict[str, Any] = {}
        if tune_allocator is None:  # opt in from the environment; never by default (a process-wide change)
            tune_allocator = os.environ.get(ALLOCATOR_ENV) == "1"
        if tune_allocator and self.device.type == "cpu":
            tune_cpu_allocator()

    @property
    def decode_min_side(self) -> int:
        """The smallest side a reduced JPEG decode may have: twice the model's input size (and SAM's input size
        when the model partitions with SAM), so that the final resize still filters a larger image (the
        scores of 12 MP photos then move by about 0.1 MOS points; see tests/test_pipeline.py)."""
        config = self.model.config
        side = max(config.image_size)
        if config.partition_method == "sam":
            side = max(side, int(getattr(config, "sam_longest_edge", 1024)))
        return DECODE_OVERSAMPLING * side

    def get_iterator(
        self, inputs, num_workers: int, batch_size: int, preprocess_params, forward_params, postprocess_params
    ):
        """The base iterator with our own collation: images that failed to load (``skip_errors``) and images
        with and without annotations can share a batch."""
        if batch_size == 1:
            return super().get_iterator(
                inputs, num_workers, batch_size, preprocess_params, forward_params, postprocess_params
            )
        from torch.utils.data import DataLoader
        from transformers.pipelines.pt_utils import PipelineDataset, PipelineIterator

        if isinstance(inputs, Sized):
            dataset = PipelineDataset(inputs, self.preprocess, preprocess_params)
        else:
            num_workers = min(num_workers, 1)
            dataset = PipelineIterator(inputs, self.preprocess, preprocess_params)
        loader = DataLoader(dataset, num_workers=num_workers, batch_size=batch_size, collate_fn=_collate)
        model_iterator = PipelineIterator(loader, self.forward, forward_params, loader_batch_size=batch_size)
        return PipelineIterator(model_iterator, self.postprocess, postprocess_params)

    def get_inference_context(self):
        # no autograd bookkeeping at all (``no_grad`` still tracks versions and views)
        return torch.inference_mode

    def _sanitize_parameters(
        self,
        skip_errors: bool | None = None,
        return_region_map: bool | None = None,
        annotations: dict | None = None,
        annotator: Any = None,
        annotation_store: Any = None,
        allow_missing_annotations: bool | None = None,
        reduced_decode: bool | None = None,
        **kwargs: Any,
    ):
        preprocess, postprocess = {}, {}
        if skip_errors is not None:
            preprocess["skip_errors"] = skip_errors
        if reduced_decode is not None:
            preprocess["reduced_decode"] = reduced_decode
        if annotations is not None:
            preprocess["annotations"] = annotations
        if annotator is not None:
            preprocess["annotator"] = annotator
        if annotation_store is not None:
            preprocess["annotation_store"] = annotation_store
        if allow_missing_annotations is not None:
            preprocess["allow_missing_annotations"] = allow_missing_annotations
        if return_region_map is not None:
            postprocess["return_region_map"] = return_region_map
        return preprocess, {}, postprocess

    def preprocess(
        self,
        image: Any,
        skip_errors: bool = False,
        annotations: dict | None = None,
        annotator: Any = None,
        annotation_store: Any = None,
        allow_missing_annotations: bool = False,
        reduced_decode: bool = True,
    ) -> dict:
        source = describe_source(image)
        # annotations refer to the full-resolution pixels (stores are keyed by their content): decode them all
        reduce = reduced_decode and annotations is None and annotator is None and annotation_store is None
        try:
            if reduce:
                rgb, size = load_image_reduced(image, self.decode_min_side)
            else:
                rgb = load_image_rgb(image)
                size = rgb.size
        except ImageLoadError as err:
            if skip_errors:
                return {"_error": str(err), "_source": source}
            raise
        sam_model = getattr(self.model, "segmenter", None)
        region_labels = None
        if annotator is not None and annotations is None:  # live MLLM; the store is its cache
            if isinstance(annotation_store, (str, os.PathLike)):
                module = importlib.import_module(".annotation_store_rsfiqa", __package__)
                annotation_store = module.AnnotationStore(annotation_store)
            anns, maps = self.processor.annotate([rgb], annotator, annotation_store, sam_model=sam_model)
            annotations, region_labels = anns[0], maps
        elif annotation_store is not None and annotations is None:  # look the image up by content
            lookup = self._annotation_lookup(annotation_store)
            stored = lookup.get(image_content_hash(rgb), refresh=True)
            if stored is not None:  # the stored regions: the partition does not run
                annotations = stored.to_dict()
                region_labels = [stored.label_map]
            elif not allow_missing_annotations:
                err = lookup.missing_error(source)
                if skip_errors:
                    return {"_error": str(err), "_source": source}
                raise err
        elif annotations is not None and annotations.get("label_map") is not None:
            region_labels = [np.asarray(annotations["label_map"])]
        if region_labels is None:  # the partition at its working size: no full-resolution map is built
            work = partition_work_shape(self.processor, rgb.height, rgb.width)
            region_labels = [self.processor.partition(rgb, sam_model=sam_model, output_size=work)]
        inputs = self.processor(
            rgb,
            region_labels=region_labels,
            annotations=[annotations] if annotations is not None else None,
            sam_model=sam_model,
        )
        model_inputs = {k: v for k, v in inputs.items() if k in self.processor.model_input_names}
        model_inputs["_meta"] = {
            "source": source,
            "size": size,
            "region_map": np.asarray(region_labels[0]),
            "annotations": annotations,
            "annotated": None if annotation_store is None and annotator is None else annotations is not None,
        }
        return model_inputs

    def _annotation_lookup(self, store: Any) -> Any:
        """The store's ``AnnotationLookup`` for this model (opened, selected and checked once per store)."""
        module = importlib.import_module(".annotation_store_rsfiqa", __package__)
        if isinstance(store, module.AnnotationLookup):
            return store
        root = os.path.abspath(store.root if isinstance(store, module.AnnotationStore) else os.fspath(store))
        lookup = self._annotation_lookups.get(root)
        if lookup is None:
            config = self.model.config
            lookup = module.AnnotationLookup.for_config(store, config)
            errors, warnings = module.provenance_mismatches(lookup.profile, config)
            if errors:
                raise ValueError(f"annotation store {root!r} does not fit this model: " + "; ".join(errors))
            for text in lookup.mismatches + warnings:
                logger.warning("annotation store %s: %s", root, text)
            if not getattr(config, "use_region_descriptions", False):
                logger.warning(
                    "annotation store %s: this model does not use region descriptions "
                    "(use_region_descriptions=False); the store gives regions and descriptions, not the score",
                    root,
                )
            self._annotation_lookups[root] = lookup
        return lookup

    def _forward(self, model_inputs: dict) -> dict:
        meta = model_inputs.pop("_meta", None)
        if meta is None:  # one image that failed to load
            return model_inputs
        rows = model_inputs.pop("_rows", None)  # batched: the rows of `meta` that have model inputs
        result: dict[str, Any] = {}
        if rows is None or rows:
            outputs = self.model(**model_inputs)
            for name in ("score", "attention_map", "region_scores", "region_importance"):
                value = getattr(outputs, name).float().cpu()
                if rows is not None and len(rows) != len(meta):  # failed images get NaN rows
                    full = value.new_full((len(meta), *value.shape[1:]), float("nan"))
                    full[rows] = value
                    value = full
                result[name] = value
        result["_meta"] = meta
        return result

    def postprocess(self, model_outputs: dict, return_region_map: bool = False) -> dict:
        meta = model_outputs.get("_meta", model_outputs)
        if "_error" in meta:
            return {"score": None, "error": meta["_error"], "source": meta["_source"]}
        width, height = meta["size"]
        region_map = meta["region_map"]
        region_scores = model_outputs["region_scores"][0].numpy()
        importance = model_outputs["region_importance"][0].numpy()
        annotations = meta.get("annotations")
        regions = []
        for summary in region_summaries(region_map, image_size=(height, width)):
            k = summary["label"]
            region = {**summary, "score": float(region_scores[k]), "importance": float(importance[k])}
            if annotations is not None and k < len(annotations.get("descriptions", [])):
                region["description"] = annotations["descriptions"][k]
                region["distortion_levels"] = dict(
                    zip(
                        annotations.get("dimensions", []),
                        np.asarray(annotations["distortion_levels"][k]).tolist(),
                    )
                )
            regions.append(region)
        result = {
            "score": float(model_outputs["score"][0]),
            "regions": regions,
            "attention_map": model_outputs["attention_map"][0].numpy(),
            "source": meta["source"],
            "size": (int(width), int(height)),
        }
        if meta.get("annotated") is not None:
            result["annotated"] = meta["annotated"]
        if return_region_map:
            result["region_map"] = resize_label_map(region_map, (height, width))
        return result

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> None:
        """Save model, config (with the custom pipeline) and the full processor (not only its image part)."""
        super().save_pretrained(save_directory, **kwargs)
        if self.processor is not None:
            self.processor.save_pretrained(save_directory)
        # the registry's default model is a path inside this installation: meaningless elsewhere
        config_path = os.path.join(save_directory, "config.json")
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
        for info in (config.get("custom_pipelines") or {}).values():
            info.pop("default", None)
        with open(config_path, "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2, sort_keys=True)
            f.write("\n")
