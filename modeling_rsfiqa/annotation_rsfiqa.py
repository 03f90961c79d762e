"""Region understanding: structured MLLM annotations of every region of an image (RSFIQA step 2).

For each region of a partition (an ``int32`` label map ``(H, W)`` with values ``0..R-1``) a multimodal
LLM (any ``AutoModelForImageTextToText`` with a chat template; the Qwen2-VL / Qwen2.5-VL family first)
sees the full image and the region, and answers a fixed, versioned question (:data:`PROMPT_VERSION`):

.. code-block:: text

    description: <a few words on the region's content>
    blur: <excellent|good|fair|poor|bad>
    noise: ...
    ...
    overall: ...

What comes out (:class:`ImageAnnotations`, the contract with the scoring model):

* ``level_probs`` ``(R, n_dims, 5)``: Q-Align style softmax over the logits of the five level words at
  the position where each dimension's level word is due, and ``distortion_levels`` ``(R, n_dims)``:
  the expected level ``sum_i p_i * i`` on the 1..5 scale (bad=1 ... excellent=5), both computed by the
  shared ``level_scoring`` module (as SEAGULL's scores are). They come from one teacher-forced *scoring
  pass* over the canonical answer (the parsed description and level words), so they exist even when the
  free-text answer is malformed: a missing or unreadable level is held by
  the middle word, replaced by the model's own most probable level word and scored once more, and the defect is recorded in ``parse_ok`` / ``parse_errors`` next to the raw text.
* ``text_embeds`` ``(R, D)``: a semantic embedding of each description. Default (``embedding=
  "description"``): the MLLM's own last hidden states, mean-pooled over the description tokens fed
  *alone* (no image). Why: no second model to download, pin and cache-key; it is a pure function of the
  description text (same text -> same vector, across images and regions), so it carries the region's
  semantics while the distortion information travels separately in ``level_probs`` and the backbone.
  ``embedding="grounded"`` instead pools the description tokens' hidden states *in context* (after the
  image and the region) from the scoring pass: richer but mixed with visual features.

How the region is shown (``region_mode``; default ``"crop"``):

* ``"crop"`` (default): the full image comes first (shared prefix), then the region's bounding-box text
  (0-1000 normalised coordinates, the Qwen-VL grounding convention) and the crop of its bounding box with
  pixels outside the region dimmed towards grey. Why: blur, noise and compression artefacts are pixel-level;
  the full image is downsampled to the MLLM's pixel budget, while the crop shows the region at native
  resolution (up to ``region_max_side``). The crop sits in the per-region *suffix*, so the expensive
  prefix (system prompt + full image) is still computed once; the dimmed surround marks non-rectangular
  regions without hiding context.
* ``"box"``: text-only suffix (bounding box only): cheapest, but the MLLM cannot see fine detail.
* ``"overlay"``: the full image with the region highlighted as the suffix image: a full image's worth of
  tokens per region; for comparison.

Speed (:meth:`RegionAnnotator.annotate`, ``method="fast"``): the prefix is run once and its KV cache
(``DynamicCache``) is copied to a batch of regions (``batch_repeat_interleave``); each row then receives
only its suffix (left-padded, with its own crop pixels) and all regions are decoded greedily together,
finished rows being dropped from the batch. Qwen2-VL's multimodal RoPE positions are computed for each
full sequence by the model's own ``get_rope_index`` and sliced, so cached and uncached runs use the same
positions. ``method="naive"`` is the reference: ``model.generate`` on one region at a time. Greedy outputs
are the same token for token (tested). Models whose positions we cannot reproduce fall back to naive.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from .image_io import image_content_hash, load_image_rgb
from .level_scoring import (
    DEFAULT_LEVEL_WORDS,
    DESCRIPTION_KEY,
    ParsedAnswer,
    answer_segments,
    expected_level,
    format_answer,
    level_probs_from_logits,
    level_token_ids,
    parse_answer,
)
from .partition import check_label_map, grid_label_map

logger = logging.getLogger(__name__)

__all__ = [
    "PROMPT_VERSION",
    "DEFAULT_DIMENSIONS",
    "DEFAULT_LEVEL_WORDS",
    "AnnotatorConfig",
    "ImageAnnotations",
    "ParsedAnswer",
    "RegionAnnotator",
    "parse_answer",
    "format_answer",
    "region_question",
    "level_probs_from_logits",
    "expected_level",
    "level_token_ids",
    "check_label_map",
    "grid_label_map",
    "render_region_image",
    "model_fingerprint",
    "label_map_hash",
    "build_random_vlm",
]

PROMPT_VERSION = "rsfiqa-region-v2"  # v2: the question moved into the shared prefix
DEFAULT_DIMENSIONS = ["blur", "noise", "compression artifacts", "color", "exposure", "overall"]
SYSTEM_PROMPT = "You are an expert in image quality assessment."
_SPLIT = "\u241eRSFIQA_SPLIT\u241e"
_TOKEN_ALIGNED = ("input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids")
# 1-D RoPE image-text models whose positions are a plain count: prefix caching is safe for them.
_PLAIN_POSITION_MODELS = {"llava", "llava_next", "llava_onevision", "idefics3", "smolvlm", "mistral3"}


# ----------------------------------------------------------------------------------------------------------
# configuration and output types
# ----------------------------------------------------------------------------------------------------------
@dataclass
class AnnotatorConfig:
    """Everything that changes the annotations (and therefore enters the cache key).

    Args:
        dimensions: distortion dimensions asked per region, in answer order.
        level_words: the five level words, worst to best (level 1..5).
        prompt_version: bump when the question text changes.
        region_mode: ``"crop"`` (default), ``"box"`` or ``"overlay"``; see the module docstring.
        max_new_tokens: generation budget per region (the format needs ~8 tokens per dimension).
        region_max_side / region_min_side: crops are downscaled to at most / upscaled to at least this side.
        crop_margin: bounding-box margin, as a fraction of the box size.
        outside_dim: how strongly pixels outside the region are blended towards grey in the crop (0..1).
        embedding: ``"description"`` (default) or ``"grounded"``.
        max_batch_regions: regions decoded together in the fast path (memory bound).
        system_prompt: system message.
    """

    dimensions: list[str] = field(default_factory=lambda: list(DEFAULT_DIMENSIONS))
    level_words: list[str] = field(default_factory=lambda: list(DEFAULT_LEVEL_WORDS))
    prompt_version: str = PROMPT_VERSION
    region_mode: str = "crop"
    max_new_tokens: int = 64
    region_max_side: int = 448
    region_min_side: int = 56
    crop_margin: float = 0.05
    outside_dim: float = 0.6
    embedding: str = "description"
    max_batch_regions: int = 16
    system_prompt: str = SYSTEM_PROMPT

    def __post_init__(self):
        self.dimensions = [str(d) for d in self.dimensions]
        self.level_words = [str(w) for w in self.level_words]
        if len(self.level_words) != 5 or len(set(self.level_words)) != 5:
            raise ValueError(f"level_words must be 5 distinct words worst to best, got {self.level_words}")
        if not self.dimensions or len(set(self.dimensions)) != len(self.dimensions):
            raise ValueError(f"dimensions must be non-empty and distinct, got {self.dimensions}")
        if self.region_mode not in ("crop", "box", "overlay"):
            raise ValueError(f"region_mode must be 'crop', 'box' or 'overlay', got {self.region_mode!r}")
        if self.embedding not in ("description", "grounded"):
            raise ValueError(f"embedding must be 'description' or 'grounded', got {self.embedding!r}")
        if self.max_new_tokens < 1 or self.max_batch_regions < 1:
            raise ValueError("max_new_tokens and max_batch_regions must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AnnotatorConfig:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    @classmethod
    def from_json_file(cls, path: str) -> AnnotatorConfig:
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))

    @classmethod
    def from_rsfiqa_config(cls, config: Any, **overrides: Any) -> AnnotatorConfig:
        """Dimensions, level words and prompt version from an ``RSFIQAConfig``."""
        data = {
            "dimensions": list(getattr(config, "distortion_dimensions", DEFAULT_DIMENSIONS)),
            "level_words": list(getattr(config, "level_words", DEFAULT_LEVEL_WORDS)),
            "prompt_version": getattr(config, "prompt_version", PROMPT_VERSION),
        }
        data.update(overrides)
        return cls(**data)

    def fingerprint(self) -> str:
        """Hash of every setting that changes the output, plus the question text itself."""
        payload = self.to_dict()
        payload.pop("max_batch_regions")  # speed only: outputs are identical
        payload["question"] = region_question(self.dimensions, self.level_words)
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
        return f"{self.prompt_version}:{digest}"


@dataclass
class ImageAnnotations:
    """Annotations of one image's R regions (the contract with the scoring model's processor).

    Arrays: ``text_embeds`` float32 ``(R, D)``, ``distortion_levels`` float32 ``(R, n_dims)`` on 1..5,
    ``level_probs`` float32 ``(R, n_dims, 5)`` (columns in ``level_words`` order, worst to best).
    Lists (length R): ``descriptions``, ``raw_texts``, ``parse_ok``, ``parsed_levels`` (word or None per
    dimension), ``parse_errors``. ``label_map`` (int32 ``(H, W)``) is the partition annotated, if known.
    """

    text_embeds: np.ndarray
    distortion_levels: np.ndarray
    level_probs: np.ndarray
    descriptions: list[str]
    raw_texts: list[str]
    parse_ok: list[bool]
    parsed_levels: list[list[str | None]] = field(default_factory=list)
    parse_errors: list[list[str]] = field(default_factory=list)
    dimensions: list[str] = field(default_factory=lambda: list(DEFAULT_DIMENSIONS))
    level_words: list[str] = field(default_factory=lambda: list(DEFAULT_LEVEL_WORDS))
    label_map: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.text_embeds = np.asarray(self.text_embeds, dtype=np.float32)
        self.distortion_levels = np.asarray(self.distortion_levels, dtype=np.float32)
        self.level_probs = np.asarray(self.level_probs, dtype=np.float32)
        if self.label_map is not None:
            self.label_map = np.asarray(self.label_map, dtype=np.int32)
        r = len(self.descriptions)
        if self.text_embeds.ndim != 2 or self.text_embeds.shape[0] != r:
            raise ValueError(f"text_embeds must be (R={r}, D), got {self.text_embeds.shape}")
        n_dims = len(self.dimensions)
        if self.distortion_levels.shape != (r, n_dims):
            raise ValueError(f"distortion_levels must be ({r}, {n_dims}), got {self.distortion_levels.shape}")
        if self.level_probs.shape != (r, n_dims, 5):
            raise ValueError(f"level_probs must be ({r}, {n_dims}, 5), got {self.level_probs.shape}")
        if len(self.raw_texts) != r or len(self.parse_ok) != r:
            raise ValueError("raw_texts and parse_ok need one entry per region")
        self.parse_ok = [bool(x) for x in self.parse_ok]
        if not self.parsed_levels:
            self.parsed_levels = [[None] * n_dims for _ in range(r)]
        if not self.parse_errors:
            self.parse_errors = [[] for _ in range(r)]

    @property
    def num_regions(self) -> int:
        return len(self.descriptions)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict: numpy arrays for the arrays, python lists for the rest."""
        return {
            "text_embeds": self.text_embeds,
            "distortion_levels": self.distortion_levels,
            "level_probs": self.level_probs,
            "descriptions": list(self.descriptions),
            "raw_texts": list(self.raw_texts),
            "parse_ok": list(self.parse_ok),
            "parsed_levels": [list(x) for x in self.parsed_levels],
            "parse_errors": [list(x) for x in self.parse_errors],
            "dimensions": list(self.dimensions),
            "level_words": list(self.level_words),
            "label_map": self.label_map,
            "meta": dict(self.meta),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageAnnotations:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def equals(self, other: ImageAnnotations, atol: float = 0.0) -> bool:
        """Same texts and (within ``atol``) same numbers."""
        if (self.descriptions, self.raw_texts, self.parse_ok, self.parsed_levels) != (
            other.descriptions,
            other.raw_texts,
            other.parse_ok,
            other.parsed_levels,
        ):
            return False
        pairs = [
            (self.text_embeds, other.text_embeds),
            (self.level_probs, other.level_probs),
            (self.distortion_levels, other.distortion_levels),
        ]
        return all(a.shape == b.shape and np.allclose(a, b, atol=atol, rtol=0) for a, b in pairs)


# ----------------------------------------------------------------------------------------------------------
# prompt, answer format, parser
# ----------------------------------------------------------------------------------------------------------
def region_question(dimensions: Sequence[str], level_words: Sequence[str]) -> str:
    """The fixed question asked for every region (part of :data:`PROMPT_VERSION`)."""
    words = ", ".join(reversed(list(level_words)))
    fmt = "\n".join([f"{DESCRIPTION_KEY}: <a few words>"] + [f"{d}: <one word>" for d in dimensions])
    return (
        "Describe the content of this region in a few words, then rate each quality aspect of the region "
        f"with exactly one word from: {words}.\nAnswer in exactly this format:\n{fmt}"
    )


def region_intro(index: int, box1000: Sequence[int], mode: str) -> str:
    x0, y0, x1, y1 = box1000
    text = f"Region {index + 1}, bounding box [{x0}, {y0}, {x1}, {y1}] (0-1000 scale)"
    if mode == "crop":
        return text + ", shown here with its surroundings dimmed:"
    if mode == "overlay":
        return text + ", highlighted in this copy of the image:"
    return text + "."


# ----------------------------------------------------------------------------------------------------------
# regions
# ----------------------------------------------------------------------------------------------------------
def label_map_hash(label_map: np.ndarray) -> str:
    arr = np.ascontiguousarray(label_map, dtype=np.int32)
    return hashlib.sha256(f"{arr.shape}".encode() + arr.tobytes()).hexdigest()


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows = np.flatnonzero(mask.any(1))
    cols = np.flatnonzero(mask.any(0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def render_region_image(image: Image.Image, mask: np.ndarray, config: AnnotatorConfig) -> Image.Image | None:
    """The region's picture for the suffix (``None`` in ``"box"`` mode)."""
    if config.region_mode == "box":
        return None
    arr = np.asarray(image, dtype=np.float32)
    a = float(np.clip(config.outside_dim, 0.0, 1.0))
    dimmed = np.where(mask[..., None], arr, arr * (1 - a) + 128.0 * a)
    if config.region_mode == "overlay":
        out = Image.fromarray(dimmed.round().astype(np.uint8))
        draw = ImageDraw.Draw(out)
        x0, y0, x1, y1 = _bbox(mask)
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=(255, 0, 0), width=max(1, min(image.size) // 100))
        return _fit(out, config)
    h, w = mask.shape
    x0, y0, x1, y1 = _bbox(mask)
    mx = int(round((x1 - x0) * config.crop_margin))
    my = int(round((y1 - y0) * config.crop_margin))
    x0, y0, x1, y1 = max(0, x0 - mx), max(0, y0 - my), min(w, x1 + mx), min(h, y1 + my)
    crop = Image.fromarray(dimmed[y0:y1, x0:x1].round().astype(np.uint8))
    return _fit(crop, config)


def _fit(img: Image.Image, config: AnnotatorConfig, max_aspect: float = 8.0) -> Image.Image:
    w, h = img.size
    if max(w, h) / max(1, min(w, h)) > max_aspect:  # thin strips: pad with grey to a sane aspect ratio
        nw, nh = (w, int(np.ceil(w / max_aspect))) if w > h else (int(np.ceil(h / max_aspect)), h)
        canvas = Image.new("RGB", (max(w, nw), max(h, nh)), (128, 128, 128))
        canvas.paste(img, ((canvas.width - w) // 2, (canvas.height - h) // 2))
        img, (w, h) = canvas, canvas.size
    scale = 1.0
    if max(w, h) > config.region_max_side:
        scale = config.region_max_side / max(w, h)
    elif min(w, h) < config.region_min_side:
        scale = config.region_min_side / min(w, h)
    if scale != 1.0:
        img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BICUBIC)
    return img


def _box1000(mask: np.ndarray) -> list[int]:
    h, w = mask.shape
    x0, y0, x1, y1 = _bbox(mask)
    return [round(1000 * x0 / w), round(1000 * y0 / h), round(1000 * x1 / w), round(1000 * y1 / h)]


# ----------------------------------------------------------------------------------------------------------
# fingerprints
# ----------------------------------------------------------------------------------------------------------
def model_fingerprint(
    model: torch.nn.Module, model_id: str | None = None, hash_weights: bool | None = None
) -> str:
    """``"<model id>@<digest>"``: the digest covers the config, every LoRA/adapter weight and, for models
    without a hub/local id (random test models), all weights."""
    name = model_id or getattr(getattr(model, "config", None), "_name_or_path", "") or "unnamed"
    h = hashlib.sha256(name.encode())
    cfg = getattr(model, "config", None)
    if cfg is not None:
        d = cfg.to_dict()
        d.pop("_name_or_path", None)
        d.pop("transformers_version", None)
        h.update(json.dumps(d, sort_keys=True, default=str).encode())
    if hash_weights is None:
        hash_weights = name == "unnamed"
    if os.path.isdir(name):  # a local folder: its weight files' names and sizes (cheap, catches re-saves)
        for fname in sorted(os.listdir(name)):
            if fname.endswith((".safetensors", ".bin")):
                h.update(f"{fname}:{os.path.getsize(os.path.join(name, fname))}".encode())
    for pname, p in sorted(model.state_dict().items()):
        if hash_weights or "lora_" in pname or "adapter" in pname:
            h.update(pname.encode())
            h.update(p.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return f"{name}@{h.hexdigest()[:16]}"


# ----------------------------------------------------------------------------------------------------------
# the engine
# ----------------------------------------------------------------------------------------------------------
@dataclass
class _Piece:
    """A tokenised prompt part: token-aligned tensors (1-D) plus its vision tensors."""

    tokens: dict[str, torch.Tensor]
    vision: dict[str, torch.Tensor]

    @property
    def ids(self) -> torch.Tensor:
        return self.tokens["input_ids"]

    def __len__(self) -> int:
        return int(self.ids.numel())


def _cat_vision(pieces: Sequence[_Piece]) -> dict[str, torch.Tensor]:
    keys: list[str] = []
    for p in pieces:
        keys += [k for k in p.vision if k not in keys]
    return {k: torch.cat([p.vision[k] for p in pieces if k in p.vision], 0) for k in keys}


class RegionAnnotator:
    """Annotate every region of an image with an image-text-to-text model.

    Args:
        model: an ``AutoModelForImageTextToText`` model (eval mode is set here).
        processor: its ``AutoProcessor`` (must have a chat template).
        config: :class:`AnnotatorConfig` (defaults if omitted).
        model_id: name used in the cache key (default: ``model.config._name_or_path``).
    """

    def __init__(
        self, model: Any, processor: Any, config: AnnotatorConfig | None = None, model_id: str | None = None
    ):
        self.model = model.eval()
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.config = config or AnnotatorConfig()
        self.model_id = model_id
        self.level_ids = level_token_ids(self.tokenizer, self.config.level_words)
        pad = self.tokenizer.pad_token_id
        eos = getattr(model.generation_config, "eos_token_id", None)
        if eos is None:
            eos = self.tokenizer.eos_token_id
        self.eos_ids = sorted(
            {int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]) if e is not None}
        )
        self.pad_id = int(pad if pad is not None else (self.eos_ids[0] if self.eos_ids else 0))
        self._fingerprint: str | None = None
        self.device = next(model.parameters()).device
        self.calls = {"annotate": 0, "prefix_forward": 0, "generate": 0}

    # -- identity -------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        path: str,
        adapter: str | None = None,
        config: AnnotatorConfig | None = None,
        dtype: Any = None,
        **kw,
    ) -> RegionAnnotator:
        """Load model + processor from a local folder (optionally a standalone LoRA adapter folder)."""
        from transformers import AutoModelForImageTextToText, AutoProcessor

        model = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype or "auto", **kw)
        processor = AutoProcessor.from_pretrained(path)
        if adapter:
            from .lora_rsfiqa import load_region_adapter

            load_region_adapter(model, adapter)
        return cls(model, processor, config=config, model_id=path)

    @property
    def model_fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.model, self.model_id)
        return self._fingerprint

    def refresh_fingerprint(self) -> None:
        """Call after changing the weights (e.g. training the LoRA)."""
        self._fingerprint = None

    # -- prompt ---------------------------------------------------------------------------------------------
    def prompt_texts(
        self, region_index: int, box1000: Sequence[int], has_region_image: bool
    ) -> tuple[str, str]:
        """(prefix, suffix) chat-template text; the prefix is identical for all regions of an image."""
        cfg = self.config
        # Everything that is the same for every region (system prompt, full image, the question) comes
        # before the split and is computed once; a region's suffix is only its intro (+ crop).
        user: list[dict[str, Any]] = [
            {"type": "image"},
            {
                "type": "text",
                "text": "This is the full image. One region of it follows.\n"
                + region_question(cfg.dimensions, cfg.level_words)
                + _SPLIT
                + "\n"
                + region_intro(region_index, box1000, cfg.region_mode),
            },
        ]
        if has_region_image:
            user.append({"type": "image"})
        messages = [
            {"role": "system", "content": [{"type": "text", "text": cfg.system_prompt}]},
            {"role": "user", "content": user},
        ]
        text = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        if text.count(_SPLIT) != 1:
            raise ValueError("the chat template dropped or repeated the prefix/suffix marker")
        prefix, suffix = text.split(_SPLIT)
        return prefix, suffix

    def _encode(self, text: str, images: list[Image.Image] | None) -> _Piece:
        kwargs: dict[str, Any] = {"text": [text], "return_tensors": "pt", "add_special_tokens": False}
        if images:
            kwargs["images"] = images
        enc = self.processor(**kwargs)
        tokens = {
            k: v[0].to(self.device) for k, v in enc.items() if k in _TOKEN_ALIGNED and k != "attention_mask"
        }
        vision = {
            k: v.to(self.device)
            for k, v in enc.items()
            if k not in _TOKEN_ALIGNED and isinstance(v, torch.Tensor)
        }
        if "pixel_values" in vision and vision["pixel_values"].is_floating_point():
            vision["pixel_values"] = vision["pixel_values"].to(self.model.dtype)
        return _Piece(tokens, vision)

    def _encode_tokens(self, text: str) -> torch.Tensor:
        return torch.tensor(
            self.tokenizer.encode(text, add_special_tokens=False), dtype=torch.long, device=self.device
        )

    def build_inputs(self, image: Image.Image, label_map: np.ndarray) -> tuple[_Piece, list[_Piece]]:
        """Tokenised shared prefix and one suffix per region."""
        label_map = check_label_map(label_map, size=(image.height, image.width))
        prefix_piece: _Piece | None = None
        suffixes = []
        for k in range(int(label_map.max()) + 1):
            mask = label_map == k
            region_img = render_region_image(image, mask, self.config)
            prefix, suffix = self.prompt_texts(k, _box1000(mask), region_img is not None)
            if prefix_piece is None:
                prefix_piece = self._encode(prefix, [image])
            suffixes.append(self._encode(suffix, [region_img] if region_img is not None else None))
        assert prefix_piece is not None
        return prefix_piece, suffixes

    # -- positions ------------------------------------------------------------------------------------------
    def _rope_owner(self) -> Any:
        for cand in (self.model, getattr(self.model, "model", None)):
            if cand is not None and hasattr(cand, "get_rope_index"):
                return cand
        return None

    def _batch_buffers(self, batch: int, length: int, prefix_len: int, n_pos: int):
        """Pad-filled ids, an attention mask covering the shared prefix, and position ids for a suffix batch;
        callers fill each row (left-padded for generation, right-padded for the scoring pass)."""
        ids = torch.full((batch, length), self.pad_id, dtype=torch.long, device=self.device)
        amask = torch.zeros(batch, prefix_len + length, dtype=torch.long, device=self.device)
        amask[:, :prefix_len] = 1
        pos = torch.ones(n_pos, batch, length, dtype=torch.long, device=self.device)
        return ids, amask, pos

    def supports_prefix_cache(self) -> bool:
        if self._rope_owner() is not None:
            return True
        return getattr(self.model.config, "model_type", "") in _PLAIN_POSITION_MODELS

    def _positions(self, pieces: Sequence[_Piece]) -> torch.Tensor:
        """Positions ``(n, L)`` of the concatenated pieces (n=3 for multimodal RoPE, 1 otherwise)."""
        ids = torch.cat([p.ids for p in pieces])
        owner = self._rope_owner()
        if owner is None:
            return torch.arange(ids.numel(), device=ids.device)[None]
        kwargs: dict[str, Any] = {"input_ids": ids[None]}
        if all("mm_token_type_ids" in p.tokens for p in pieces):
            kwargs["mm_token_type_ids"] = torch.cat([p.tokens["mm_token_type_ids"] for p in pieces])[None]
        vision = _cat_vision(pieces)
        for key in ("image_grid_thw", "video_grid_thw"):
            if key in vision:
                kwargs[key] = vision[key]
        pos, _ = owner.get_rope_index(**kwargs)
        return pos[:, 0]

    @staticmethod
    def _pos_arg(pos: torch.Tensor) -> torch.Tensor:
        """(n, B, L) -> what the model takes: (3, B, L) for mRoPE, (B, L) otherwise."""
        return pos if pos.shape[0] > 1 else pos[0]

    # -- generation -----------------------------------------------------------------------------------------
    def _generation_kwargs(self) -> dict[str, Any]:
        return {
            "max_new_tokens": self.config.max_new_tokens,
            "do_sample": False,
            "num_beams": 1,
            "repetition_penalty": 1.0,
            "no_repeat_ngram_size": 0,
            "eos_token_id": self.eos_ids or None,
            "pad_token_id": self.pad_id,
        }

    @torch.no_grad()
    def _generate_naive(self, prefix: _Piece, suffixes: Sequence[_Piece]) -> list[list[int]]:
        out = []
        for suffix in suffixes:
            tokens = {k: torch.cat([prefix.tokens[k], suffix.tokens[k]])[None] for k in prefix.tokens}
            inputs = dict(
                tokens, attention_mask=torch.ones_like(tokens["input_ids"]), **_cat_vision([prefix, suffix])
            )
            self.calls["generate"] += 1
            seq = self.model.generate(**inputs, **self._generation_kwargs())
            gen = seq[0, tokens["input_ids"].shape[1] :].tolist()
            out.append(self._trim(gen))
        return out

    def _trim(self, gen: list[int]) -> list[int]:
        for i, t in enumerate(gen):
            if t in self.eos_ids:
                return gen[: i + 1]
        return gen

    def _prefix_cache(self, prefix: _Piece, prefix_pos: torch.Tensor) -> Any:
        self.calls["prefix_forward"] += 1
        out = self.model(
            input_ids=prefix.ids[None],
            attention_mask=torch.ones(1, len(prefix), dtype=torch.long, device=self.device),
            position_ids=self._pos_arg(prefix_pos[:, None, :]),
            use_cache=True,
            logits_to_keep=1,
            **prefix.vision,
        )
        return out.past_key_values

    def _expand(self, cache: Any, batch: int) -> Any:
        new = copy.deepcopy(cache)
        if batch > 1:
            new.batch_repeat_interleave(batch)
        return new

    @torch.no_grad()
    def _generate_fast(
        self, prefix: _Piece, suffixes: Sequence[_Piece], full_pos: list[torch.Tensor], cache: Any
    ) -> list[list[int]]:
        P = len(prefix)
        results: list[list[int]] = [[] for _ in suffixes]
        step = self.config.max_batch_regions
        for start in range(0, len(suffixes), step):
            rows = list(range(start, min(start + step, len(suffixes))))
            B = len(rows)
            S = max(len(suffixes[k]) for k in rows)
            ids, amask, pos = self._batch_buffers(B, S, P, full_pos[0].shape[0])
            for b, k in enumerate(rows):
                L = len(suffixes[k])
                ids[b, S - L :] = suffixes[k].ids
                amask[b, P + S - L :] = 1
                pos[:, b, S - L :] = full_pos[k][:, P:]
            next_pos = pos[:, :, -1:] + 1
            kv = self._expand(cache, B)
            out = self.model(
                input_ids=ids,
                attention_mask=amask,
                position_ids=self._pos_arg(pos),
                past_key_values=kv,
                use_cache=True,
                logits_to_keep=1,
                **_cat_vision([suffixes[k] for k in rows]),
            )
            active = list(rows)
            for t in range(self.config.max_new_tokens):
                tok = out.logits[:, -1].argmax(-1)
                keep = []
                for b, k in enumerate(active):
                    tid = int(tok[b])
                    results[k].append(tid)
                    if tid not in self.eos_ids:
                        keep.append(b)
                if not keep or t == self.config.max_new_tokens - 1:
                    break
                if len(keep) < len(active):
                    idx = torch.tensor(keep, dtype=torch.long, device=self.device)
                    kv.batch_select_indices(idx)
                    amask, next_pos, tok = amask[idx], next_pos[:, idx], tok[idx]
                    active = [active[b] for b in keep]
                amask = torch.cat(
                    [amask, torch.ones(len(active), 1, dtype=torch.long, device=self.device)], 1
                )
                out = self.model(
                    input_ids=tok[:, None],
                    attention_mask=amask,
                    position_ids=self._pos_arg(next_pos),
                    past_key_values=kv,
                    use_cache=True,
                )
                next_pos = next_pos + 1
        return results

    # -- scoring pass ---------------------------------------------------------------------------------------
    def _answer_tokens(
        self, description: str, levels: Sequence[str]
    ) -> tuple[torch.Tensor, list[int], list[int]]:
        """Canonical answer ids, the index of each level token, and the description token indices."""
        ids: list[int] = []
        level_idx: list[int] = []
        desc_idx: list[int] = []
        for kind, text in answer_segments(description, levels, self.config.dimensions):
            toks = self.tokenizer.encode(text, add_special_tokens=False)
            if kind == "level":
                level_idx.append(len(ids))
            if kind == "desc":
                desc_idx.extend(range(len(ids), len(ids) + len(toks)))
            ids.extend(toks)
        return torch.tensor(ids, dtype=torch.long, device=self.device), level_idx, desc_idx

    @torch.no_grad()
    def _score(
        self,
        prefix: _Piece,
        suffixes: Sequence[_Piece],
        answers: Sequence[tuple[torch.Tensor, list[int], list[int]]],
        full_pos: list[torch.Tensor] | None,
        cache: Any,
        rows: Sequence[int],
    ) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
        """Teacher-forced pass over suffix + canonical answer. Returns per row: level probs and grounded
        embedding. ``cache=None`` runs the naive way (whole sequence, one region at a time)."""
        probs: dict[int, np.ndarray] = {}
        embeds: dict[int, np.ndarray] = {}
        want_h = self.config.embedding == "grounded"
        if cache is None:
            for k in rows:
                ans, lvl, desc = answers[k]
                base = len(prefix) + len(suffixes[k])
                ids = torch.cat([prefix.ids, suffixes[k].ids, ans])[None]
                tokens = {"input_ids": ids}
                for key in prefix.tokens:
                    if key != "input_ids":
                        tokens[key] = torch.cat(
                            [prefix.tokens[key], suffixes[k].tokens[key], torch.zeros_like(ans)]
                        )[None]
                keep = torch.tensor([base + i - 1 for i in lvl], dtype=torch.long, device=self.device)
                out = self.model(
                    **tokens,
                    attention_mask=torch.ones_like(ids),
                    logits_to_keep=keep,
                    output_hidden_states=want_h,
                    **_cat_vision([prefix, suffixes[k]]),
                )
                probs[k] = level_probs_from_logits(out.logits[0].cpu(), self.level_ids)
                if want_h:
                    embeds[k] = self._pool(out.hidden_states[-1][0], [base + i for i in desc])
            return probs, embeds
        P = len(prefix)
        step = self.config.max_batch_regions
        for start in range(0, len(rows), step):
            chunk = list(rows[start : start + step])
            B = len(chunk)
            lens = [len(suffixes[k]) + len(answers[k][0]) for k in chunk]
            T = max(lens)
            ids, amask, pos = self._batch_buffers(B, T, P, full_pos[0].shape[0])
            for b, k in enumerate(chunk):
                S, A = len(suffixes[k]), len(answers[k][0])
                ids[b, :S] = suffixes[k].ids
                ids[b, S : S + A] = answers[k][0]
                amask[b, P : P + S + A] = 1
                pos[:, b, :S] = full_pos[k][:, P:]
                pos[:, b, S : S + A] = full_pos[k][:, -1:] + 1 + torch.arange(A, device=self.device)
            wanted = sorted({len(suffixes[k]) + i - 1 for k in chunk for i in answers[k][1]})
            out = self.model(
                input_ids=ids,
                attention_mask=amask,
                position_ids=self._pos_arg(pos),
                past_key_values=self._expand(cache, B),
                use_cache=True,
                logits_to_keep=torch.tensor(wanted, dtype=torch.long, device=self.device),
                output_hidden_states=want_h,
                **_cat_vision([suffixes[k] for k in chunk]),
            )
            where = {p: i for i, p in enumerate(wanted)}
            for b, k in enumerate(chunk):
                S = len(suffixes[k])
                sel = [where[S + i - 1] for i in answers[k][1]]
                probs[k] = level_probs_from_logits(out.logits[b, sel].cpu(), self.level_ids)
                if want_h:
                    embeds[k] = self._pool(out.hidden_states[-1][b], [S + i for i in answers[k][2]])
        return probs, embeds

    @staticmethod
    def _pool(hidden: torch.Tensor, idx: list[int]) -> np.ndarray:
        if not idx:
            return np.zeros(hidden.shape[-1], dtype=np.float32)
        return hidden[idx].float().mean(0).cpu().numpy()

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str], batched: bool = True) -> np.ndarray:
        """Mean-pooled last hidden states of the MLLM over each text alone: ``(N, D)`` float32."""
        encoded = [
            self._encode_tokens(" " + t.strip())
            if t.strip()
            else torch.zeros(0, dtype=torch.long, device=self.device)
            for t in texts
        ]
        dim = self.model.get_input_embeddings().embedding_dim
        out = np.zeros((len(texts), dim), dtype=np.float32)
        todo = [i for i, e in enumerate(encoded) if e.numel() > 0]
        groups = [
            todo[i : i + self.config.max_batch_regions]
            for i in range(0, len(todo), self.config.max_batch_regions)
        ]
        if not batched:
            groups = [[i] for i in todo]
        n_pos = 3 if self._rope_owner() is not None else 1
        for group in groups:
            T = max(encoded[i].numel() for i in group)
            ids = torch.full((len(group), T), self.pad_id, dtype=torch.long, device=self.device)
            amask = torch.zeros(len(group), T, dtype=torch.long, device=self.device)
            for b, i in enumerate(group):
                ids[b, : encoded[i].numel()] = encoded[i]
                amask[b, : encoded[i].numel()] = 1
            pos = torch.arange(T, device=self.device).expand(n_pos, len(group), T)
            res = self.model(
                input_ids=ids,
                attention_mask=amask,
                position_ids=self._pos_arg(pos),
                output_hidden_states=True,
                logits_to_keep=1,
            )
            h = res.hidden_states[-1].float()
            m = amask[..., None].float()
            out[group] = ((h * m).sum(1) / m.sum(1)).cpu().numpy()
        return out

    # -- public entry ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def annotate(self, image: Any, label_map: np.ndarray, method: str = "fast") -> ImageAnnotations:
        """Annotate every region of ``image`` (path / PIL / array) given its label map.

        ``method="fast"``: shared-prefix KV cache + batched greedy decoding; ``"naive"``: ``generate`` per
        region. Both return the same annotations (up to float round-off in the numbers).
        """
        if method not in ("fast", "naive"):
            raise ValueError(f"method must be 'fast' or 'naive', got {method!r}")
        self.calls["annotate"] += 1
        image = load_image_rgb(image)
        label_map = check_label_map(label_map, size=(image.height, image.width))
        prefix, suffixes = self.build_inputs(image, label_map)
        fast = method == "fast" and self.supports_prefix_cache()
        if method == "fast" and not fast:
            logger.warning(
                "prefix caching is not supported for %s; annotating one region at a time",
                type(self.model).__name__,
            )
        full_pos = cache = None
        if fast:
            full_pos = [self._positions([prefix, s]) for s in suffixes]
            cache = self._prefix_cache(prefix, full_pos[0][:, : len(prefix)])
            generated = self._generate_fast(prefix, suffixes, full_pos, cache)
        else:
            generated = self._generate_naive(prefix, suffixes)
        raw = [self.tokenizer.decode(g, skip_special_tokens=True) for g in generated]
        parsed = [parse_answer(t, self.config.dimensions, self.config.level_words) for t in raw]
        descriptions = [p.description for p in parsed]
        levels = [list(p.levels) for p in parsed]
        R = len(suffixes)
        # teacher-forced scoring pass; a missing level is first held by the middle word, then replaced by
        # the model's own most probable level word and the region is scored once more (one refinement)
        fill = [[w if w is not None else self.config.level_words[2] for w in lv] for lv in levels]
        probs: dict[int, np.ndarray] = {}
        grounded: dict[int, np.ndarray] = {}
        todo = list(range(R))
        for scoring_pass in range(2):
            answers = {k: self._answer_tokens(descriptions[k], fill[k]) for k in todo}
            p, g = self._score(prefix, suffixes, [answers.get(k) for k in range(R)], full_pos, cache, todo)
            probs.update(p)
            grounded.update(g)
            if scoring_pass == 1:  # no pass follows: keep the words the probabilities were conditioned on
                break
            changed = set()
            for k in todo:
                for j, w in enumerate(levels[k]):
                    best = self.config.level_words[int(np.argmax(probs[k][j]))]
                    if w is None and fill[k][j] != best:
                        fill[k][j] = best
                        changed.add(k)
            todo = sorted(changed)
            if not todo:
                break
        level_probs = np.stack([probs[k] for k in range(R)]).astype(np.float32)
        if self.config.embedding == "grounded":
            embeds = np.stack([grounded[k] for k in range(R)])
        else:
            texts = [d if d else raw[k] for k, d in enumerate(descriptions)]
            embeds = self.embed_texts(texts, batched=fast)
        return ImageAnnotations(
            text_embeds=embeds,
            distortion_levels=expected_level(level_probs),
            level_probs=level_probs,
            descriptions=descriptions,
            raw_texts=raw,
            parse_ok=[p.ok for p in parsed],
            parsed_levels=levels,
            parse_errors=[p.errors for p in parsed],
            dimensions=list(self.config.dimensions),
            level_words=list(self.config.level_words),
            label_map=label_map,
            meta={
                "model": self.model_fingerprint,
                "prompt": self.config.fingerprint(),
                "image_hash": image_content_hash(image),
                "filled_levels": [[w for w, o in zip(f, lv) if o is None] for f, lv in zip(fill, levels)],
                "generated_tokens": [len(g) for g in generated],
            },
        )


# ----------------------------------------------------------------------------------------------------------
# random VLM for tests and benchmarks (no download)
# ----------------------------------------------------------------------------------------------------------
_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _tiny_corpus(dimensions: Sequence[str], level_words: Sequence[str]) -> list[str]:
    lines = [
        region_question(dimensions, level_words),
        SYSTEM_PROMPT,
        "This is the full image.",
        region_intro(0, [0, 0, 1000, 1000], "crop"),
    ]
    things = [
        "sky",
        "tree",
        "grass",
        "person",
        "face",
        "car",
        "road",
        "building",
        "water",
        "flower",
        "wall",
        "window",
    ]
    for i, thing in enumerate(things):
        levels = [level_words[(i + j) % 5] for j in range(len(dimensions))]
        lines.append(
            format_answer(
                f"a {thing} in the {['top', 'bottom', 'left', 'right'][i % 4]} part", levels, dimensions
            )
        )
    lines.append("0123456789 [ ] ( ) , . : region image part area of the with and blurry noisy dark bright")
    return lines * 3


def build_random_vlm(
    size: str = "tiny",
    seed: int = 0,
    dimensions: Sequence[str] = DEFAULT_DIMENSIONS,
    level_words: Sequence[str] = DEFAULT_LEVEL_WORDS,
) -> tuple[Any, Any]:
    """A randomly initialised Qwen2-VL with an in-code byte-level BPE tokenizer and processor.

    ``size="tiny"`` (tests, ~0.3M parameters) or ``"mid"`` (benchmark, ~25M parameters). Nothing is
    downloaded. Returns ``(model, processor)``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        PreTrainedTokenizerFast,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLProcessor,
    )
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_tiny_corpus(dimensions, level_words), trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=_SPECIAL_TOKENS[1:],
    )
    tokenizer.chat_template = _CHAT_TEMPLATE
    spec = {
        "tiny": dict(
            hidden=64,
            inter=128,
            layers=2,
            heads=4,
            kv=2,
            v_depth=2,
            v_dim=32,
            v_heads=4,
            max_pixels=112 * 112,
        ),
        "mid": dict(
            hidden=384,
            inter=1024,
            layers=6,
            heads=6,
            kv=2,
            v_depth=4,
            v_dim=192,
            v_heads=6,
            max_pixels=336 * 336,
        ),
    }[size]
    image_processor = Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=spec["max_pixels"])
    processor = Qwen2VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(),
        chat_template=_CHAT_TEMPLATE,
    )
    tid = tokenizer.convert_tokens_to_ids
    head_dim = spec["hidden"] // spec["heads"]
    half = head_dim // 2
    section = [half - 2 * (half // 3), half // 3, half // 3]
    config = Qwen2VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=spec["hidden"],
            intermediate_size=spec["inter"],
            num_hidden_layers=spec["layers"],
            num_attention_heads=spec["heads"],
            num_key_value_heads=spec["kv"],
            rope_parameters={"rope_type": "default", "mrope_section": section, "rope_theta": 10000.0},
            max_position_embeddings=4096,
            eos_token_id=tid("<|im_end|>"),
            pad_token_id=tid("<|endoftext|>"),
            bos_token_id=None,
        ),
        vision_config=dict(
            depth=spec["v_depth"],
            embed_dim=spec["v_dim"],
            hidden_size=spec["hidden"],
            num_heads=spec["v_heads"],
            mlp_ratio=2,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
        ),
        image_token_id=tid("<|image_pad|>"),
        video_token_id=tid("<|video_pad|>"),
        vision_start_token_id=tid("<|vision_start|>"),
        vision_end_token_id=tid("<|vision_end|>"),
    )
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = tid("<|im_end|>")
    model.generation_config.pad_token_id = tid("<|endoftext|>")
    return model, processor
