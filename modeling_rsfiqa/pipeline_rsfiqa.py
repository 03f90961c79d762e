"""``pipeline("image-quality")``: image(s) -> score, regions and the RSA attention map."""

from __future__ import annotations

import importlib
import json
import logging
import os
from typing import Any

import numpy as np
from transformers import Pipeline

from .image_io import ImageLoadError, describe_source, image_content_hash, load_image_rgb
from .partition import region_summaries
from .runtime import tune_cpu_allocator

__all__ = ["ImageQualityPipeline"]

logger = logging.getLogger(__name__)


class ImageQualityPipeline(Pipeline):
    """No-reference image quality with region-aware semantic attention (RSFIQA).

    Call with a file path, a PIL image, a numpy array, or a list of them. Per image it returns::

        {"score": float,                 # on model.config.score_range, higher_is_better as configured
         "regions": [{"label", "box": [x0, y0, x1, y1], "area", "centroid", "score", "importance"}, ...],
         "attention_map": np.ndarray,     # (h, w) in [0, 1], RSA attention at region-label resolution
         "source": str, "size": (width, height)}

    Keyword arguments: ``skip_errors=True`` returns ``{"score": None, "error": ..., "source": ...}`` for an
    image that cannot be decoded (or is missing from ``annotation_store``) instead of raising (so one bad file
    in a list does not lose the others); ``return_region_map=True`` adds the full-resolution region label map;
    ``annotations=`` passes MLLM region annotations for a single image.

    ``annotation_store=STORE`` (a folder made by ``rsfiqa annotate``, or an ``AnnotationStore``) looks each
    image up by CONTENT: its stored label map becomes the partition (so the regions are the annotated ones)
    and each region gains ``description`` and ``distortion_levels`` ({dimension: expected level on 1..5});
    the result has ``"annotated": True``. The store's annotator / prompt / partition are checked against
    what the model was trained with (``config.annotation_*``): unusable annotations (other embedding size,
    dimensions or level words) raise ``ValueError``, other differences are logged as warnings. An image
    missing from the store raises ``MissingAnnotationError``, unless ``allow_missing_annotations=True``
    (scored without annotations, ``"annotated": False``). With ``annotator=`` (a live ``RegionAnnotator``)
    the store is that annotator's cache instead: looked up under its own key, computed and stored on a miss.

    On CPU, creating the pipeline raises glibc's malloc thresholds for the process so that activation memory
    is reused between calls instead of page-faulted in again (:func:`tune_cpu_allocator`; about 1.5x faster
    at 500 px on 2 threads; ``RSFIQA_MALLOC_TUNING=0`` disables it).
    """

    _load_processor = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._annotation_lookups: dict[str, Any] = {}
        if self.device.type == "cpu":  # keep activation memory between calls (see runtime)
            tune_cpu_allocator()

    def _sanitize_parameters(
        self,
        skip_errors: bool | None = None,
        return_region_map: bool | None = None,
        annotations: dict | None = None,
        annotator: Any = None,
        annotation_store: Any = None,
        allow_missing_annotations: bool | None = None,
        **kwargs: Any,
    ):
        preprocess, postprocess = {}, {}
        if skip_errors is not None:
            preprocess["skip_errors"] = skip_errors
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
    ) -> dict:
        source = describe_source(image)
        try:
            rgb = load_image_rgb(image)
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
            if stored is not None:
                annotations = stored.to_dict()
            elif not allow_missing_annotations:
                err = lookup.missing_error(source)
                if skip_errors:
                    return {"_error": str(err), "_source": source}
                raise err
        elif annotations is not None and annotations.get("label_map") is not None:
            region_labels = [np.asarray(annotations["label_map"])]
        inputs = self.processor(
            rgb,
            region_labels=region_labels,
            annotations=[annotations] if annotations is not None else None,
            sam_model=sam_model,
            return_region_maps=True,
        )
        region_map = inputs.pop("region_maps")[0]
        model_inputs = {k: v for k, v in inputs.items() if k in self.processor.model_input_names}
        model_inputs["_meta"] = {
            "source": source,
            "size": rgb.size,
            "region_map": region_map,
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
        if "_error" in model_inputs:
            return model_inputs
        meta = model_inputs.pop("_meta")
        outputs = self.model(**model_inputs)
        return {
            "score": outputs.score.float().cpu(),
            "attention_map": outputs.attention_map.float().cpu(),
            "region_scores": outputs.region_scores.float().cpu(),
            "region_importance": outputs.region_importance.float().cpu(),
            "_meta": meta,
        }

    def postprocess(self, model_outputs: dict, return_region_map: bool = False) -> dict:
        if "_error" in model_outputs:
            return {"score": None, "error": model_outputs["_error"], "source": model_outputs["_source"]}
        meta = model_outputs["_meta"]
        region_map = meta["region_map"]
        region_scores = model_outputs["region_scores"][0].numpy()
        importance = model_outputs["region_importance"][0].numpy()
        annotations = meta.get("annotations")
        regions = []
        for summary in region_summaries(region_map):
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
            "size": tuple(meta["size"]),
        }
        if meta.get("annotated") is not None:
            result["annotated"] = meta["annotated"]
        if return_region_map:
            result["region_map"] = region_map
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
