"""Instruction tuning of SEAGULL (``examples/train_seagull.py``, the generative-model test).

* :func:`synthetic_roi_samples`: images with several ROIs (boxes and blobs), ONE of them distorted inside the
  ROI only with a SEAGULL type (blur, colorfulness, compression, contrast, exposure, noise; several
  implementations each, from ``distortions``) at a known level; the others stay clean. Labels per ROI: the
  type and severity (known from the synthesis), quality and importance as level indices derived from them
  (a stand-in: the SEAGULL-100w labels come from a full-reference metric; the ``seagull-data`` dataset
  builder produces those and can be fed to the same collator).
* :func:`roi_instructions`: per ROI the reference's three questions and their answers (level words, the
  distortion list with severity words).
* :class:`SeagullInstructionCollator`: a batch of images + ROIs + questions + answers -> processor outputs with
  ``labels`` for ``transformers.Trainer`` (each image encoded once for all of its ROIs).
* :func:`distortion_type_accuracy`: greedy answers to the distortion question on held-out ROIs, parsed with
  ``level_scoring.parse_distortions``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import Trainer

from .image_io import load_image_rgb
from .level_scoring import parse_distortions

__all__ = [
    "configure_logging",
    "SEAGULL_TYPE_DISTORTIONS",
    "RoiSample",
    "synthetic_roi_samples",
    "roi_instructions",
    "SeagullInstructionCollator",
    "distortion_type_accuracy",
    "samples_from_rows",
    "SeagullTrainer",
    "seagull_model_card_text",
    "roi_row_labels",
    "SeagullRegionCollator",
    "VisionFeatureCache",
    "predict_roi_rows",
    "seagull_region_model_card_text",
]

#: SEAGULL distortion type -> implementations in ``distortions`` (varied, so no single one is learnt)
SEAGULL_TYPE_DISTORTIONS: dict[str, list[str]] = {
    "blur": ["gaussian_blur", "lens_blur", "motion_blur"],
    "colorfulness": ["color_saturation_decrease", "color_saturation_increase"],
    "compression": ["jpeg", "jpeg2000"],
    "contrast": ["contrast_change"],
    "exposure": ["brighten", "darken"],
    "noise": ["white_noise", "white_noise_color", "impulse_noise"],
}


@dataclass
class RoiSample:
    """One image and its ROIs. Per ROI: ``severities`` ``{type: level 1..5}`` (empty = clean), ``quality`` and
    ``importance`` as level indices (0 = worst / least important .. 4)."""

    image: np.ndarray
    rois: list[Any]
    severities: list[dict[str, int]] = field(default_factory=list)
    quality: list[int] = field(default_factory=list)
    importance: list[int] = field(default_factory=list)


def _random_box(rng: np.random.Generator, h: int, w: int, min_frac: float, max_frac: float) -> list[int]:
    bw = int(w * rng.uniform(min_frac, max_frac))
    bh = int(h * rng.uniform(min_frac, max_frac))
    x0, y0 = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
    return [x0, y0, x0 + bw, y0 + bh]


def _blob(rng: np.random.Generator, box: list[int], h: int, w: int) -> np.ndarray:
    x0, y0, x1, y1 = box
    yy, xx = np.mgrid[:h, :w]
    cy, cx, ry, rx = (y0 + y1) / 2, (x0 + x1) / 2, max(1.0, (y1 - y0) / 2), max(1.0, (x1 - x0) / 2)
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def synthetic_roi_samples(
    photos: Sequence[Any],
    n: int,
    seed: int = 0,
    size: int = 96,
    rois_per_image: int = 2,
    levels: Sequence[int] = (1, 2, 3, 4, 5),
    types: Sequence[str] | None = None,
    roi_fraction: tuple[float, float] = (0.35, 0.6),
) -> list[RoiSample]:
    """``n`` samples: a random ``size x size`` crop of a photo, ``rois_per_image`` non-identical ROIs (boxes or
    ellipse masks), the first ROI distorted inside itself only (type and level drawn uniformly), the rest
    clean. Deterministic for ``seed``."""
    from .distortions import distort
    from .image_io import load_image_rgb

    rng = np.random.default_rng(seed)
    types = list(types or SEAGULL_TYPE_DISTORTIONS)
    pics = [np.asarray(load_image_rgb(p)) for p in photos]
    samples = []
    for _ in range(n):
        pic = pics[int(rng.integers(len(pics)))]
        scale = size / min(pic.shape[:2]) * rng.uniform(1.0, 2.0)
        small = np.asarray(
            Image.fromarray(pic).resize(
                (max(size, round(pic.shape[1] * scale)), max(size, round(pic.shape[0] * scale))),
                Image.BICUBIC,
            )
        )
        y, x = (
            int(rng.integers(0, small.shape[0] - size + 1)),
            int(rng.integers(0, small.shape[1] - size + 1)),
        )
        image = small[y : y + size, x : x + size].copy()
        rois, severities, quality, importance = [], [], [], []
        for k in range(rois_per_image):
            box = _random_box(rng, size, size, *roi_fraction)
            roi = _blob(rng, box, size, size) if rng.random() < 0.5 else box
            mask = roi if isinstance(roi, np.ndarray) else _box_mask(box, size)
            if k == 0:
                t = types[int(rng.integers(len(types)))]
                name = SEAGULL_TYPE_DISTORTIONS[t][int(rng.integers(len(SEAGULL_TYPE_DISTORTIONS[t])))]
                level = int(levels[int(rng.integers(len(levels)))])
                distorted = np.asarray(load_image_rgb(distort(image, name, level, int(rng.integers(2**31)))))
                image = np.where(mask[..., None], distorted, image)
                severities.append({t: level})
                quality.append(max(0, 4 - level))  # level 1 -> good ... level 4, 5 -> bad
                area = float(mask.mean())
                importance.append(int(np.clip(round(level * area * 2.5), 0, 4)))
            else:
                severities.append({})
                quality.append(4)
                importance.append(0)
            rois.append(roi)
        samples.append(RoiSample(image, rois, severities, quality, importance))
    return samples


def _box_mask(box: list[int], size: int) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = True
    return mask


def roi_instructions(sample: RoiSample, processor: Any, questions: Sequence[str]) -> list[str]:
    """The answers to ``questions`` for every ROI of ``sample`` (ROI-major, as the processor orders them)."""
    answers = []
    for r in range(len(sample.rois)):
        for q in questions:
            if q == "distortion":
                answers.append(processor.format_answer("distortion", severities=sample.severities[r]))
            elif q == "quality":
                answers.append(
                    processor.format_answer("quality", processor.quality_level_words[sample.quality[r]])
                )
            elif q == "importance":
                words = processor.importance_level_words
                answers.append(processor.format_answer("importance", words[sample.importance[r]]))
            else:
                raise ValueError(f"no answer for question {q!r}")
    return answers


class SeagullInstructionCollator:
    """``[RoiSample, ...]`` -> a training batch (``labels`` on the answers only); every image is encoded once
    for all of its ROIs and questions."""

    def __init__(self, processor: Any, questions: Sequence[str] = ("quality", "importance", "distortion")):
        self.processor = processor
        self.questions = list(questions)

    def __call__(self, samples: Sequence[RoiSample]) -> dict[str, torch.Tensor]:
        answers = [a for s in samples for a in roi_instructions(s, self.processor, self.questions)]
        batch = self.processor(
            [s.image for s in samples], [s.rois for s in samples], questions=self.questions, answers=answers
        )
        keys = list(self.processor.model_input_names) + ["labels"]
        return {k: batch[k] for k in keys}


@torch.no_grad()
def distortion_type_accuracy(
    model: Any, processor: Any, samples: Sequence[RoiSample], batch_size: int = 8, max_new_tokens: int = 24
) -> dict[str, Any]:
    """Greedy answers to the distortion question for the distorted ROI of each sample; the answer's first
    parsed type vs the true one. Returns ``accuracy``, ``chance`` (1 / number of types), answers and labels."""
    model.eval()
    truth, predicted, texts = [], [], []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        batch = processor([s.image for s in chunk], [s.rois[:1] for s in chunk], questions="distortion")
        inputs = {k: batch[k] for k in processor.model_input_names}
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1)
        decoded = processor.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        for s, text in zip(chunk, decoded):
            parsed = parse_distortions(text, processor.distortion_types, processor.severity_words)
            truth.append(next(iter(s.severities[0])))
            predicted.append(next(iter(parsed), None))
            texts.append(text.strip())
    accuracy = float(np.mean([p == t for p, t in zip(predicted, truth)]))
    return {
        "accuracy": accuracy,
        "chance": 1.0 / len(processor.distortion_types),
        "predicted": predicted,
        "truth": truth,
        "answers": texts,
    }


# ----------------------------------------------------------------------------------------------------------
# datasets in the ``datasets`` format, the Trainer and the model card
# ----------------------------------------------------------------------------------------------------------
def _level_index(value: float, n: int) -> int:
    """A score on 0..100 -> one of ``n`` level indices (0 = lowest)."""
    return int(np.clip(np.floor(float(value) / 100.0 * n), 0, n - 1))


def samples_from_rows(rows: Any, processor: Any) -> list[RoiSample]:
    """Rows of a ``datasets`` dataset -> :class:`RoiSample`. Columns: ``image`` (path / PIL / array), ``regions``
    (list of boxes / masks / RLE dicts), and per ROI ``quality`` and ``importance`` (0..100) and ``distortions``
    (``{type: severity}`` with severity on 0..1 or a level 1..5; empty = clean)."""
    from .image_io import load_image_rgb

    n_sev = len(processor.severity_words)
    samples = []
    for row in rows:
        severities = []
        for d in row["distortions"]:
            levels = {}
            for t, s in (d or {}).items():
                if s is None or float(s) <= 0:
                    continue
                levels[t] = int(s) if float(s) >= 1 else max(1, int(np.ceil(float(s) * n_sev)))
            severities.append(levels)
        samples.append(
            RoiSample(
                np.asarray(load_image_rgb(row["image"])),
                list(row["regions"]),
                severities,
                [_level_index(q, len(processor.quality_level_words)) for q in row["quality"]],
                [_level_index(v, len(processor.importance_level_words)) for v in row["importance"]],
            )
        )
    return samples


class SeagullTrainer(Trainer):
    """``Trainer`` that writes the SEAGULL model card (also before ``push_to_hub``)."""

    def __init__(
        self,
        *args: Any,
        model_card_info: dict[str, Any] | None = None,
        processor: Any = None,
        **kwargs: Any,
    ):
        """``processor``: saved with the model and every checkpoint, for processors WITHOUT a tokenizer (the small
        ROI model's): ``Trainer``'s ``processing_class`` aligns the special tokens of its tokenizer and fails on
        ``None``. Pass a processor with a tokenizer as ``processing_class`` as usual."""
        super().__init__(*args, **kwargs)
        self.model_card_info = dict(model_card_info or {})
        self.region_processor = processor

    def _save(self, output_dir: str | None = None, state_dict: Any = None) -> None:
        super()._save(output_dir, state_dict=state_dict)
        if self.region_processor is not None:
            self.region_processor.save_pretrained(output_dir or self.args.output_dir)

    def create_model_card(self, **kwargs: Any) -> None:
        if not self.is_world_process_zero():
            return
        info = {**self.model_card_info}
        if kwargs.get("model_name"):
            info.setdefault("model_name", kwargs["model_name"])
        path = Path(self.args.output_dir) / "README.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        card = (
            seagull_region_model_card_text
            if getattr(self.model.config, "model_type", "") == "seagull_region"
            else seagull_model_card_text
        )
        path.write_text(card(self.model, self.args, **info), encoding="utf-8")


def configure_logging(logger: logging.Logger, training_args: Any) -> None:
    """The training scripts' logging: records to stdout, ``logger`` at INFO on the logging process only,
    transformers at WARNING."""
    import transformers

    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    logger.setLevel(logging.INFO if training_args.should_log else logging.WARNING)
    transformers.utils.logging.set_verbosity_warning()


def _parameter_counts(model: Any) -> tuple[int, int]:
    """(all, trainable) parameter counts of ``model``."""
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def _card_header(name: str, pipeline_tag: str | None = None) -> list[str]:
    """The YAML front matter and title of a SEAGULL model card (both the generative and the small model)."""
    tag = [f"pipeline_tag: {pipeline_tag}"] if pipeline_tag else []
    return [
        "---",
        "library_name: transformers",
        "license: apache-2.0",
        *tag,
        "tags:",
        "- image-quality-assessment",
        "- region-of-interest",
        "- seagull",
        "- custom_code",
        "---",
        "",
        f"# {name}",
        "",
    ]


def seagull_model_card_text(model: Any, args: Any = None, **info: Any) -> str:
    """README.md of a trained SEAGULL model: what it is, how it was trained, the held-out figures, use, limits."""
    config = model.config
    total, trainable = _parameter_counts(model)
    name = info.get("model_name") or getattr(args, "hub_model_id", None) or "seagull"
    lines = [
        *_card_header(name),
        "SEAGULL (Chen et al., *SEAGULL: No-reference Image Quality Assessment for Regions of Interest via "
        "Vision-Language Instruction Tuning*, arXiv 2411.10161), trained with `examples/train_seagull.py` of "
        "the `rsfiqa` package.",
        "",
        "## Model",
        "",
        f"- vision tower: `{config.vision_backbone}` (frozen), levels {config.vision_out_indices}, "
        f"input {config.image_size}x{config.image_size}",
        f"- Mask-based Feature Extractor: width {config.mfe_hidden_size}, {config.mfe_num_heads} heads",
        f"- LLM: `{getattr(config.text_config, 'model_type', '?')}`, hidden {config.token_size}, "
        f"LoRA r={config.lora_r}, alpha={config.lora_alpha}, dropout={config.lora_dropout} on `{config.lora_target}`",
        f"- parameters: {total:,} ({trainable:,} trained: LoRA, MFE, projector)",
        "",
        "## Training",
        "",
        f"- base: `{info.get('model_name_or_path', 'unspecified')}`; data: {info.get('dataset', 'unspecified')}",
        f"- questions: {', '.join(info.get('questions', []))}",
    ]
    if args is not None:
        lines.append(
            f"- steps {getattr(args, 'max_steps', '?')}, epochs {getattr(args, 'num_train_epochs', '?')}, "
            f"batch {getattr(args, 'per_device_train_batch_size', '?')}, lr {getattr(args, 'learning_rate', '?')}"
        )
    evaluation = info.get("evaluation")
    lines += ["", "## Evaluation (held-out ROIs)", ""]
    if evaluation:
        lines.append(
            f"- distortion type (greedy answer, parsed): accuracy {evaluation['accuracy']:.3f} "
            f"on {evaluation['n']} ROIs (chance {evaluation['chance']:.3f})"
        )
    else:
        lines.append("_No evaluation was run._")
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "import modeling_rsfiqa",
        "from transformers import pipeline",
        'rq = pipeline("region-quality", model="PATH_OR_ID", trust_remote_code=True)',
        'rq("photo.jpg", regions=[[x0, y0, x1, y1]])',
        "```",
        "",
        "## Limitations",
        "",
        "Trained on synthetic distortions pasted into regions unless stated otherwise above; scores of authentic "
        "distortions need SEAGULL-3k-style fine-tuning.",
        "",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------
# the small ROI model (SeagullForRegionQuality): Parquet ROI rows -> batches, predictions, model card
# ----------------------------------------------------------------------------------------------------------
def _rle_region(roi: dict[str, Any]) -> dict[str, Any]:
    rle = roi["rle"]
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"]}


def roi_row_labels(row: dict[str, Any], distortion_types: Sequence[str]) -> np.ndarray:
    """``(n_roi, 2 + n_types)`` targets on [0, 1] of one ROI-dataset row (schema:
    ``datasets_scripts/seagull_synthetic.py``): quality / 100, importance / 100, then the severity of each
    type (0 where the ROI does not have it). An unknown type in a row is a ``ValueError`` naming the sample."""
    types = list(distortion_types)
    labels = np.zeros((len(row["rois"]), 2 + len(types)), dtype=np.float32)
    for i, roi in enumerate(row["rois"]):
        labels[i, 0] = float(roi["quality"]) / 100.0
        labels[i, 1] = float(roi["importance"]) / 100.0
        for name, severity in zip(roi["distortions"] or [], roi["severities"] or []):
            if name not in types:
                raise ValueError(
                    f"sample {row.get('sample_id', '?')}, ROI {i}: distortion type {name!r} is not one of {types}"
                )
            labels[i, 2 + types.index(name)] = float(severity)
    return np.clip(labels, 0.0, 1.0)


class VisionFeatureCache:
    """The frozen vision tower's multi-level features per ROI-dataset row (keyed by ``sample_id``), computed once
    so that training the MFE and heads does not run the tower every epoch. Stored as ``float16`` in memory
    (about 350 kB per image for MobileNetV2 at 256 px)."""

    def __init__(self) -> None:
        self.features: dict[str, list[torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self.features)

    @torch.no_grad()
    def fill(
        self, model: Any, processor: Any, rows: Any, batch_size: int = 16, progress: bool = False
    ) -> None:
        """Encode the images of ``rows`` (not already cached) with ``model.encode_images``."""
        if not getattr(model, "_vision_frozen", False):
            raise ValueError("caching vision features needs a frozen vision tower (config.vision_frozen)")
        model.vision_tower.eval()
        todo = [i for i in range(len(rows)) if str(rows[i]["sample_id"]) not in self.features]
        starts = range(0, len(todo), batch_size)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="vision features")
        for start in starts:
            chunk = [rows[i] for i in todo[start : start + batch_size]]
            images = [load_image_rgb(r["image"]) for r in chunk]
            pixels = processor.image_processor(images, return_tensors="pt")["pixel_values"]
            levels = model.encode_images(pixels)
            for j, row in enumerate(chunk):
                self.features[str(row["sample_id"])] = [f[j].to(torch.float16).clone() for f in levels]

    def batch(self, sample_ids: Sequence[str]) -> list[torch.Tensor]:
        missing = [s for s in sample_ids if s not in self.features]
        if missing:
            raise KeyError(f"no cached vision features for samples {missing[:5]} (call fill() first)")
        n_levels = len(self.features[sample_ids[0]])
        return [torch.stack([self.features[s][k] for s in sample_ids]).float() for k in range(n_levels)]


class SeagullRegionCollator:
    """ROI-dataset rows -> ``SeagullForRegionQuality`` inputs + ``labels``.

    Every ROI of an image is in the same batch (the MFE attends across the ROIs of an image, and the image is
    encoded once for all of them). Rows need ``image`` (PIL / path / array) and ``rois`` (each with ``rle``,
    ``quality``, ``importance``, ``distortions``, ``severities``), as ``roi_synthesis.load_roi_dataset`` gives.
    """

    def __init__(self, processor: Any, feature_cache: VisionFeatureCache | None = None):
        self.processor = processor
        self.distortion_types = list(processor.distortion_types)
        self.feature_cache = feature_cache

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        images = [row["image"] for row in rows]
        regions = [[_rle_region(r) for r in row["rois"]] for row in rows]
        names = [str(row.get("sample_id", i)) for i, row in enumerate(rows)]
        batch = self.processor(images, regions, image_names=names)
        out = {k: batch[k] for k in self.processor.model_input_names}
        if self.feature_cache is not None:  # the frozen tower's features, computed once per image
            out["vision_features"] = self.feature_cache.batch(names)
            del out["pixel_values"]
        out["labels"] = torch.from_numpy(
            np.concatenate([roi_row_labels(r, self.distortion_types) for r in rows])
        )
        return out


@torch.no_grad()
def predict_roi_rows(
    model: Any, processor: Any, rows: Any, batch_size: int = 8, progress: bool = False
) -> list[dict[str, Any]]:
    """Run the small ROI model on ROI-dataset rows; one record per ROI with the labels it is judged against:
    ``sample_id, roi, distortion (None = clean), level (0 = clean), area, quality, importance`` (labels,
    0..100), ``pred_quality, pred_importance`` (0..100) and ``pred_severity`` (list, one per type, 0..1)."""
    model.eval()
    collator = SeagullRegionCollator(processor)
    rows = list(rows)
    starts = range(0, len(rows), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="predict ROIs")
    records: list[dict[str, Any]] = []
    for start in starts:
        chunk = rows[start : start + batch_size]
        batch = collator(chunk)
        batch.pop("labels")
        out = model(**batch)
        k = 0
        for row in chunk:
            for i, roi in enumerate(row["rois"]):
                kinds, levels = list(roi["distortions"] or []), list(roi["levels"] or [])
                records.append(
                    {
                        "sample_id": row.get("sample_id"),
                        "roi": i,
                        "distortion": kinds[0] if kinds else None,
                        "level": int(levels[0]) if levels else 0,
                        "area": float(roi["area"]),
                        "quality": float(roi["quality"]),
                        "importance": float(roi["importance"]),
                        "pred_quality": float(out.quality[k]) * 100.0,
                        "pred_importance": float(out.importance[k]) * 100.0,
                        "pred_severity": [float(v) for v in out.severity[k]],
                        # controlled sweeps (datasets_scripts/seagull_sweeps.py): what the distorted ROI's
                        # series holds fixed; None for other datasets and for clean ROIs
                        "sweep": row.get("sweep") if i == 0 else None,
                        "group": row.get("group") if i == 0 else None,
                    }
                )
                k += 1
    return records


def seagull_region_model_card_text(model: Any, args: Any = None, **info: Any) -> str:
    """README.md of a trained small ROI model (``SeagullForRegionQuality``): model, data, command, the held-out
    figures (``info["evaluation"]``: ``roi_synthesis.roi_property_figures`` of the model, ``info["label_figures"]``
    of the labels), use and limits."""
    config = model.config
    total, trainable = _parameter_counts(model)
    name = info.get("model_name") or getattr(args, "hub_model_id", None) or "seagull-region"
    lines = [
        *_card_header(name, pipeline_tag="image-feature-extraction"),
        "The small region-of-interest quality model of the `rsfiqa` package: the vision tower and Mask-based "
        "Feature Extractor of SEAGULL (Chen et al., *SEAGULL: No-reference Image Quality Assessment for "
        "Regions of Interest via Vision-Language Instruction Tuning*, arXiv 2411.10161) with heads for ROI "
        "quality, importance and per-type severity instead of the LLM. It is the offline default of "
        '`pipeline("region-quality")`.',
        "",
        "## Model",
        "",
        f"- vision tower: `{config.vision_backbone}`{' (frozen)' if config.vision_frozen else ''}, levels "
        f"{config.vision_out_indices}, input {config.image_size}x{config.image_size}; ROI crop "
        f"{config.local_crop_size}x{config.local_crop_size}",
        f"- Mask-based Feature Extractor: width {config.mfe_hidden_size}, {config.mfe_num_heads} heads; "
        f"head hidden size {config.head_hidden_size}",
        f"- outputs per ROI: quality (0..100, higher is better), importance (0..100), severity on [0, 1] of "
        f"{', '.join(config.distortion_types)}",
        f"- parameters: {total:,} ({trainable:,} trained)",
        "",
        "## Training",
        "",
        f"- base: `{info.get('model_name_or_path', 'unspecified')}`; data: {info.get('dataset', 'unspecified')}",
    ]
    if info.get("command"):
        lines += ["- command:", "", "```bash", str(info["command"]), "```", ""]
    if args is not None:
        lines.append(
            f"- steps {getattr(args, 'max_steps', '?')}, epochs {getattr(args, 'num_train_epochs', '?')}, "
            f"batch {getattr(args, 'per_device_train_batch_size', '?')} images (all ROIs of each), "
            f"lr {getattr(args, 'learning_rate', '?')}, seed {getattr(args, 'seed', '?')}"
        )
    lines += ["", "## Evaluation (held-out synthetic ROIs)", ""]
    sweep, sweep_labels = info.get("sweep_evaluation"), info.get("sweep_label_figures") or {}
    if sweep:
        lines += [
            f"Controlled sweeps, {info.get('sweep_dataset', '')}: each series changes ONE factor of one ROI "
            "of one photo (the level, or the area of nested ROIs) and holds the rest fixed "
            f"({sweep['n_severity_rois']} ROIs in severity series, {sweep['n_area_rois']} in area series). "
            "Pair fractions count ties as wrong.",
            "",
            "| property | model | labels | target |",
            "|---|---|---|---|",
        ]
        for text, key, target in (
            ("severity order of ROI quality (same ROI, levels 1-5)", "severity_order", ">= 0.85"),
            ("importance grows with severity (same ROI)", "importance_vs_severity", ">= 0.85"),
            ("importance grows with area (nested ROIs, same level)", "importance_vs_area", ">= 0.85"),
            ("distortion-type top-1 at levels 4-5", "type_top1_strong", ">= 0.7"),
            *((f"severity order, {t}", f"severity_order_{t}", "-") for t in config.distortion_types),
        ):
            if key in sweep:
                lab = sweep_labels.get(key)
                lab_text = f"{lab:.3f}" if isinstance(lab, float) else "-"
                lines.append(f"| {text} | {sweep[key]:.3f} | {lab_text} | {target} |")
        lines.append("")
    evaluation, labels = info.get("evaluation"), info.get("label_figures") or {}
    if evaluation:
        lines += [
            f"Random ROIs, {info.get('eval_dataset', 'validation split')}: {evaluation['n_rois']} ROIs, "
            f"{evaluation['n_distorted_rois']} distorted. Pairs are taken ACROSS photos, ROIs and sizes, so "
            "even the labels do not order all of them; the labels' own fraction (the full-reference metric) "
            "is the ceiling for the quality / importance orderings. Ties count as wrong.",
            "",
            "| property | model | labels | target |",
            "|---|---|---|---|",
        ]
        rows = (
            ("severity order of ROI quality (same type, different levels)", "severity_order", 0.85),
            ("distortion-type top-1 at levels 4-5", "type_top1_strong", 0.7),
            ("importance grows with severity (same type)", "importance_vs_severity", 0.85),
            ("importance grows with area (same type and level)", "importance_vs_area", 0.85),
        )
        for text, key, target in rows:
            lab = labels.get(key)
            lab_text = f"{lab:.3f}" if isinstance(lab, float) else "-"
            lines.append(f"| {text} | {evaluation[key]:.3f} | {lab_text} | >= {target} |")
        lines.append(f"| distortion-type top-1, all levels | {evaluation['type_top1_all']:.3f} | - | - |")
    else:
        lines.append("_No evaluation was run._")
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "import modeling_rsfiqa",
        "from transformers import pipeline",
        'rq = pipeline("region-quality")  # this model, offline',
        'rq("photo.jpg", regions=[[x0, y0, x1, y1], mask, {"size": [h, w], "counts": rle}])',
        "```",
        "",
        "## Limitations",
        "",
        "Trained only on synthetic distortions pasted into regions of clean photos (CBSD68, SUN-Hays80), labelled "
        "by a full-reference metric (HaarPSI); authentic distortions and real ROI annotations (SEAGULL-3k) were "
        "not seen. A small frozen ImageNet backbone at low resolution: fine textures in small ROIs are hard.",
        "",
    ]
    return "\n".join(lines)
