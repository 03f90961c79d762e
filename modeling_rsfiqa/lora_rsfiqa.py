"""Teaching the MLLM the region question: LoRA on its language model only (RSFIQA step 2, "taught").

* :func:`add_region_lora` injects peft LoRA layers (``peft.inject_adapter_in_model``) into the decoder's
  attention and MLP projections, matched by a per-architecture regular expression
  (:data:`LORA_TARGETS`) so the vision tower (Qwen's ``model.visual``), the projector and ``lm_head`` are
  never touched, and freezes every base weight. LoRA ``B`` starts at zero, so the adapter is an exact
  no-op until trained. Call it AFTER ``post_init`` (transformers v5 re-initialises every module not
  flagged as initialised in ``post_init``; DESIGN.md section 6) - e.g. at the end of a composite model's
  ``__init__``: the adapter weights are then ordinary parameters of the composite model and travel with
  its ``save_pretrained`` / ``from_pretrained``. If ``from_pretrained`` loads a checkpoint WITHOUT the
  adapter, v5 initialises the missing LoRA weights itself: call :func:`reset_region_lora` afterwards.
* :func:`save_region_adapter` / :func:`load_region_adapter`: the standalone peft adapter format
  (``adapter_config.json`` + ``adapter_model.safetensors``), also loadable with
  ``peft.PeftModel.from_pretrained(base_model, folder)``.
* :func:`build_region_instruction_examples`: region-level instruction data from clean photos with
  synthetic distortions pasted into regions (type and level known per region, so the target answer is
  known); :class:`RegionInstructionCollator` batches them for ``transformers.Trainer``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageFilter

from .image_io import load_image_rgb
from .level_scoring import answer_segments
from .partition import check_label_map, grid_label_map

if TYPE_CHECKING:  # the annotator imports this module to load adapters; no import back at run time
    from .annotation_rsfiqa import RegionAnnotator

__all__ = [
    "LORA_TARGETS",
    "RegionLoraSettings",
    "language_model_target_regex",
    "add_region_lora",
    "reset_region_lora",
    "region_lora_parameters",
    "region_adapter_state_dict",
    "save_region_adapter",
    "load_region_adapter",
    "DIMENSION_DISTORTIONS",
    "distort_region",
    "build_region_instruction_examples",
    "RegionInstructionCollator",
]

_PROJ = r"(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
# model_type -> regex over module names of the image-text-to-text model (full match, as peft uses it)
LORA_TARGETS: dict[str, str] = {
    "qwen2_vl": rf"model\.language_model\.layers\.\d+\.{_PROJ}",
    "qwen2_5_vl": rf"model\.language_model\.layers\.\d+\.{_PROJ}",
    "qwen3_vl": rf"model\.language_model\.layers\.\d+\.{_PROJ}",
    "llava": rf"model\.language_model\.layers\.\d+\.{_PROJ}",
    "llava_next": rf"model\.language_model\.layers\.\d+\.{_PROJ}",
    "llava_onevision": rf"model\.language_model\.layers\.\d+\.{_PROJ}",
    "idefics3": rf"model\.text_model\.layers\.\d+\.{_PROJ}",
    "smolvlm": rf"model\.text_model\.layers\.\d+\.{_PROJ}",
    "gemma3": rf"model\.language_model\.layers\.\d+\.{_PROJ}",
}
DEFAULT_ADAPTER_NAME = "region"


@dataclass
class RegionLoraSettings:
    """LoRA hyper-parameters. ``target`` None: :func:`language_model_target_regex` of the model."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target: str | None = None
    adapter_name: str = DEFAULT_ADAPTER_NAME

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def language_model_target_regex(model: torch.nn.Module) -> str:
    """The LoRA target regex of ``model``: from :data:`LORA_TARGETS`, else found generically as the
    attention/MLP projections under the first ``*language_model`` / ``*text_model`` module."""
    model_type = getattr(getattr(model, "config", None), "model_type", "")
    if model_type in LORA_TARGETS:
        regex = LORA_TARGETS[model_type]
        if any(re.fullmatch(regex, n) for n, _ in model.named_modules()):
            return regex
    for name, _ in model.named_modules():
        if name.split(".")[-1] in ("language_model", "text_model") and any(
            n.startswith(name + ".layers.") for n, _ in model.named_modules()
        ):
            return rf"{re.escape(name)}\.layers\.\d+\.{_PROJ}"
    raise ValueError(
        f"cannot locate the language model of {type(model).__name__}; pass RegionLoraSettings(target=...)"
    )


def _lora_config(model: torch.nn.Module, settings: RegionLoraSettings) -> Any:
    from peft import LoraConfig

    target = settings.target or language_model_target_regex(model)
    matched = [n for n, _ in model.named_modules() if re.fullmatch(target, n)]
    if not matched:
        raise ValueError(f"LoRA target {target!r} matches no module of {type(model).__name__}")
    return LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=target,
        bias="none",
        base_model_name_or_path=getattr(getattr(model, "config", None), "_name_or_path", None) or None,
    )


def add_region_lora(
    model: torch.nn.Module, settings: RegionLoraSettings | None = None, freeze_base: bool = True
) -> torch.nn.Module:
    """Inject LoRA into the language model of ``model`` in place; freeze everything else. Returns ``model``."""
    from peft import inject_adapter_in_model

    settings = settings or RegionLoraSettings()
    config = _lora_config(model, settings)
    inject_adapter_in_model(config, model, adapter_name=settings.adapter_name)
    if freeze_base:
        for name, p in model.named_parameters():
            p.requires_grad_(f".{settings.adapter_name}." in name and "lora_" in name)
    reset_region_lora(model, settings.adapter_name, only_b=True)
    return model


@torch.no_grad()
def reset_region_lora(
    model: torch.nn.Module, adapter_name: str = DEFAULT_ADAPTER_NAME, only_b: bool = False
) -> None:
    """Re-initialise the adapter as peft does (A: Kaiming uniform, B: zeros): an exact no-op again.
    ``only_b``: only zero B (keeps A's random directions)."""
    for module in model.modules():
        lora_b = getattr(module, "lora_B", None)
        if isinstance(lora_b, torch.nn.ModuleDict) and adapter_name in lora_b:
            if lora_b[adapter_name].weight.is_meta:
                continue
            lora_b[adapter_name].weight.zero_()
            if not only_b:
                torch.nn.init.kaiming_uniform_(module.lora_A[adapter_name].weight, a=5**0.5)


def region_lora_parameters(
    model: torch.nn.Module, adapter_name: str = DEFAULT_ADAPTER_NAME
) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if "lora_" in n and f".{adapter_name}." in n}


def region_adapter_state_dict(
    model: torch.nn.Module, adapter_name: str = DEFAULT_ADAPTER_NAME
) -> dict[str, torch.Tensor]:
    """The adapter weights in peft's saved-adapter format (``base_model.model.<module>.lora_A.weight``)."""
    from peft import get_peft_model_state_dict

    sd = get_peft_model_state_dict(model, adapter_name=adapter_name)
    return {f"base_model.model.{k}": v.detach().cpu().contiguous() for k, v in sd.items()}


def save_region_adapter(
    model: torch.nn.Module, folder: str, adapter_name: str = DEFAULT_ADAPTER_NAME
) -> None:
    """Write a standalone peft adapter (``adapter_config.json`` + ``adapter_model.safetensors``)."""
    from safetensors.torch import save_file

    os.makedirs(folder, exist_ok=True)
    model.peft_config[adapter_name].save_pretrained(folder)
    save_file(
        region_adapter_state_dict(model, adapter_name),
        os.path.join(folder, "adapter_model.safetensors"),
        metadata={"format": "pt"},
    )


def load_region_adapter(
    model: torch.nn.Module, folder: str, adapter_name: str = DEFAULT_ADAPTER_NAME, trainable: bool = False
) -> torch.nn.Module:
    """Inject the adapter saved in ``folder`` into ``model`` (in place) and load its weights exactly."""
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict
    from safetensors.torch import load_file

    config = LoraConfig.from_pretrained(folder)
    inject_adapter_in_model(config, model, adapter_name=adapter_name)
    weights = load_file(os.path.join(folder, "adapter_model.safetensors"))
    weights = {k.removeprefix("base_model.model."): v for k, v in weights.items()}
    result = set_peft_model_state_dict(model, weights, adapter_name=adapter_name)
    missing = [k for k in getattr(result, "missing_keys", []) if "lora_" in k and f".{adapter_name}." in k]
    if missing:
        raise ValueError(f"adapter in {folder} lacks {len(missing)} LoRA weights, e.g. {missing[:2]}")
    for name, p in model.named_parameters():
        p.requires_grad_(trainable and "lora_" in name and f".{adapter_name}." in name)
    return model


# ----------------------------------------------------------------------------------------------------------
# training data: synthetic region distortions with known answers
# ----------------------------------------------------------------------------------------------------------
# dimension -> distortion types of distortions (KADID-10k names) that degrade it
DIMENSION_DISTORTIONS: dict[str, list[str]] = {
    "blur": ["gaussian_blur", "lens_blur", "motion_blur"],
    "noise": ["white_noise", "white_noise_color", "impulse_noise", "multiplicative_noise"],
    "compression artifacts": ["jpeg", "jpeg2000"],
    "color": ["color_saturation_decrease", "color_saturation_increase", "color_shift", "color_quantization"],
    "exposure": ["brighten", "darken"],
}
# distortion level (1 mildest .. 5 strongest; 0 = clean) -> index into level_words (worst=0 .. best=4)
SEVERITY_TO_LEVEL_INDEX = {0: 4, 1: 3, 2: 2, 3: 1, 4: 1, 5: 0}


def _fallback_distort(image: Image.Image, name: str, level: int, seed: int) -> Image.Image:
    """A few simple distortions if ``distortions`` is unavailable."""
    rng = np.random.default_rng(seed)
    if "blur" in name:
        return image.filter(ImageFilter.GaussianBlur([0.5, 1, 2, 3, 5][level - 1]))
    if "noise" in name:
        arr = np.asarray(image, dtype=np.float32) + rng.normal(
            0, [5, 10, 18, 28, 45][level - 1], (image.height, image.width, 3)
        )
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    if "jpeg" in name:
        import io

        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=[43, 36, 24, 7, 2][level - 1])
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    if "saturation" in name or "color" in name:
        return ImageEnhance.Color(image).enhance([0.6, 0.4, 0.2, 0.1, 0.0][level - 1])
    factor = [1.3, 1.6, 2.0, 2.6, 3.4][level - 1]
    return ImageEnhance.Brightness(image).enhance(factor if name == "brighten" else 1 / factor)


def distort_region(image: Image.Image, mask: np.ndarray, name: str, level: int, seed: int) -> Image.Image:
    """``image`` with distortion ``name`` at ``level`` applied inside ``mask`` only."""
    try:
        from .distortions import distort

        out = distort(image, name, level, seed)
    except ImportError:
        out = _fallback_distort(image, name, level, seed)
    out = load_image_rgb(out)
    return Image.fromarray(np.where(mask[..., None], np.asarray(out), np.asarray(image)))


def _position_phrase(mask: np.ndarray) -> str:
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    v = ["top", "middle", "bottom"][min(2, int(3 * ys.mean() / h))]
    u = ["left", "center", "right"][min(2, int(3 * xs.mean() / w))]
    where = (
        "center"
        if (v, u) == ("middle", "center")
        else (u if v == "middle" else v if u == "center" else f"{v}-{u}")
    )
    return f"the {where} part of the photo"


def build_region_instruction_examples(
    images: Sequence[Any],
    annotator: RegionAnnotator,
    n_images: int,
    seed: int = 0,
    grid: tuple[int, int] = (2, 2),
    image_side: int = 224,
    p_clean: float = 0.25,
    supervise_description: bool = False,
    label_maps: Sequence[np.ndarray] | None = None,
) -> list[dict[str, Any]]:
    """Region-level instruction examples with known answers.

    For each of ``n_images`` draws: a clean photo (resized so its long side is ``image_side``), split into
    regions (``grid``, or the given ``label_maps``); each region independently stays clean (prob
    ``p_clean``) or gets one distortion type and level (1..5), pasted into the region only. The target
    answer says ``excellent`` for every clean dimension, the level word of the distortion's level
    (:data:`SEVERITY_TO_LEVEL_INDEX`) for the distorted one, and ``overall`` = the worst of them. The
    description is a positional phrase (the content of the photos is not labelled): it is not supervised
    unless ``supervise_description``. One example per region, in the annotator's exact prompt format.
    """
    cfg = annotator.config
    rng = np.random.default_rng(seed)
    dims = [d for d in cfg.dimensions if d in DIMENSION_DISTORTIONS]
    if not dims:
        raise ValueError(f"none of the dimensions {cfg.dimensions} has synthetic distortions")
    words = cfg.level_words
    examples = []
    for n in range(n_images):
        src = load_image_rgb(images[int(rng.integers(len(images)))])
        scale = image_side / max(src.size)
        img = src.resize(
            (max(28, round(src.width * scale)), max(28, round(src.height * scale))), Image.BICUBIC
        )
        lm = (
            grid_label_map(img.height, img.width, *grid)
            if label_maps is None
            else check_label_map(label_maps[n % len(label_maps)])
        )
        if lm.shape != (img.height, img.width):
            raise ValueError("label map size does not match the resized image")
        targets = []
        for k in range(int(lm.max()) + 1):
            mask = lm == k
            levels = {d: words[4] for d in cfg.dimensions}
            if rng.random() >= p_clean:
                dim = dims[int(rng.integers(len(dims)))]
                name = DIMENSION_DISTORTIONS[dim][int(rng.integers(len(DIMENSION_DISTORTIONS[dim])))]
                severity = int(rng.integers(1, 6))
                img = distort_region(img, mask, name, severity, seed=int(rng.integers(2**31)))
                levels[dim] = words[SEVERITY_TO_LEVEL_INDEX[severity]]
            if "overall" in levels:
                levels["overall"] = words[min(words.index(v) for d, v in levels.items() if d != "overall")]
            targets.append((_position_phrase(mask), [levels[d] for d in cfg.dimensions]))
        prefix, suffixes = annotator.build_inputs(img, lm)
        for k, (desc, lv) in enumerate(targets):
            examples.append(_example(annotator, prefix, suffixes[k], desc, lv, supervise_description))
    return examples


def _example(
    annotator: RegionAnnotator, prefix: Any, suffix: Any, desc: str, levels: list[str], supervise_desc: bool
) -> dict[str, Any]:
    tok = annotator.tokenizer
    ans_ids: list[int] = []
    ans_labels: list[int] = []
    for kind, text in answer_segments(desc, levels, annotator.config.dimensions):
        ids = tok.encode(text, add_special_tokens=False)
        ans_ids += ids
        ans_labels += ids if (kind != "desc" or supervise_desc) else [-100] * len(ids)
    eos = annotator.eos_ids[:1]
    ans_ids += eos
    ans_labels += eos
    prompt = torch.cat([prefix.ids, suffix.ids]).cpu()
    ex = {
        "input_ids": torch.cat([prompt, torch.tensor(ans_ids)]),
        "labels": torch.cat([torch.full_like(prompt, -100), torch.tensor(ans_labels)]),
    }
    for key in prefix.tokens:
        if key != "input_ids":
            ex[key] = torch.cat(
                [
                    prefix.tokens[key],
                    suffix.tokens[key],
                    torch.zeros(len(ans_ids), dtype=prefix.tokens[key].dtype),
                ]
            ).cpu()
    for key in prefix.vision:
        parts = [p.vision[key] for p in (prefix, suffix) if key in p.vision]
        ex[key] = torch.cat(parts).cpu()
    ex["target"] = json.dumps({"description": desc, "levels": levels})
    return ex


class RegionInstructionCollator:
    """Pads token-aligned fields (right, labels with -100) and concatenates vision tensors (Qwen-VL style
    flattened patches + ``image_grid_thw``)."""

    token_keys = ("input_ids", "labels", "mm_token_type_ids", "token_type_ids")

    def __init__(self, pad_token_id: int):
        self.pad_token_id = int(pad_token_id)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        T = max(f["input_ids"].numel() for f in features)
        batch: dict[str, torch.Tensor] = {}
        for key in self.token_keys:
            if key not in features[0]:
                continue
            fill = -100 if key == "labels" else (self.pad_token_id if key == "input_ids" else 0)
            out = torch.full((len(features), T), fill, dtype=features[0][key].dtype)
            for i, f in enumerate(features):
                out[i, : f[key].numel()] = f[key]
            batch[key] = out
        mask = torch.zeros(len(features), T, dtype=torch.long)
        for i, f in enumerate(features):
            mask[i, : f["input_ids"].numel()] = 1
        batch["attention_mask"] = mask
        for key in features[0]:
            if key not in batch and isinstance(features[0][key], torch.Tensor):
                batch[key] = torch.cat([f[key] for f in features])
        return batch
