"""Training support for Q-CLIP with the 🤗 Trainer (used by ``examples/train_qclip.py``).

* data: :class:`QCLIPVideoTransform` (``Dataset.set_transform``: decode the sampled frames of each video with
  the processor -> ``pixel_values_videos`` + ``labels``; a video that cannot be read raises
  ``VideoLoadError`` naming it), :class:`QCLIPDataCollator`;
* metrics: :func:`compute_qclip_metrics` (the IQA metrics of ``quality_metrics`` plus the Q-CLIP reference's
  evaluation: z-scored rescale, then SRCC / PLCC / KRCC / RMSE, prefixed ``ref_``);
* :func:`calibrate_scores`: after training, the training set's raw outputs and labels fix the linear map
  ``logits -> score`` stored in the config (the reference's rescale, frozen, so that scores are on the MOS
  scale at inference);
* :class:`QCLIPTrainer`: the Trainer with the Q-CLIP model card (:func:`qclip_model_card_text`), written on
  ``create_model_card`` and before ``push_to_hub`` as the RSFIQA trainer does.

The optimiser sees only the trainable parameters (adapters, prompt context, scales, w): the VLM is frozen by the
model itself. The reference trains with AdamW (lr 1e-3, weight decay 1e-4), warm-up + cosine, 8 epochs, batch 12.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import Trainer

from .quality_metrics import METRIC_NAMES, compute_iqa_metrics, compute_vqa_metrics
from .training_rsfiqa import _first, _metrics_table, _read_json

__all__ = [
    "QCLIPVideoTransform",
    "QCLIPDataCollator",
    "compute_qclip_metrics",
    "calibrate_scores",
    "QCLIPTrainer",
    "qclip_model_card_text",
]

logger = logging.getLogger(__name__)


class QCLIPVideoTransform:
    """``Dataset.set_transform`` function: rows with a video (path / frame folder / frames) -> model inputs.

    Only the sampled frames of each video are decoded (see ``QCLIPVideoProcessor``); ``root`` resolves relative
    paths (e.g. ``file_name`` of an imagefolder-style ``metadata.csv``).
    """

    def __init__(
        self,
        processor: Any,
        video_column: str = "video",
        label_column: str | None = "mos",
        root: str | os.PathLike | None = None,
        frame_sampling: str | None = None,
    ):
        self.processor = processor
        self.video_column = video_column
        self.label_column = label_column
        self.root = Path(root) if root is not None else None
        self.frame_sampling = frame_sampling

    def _resolve(self, video: Any) -> Any:
        if isinstance(video, str) and self.root is not None and not os.path.isabs(video):
            return str(self.root / video)
        return video

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        kwargs = {"frame_sampling": self.frame_sampling} if self.frame_sampling else {}
        pixels = []
        for video in batch[self.video_column]:
            out = self.processor.video_processor(self._resolve(video), **kwargs)
            pixels.append(out["pixel_values_videos"][0])
        result: dict[str, list] = {"pixel_values_videos": pixels}
        if self.label_column is not None and self.label_column in batch:
            result["labels"] = [torch.tensor(float(v), dtype=torch.float32) for v in batch[self.label_column]]
        return result


class QCLIPDataCollator:
    """Stack ``pixel_values_videos`` (videos share ``num_frames``) and ``labels``."""

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = {
            "pixel_values_videos": torch.stack([torch.as_tensor(f["pixel_values_videos"]) for f in features])
        }
        if "labels" in features[0]:
            batch["labels"] = torch.stack(
                [torch.as_tensor(f["labels"], dtype=torch.float32).reshape(()) for f in features]
            )
        return batch


def compute_qclip_metrics(eval_pred: Any) -> dict[str, float]:
    """IQA metrics of the predicted ``score`` (first output) + the reference's evaluation as ``ref_*``."""
    predictions = np.asarray(_first(eval_pred.predictions), dtype=np.float64).reshape(-1)
    references = np.asarray(_first(eval_pred.label_ids), dtype=np.float64).reshape(-1)
    metrics = compute_iqa_metrics(predictions, references)
    out = {k: metrics[k] for k in METRIC_NAMES}
    out.update({f"ref_{k}": v for k, v in compute_vqa_metrics(predictions, references).items()})
    return out


@torch.no_grad()
def calibrate_scores(
    model: Any, dataset: Any, collator: Any, batch_size: int = 8, max_samples: int | None = None
) -> dict:
    """Fit ``config.logit_mean/std`` (the model's raw outputs) and ``label_mean/std`` on ``dataset`` (set-transformed
    rows with ``labels``), so ``score`` lands on the label scale. Returns the four statistics."""
    model.eval()
    n = len(dataset) if max_samples is None else min(len(dataset), max_samples)
    logits, labels = [], []
    device = next(p for p in model.parameters()).device
    for start in range(0, n, batch_size):
        rows = [dataset[i] for i in range(start, min(n, start + batch_size))]
        batch = collator(rows)
        out = model(pixel_values_videos=batch["pixel_values_videos"].to(device))
        logits.append(out.logits.float().cpu())
        labels.append(batch["labels"])
    raw, y = torch.cat(logits).numpy().astype(np.float64), torch.cat(labels).numpy().astype(np.float64)
    stats = {
        "logit_mean": float(raw.mean()),
        "logit_std": float(raw.std()) if raw.std() > 1e-8 else 1.0,
        "label_mean": float(y.mean()),
        "label_std": float(y.std()) if y.std() > 1e-8 else 1.0,
    }
    for key, value in stats.items():
        setattr(model.config, key, value)
    model._text_cache = None
    return stats


class QCLIPTrainer(Trainer):
    """``Trainer`` that writes the Q-CLIP model card (also before ``push_to_hub``)."""

    def __init__(self, *args: Any, model_card_info: dict[str, Any] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.model_card_info = dict(model_card_info or {})

    def create_model_card(self, **kwargs: Any) -> None:
        if not self.is_world_process_zero():
            return
        info = {**self.model_card_info}
        if kwargs.get("model_name"):
            info.setdefault("model_name", kwargs["model_name"])
        path = Path(self.args.output_dir) / "README.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            qclip_model_card_text(self.model.config, self.args, self.args.output_dir, **info),
            encoding="utf-8",
        )


def qclip_model_card_text(
    config: Any, args: Any = None, output_dir: str | os.PathLike | None = None, **info: Any
) -> str:
    """README.md of a trained Q-CLIP model: metrics, architecture and trainable parameters, data, use, limits."""
    out = Path(output_dir) if output_dir is not None else None
    results: dict[str, dict[str, Any]] = {}
    if out is not None:
        for split in ("eval", "test"):
            metrics = _read_json(out / f"{split}_results.json")
            if metrics:
                results[split] = metrics
    name = info.get("model_name") or getattr(args, "hub_model_id", None) or (out.name if out else "qclip")
    low, high = (float(x) for x in config.score_range)
    vlm = config.vlm_config
    vlm_name = getattr(vlm, "vision_model_name", None) or type(vlm).__name__.removesuffix("Config")

    def arg(key: str, default: Any = None) -> Any:
        return getattr(args, key, default) if args is not None else default

    params = info.get("trainable_parameters") or {}
    rows = [
        ("base model / preset", info.get("model_name_or_path") or "unspecified"),
        ("VLM (frozen)", f"{vlm_name} (weights: {info.get('pretrained_vlm') or 'random init'})"),
        ("E-SCMA", f"last {config.adapter_layers} blocks of both towers, core width {config.adapter_dim}"),
        ("P-SCMA", "on" if config.use_projection_adapter else "off"),
        ("prompts", f"{config.num_context_tokens} learnable context vectors + {config.prompts[0]!r} ..."),
        (
            "frames",
            f"{config.num_frames} per video, {config.frame_sampling} sampling, squashed to {config.image_size}",
        ),
        ("trainable parameters", f"{params.get('total_trainable', '?')} ({params})" if params else "?"),
        ("loss", ", ".join(f"{k}={v:g}" for k, v in (config.loss_weights or {}).items())),
        (
            "optimizer / schedule",
            f"{arg('optim')} / {arg('lr_scheduler_type')}, lr {arg('learning_rate')}, warmup {arg('warmup_steps')}",
        ),
        ("weight decay", arg("weight_decay")),
        ("batch size x epochs", f"{arg('per_device_train_batch_size')} x {arg('num_train_epochs')}"),
        (
            "score calibration",
            f"logits (mean {config.logit_mean:.4g}, std {config.logit_std:.4g}) -> labels (mean {config.label_mean:.4g}, std {config.label_std:.4g})",
        ),
        ("seed", arg("seed")),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows if v is not None)
    sizes = ", ".join(f"{k}: {v} videos" for k, v in (info.get("num_rows") or {}).items()) or "unknown"
    hub_id = getattr(args, "hub_model_id", None) or "path/to/this/folder"
    yaml = [
        "---",
        "library_name: transformers",
        "license: apache-2.0",
        "tags:",
        "- video-quality-assessment",
        "- qclip",
        "- custom_code",
    ]
    if info.get("hub_dataset"):
        yaml += ["datasets:", f"- {info['hub_dataset']}"]
    yaml += ["metrics:", "- spearmanr", "- pearsonr", "---", ""]
    metric_note = ""
    if results:
        ref = {s: {k: v for k, v in r.items() if "_ref_" in k} for s, r in results.items()}
        metric_note = (
            "\nThe reference's own evaluation (z-scored rescale, then SRCC/PLCC/KRCC/RMSE): "
            + "; ".join(
                f"{s}: "
                + ", ".join(
                    f"{k.split('_ref_')[1]} {v:.4f}"
                    for k, v in r.items()
                    if isinstance(v, float) and math.isfinite(v)
                )
                for s, r in ref.items()
            )
        )
    return (
        "\n".join(yaml)
        + f"""# {name}

A **Q-CLIP** no-reference video quality model (Mi et al., arXiv 2508.06092): a frozen contrastive
vision-language model, a Shared Cross-Modal Adapter in the last blocks of both towers (E-SCMA) and on the
projections (P-SCMA), and five learnable quality prompts ("X X X a video of {{bad ... excellent}} quality").
Frames are encoded one by one, mean-pooled and compared with the prompts; the cosines weighted by a learned
5-vector give the quality, per video and per frame.

Scores are on the scale of the training labels: **{low:g} to {high:g}, {"higher" if config.higher_is_better else "lower"} is better**.

## Usage

```python
from transformers import pipeline
vq = pipeline("video-quality", model="{hub_id}", trust_remote_code=True)
vq("clip.mp4")  # {{"score": ..., "frame_scores": [...], "frame_times": [...], "source": "clip.mp4"}}
```

## Evaluation

Metrics on {info.get("validation_note") or "the validation split"}:

{_metrics_table(results)}{metric_note}

## Training data

- dataset: {info.get("dataset") or "unspecified"}; sizes: {sizes}

## Training procedure

| setting | value |
| --- | --- |
{table}

Trained with `examples/train_qclip.py` of the rsfiqa project (🤗 Trainer{", accelerate" if info.get("world_size", 1) > 1 else ""}).

## Limitations

- Mean-pooled frame features cannot see temporal artefacts such as stutter or dropped frames.
- Scores are on the training data's MOS scale; other datasets need re-fitting.
- Performance outside the training distribution was not measured here.
"""
    )
