"""``pipeline("region-quality")``: an image + regions of interest -> quality, importance and distortions per ROI.

Works with both SEAGULL models: the small ``SeagullForRegionQuality`` (heads) and the generative
``SeagullForConditionalGeneration`` (level-word probabilities for quality and importance, generated answers
to the three reference questions, the distortion answer parsed into per-type severities).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from transformers import Pipeline

from .image_io import ImageLoadError, describe_source, load_image_rgb
from .level_scoring import parse_distortions, severity_value

__all__ = ["RegionQualityPipeline"]

QUESTIONS = ("quality", "importance", "distortion")


class RegionQualityPipeline(Pipeline):
    """Quality of regions of interest (SEAGULL, Chen et al., arXiv 2411.10161).

    Call with an image (path, PIL image or array) and ``regions=[...]`` (boxes ``[x0, y0, x1, y1]``, masks,
    COCO RLE dicts, ``{"points": [[x, y], ...]}`` with ``sam_model=``), or with ``{"image": ..., "regions":
    [...]}`` dicts (a list of them for several images). Returns, per image, a list with one dict per ROI in
    input order::

        {"quality": 0..100 (higher is better), "importance": 0..100 (higher = matters more to the image),
         "distortions": {"blur": s, "colorfulness": s, "compression": s, "contrast": s, "exposure": s,
                         "noise": s},             # severity in [0, 1]; all near 0 = clean
         "box": [x0, y0, x1, y1], "area": fraction of the image,
         "answer": {"quality": text, "importance": text, "distortion": text}}   # generative model only

    ``skip_errors=True``: a bad ROI gives ``{"error": ...}`` (naming the image and the ROI index) in its place,
    the others are still scored; an image that cannot be read gives ``[{"error": ...}]``. Many ROIs of one
    image are scored in one call that encodes the image once. ``max_new_tokens`` bounds generated answers.
    """

    _load_processor = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    def _sanitize_parameters(
        self,
        regions: list | None = None,
        skip_errors: bool | None = None,
        sam_model: Any = None,
        max_new_tokens: int | None = None,
        **kwargs: Any,
    ):
        preprocess: dict[str, Any] = {}
        forward: dict[str, Any] = {}
        if regions is not None:
            preprocess["regions"] = regions
        if skip_errors is not None:
            preprocess["skip_errors"] = skip_errors
        if sam_model is not None:
            preprocess["sam_model"] = sam_model
        if max_new_tokens is not None:
            forward["max_new_tokens"] = max_new_tokens
        return preprocess, forward, {}

    @property
    def generative(self) -> bool:
        return hasattr(self.model, "language_model")

    def preprocess(
        self, inputs: Any, regions: list | None = None, skip_errors: bool = False, sam_model: Any = None
    ) -> dict:
        if isinstance(inputs, dict) and "image" in inputs:
            regions = inputs.get("regions", regions)
            inputs = inputs["image"]
        source = describe_source(inputs)
        if not regions:
            raise ValueError(f"{source}: pass regions=[...] (boxes, masks, RLE dicts or point prompts)")
        try:
            image = load_image_rgb(inputs)
        except ImageLoadError as err:
            if skip_errors:
                return {"_error": str(err), "_n": len(regions)}
            raise
        kwargs = {"questions": list(QUESTIONS)} if self.generative else {}
        batch = self.processor(
            image, list(regions), sam_model=sam_model, skip_errors=skip_errors, image_names=[source], **kwargs
        )
        meta = {
            "n": len(regions),
            "errors": batch["roi_errors"][0],
            "index": list(batch["roi_input_index"]),
            "boxes": batch["roi_boxes"].tolist(),
            "areas": batch["roi_areas"].tolist(),
        }
        model_inputs = {k: batch[k] for k in self.processor.model_input_names if k in batch}
        return {"inputs": model_inputs, "_meta": meta}

    def _forward(self, model_inputs: dict, max_new_tokens: int = 32) -> dict:
        if "_error" in model_inputs:
            return model_inputs
        inputs, meta = model_inputs["inputs"], model_inputs["_meta"]
        if not meta["index"]:  # every ROI was bad
            return {"_meta": meta}
        if not self.generative:
            out = self.model(**inputs)
            return {
                "_meta": meta,
                "quality": out.quality.float().cpu() * 100.0,
                "importance": out.importance.float().cpu() * 100.0,
                "severity": out.severity.float().cpu(),
            }
        n_q = len(QUESTIONS)
        scores = {}
        for qi, q in enumerate(QUESTIONS[:2]):  # level-word probabilities of the quality / importance prompts
            rows = torch.arange(qi, inputs["input_ids"].shape[0], n_q)
            sub = {k: (v[rows] if k in _SEQUENCE_KEYS else v) for k, v in inputs.items()}
            sub = _trim_left_padding(sub)
            scores[q] = self.model.score_regions(sub, self.processor, q)["score"].float().cpu()
        generated = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1)
        texts = self.processor.batch_decode(
            generated[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True
        )
        return {
            "_meta": meta,
            "quality": scores["quality"],
            "importance": scores["importance"],
            "texts": texts,
        }

    def postprocess(self, model_outputs: dict) -> list[dict]:
        if "_error" in model_outputs:
            return [{"error": model_outputs["_error"]} for _ in range(model_outputs["_n"])]
        meta = model_outputs["_meta"]
        results: list[dict] = [{"error": meta["errors"].get(i, "not scored")} for i in range(meta["n"])]
        types = list(self.processor.distortion_types)
        for k, i in enumerate(meta["index"]):
            entry: dict[str, Any] = {
                "quality": float(model_outputs["quality"][k]),
                "importance": float(model_outputs["importance"][k]),
                "box": [int(v) for v in meta["boxes"][k]],
                "area": float(meta["areas"][k]),
            }
            if "severity" in model_outputs:
                entry["distortions"] = {t: float(s) for t, s in zip(types, model_outputs["severity"][k])}
            else:
                texts = model_outputs["texts"][k * len(QUESTIONS) : (k + 1) * len(QUESTIONS)]
                answer = dict(zip(QUESTIONS, (t.strip() for t in texts)))
                found = parse_distortions(answer["distortion"], types, self.processor.severity_words)
                entry["distortions"] = {
                    t: (severity_value(found[t], self.processor.severity_words) if t in found else 0.0)
                    for t in types
                }
                entry["answer"] = answer
            results[i] = entry
        return results

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> None:
        """Save model and the full processor (``Pipeline.save_pretrained`` does not save a ProcessorMixin)."""
        super().save_pretrained(save_directory, **kwargs)
        if self.processor is not None:
            self.processor.save_pretrained(save_directory)


_SEQUENCE_KEYS = ("input_ids", "attention_mask", "sequence_image_index", "sequence_roi_index")


def _trim_left_padding(inputs: dict) -> dict:
    """Drop columns that are padding in every row (a sub-batch of one question needs none)."""
    mask = inputs["attention_mask"]
    keep = int(np.flatnonzero(mask.any(0).cpu().numpy())[0]) if mask.any() else 0
    if keep:
        inputs = dict(inputs)
        inputs["input_ids"] = inputs["input_ids"][:, keep:]
        inputs["attention_mask"] = mask[:, keep:]
    return inputs
