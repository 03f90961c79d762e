"""SEAGULL processor: an image + regions of interest (ROIs) in any form -> model inputs.

ROIs come in every form users have (issue 9): boolean/uint8 masks ``(H, W)``; boxes ``[x0, y0, x1, y1]`` in
pixels; COCO RLE dicts ``{"size": [h, w], "counts": ...}`` (decoded with pycocotools); point prompts
``{"points": [[x, y], ...], "labels": [1, ...]}`` turned into masks by SAM (``partition.sam_prompt_masks``:
the image is encoded once for all of its prompts). ``{"mask": ...}`` and ``{"box": ...}`` dicts work too.

For each image the processor returns, as the reference preprocessing does (``demo/seagull_inference.py``):

* ``pixel_values`` ``(N_img, 3, S, S)``: the image squashed to ``S x S`` (512 in the paper), CLIP-normalised.
  An image with many ROIs appears ONCE: the vision tower encodes it once for all of them.
* ``roi_masks`` ``(N_roi, S/s0, S/s0)`` float: each ROI at the resolution of the finest encoder level
  (stride ``s0``; 128x128 in the paper). ``roi_mask_mode="any"`` (the reference): a cell is 1 if any pixel
  of the ROI falls in it, so no ROI can vanish; the model max-pools it to the coarser levels. ``"area"``:
  the fraction of the cell inside the ROI; the model average-pools it.
* ``roi_pixel_values`` ``(N_roi, 3, C, C)``: the ROI's bounding-box crop (the reference crops the image after
  resizing it to at most 512 px high) resized to ``C x C`` for the local token.
* ``roi_image_index`` ``(N_roi,)``, ``roi_boxes`` ``(N_roi, 4)`` (pixels of the original image) and
  ``roi_areas`` ``(N_roi,)`` (fraction of the image).

With ``questions`` (and a tokenizer) it also builds the reference prompts, one sequence per ROI and
question: the Vicuna-v1 conversation, ``<image>`` expanded to the projector's token count, the region as
``<global><local>`` and the instruction (quality / importance / distortion, as in the reference demo):
``input_ids``, ``attention_mask``, ``sequence_image_index`` ``(B,)``, ``sequence_roi_index`` ``(B, P)`` (the
ROI of each ``<global><local>`` pair, -1 = none) and, with ``answers``, ``labels`` (-100 on the prompt).

Bad ROIs raise :class:`RegionError` (a ``ValueError``) naming the image and the ROI index; with
``skip_errors=True`` they are left out and reported in ``batch["roi_errors"]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import BatchFeature
from transformers.processing_utils import ProcessorMixin

from .configuration_seagull import (
    DEFAULT_ANSWER_TEMPLATES,
    DEFAULT_QUESTIONS,
    DEFAULT_REGION_PREAMBLE,
    DEFAULT_SYSTEM_PROMPT,
    IMPORTANCE_LEVEL_WORDS,
    QUALITY_LEVEL_WORDS,
    SEAGULL_DISTORTION_TYPES,
    SEVERITY_WORDS,
    SeagullConfig,
)
from .image_io import describe_source, load_image_rgb
from .level_scoring import level_token_ids

__all__ = [
    "SeagullProcessor",
    "SeagullRegionProcessor",
    "RegionError",
    "region_kind",
    "regions_to_masks",
    "mask_box",
    "mask_to_grid",
    "format_distortion_answer",
    "build_seagull_tokenizer",
    "PROCESSOR_SETTINGS",
]

#: SeagullConfig fields the processor mirrors (saved in processor_config.json).
PROCESSOR_SETTINGS = (
    "image_size",
    "local_crop_size",
    "crop_source_max_height",
    "roi_mask_mode",
    "image_token",
    "global_token",
    "local_token",
    "system_prompt",
    "region_preamble",
    "questions",
    "answer_templates",
    "distortion_types",
    "quality_level_words",
    "importance_level_words",
    "severity_words",
)


class RegionError(ValueError):
    """A ROI that cannot be used; the message names the image and the ROI index."""


# ----------------------------------------------------------------------------------------------------------
# ROIs -> masks
# ----------------------------------------------------------------------------------------------------------
def region_kind(region: Any) -> str:
    """``"mask"``, ``"box"``, ``"rle"`` or ``"points"`` (``ValueError`` for anything else)."""
    if isinstance(region, dict):
        if "counts" in region:
            return "rle"
        if "points" in region:
            return "points"
        if "mask" in region:
            return "mask"
        if "box" in region or "bbox" in region:
            return "box"
        raise ValueError(f"unknown ROI dict with keys {sorted(region)}; expected counts/points/mask/box")
    if isinstance(region, Image.Image):
        return "mask"
    arr = np.asarray(region.detach().cpu() if isinstance(region, torch.Tensor) else region)
    if arr.ndim == 1 and arr.shape[0] == 4 and arr.dtype != bool:
        return "box"
    if arr.ndim == 2:
        return "mask"
    raise ValueError(f"cannot read a ROI from {type(region).__name__} of shape {arr.shape}")


def _mask_from_array(region: Any, size: tuple[int, int]) -> np.ndarray:
    if isinstance(region, Image.Image):
        region = np.asarray(region.convert("L"))
    arr = np.asarray(region.detach().cpu() if isinstance(region, torch.Tensor) else region)
    if arr.ndim != 2:
        raise ValueError(f"a mask must be 2-D (H, W), got shape {arr.shape}")
    if arr.shape != size:
        raise ValueError(
            f"mask of size {arr.shape[0]}x{arr.shape[1]} (HxW) for an image of {size[0]}x{size[1]}"
        )
    if arr.dtype != bool and not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise ValueError(f"a mask must be boolean or numeric, got dtype {arr.dtype}")
    if arr.dtype == bool:
        return arr
    return arr > (0.5 if np.issubdtype(arr.dtype, np.floating) else 0)


def _mask_from_box(box: Any, size: tuple[int, int]) -> np.ndarray:
    vals = np.asarray(box, dtype=np.float64).reshape(-1)
    if vals.shape[0] != 4 or not np.isfinite(vals).all():
        raise ValueError(f"a box is [x0, y0, x1, y1] in pixels, got {list(np.asarray(box).reshape(-1))}")
    x0, y0, x1, y1 = vals
    h, w = size
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"box {vals.tolist()} has x1 <= x0 or y1 <= y0")
    if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
        raise ValueError(f"box {vals.tolist()} lies outside the {w}x{h} (WxH) image")
    mask = np.zeros(size, dtype=bool)
    mask[int(np.floor(y0)) : int(np.ceil(y1)), int(np.floor(x0)) : int(np.ceil(x1))] = True
    return mask


def _mask_from_rle(rle: dict, size: tuple[int, int]) -> np.ndarray:
    try:
        from pycocotools import mask as mask_utils
    except ImportError as err:  # pragma: no cover - declared dependency
        raise ImportError("COCO RLE ROIs need pycocotools: pip install pycocotools") from err
    rle = dict(rle)
    rle_size = rle.get("size", list(size))
    try:
        h, w = (int(v) for v in rle_size)
    except (TypeError, ValueError) as err:
        raise ValueError(f"RLE size must be [h, w], got {rle_size!r}") from err
    if (h, w) != size:
        raise ValueError(f"RLE of size {h}x{w} (HxW) for an image of {size[0]}x{size[1]}")
    counts = rle["counts"]
    try:
        if isinstance(counts, list):  # uncompressed RLE
            if sum(int(c) for c in counts) != h * w or any(int(c) < 0 for c in counts):
                raise ValueError(f"uncompressed counts sum to {sum(counts)}, not h*w = {h * w}")
            encoded = mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
        else:
            encoded = {"size": [h, w], "counts": counts.encode() if isinstance(counts, str) else counts}
        decoded = mask_utils.decode(encoded)
    except (ValueError, TypeError, OverflowError, SystemError) as err:
        raise ValueError(f"the RLE does not decode ({err})") from err
    if decoded.shape[:2] != size:
        raise ValueError(f"the RLE decodes to {decoded.shape[:2]}, not {size}")
    return decoded.astype(bool).reshape(size)


def regions_to_masks(
    image: Image.Image,
    regions: Sequence[Any],
    sam_model: Any = None,
    sam_image_processor: Any = None,
    image_name: str | None = None,
    skip_errors: bool = False,
) -> tuple[list[np.ndarray | None], list[str | None]]:
    """Boolean ``(H, W)`` masks for ``regions`` of ``image`` -> ``(masks, errors)`` in input order.

    Point prompts of the image are decoded together by SAM after one image encoding. A bad ROI raises
    :class:`RegionError` naming ``image_name`` and the ROI index, or with ``skip_errors`` gets ``None``
    and its message in ``errors``.
    """
    name = image_name or describe_source(image)
    size = (image.height, image.width)
    masks: list[np.ndarray | None] = [None] * len(regions)
    errors: list[str | None] = [None] * len(regions)

    def fail(i: int, kind: str, problem: str) -> None:
        message = f"{name}: ROI {i} ({kind}): {problem}"
        if not skip_errors:
            raise RegionError(message)
        errors[i] = message

    prompts: list[tuple[int, dict]] = []
    for i, region in enumerate(regions):
        kind = "unknown"
        try:
            kind = region_kind(region)
            if kind == "points":
                pts = np.asarray(region["points"], dtype=np.float64).reshape(-1, 2)
                if pts.shape[0] == 0:
                    raise ValueError("no points given")
                if (pts < 0).any() or (pts[:, 0] >= size[1]).any() or (pts[:, 1] >= size[0]).any():
                    raise ValueError(f"points {pts.tolist()} lie outside the {size[1]}x{size[0]} (WxH) image")
                if sam_model is None or sam_image_processor is None:
                    raise ValueError(
                        "point prompts need SAM: pass sam_model= (a transformers SamModel) and give the "
                        "processor a sam_image_processor"
                    )
                prompts.append((i, {"points": pts.tolist(), "labels": region.get("labels", [1] * len(pts))}))
                continue
            if kind == "rle":
                mask = _mask_from_rle(region, size)
            elif kind == "box":
                mask = _mask_from_box(
                    region.get("box", region.get("bbox")) if isinstance(region, dict) else region, size
                )
            else:
                mask = _mask_from_array(region["mask"] if isinstance(region, dict) else region, size)
            if not mask.any():
                raise ValueError("the mask is empty")
            masks[i] = mask
        except (ValueError, KeyError, TypeError) as err:
            fail(i, kind, str(err))
    if prompts:
        from .partition import sam_prompt_masks

        decoded, _ = sam_prompt_masks(sam_model, sam_image_processor, image, [p for _, p in prompts])
        for (i, _), mask in zip(prompts, decoded):
            if mask.any():
                masks[i] = mask
            else:
                fail(i, "points", "SAM returned an empty mask for these points")
    return masks, errors


def mask_box(mask: np.ndarray) -> list[int]:
    """Bounding box ``[x0, y0, x1, y1]`` of a non-empty mask (inclusive-exclusive pixels)."""
    rows = np.flatnonzero(mask.any(1))
    cols = np.flatnonzero(mask.any(0))
    return [int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1]


def _any_reduce(a: np.ndarray, n: int, axis: int) -> np.ndarray:
    size = a.shape[axis]
    if size >= n:  # cell c holds pixels [ceil(c * size / n), ceil((c + 1) * size / n))
        starts = -(-np.arange(n) * size // n)
        return np.logical_or.reduceat(a, starts, axis=axis)
    return np.take(a, (np.arange(n) * size) // n, axis=axis)  # upsampling: nearest


def _cells(lo: int, hi: int, size: int, n: int) -> tuple[int, int, np.ndarray]:
    """Cells ``c0 .. c1`` (exclusive) of an ``n``-cell axis over ``size`` pixels that pixels ``[lo, hi)`` fall in,
    and their starts relative to ``lo`` (pixel ``p`` lies in cell ``floor(p * n / size)``)."""
    c0, c1 = lo * n // size, (hi - 1) * n // size + 1
    starts = -(-np.arange(c0 + 1, c1) * size // n) - lo
    return c0, c1, np.concatenate([[0], starts]).astype(np.intp)


def _check_roi_mask_mode(mode: str) -> str:
    if mode not in ("any", "area"):
        raise ValueError(f"roi mask mode must be 'any' or 'area', got {mode!r}")
    return mode


def mask_to_grid(
    mask: np.ndarray, height: int, width: int, box: Sequence[int] | None = None, mode: str = "any"
) -> np.ndarray:
    """``mask`` on a ``height x width`` grid. ``mode="any"``: a cell is on (1) if any of its pixels is (no ROI
    vanishes; bool). ``mode="area"``: a cell holds the fraction of its pixels inside the ROI (float32 in
    [0, 1]; a cell with any ROI pixel is > 0, so no ROI vanishes either).

    ``box``: the mask's bounding box ``[x0, y0, x1, y1]`` (``mask_box``) if known; only the pixels inside it
    are reduced (the cost grows with the ROI, not with the image)."""
    _check_roi_mask_mode(mode)
    mask = np.asarray(mask, dtype=bool)
    h, w = mask.shape
    if h < height or w < width or not mask.any():  # upsampling (tiny images): nearest on the whole mask
        grid = _any_reduce(_any_reduce(mask, height, 0), width, 1)
        return grid.astype(np.float32) if mode == "area" else grid
    x0, y0, x1, y1 = mask_box(mask) if box is None else box
    r0, r1, row_starts = _cells(y0, y1, h, height)
    k0, k1, col_starts = _cells(x0, x1, w, width)
    if mode == "any":
        inner = np.logical_or.reduceat(mask[y0:y1, x0:x1], row_starts, axis=0)
        grid = np.zeros((height, width), dtype=bool)
        grid[r0:r1, k0:k1] = np.logical_or.reduceat(inner, col_starts, axis=1)
        return grid
    counts = np.add.reduceat(mask[y0:y1, x0:x1].astype(np.int64), row_starts, axis=0)
    counts = np.add.reduceat(counts, col_starts, axis=1)
    edges_r, edges_c = -(-np.arange(height + 1) * h // height), -(-np.arange(width + 1) * w // width)
    cell_area = np.diff(edges_r)[r0:r1, None] * np.diff(edges_c)[None, k0:k1]
    grid = np.zeros((height, width), dtype=np.float32)
    grid[r0:r1, k0:k1] = counts / cell_area
    return grid


def format_distortion_answer(severities: dict[str, float | int | None], config: Any) -> str:
    """The distortion answer for ``{type: severity}``: levels 1..n (ints) or 0..1 floats -> severity words.

    Types with severity 0/None are omitted; no type -> the ``no_distortion`` answer.
    """
    words = list(config.severity_words)
    parts = []
    for t in config.distortion_types:
        s = severities.get(t)
        if s is None or s <= 0:
            continue
        idx = int(s) - 1 if isinstance(s, (int, np.integer)) else int(np.ceil(float(s) * len(words))) - 1
        parts.append(f"{t} ({words[min(max(idx, 0), len(words) - 1)]})")
    if not parts:
        return config.answer_templates["no_distortion"]
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return config.answer_templates["distortion"].format(distortions=listed)


# ----------------------------------------------------------------------------------------------------------
# the processor
# ----------------------------------------------------------------------------------------------------------
class SeagullProcessor(ProcessorMixin):
    r"""Prepare images, ROIs and (optionally) the reference prompts for the SEAGULL models.

    Args:
        image_processor: [`SeagullImageProcessor`] (or its PIL twin): square resize + CLIP normalisation.
        tokenizer: the LLM's tokenizer (``None`` for ``SeagullForRegionQuality``, which has no LLM).
        sam_image_processor: ``SamImageProcessor`` for point-prompt ROIs (with ``sam_model=`` at call time).
        image_size, local_crop_size, crop_source_max_height, roi_mask_mode, mask_stride: geometry (see
            [`SeagullConfig`]);
            ``mask_stride`` is the finest encoder level's stride.
        num_image_tokens: how many ``<image>`` tokens the prompt holds (the projector's token count).
        image_token / global_token / local_token, system_prompt, region_preamble, questions,
        answer_templates, distortion_types, quality_level_words, importance_level_words, severity_words:
            prompt and answer settings, mirrored from the config.
    """

    def __init__(
        self,
        image_processor: Any = None,
        tokenizer: Any = None,
        sam_image_processor: Any = None,
        image_size: int = 512,
        local_crop_size: int = 512,
        crop_source_max_height: int | None = 512,
        roi_mask_mode: str = "any",
        mask_stride: int = 4,
        num_image_tokens: int = 1024,
        image_token: str = "<image>",
        global_token: str = "<global>",
        local_token: str = "<local>",
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        region_preamble: str = DEFAULT_REGION_PREAMBLE,
        questions: dict | None = None,
        answer_templates: dict | None = None,
        distortion_types: list[str] | None = None,
        quality_level_words: list[str] | None = None,
        importance_level_words: list[str] | None = None,
        severity_words: list[str] | None = None,
        **kwargs: Any,
    ):
        self.image_size = int(image_size)
        self.local_crop_size = int(local_crop_size)
        self.crop_source_max_height = None if crop_source_max_height is None else int(crop_source_max_height)
        self.mask_stride = int(mask_stride)
        self.roi_mask_mode = _check_roi_mask_mode(roi_mask_mode)
        self.num_image_tokens = int(num_image_tokens)
        self.image_token, self.global_token, self.local_token = image_token, global_token, local_token
        self.system_prompt = system_prompt
        self.region_preamble = region_preamble
        self.questions = dict(questions or DEFAULT_QUESTIONS)
        self.answer_templates = dict(answer_templates or DEFAULT_ANSWER_TEMPLATES)
        self.distortion_types = list(distortion_types or SEAGULL_DISTORTION_TYPES)
        self.quality_level_words = list(quality_level_words or QUALITY_LEVEL_WORDS)
        self.importance_level_words = list(importance_level_words or IMPORTANCE_LEVEL_WORDS)
        self.severity_words = list(severity_words or SEVERITY_WORDS)
        if sam_image_processor is None:
            from transformers import SamImageProcessor

            sam_image_processor = SamImageProcessor()
        super().__init__(*self._components(image_processor, tokenizer, sam_image_processor), **kwargs)

    def _components(self, image_processor: Any, tokenizer: Any, sam_image_processor: Any) -> list[Any]:
        return [image_processor, tokenizer, sam_image_processor]

    def to_dict(self) -> dict[str, Any]:
        """Saved settings: every prompt/geometry setting, whatever the subclass's ``__init__`` signature."""
        data = super().to_dict()
        for key in (*PROCESSOR_SETTINGS, "mask_stride", "num_image_tokens"):
            data[key] = getattr(self, key)
        return data

    @classmethod
    def from_model_config(
        cls,
        config: SeagullConfig,
        tokenizer: Any = None,
        sam_image_processor: Any = None,
        backend: str = "torchvision",
    ) -> SeagullProcessor:
        """The processor matching ``config`` (sizes, normalisation, tokens, prompts)."""
        from .image_processing_seagull import SeagullImageProcessor, SeagullImageProcessorPil

        ip_cls = SeagullImageProcessor if backend == "torchvision" else SeagullImageProcessorPil
        image_processor = ip_cls(
            size={"height": config.image_size, "width": config.image_size},
            image_mean=list(config.image_mean),
            image_std=list(config.image_std),
        )
        settings = {k: getattr(config, k) for k in PROCESSOR_SETTINGS}
        settings.update(
            mask_stride=config.vision_feature_strides[0], num_image_tokens=config.num_image_tokens
        )
        if config.model_type == "seagull_region" or cls is SeagullRegionProcessor:
            return SeagullRegionProcessor(image_processor, sam_image_processor, **settings)
        return cls(image_processor, tokenizer, sam_image_processor, **settings)

    # -- prompts ------------------------------------------------------------------------------------------
    def question_text(self, question: str) -> str:
        """A question name (``quality`` / ``importance`` / ``distortion``) -> its instruction; else as given."""
        return self.questions.get(question, question)

    def prompt(self, question: str, num_regions: int = 1) -> str:
        """The full prompt (Vicuna v1 conversation as ``seagull_v1``) for one question about the region(s)."""
        region = ", ".join([self.global_token + self.local_token] * num_regions)
        body = self.region_preamble.format(image=self.image_token * self.num_image_tokens, region=region)
        return f"{self.system_prompt} USER: {body}{self.question_text(question)} ASSISTANT:"

    def answer_prefix(self, question: str) -> str:
        """The answer text before the level word (``"The quality of this region is"``), for level scoring."""
        template = self.answer_templates[question]
        return template.split("{level}")[0].rstrip()

    def level_words(self, question: str) -> list[str]:
        return {"quality": self.quality_level_words, "importance": self.importance_level_words}[question]

    def level_token_ids(self, question: str) -> list[int]:
        """Token ids of the level words where they follow the answer prefix (see ``level_scoring``)."""
        return level_token_ids(
            self.tokenizer, self.level_words(question), context=self.answer_prefix(question)
        )

    def format_answer(self, question: str, level: str | None = None, severities: dict | None = None) -> str:
        if question == "distortion":
            return format_distortion_answer(severities or {}, self)
        return self.answer_templates[question].format(level=level)

    def _tokenize(self, prompt: str, answer: str | None) -> tuple[list[int], int]:
        """Token ids of ``prompt`` (+ `` answer`` + eos) and the prompt length. The two are tokenised jointly
        when the prompt's tokens are a prefix of the joint tokens (true for BPE and SentencePiece alike)."""
        tok = self.tokenizer
        ids = list(tok(prompt, add_special_tokens=True)["input_ids"])
        if answer is None:
            return ids, len(ids)
        joint = list(tok(f"{prompt} {answer}", add_special_tokens=True)["input_ids"])
        if joint[: len(ids)] != ids:
            joint = ids + list(tok(" " + answer, add_special_tokens=False)["input_ids"])
        eos = tok.eos_token_id
        if eos is not None and (not joint or joint[-1] != eos):
            joint.append(int(eos))
        return joint, len(ids)

    # -- images and ROIs ----------------------------------------------------------------------------------
    def _crop_source(self, image: Image.Image) -> tuple[Image.Image, float]:
        limit = self.crop_source_max_height
        if limit is None or image.height <= limit:
            return image, 1.0
        scale = limit / image.height
        return image.resize((max(1, int(image.width * scale)), limit), Image.BILINEAR), scale

    def _crop(self, source: Image.Image, scale: float, box: list[int]) -> Image.Image:
        x0, y0, x1, y1 = box
        sx0, sy0 = int(np.floor(x0 * scale)), int(np.floor(y0 * scale))
        sx1 = min(source.width, max(sx0 + 1, int(np.ceil(x1 * scale))))
        sy1 = min(source.height, max(sy0 + 1, int(np.ceil(y1 * scale))))
        return source.crop((sx0, sy0, sx1, sy1))

    def __call__(
        self,
        images: Any = None,
        regions: Sequence[Any] | None = None,
        questions: str | Sequence[str] | None = None,
        answers: Sequence[str] | None = None,
        sam_model: Any = None,
        skip_errors: bool = False,
        padding_side: str | None = None,
        image_names: Sequence[str] | None = None,
        return_tensors: str | None = "pt",
        **kwargs: Any,
    ) -> BatchFeature:
        """Process one image with its ROIs, or a list of images with a list of ROI lists.

        Args:
            images: path, PIL image or array (or a list of them).
            regions: the ROIs of the image (a list), or one list per image.
            questions: ``None`` (no text: ROI tensors only), a question name (``"quality"``,
                ``"importance"``, ``"distortion"``), ``"all"`` (the three), a list of names, or free-text
                instructions. One sequence per ROI and question, ROI-major.
            answers: training targets, one per sequence (adds ``labels``; right padding).
            sam_model: SAM for point-prompt ROIs. skip_errors: leave bad ROIs out (see ``roi_errors``).
            padding_side: ``"left"`` (default without answers: generation) or ``"right"``.
            image_names: how errors name the images (default: the path, or a description of the object).
        """
        if images is None:
            raise ValueError("SeagullProcessor needs `images`")
        single = not isinstance(images, (list, tuple))
        image_list = [images] if single else list(images)
        if not image_list:
            raise ValueError("`images` is an empty list")
        if regions is None:
            raise ValueError("SeagullProcessor needs `regions` (the ROIs of each image)")
        region_lists = [list(regions)] if single else [list(r) for r in regions]
        if len(region_lists) != len(image_list):
            raise ValueError(f"got {len(region_lists)} ROI lists for {len(image_list)} images")

        names = list(image_names) if image_names is not None else [describe_source(im) for im in image_list]
        rgb = [load_image_rgb(im) for im in image_list]
        grid = self.image_size // self.mask_stride
        roi_masks, crops, roi_image, boxes, areas, roi_input_index, errors = [], [], [], [], [], [], []
        for i, (image, rois, name) in enumerate(zip(rgb, region_lists, names)):
            if not rois:
                raise RegionError(f"{name}: no ROI given")
            masks, errs = regions_to_masks(
                image, rois, sam_model, getattr(self, "sam_image_processor", None), name, skip_errors
            )
            errors.append({j: e for j, e in enumerate(errs) if e is not None})
            source, scale = self._crop_source(image)
            for j, mask in enumerate(masks):
                if mask is None:
                    continue
                box = mask_box(mask)
                roi_masks.append(mask_to_grid(mask, grid, grid, box, self.roi_mask_mode))
                crops.append(self._crop(source, scale, box))
                roi_image.append(i)
                roi_input_index.append(j)
                boxes.append(box)
                areas.append(np.count_nonzero(mask) / mask.size)
        data: dict[str, Any] = dict(self.image_processor(rgb, return_tensors="pt", **kwargs))
        crop_size = {"height": self.local_crop_size, "width": self.local_crop_size}
        if crops:
            data["roi_pixel_values"] = self.image_processor(crops, size=crop_size, return_tensors="pt")[
                "pixel_values"
            ]
        else:
            data["roi_pixel_values"] = torch.zeros(0, 3, self.local_crop_size, self.local_crop_size)
        data["roi_masks"] = (
            torch.from_numpy(np.stack(roi_masks).astype(np.float32))
            if roi_masks
            else torch.zeros(0, grid, grid)
        )
        data["roi_image_index"] = torch.tensor(roi_image, dtype=torch.long)
        data["roi_boxes"] = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        data["roi_areas"] = torch.tensor(areas, dtype=torch.float32)
        if questions is not None:
            data.update(self._text_inputs(roi_image, questions, answers, padding_side))
        batch = BatchFeature(data=data, tensor_type=return_tensors)
        batch["roi_errors"] = errors
        batch["roi_input_index"] = roi_input_index
        return batch

    def sequence_questions(self, questions: str | Sequence[str]) -> list[str]:
        if isinstance(questions, str):
            return ["quality", "importance", "distortion"] if questions == "all" else [questions]
        return list(questions)

    def _text_inputs(
        self,
        roi_image: list[int],
        questions: str | Sequence[str],
        answers: Sequence[str] | None,
        padding_side: str | None,
    ) -> dict[str, torch.Tensor]:
        if getattr(self, "tokenizer", None) is None:
            raise ValueError("prompts need a tokenizer; this processor has none")
        qs = self.sequence_questions(questions)
        n_seq = len(roi_image) * len(qs)
        if answers is not None and len(answers) != n_seq:
            raise ValueError(
                f"got {len(answers)} answers for {n_seq} sequences ({len(roi_image)} ROIs x {len(qs)})"
            )
        seqs, prompt_lens, seq_image, seq_roi = [], [], [], []
        prompts = {q: self.prompt(q) for q in qs}
        for r, img in enumerate(roi_image):
            for qi, q in enumerate(qs):
                answer = None if answers is None else answers[r * len(qs) + qi]
                ids, n_prompt = self._tokenize(prompts[q], answer)
                seqs.append(ids)
                prompt_lens.append(n_prompt)
                seq_image.append(img)
                seq_roi.append([r])
        side = padding_side or ("right" if answers is not None else "left")
        pad = self.tokenizer.pad_token_id
        pad = int(pad if pad is not None else (self.tokenizer.eos_token_id or 0))
        T = max((len(s) for s in seqs), default=0)
        input_ids = torch.full((len(seqs), T), pad, dtype=torch.long)
        attention = torch.zeros((len(seqs), T), dtype=torch.long)
        labels = torch.full((len(seqs), T), -100, dtype=torch.long)
        for b, (ids, n_prompt) in enumerate(zip(seqs, prompt_lens)):
            off = T - len(ids) if side == "left" else 0
            input_ids[b, off : off + len(ids)] = torch.tensor(ids)
            attention[b, off : off + len(ids)] = 1
            labels[b, off + n_prompt : off + len(ids)] = torch.tensor(ids[n_prompt:], dtype=torch.long)
        out = {
            "input_ids": input_ids,
            "attention_mask": attention,
            "sequence_image_index": torch.tensor(seq_image, dtype=torch.long),
            "sequence_roi_index": torch.tensor(seq_roi, dtype=torch.long).reshape(len(seqs), -1),
        }
        if answers is not None:
            out["labels"] = labels
        return out

    # ------------------------------------------------------------------------------------------------
    def batch_decode(self, *args: Any, **kwargs: Any) -> list[str]:
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args: Any, **kwargs: Any) -> str:
        return self.tokenizer.decode(*args, **kwargs)

    @property
    def model_input_names(self) -> list[str]:
        return [
            "pixel_values",
            "roi_masks",
            "roi_pixel_values",
            "roi_image_index",
            "input_ids",
            "attention_mask",
            "sequence_image_index",
            "sequence_roi_index",
        ]


class SeagullRegionProcessor(SeagullProcessor):
    """:class:`SeagullProcessor` without a tokenizer, for ``SeagullForRegionQuality`` (images + ROIs only)."""

    tokenizer = None

    def __init__(  # the settings are named (not **kwargs): ProcessorMixin loads only named arguments
        self,
        image_processor: Any = None,
        sam_image_processor: Any = None,
        image_size: int = 512,
        local_crop_size: int = 512,
        crop_source_max_height: int | None = 512,
        roi_mask_mode: str = "any",
        mask_stride: int = 4,
        num_image_tokens: int = 1024,
        image_token: str = "<image>",
        global_token: str = "<global>",
        local_token: str = "<local>",
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        region_preamble: str = DEFAULT_REGION_PREAMBLE,
        questions: dict | None = None,
        answer_templates: dict | None = None,
        distortion_types: list[str] | None = None,
        quality_level_words: list[str] | None = None,
        importance_level_words: list[str] | None = None,
        severity_words: list[str] | None = None,
        **kwargs: Any,
    ):
        kwargs.pop("tokenizer", None)
        settings = {
            k: v
            for k, v in locals().items()
            if k not in ("self", "kwargs", "image_processor", "sam_image_processor", "__class__")
        }
        super().__init__(image_processor, None, sam_image_processor, **settings, **kwargs)

    def _components(self, image_processor: Any, tokenizer: Any, sam_image_processor: Any) -> list[Any]:
        return [image_processor, sam_image_processor]

    @property
    def model_input_names(self) -> list[str]:
        return ["pixel_values", "roi_masks", "roi_pixel_values", "roi_image_index"]


# ----------------------------------------------------------------------------------------------------------
# a tokenizer trained in code (tests, tiny presets; no download)
# ----------------------------------------------------------------------------------------------------------
def _tokenizer_corpus(config: Any) -> list[str]:
    lines = [config.system_prompt, config.region_preamble.format(image="", region=""), "USER: ASSISTANT:"]
    lines += list(config.questions.values())
    for q, words in (("quality", config.quality_level_words), ("importance", config.importance_level_words)):
        lines += [config.answer_templates[q].format(level=w) for w in words]
    for t in config.distortion_types:
        for w in config.severity_words:
            lines.append(config.answer_templates["distortion"].format(distortions=f"{t} ({w}) and {t} ({w})"))
    lines.append(config.answer_templates["no_distortion"])
    # the words that are scored or parsed become whole tokens (distinct first sub-tokens)
    words = [*config.quality_level_words, *config.importance_level_words, *config.severity_words]
    words += list(config.distortion_types)
    return lines * 4 + [" ".join(f" {w}" for w in words)] * 60


def build_seagull_tokenizer(config: Any = None, vocab_size: int = 400) -> Any:
    """A small byte-level BPE tokenizer trained on the SEAGULL prompts and answers, with ``<s>``/``</s>``,
    ``<unk>``/``<pad>`` and the image/global/local special tokens. Deterministic; nothing is downloaded."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    config = config or SeagullConfig(region_embed_size=8)
    specials = ["<unk>", "<s>", "</s>", "<pad>", config.image_token, config.global_token, config.local_token]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_tokenizer_corpus(config), trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", bos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        additional_special_tokens=specials[4:],
    )
