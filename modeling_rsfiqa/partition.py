"""Region partition: step 1 of RSFIQA (arXiv 2508.07818).

An image is split into NON-OVERLAPPING regions given as a label map: an ``int32`` array of shape
``(H, W)`` with values ``0 .. R-1`` (``R <= max_regions``), every pixel in exactly one region.

Two partitioners share that contract:

* :class:`SamRegionPartitioner` -- SAM automatic mask generation (Kirillov et al. 2023) with
  transformers' ``SamModel``: the image is encoded ONCE, a regular grid of point prompts is decoded in
  batches, masks are filtered by predicted IoU and stability (as segment-anything's
  ``SamAutomaticMaskGenerator``), ranked by ``IoU x stability`` and painted best-first; a mask mostly
  covered by better ones is a duplicate and is skipped, regions under the minimum area are merged into a
  neighbour, leftover pixels form one background region.
* :func:`superpixel_partition` -- scikit-image SLIC superpixels, merged to at most ``max_regions`` by
  colour similarity of adjacent regions: the offline stand-in when no SAM checkpoint is available.

:func:`sam_prompt_masks` answers point prompts with the same SAM (encode once, decode every prompt): the
ROIs SEAGULL users give as points become masks.

Both partitioners are deterministic and work for any input size (1xN strips to 4000x3000 photos): the partition is
computed on a working copy whose longest side is bounded and mapped back by nearest-neighbour.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

if TYPE_CHECKING:  # pragma: no cover
    from .configuration_rsfiqa import RSFIQAConfig

__all__ = [
    "masks_to_label_map",
    "merge_small_regions",
    "superpixel_partition",
    "grid_partition",
    "grid_label_map",
    "SamRegionPartitioner",
    "partition_image",
    "resize_label_map",
    "region_summaries",
    "check_label_map",
    "sam_fingerprint",
    "load_sam_model",
    "sam_prompt_masks",
    "work_shape",
    "partition_work_shape",
]


#: longest side of the frame SAM masks are painted in (``SamRegionPartitioner.work_size``)
SAM_WORK_SIZE = 512


def check_label_map(
    label_map: np.ndarray, max_regions: int | None = None, size: tuple[int, int] | None = None
) -> np.ndarray:
    """Validate the partition contract and return the map as int32: an integer ``(H, W)`` array (of shape
    ``size`` if given) whose values are exactly 0..R-1, every label used, ``R <= max_regions`` if given.
    Raises ``ValueError`` otherwise."""
    arr = np.asarray(label_map)
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"label map must be an integer (H, W) array, got {arr.dtype} {arr.shape}")
    if size is not None and arr.shape != tuple(size):
        raise ValueError(f"label map shape {arr.shape} does not match the image (H, W) {tuple(size)}")
    if arr.size == 0 or arr.min() < 0:
        raise ValueError("label map is empty or has negative labels")
    n = int(arr.max()) + 1
    if np.bincount(arr.ravel(), minlength=n).min() == 0:
        raise ValueError("label map values must be 0..R-1 without gaps (an empty label was found)")
    if max_regions is not None and n > max_regions:
        raise ValueError(f"label map has {n} regions, more than max_regions={max_regions}")
    return arr.astype(np.int32, copy=False)


def resize_label_map(label_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a label map to ``size=(height, width)`` (pixel-centre sampling)."""
    h, w = label_map.shape
    oh, ow = int(size[0]), int(size[1])
    if (h, w) == (oh, ow):
        return label_map.astype(np.int32, copy=False)
    rows = np.minimum(((np.arange(oh) + 0.5) * h / oh).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(ow) + 0.5) * w / ow).astype(np.int64), w - 1)
    return label_map[rows[:, None], cols[None, :]].astype(np.int32)


def _relabel_by_first_appearance(label_map: np.ndarray, order: list[int] | None = None) -> np.ndarray:
    """Map labels to 0..R-1, in ``order`` if given, else in order of first appearance (raster scan)."""
    if order is None:
        _, first = np.unique(label_map, return_index=True)
        values = label_map.ravel()[np.sort(first)]
    else:
        values = np.asarray(order)
    lut = np.full(int(label_map.max()) + 1, -1, dtype=np.int32)
    lut[values] = np.arange(values.size, dtype=np.int32)
    return lut[label_map]


def _adjacency_pairs(label_map: np.ndarray) -> np.ndarray:
    """Unique unordered pairs (a, b), a < b, of labels that touch horizontally or vertically."""
    pairs = []
    if label_map.shape[1] > 1:
        a, b = label_map[:, :-1].ravel(), label_map[:, 1:].ravel()
        pairs.append(np.stack([a, b], 1)[a != b])
    if label_map.shape[0] > 1:
        a, b = label_map[:-1, :].ravel(), label_map[1:, :].ravel()
        pairs.append(np.stack([a, b], 1)[a != b])
    if not pairs:
        return np.zeros((0, 2), dtype=np.int64)
    p = np.concatenate(pairs).astype(np.int64)
    return np.unique(np.sort(p, axis=1), axis=0)


def merge_small_regions(
    label_map: np.ndarray,
    features: np.ndarray | None,
    max_regions: int,
    min_area_px: float,
    protect_last: bool = False,
) -> np.ndarray:
    """Merge regions until none is smaller than ``min_area_px`` and at most ``max_regions`` remain.

    The smallest offending region is merged into the adjacent region whose mean ``features`` (e.g. Lab
    colour, shape ``(H, W, C)``) is closest (ties: the larger neighbour, then the lower label); without
    features, into the adjacent region with the longest shared border. A region with no neighbour (it
    touches only itself) is merged into the largest region. Deterministic. Output labels are 0..R-1 in
    order of first appearance.
    """
    labels = _relabel_by_first_appearance(label_map.astype(np.int32))
    n = int(labels.max()) + 1
    flat = labels.ravel()
    areas = np.bincount(flat, minlength=n).astype(np.float64)
    feat_sums = None
    if features is not None:
        f = features.reshape(-1, features.shape[-1]).astype(np.float64)
        feat_sums = np.stack([np.bincount(flat, weights=f[:, c], minlength=n) for c in range(f.shape[1])], 1)
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    pairs = _adjacency_pairs(labels)
    neighbours: dict[int, set[int]] = {i: set() for i in range(n)}
    border: dict[tuple[int, int], int] = {}
    for a, b in pairs:
        neighbours[int(a)].add(int(b))
        neighbours[int(b)].add(int(a))
        border[(int(a), int(b))] = 1
    alive = set(range(n))
    protected = n - 1 if protect_last else -1
    while alive:
        candidates = [i for i in alive if i != protected]
        if not candidates:
            break
        smallest = min(candidates, key=lambda i: (areas[i], i))
        if len(alive) <= max_regions and areas[smallest] >= min_area_px:
            break
        if len(alive) == 1:
            break
        nbrs = sorted(neighbours[smallest] & alive)
        if not nbrs:
            nbrs = [max(alive - {smallest}, key=lambda i: (areas[i], -i))]
        if feat_sums is not None:
            mean_s = feat_sums[smallest] / max(areas[smallest], 1.0)
            target = min(
                nbrs,
                key=lambda j: (
                    float(np.sum((feat_sums[j] / max(areas[j], 1.0) - mean_s) ** 2)),
                    -areas[j],
                    j,
                ),
            )
        else:
            target = max(nbrs, key=lambda j: (areas[j], -j))
        # merge smallest -> target
        parent[smallest] = target
        areas[target] += areas[smallest]
        if feat_sums is not None:
            feat_sums[target] += feat_sums[smallest]
        for j in neighbours[smallest]:
            if j != target:
                neighbours[j].discard(smallest)
                neighbours[j].add(target)
                neighbours[target].add(j)
        neighbours[target].discard(smallest)
        neighbours[target].discard(target)
        alive.discard(smallest)
    roots = np.array([find(i) for i in range(n)], dtype=np.int32)
    return _relabel_by_first_appearance(roots[labels])


def grid_partition(height: int, width: int, max_regions: int) -> np.ndarray:
    """Split along the long axis into at most ``max_regions`` strips: the fallback for degenerate sizes."""
    n = max(1, min(max_regions, max(height, width)))
    if width >= height:
        cols = np.minimum(np.arange(width) * n // max(width, 1), n - 1)
        return np.broadcast_to(cols[None, :], (height, width)).astype(np.int32)
    rows = np.minimum(np.arange(height) * n // max(height, 1), n - 1)
    return np.broadcast_to(rows[:, None], (height, width)).astype(np.int32)


def grid_label_map(height: int, width: int, rows: int, cols: int) -> np.ndarray:
    """A ``rows x cols`` grid partition (fallbacks and tests)."""
    r = np.minimum(np.arange(height) * rows // height, rows - 1)
    c = np.minimum(np.arange(width) * cols // width, cols - 1)
    return (r[:, None] * cols + c[None, :]).astype(np.int32)


def _tile_partition(height: int, width: int, n_tiles: int) -> np.ndarray:
    """Roughly square tiles, about ``n_tiles`` of them."""
    rows = max(1, min(height, round(np.sqrt(n_tiles * height / max(width, 1)))))
    cols = max(1, min(width, round(n_tiles / rows)))
    return grid_label_map(height, width, rows, cols)


def work_shape(height: int, width: int, work_size: int) -> tuple[int, int]:
    """``(h, w)`` of the working copy a partition is computed on: longest side at most ``work_size``."""
    scale = min(1.0, work_size / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def partition_work_shape(config: Any, height: int, width: int) -> tuple[int, int]:
    """``(h, w)`` at which :func:`partition_image` computes the regions of a ``height x width`` image with the
    settings of ``config``: asking for this ``output_size`` returns the partition before any upsampling (the
    cheapest map that holds all its information; boxes come from it via ``region_summaries(..., image_size)``)."""
    if config.partition_method == "superpixel":
        return work_shape(height, width, getattr(config, "superpixel_work_size", 256))
    return work_shape(height, width, SAM_WORK_SIZE)


def _working_copy(image: Image.Image, work_size: int) -> Image.Image:
    w, h = image.size
    wh, ww = work_shape(h, w, work_size)
    if (wh, ww) != (h, w):
        # reducing_gap: box-reduce by an integer factor first, then resample (several times faster)
        image = image.resize((ww, wh), Image.BILINEAR, reducing_gap=2.0)
    return image


def superpixel_partition(
    image: Image.Image | np.ndarray,
    n_segments: int = 24,
    compactness: float = 10.0,
    max_regions: int = 16,
    min_region_area: float = 0.005,
    work_size: int = 256,
    sigma: float = 2.0,
    output_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """SLIC superpixels (Achanta et al. 2012, scikit-image) merged into <= ``max_regions`` regions.

    Args:
        image: RGB image (PIL or ``HxWx3`` uint8 array).
        n_segments / compactness: SLIC settings, run on a copy whose longest side is ``work_size``.
        sigma: Gaussian pre-smoothing of SLIC; without it heavy noise (the very distortion we measure)
            fragments the superpixels and the connectivity step collapses them into one region.
        max_regions: the most regions returned; min_region_area: fraction of the image below which a
            region is merged into its most similar neighbour (mean Lab colour).
        output_size: ``(height, width)`` of the returned label map; defaults to the image size.
    """
    from skimage.color import rgb2lab
    from skimage.segmentation import slic

    pil = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
    full_h, full_w = pil.height, pil.width
    out_size = output_size or (full_h, full_w)
    work = _working_copy(pil.convert("RGB"), work_size)
    arr = np.asarray(work, dtype=np.uint8)
    h, w = arr.shape[:2]
    if min(h, w) < 4:
        return resize_label_map(grid_partition(h, w, max_regions), out_size)
    lab = rgb2lab(arr)
    segments = slic(
        arr,
        n_segments=max(1, n_segments),
        compactness=compactness,
        start_label=0,
        channel_axis=-1,
        sigma=sigma,
        enforce_connectivity=True,
    ).astype(np.int32)
    if segments.max() < 1 and n_segments > 1:  # structureless input (e.g. pure noise): regular tiles
        segments = _tile_partition(h, w, n_segments)
    labels = merge_small_regions(segments, lab, max_regions, min_region_area * h * w)
    return resize_label_map(labels, out_size)


def masks_to_label_map(
    masks: np.ndarray,
    scores: np.ndarray,
    max_regions: int,
    min_region_area: float,
    features: np.ndarray | None = None,
    min_new_fraction: float = 0.5,
) -> np.ndarray:
    """Paint (possibly overlapping) binary masks into a non-overlapping label map.

    Masks are painted best-first (``scores`` descending; ties by larger area, then index). A mask claims
    only still-unclaimed pixels; it becomes a region only if what it claims is at least ``min_region_area``
    of the image and at least ``min_new_fraction`` of its own area (otherwise it mostly duplicates better
    masks). At most ``max_regions - 1`` masks are kept so that leftover pixels can form one background
    region (the last label); tiny leftovers are merged into neighbours instead.

    Args:
        masks: ``(N, H, W)`` bool. scores: ``(N,)``. features: optional ``(H, W, C)`` used for merging.
    """
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3:
        raise ValueError(f"masks must be (N, H, W), got {masks.shape}")
    n, h, w = masks.shape
    total = float(h * w)
    min_px = min_region_area * total
    labels = np.full((h, w), -1, dtype=np.int32)
    if n:
        areas = masks.reshape(n, -1).sum(1)
        order = np.lexsort((np.arange(n), -areas, -np.asarray(scores, dtype=np.float64)))
        next_id = 0
        for i in order:
            if next_id >= max_regions - 1 and max_regions > 1:
                break
            if areas[i] == 0:
                continue
            claim = masks[i] & (labels < 0)
            claimed = int(claim.sum())
            if claimed == 0 or claimed < min_px or claimed < min_new_fraction * areas[i]:
                continue
            labels[claim] = next_id
            next_id += 1
            if max_regions == 1:
                break
    leftover = labels < 0
    if leftover.any():
        if labels.max() < 0:
            labels[:] = 0
        elif leftover.sum() >= max(min_px, 1) and labels.max() + 1 < max_regions:
            labels[leftover] = labels.max() + 1
        else:  # too small (or no label budget left) for a background region: nearest painted region
            from scipy.ndimage import distance_transform_edt

            _, (ri, ci) = distance_transform_edt(leftover, return_indices=True)
            labels = labels[ri, ci]
    # regions can still be below the minimum after the leftovers were assigned; merge them
    labels = merge_small_regions(labels, features, max_regions, min_px, protect_last=False)
    return labels


class SamRegionPartitioner:
    """SAM automatic mask generation -> non-overlapping label map (segment anything, "encode once").

    Args:
        sam_model: a transformers ``SamModel`` (any size; frozen, eval mode).
        sam_image_processor: the matching ``SamImageProcessor`` (resizes longest side to 1024 and pads).
        points_per_side: the prompt grid is ``points_per_side**2`` points; points_per_batch: decoded at once.
        pred_iou_thresh / stability_score_thresh: mask filters of ``SamAutomaticMaskGenerator``.
        max_regions / min_region_area: the label-map contract (see :func:`masks_to_label_map`).
        work_size: longest side of the frame in which masks are painted (mask logits are upsampled to it).
    """

    def __init__(
        self,
        sam_model: Any,
        sam_image_processor: Any,
        points_per_side: int = 16,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.86,
        stability_score_thresh: float = 0.92,
        stability_score_offset: float = 1.0,
        max_regions: int = 16,
        min_region_area: float = 0.005,
        work_size: int = SAM_WORK_SIZE,
    ):
        self.model = sam_model
        self.image_processor = sam_image_processor
        self.points_per_side = points_per_side
        self.points_per_batch = points_per_batch
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.stability_score_offset = stability_score_offset
        self.max_regions = max_regions
        self.min_region_area = min_region_area
        self.work_size = work_size

    @classmethod
    def from_config(
        cls, sam_model: Any, sam_image_processor: Any, config: RSFIQAConfig
    ) -> SamRegionPartitioner:
        return cls(
            sam_model,
            sam_image_processor,
            points_per_side=config.sam_points_per_side,
            points_per_batch=config.sam_points_per_batch,
            pred_iou_thresh=config.sam_pred_iou_thresh,
            stability_score_thresh=config.sam_stability_score_thresh,
            max_regions=config.max_regions,
            min_region_area=config.min_region_area,
        )

    def generate_masks(self, image: Image.Image) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
        """Run AMG; return ``(masks (N,h,w) bool, scores (N,) = IoU x stability, (h, w))`` in the work frame."""
        import torch
        import torch.nn.functional as F

        model = self.model
        device = next(model.parameters()).device
        dtype = next(model.parameters()).dtype
        inputs = self.image_processor(images=image.convert("RGB"), return_tensors="pt")
        pixel_values = inputs["pixel_values"].to(device=device, dtype=dtype)
        rh, rw = (int(v) for v in inputs["reshaped_input_sizes"][0])
        oh, ow = image.height, image.width
        wh, ww = work_shape(oh, ow, self.work_size)
        pad = self.image_processor.pad_size
        ph, pw = int(pad["height"]), int(pad["width"])

        n = self.points_per_side
        offset = 1.0 / (2 * n)
        ticks = np.linspace(offset, 1 - offset, n)
        grid = np.stack(np.meshgrid(ticks, ticks), -1).reshape(-1, 2)  # (x, y) in [0, 1]
        points = torch.tensor(grid * np.array([rw, rh]), dtype=dtype, device=device)

        all_masks, all_scores = [], []
        with torch.inference_mode():
            embeddings = model.get_image_embeddings(pixel_values)  # the image is encoded once
            for start in range(0, points.shape[0], self.points_per_batch):
                batch = points[start : start + self.points_per_batch]
                p = batch.shape[0]
                out = model(
                    image_embeddings=embeddings,
                    input_points=batch.view(1, p, 1, 2),
                    input_labels=torch.ones(1, p, 1, dtype=torch.long, device=device),
                    multimask_output=True,
                )
                logits = out.pred_masks[0].float()  # (p, 3, 256, 256) over the padded 1024 frame
                iou = out.iou_scores[0].float().reshape(-1)
                lh, lw = logits.shape[-2:]
                logits = logits[..., : max(1, round(lh * rh / ph)), : max(1, round(lw * rw / pw))]
                logits = F.interpolate(
                    logits.reshape(1, -1, *logits.shape[-2:]), (wh, ww), mode="bilinear", align_corners=False
                )[0]
                hi = (logits > self.stability_score_offset).flatten(1).sum(1).float()
                lo = (logits > -self.stability_score_offset).flatten(1).sum(1).float()
                stability = torch.where(lo > 0, hi / lo.clamp(min=1), torch.zeros_like(lo))
                keep = (iou > self.pred_iou_thresh) & (stability > self.stability_score_thresh)
                if keep.any():
                    all_masks.append((logits[keep] > 0).cpu().numpy())
                    all_scores.append((iou[keep] * stability[keep]).cpu().numpy())
        if all_masks:
            return np.concatenate(all_masks), np.concatenate(all_scores), (wh, ww)
        return np.zeros((0, wh, ww), dtype=bool), np.zeros((0,), dtype=np.float32), (wh, ww)

    def __call__(self, image: Image.Image, output_size: tuple[int, int] | None = None) -> np.ndarray:
        """Label map of ``image`` at ``output_size`` (default: the image size)."""
        from skimage.color import rgb2lab

        masks, scores, (wh, ww) = self.generate_masks(image)
        work = np.asarray(image.convert("RGB").resize((ww, wh), Image.BILINEAR), dtype=np.uint8)
        labels = masks_to_label_map(
            masks, scores, self.max_regions, self.min_region_area, features=rgb2lab(work)
        )
        return resize_label_map(labels, output_size or (image.height, image.width))


def partition_image(
    image: Image.Image,
    config: RSFIQAConfig,
    sam_model: Any = None,
    sam_image_processor: Any = None,
    output_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Partition ``image`` with the method and settings of ``config`` (an ``RSFIQAConfig`` or anything with
    the same region fields, e.g. the processor); SAM needs ``sam_model``."""
    if config.partition_method == "superpixel":
        return superpixel_partition(
            image,
            n_segments=config.superpixel_segments,
            compactness=config.superpixel_compactness,
            max_regions=config.max_regions,
            min_region_area=config.min_region_area,
            work_size=getattr(config, "superpixel_work_size", 256),
            output_size=output_size,
        )
    if sam_model is None or sam_image_processor is None:
        raise ValueError(
            "partition_method='sam' needs `sam_model` (e.g. `model.segmenter`) and its image processor"
        )
    return SamRegionPartitioner.from_config(sam_model, sam_image_processor, config)(image, output_size)


def region_summaries(
    label_map: np.ndarray, image_size: tuple[int, int] | None = None
) -> list[dict[str, Any]]:
    """Per region: ``box`` [x0, y0, x1, y1] (inclusive-exclusive, pixels), ``area`` (fraction), ``centroid``.

    ``image_size=(height, width)``: the image the map belongs to, when the map is smaller (e.g. the partition
    at its working size). Boxes and centroids are then in that image's pixels, and every figure is EXACTLY the
    one the map upsampled by :func:`resize_label_map` would give, without building that map (a 12 MP photo
    needs its 64 px working map only). Everything comes from two histograms (pixels per region and row, per
    region and column), so the cost is one pass over the map whatever the number of regions. Negative labels
    are ignored.
    """
    label_map = np.asarray(label_map)
    h, w = label_map.shape
    if label_map.size == 0 or label_map.max() < 0:
        return []
    full_h, full_w = (h, w) if image_size is None else (int(image_size[0]), int(image_size[1]))
    # the nearest-neighbour sampling of resize_label_map: full row y shows map row rows_of[y]
    rows_of = np.minimum(((np.arange(full_h) + 0.5) * h / full_h).astype(np.int64), h - 1)
    cols_of = np.minimum(((np.arange(full_w) + 0.5) * w / full_w).astype(np.int64), w - 1)
    row_mult = np.bincount(rows_of, minlength=h).astype(np.float64)  # full rows per map row
    col_mult = np.bincount(cols_of, minlength=w).astype(np.float64)
    n = int(label_map.max()) + 1
    bins = np.where(label_map >= 0, label_map, n).astype(np.int64)  # ignored pixels -> an extra bin
    # pixels of region k on map row r, counted in full-size pixels (each map column stands for col_mult of them)
    weights_c = np.broadcast_to(col_mult[None, :], (h, w)).ravel()
    weights_r = np.broadcast_to(row_mult[:, None], (h, w)).ravel()
    rows = np.bincount((bins * h + np.arange(h)[:, None]).ravel(), weights_c, minlength=(n + 1) * h)
    cols = np.bincount((bins * w + np.arange(w)[None, :]).ravel(), weights_r, minlength=(n + 1) * w)
    rows = rows.reshape(n + 1, h)[:n][:, rows_of]  # (n, full_h): per full row
    cols = cols.reshape(n + 1, w)[:n][:, cols_of]
    counts = rows.sum(1)
    cy = rows @ np.arange(full_h, dtype=np.float64) / np.maximum(counts, 1)
    cx = cols @ np.arange(full_w, dtype=np.float64) / np.maximum(counts, 1)
    has_row, has_col = rows > 0, cols > 0
    y0, y1 = has_row.argmax(1), full_h - has_row[:, ::-1].argmax(1)
    x0, x1 = has_col.argmax(1), full_w - has_col[:, ::-1].argmax(1)
    return [
        {
            "label": k,
            "box": [int(x0[k]), int(y0[k]), int(x1[k]), int(y1[k])],
            "area": float(counts[k] / (full_h * full_w)),
            "centroid": [float(cx[k]), float(cy[k])],
        }
        for k in range(n)
        if counts[k] > 0
    ]


def sam_fingerprint(sam_model: Any) -> str:
    """``"sam-<encoder width>x<depth>@<digest>"``: SHA-256 of the SAM config and ALL its weights.

    It identifies the segmenter by content, not by path: a store annotated with a SAM folder and a model that
    carries the same SAM weights (e.g. ``model.segmenter`` after ``load_pretrained_segmenter``) agree, wherever
    the folder lives. Hashing ViT-H's 2.5 GB of weights takes a few seconds, once per job.
    """
    import hashlib
    import json

    import torch

    tensors = list(sam_model.state_dict().values())
    try:  # cached on the model until a weight changes (storage or in-place version)
        stamp = tuple((t.data_ptr(), t._version) for t in tensors)
    except RuntimeError:  # inference tensors have no version counter
        stamp = None
    cached = sam_model.__dict__.get("_rsfiqa_sam_fingerprint")
    if stamp is not None and cached is not None and cached[0] == stamp:
        return cached[1]
    config = sam_model.config.to_dict()
    for key in ("_name_or_path", "transformers_version", "architectures", "dtype", "torch_dtype"):
        config.pop(key, None)
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for name, tensor in sorted(sam_model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    vision = getattr(sam_model.config, "vision_config", None)
    size = f"{getattr(vision, 'hidden_size', '?')}x{getattr(vision, 'num_hidden_layers', '?')}"
    fingerprint = f"sam-{size}@{digest.hexdigest()[:16]}"
    if stamp is not None:
        sam_model.__dict__["_rsfiqa_sam_fingerprint"] = (stamp, fingerprint)
    return fingerprint


def load_sam_model(path: str, device: Any = None, dtype: Any = None) -> tuple[Any, Any]:
    """``(SamModel, SamImageProcessor)`` from a folder saved with ``SamModel.save_pretrained`` and
    ``SamProcessor.save_pretrained`` (e.g. a local copy of ``facebook/sam-vit-huge``), in eval mode.

    Raises ``FileNotFoundError`` / ``ValueError`` naming the folder and what is missing when it is not one.
    """
    import json
    import os

    path = os.fspath(path)
    hint = (
        "expected a folder written by `SamModel.save_pretrained(DIR)` and `SamProcessor.save_pretrained(DIR)` "
        "(config.json with model_type 'sam', the weights, and processor_config.json or preprocessor_config.json)"
    )
    if not os.path.isdir(path):
        raise FileNotFoundError(f"SAM model folder {path!r} does not exist; {hint}")
    config_file = os.path.join(path, "config.json")
    if not os.path.isfile(config_file):
        raise ValueError(f"{path!r} is not a saved SAM model: no config.json; {hint}")
    try:
        with open(config_file, encoding="utf-8") as f:
            model_type = json.load(f).get("model_type")
    except (OSError, ValueError) as err:
        raise ValueError(f"{path!r}: unreadable config.json ({err}); {hint}") from err
    if model_type != "sam":
        raise ValueError(f"{path!r} holds a {model_type!r} model, not SAM (model_type 'sam'); {hint}")
    names = os.listdir(path)
    if not any(n.endswith((".safetensors", ".bin")) for n in names):
        raise ValueError(f"{path!r} has a SAM config but no weights (*.safetensors / *.bin); {hint}")
    if not {"processor_config.json", "preprocessor_config.json"} & set(names):
        raise ValueError(
            f"{path!r} has no SAM image processor (processor_config.json / preprocessor_config.json); {hint}"
        )
    from transformers import SamModel, SamProcessor

    processor = SamProcessor.from_pretrained(path)
    model = SamModel.from_pretrained(path, dtype=dtype or "auto")
    if device is not None:
        model = model.to(device)
    model.requires_grad_(False)
    return model.eval(), processor.image_processor


def sam_prompt_masks(
    sam_model: Any,
    sam_image_processor: Any,
    image: Image.Image,
    prompts: list[dict[str, Any]],
    output_size: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Masks for point prompts with SAM: the image is encoded ONCE, every prompt is decoded against it.

    ``prompts``: one dict per wanted mask, ``{"points": [[x, y], ...], "labels": [1, 0, ...]}`` in pixels of
    ``image`` (labels: 1 = foreground, 0 = background; default all 1). For each prompt SAM's three candidate
    masks are scored and the one with the highest predicted IoU is kept (segment-anything's
    ``multimask_output`` recipe for ambiguous single points). Returns ``(masks (N, H, W) bool, iou (N,))`` at
    ``output_size`` (default: the image size).
    """
    import torch
    import torch.nn.functional as F

    image = image.convert("RGB")
    oh, ow = image.height, image.width
    out_h, out_w = output_size or (oh, ow)
    if not prompts:
        return np.zeros((0, out_h, out_w), dtype=bool), np.zeros((0,), dtype=np.float32)
    device = next(sam_model.parameters()).device
    dtype = next(sam_model.parameters()).dtype
    inputs = sam_image_processor(images=image, return_tensors="pt")
    rh, rw = (int(v) for v in inputs["reshaped_input_sizes"][0])
    pad = sam_image_processor.pad_size
    ph, pw = int(pad["height"]), int(pad["width"])
    masks, ious = [], []
    with torch.inference_mode():
        embeddings = sam_model.get_image_embeddings(inputs["pixel_values"].to(device=device, dtype=dtype))
        for prompt in prompts:
            pts = np.asarray(prompt["points"], dtype=np.float64).reshape(-1, 2)
            labels = np.asarray(prompt.get("labels", [1] * len(pts)), dtype=np.int64).reshape(-1)
            if len(labels) != len(pts):
                raise ValueError(f"{len(labels)} point labels for {len(pts)} points")
            scaled = pts * np.array([rw / ow, rh / oh])
            out = sam_model(
                image_embeddings=embeddings,
                input_points=torch.tensor(scaled, dtype=dtype, device=device).view(1, 1, -1, 2),
                input_labels=torch.tensor(labels, device=device).view(1, 1, -1),
                multimask_output=True,
            )
            logits = out.pred_masks[0, 0].float()  # (3, 256, 256) over the padded frame
            iou = out.iou_scores[0, 0].float()
            best = int(iou.argmax())
            lh, lw = logits.shape[-2:]
            logit = logits[best, : max(1, round(lh * rh / ph)), : max(1, round(lw * rw / pw))]
            logit = F.interpolate(logit[None, None], (out_h, out_w), mode="bilinear", align_corners=False)[
                0, 0
            ]
            masks.append((logit > 0).cpu().numpy())
            ious.append(float(iou[best]))
    return np.stack(masks), np.asarray(ious, dtype=np.float32)
