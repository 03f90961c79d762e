"""Convert the published SEAGULL ROI datasets into the ROI dataset format of ``seagull_synthetic.py``.

    python datasets_scripts/convert_seagull.py seagull100w --root DIR --out DIR [--seed 0] [--test-fraction 0.05]
    python datasets_scripts/convert_seagull.py seagull3k --root DIR --out DIR

Like ``convert.py`` (one ``read_*`` per dataset in a registry, the expected layout in each docstring), but
the output is the ROI schema of ``datasets_scripts/seagull_synthetic.py`` (one row per image, a list of
ROIs with COCO RLE masks, boxes, quality and importance 0..100, distortion types and severities), written
as resumable Parquet shards ``OUT/data/<split>-XXXXX-of-NNNNN.parquet`` and loaded with
``modeling_rsfiqa.roi_synthesis.load_roi_dataset(OUT)``.

What the reference documents, and what it does not (read this before trusting a conversion):

* SEAGULL-100w (Chen et al., arXiv 2411.10161; dataset card of Zevin2023/SEAGULL-100w) documents the
  FOLDER layout and the label FILE NAMES (see :func:`read_seagull100w`), the six type folders and the
  twenty parameter folders per type, and warns that "the distortion degrees do not strongly correlate
  with the folder serial number" -- so the folder index is kept as ``implementation`` (e.g.
  ``Blur_7``) and NOT turned into a level or severity. Its labels come from TOPIQ-FR.
* It does NOT document the inside of the label JSON files. The readers therefore accept the forms the
  reference code uses for ROIs (its demo's ``{"img": ..., "rle": <COCO counts string>, "points":
  [x0, y0, x1, y1]}``) and the common COCO forms, under the key names listed in :data:`FIELD_ALIASES`
  (``--field-map '{"quality": "my_key"}'`` adds others), and stop with an error that shows the
  structure they found when none matches.
* SEAGULL-3k is not released (the reference README lists it as TODO), so its layout is not documented
  at all; :func:`read_seagull3k` reads the per-ROI record form above, extended by the labels the paper
  describes (quality, importance, distortion types with severity), and should be checked against the
  release when it comes.

Scores on [0, 1] (TOPIQ's range) are scaled to 0..100; the original values are kept in
``quality_raw`` / ``importance_raw``. Importance keeps the dataset's direction (higher = matters more)
unless ``--importance-is-similarity`` says the file holds the FR similarity of the image with only
that ROI distorted, which is then mapped like the synthetic set (``roi_synthesis.importance_from_similarity``).
Splits: a ``split`` field in the records when present (official); otherwise a seeded split over the
REFERENCE images (``convert.assign_splits``), so the distorted versions of one photo stay on one side.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tqdm.auto import tqdm  # noqa: E402

from datasets_scripts.convert import assign_splits  # noqa: E402
from datasets_scripts.seagull_synthetic import shard_finished, write_parquet_shard  # noqa: E402
from modeling_rsfiqa import roi_synthesis as rs  # noqa: E402
from modeling_rsfiqa.quality_metrics import severity_level  # noqa: E402

__all__ = [
    "SEAGULL100W_TYPES",
    "FIELD_ALIASES",
    "SEVERITY_WORDS",
    "RoiRecord",
    "ImageRecord",
    "ROI_CONVERTERS",
    "read_seagull100w",
    "read_seagull3k",
    "convert_rois",
    "main",
]

META_FILE = "rsfiqa_roi_dataset.json"

#: Type folders of SEAGULL-100w/Dist.Images -> SEAGULL distortion type.
SEAGULL100W_TYPES: dict[str, str] = {
    "Blur": "blur",
    "Colorfulness": "colorfulness",
    "Compression": "compression",
    "Contrast": "contrast",
    "Exposure": "exposure",
    "Noise": "noise",
}

#: Accepted key names of each field in the label JSON (first match wins; case-insensitive).
FIELD_ALIASES: dict[str, tuple[str, ...]] = {
    "image": ("img", "image", "image_name", "img_name", "file_name", "filename", "name", "image_id", "id"),
    "rois": ("rois", "roi", "masks", "regions", "annotations", "objects"),
    "rle": ("rle", "segmentation", "mask", "counts"),
    "box": ("points", "box", "bbox_xyxy"),  # [x0, y0, x1, y1] (the reference demo's "points")
    "bbox": ("bbox",),  # COCO [x, y, w, h]
    "quality": ("quality", "quality_score", "roi_quality", "q_score", "score"),
    "importance": ("importance", "importance_score", "roi_importance", "i_score"),
    "distortions": ("distortions", "distortion", "distortion_types", "distortion_type", "dist_types"),
    "severity": ("severity", "severities", "degree", "level", "levels"),
    "split": ("split", "set", "subset"),
}

#: Severity words -> level 1..5 (0 = none), for labels given in words.
SEVERITY_WORDS: dict[str, int] = {
    "none": 0,
    "no": 0,
    "slight": 1,
    "slightly": 1,
    "minor": 1,
    "mild": 1,
    "light": 1,
    "low": 2,
    "moderate": 3,
    "medium": 3,
    "noticeable": 3,
    "obvious": 4,
    "significant": 4,
    "high": 4,
    "severe": 5,
    "serious": 5,
    "heavy": 5,
    "strong": 5,
    "extreme": 5,
}


@dataclass
class RoiRecord:
    """One ROI as read from a label file (mask as RLE or box; labels on the file's own scale)."""

    rle: dict[str, Any] | None
    box: list[float] | None
    quality: float | None = None
    importance: float | None = None
    distortions: dict[str, float | int | None] = field(default_factory=dict)  # type -> severity/level/None


@dataclass
class ImageRecord:
    """One image with its ROIs, before the conversion to the stored schema."""

    sample_id: str
    image: Path
    reference_id: str
    source: str
    distortion: str | None
    implementation: str | None
    rois: list[RoiRecord]
    split: str | None = None


# --------------------------------------------------------------------------- tolerant JSON access


def _aliases(name: str, field_map: dict[str, str]) -> tuple[str, ...]:
    extra = (field_map[name],) if name in field_map else ()
    return extra + FIELD_ALIASES[name]


def _get(obj: dict, name: str, field_map: dict[str, str], default: Any = None) -> Any:
    lower = {str(k).lower(): k for k in obj}
    for alias in _aliases(name, field_map):
        if alias.lower() in lower:
            return obj[lower[alias.lower()]]
    return default


def _shape_of(obj: Any, depth: int = 0) -> str:
    """A short description of a JSON structure, for error messages."""
    if depth > 2:
        return "..."
    if isinstance(obj, dict):
        items = list(obj.items())[:4]
        inner = ", ".join(f"{k!r}: {_shape_of(v, depth + 1)}" for k, v in items)
        return "{" + inner + (", ..." if len(obj) > 4 else "") + "}"
    if isinstance(obj, list):
        return f"[{_shape_of(obj[0], depth + 1)}, ...] ({len(obj)} items)" if obj else "[]"
    return type(obj).__name__


def _load_json(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"label file not found: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err


def _stem(name: Any) -> str:
    return Path(str(name)).stem


def _float(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: expected a number, got {value!r}") from None
    return v if np.isfinite(v) else None


def _parse_rle(value: Any, where: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, str):  # the reference demo: a bare compressed counts string (size from the image)
        return {"size": None, "counts": value}
    if isinstance(value, dict) and "counts" in value:
        return {"size": value.get("size"), "counts": value["counts"]}
    raise ValueError(f"{where}: unreadable mask {_shape_of(value)} (expected a COCO RLE or a counts string)")


def _parse_distortions(value: Any, severity: Any, where: str) -> dict[str, float | int | None]:
    """``{type: severity}`` from a dict, a list of types (+ aligned severities) or one type name."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k).lower(): _severity(v, where) for k, v in value.items()}
    names = [value] if isinstance(value, str) else list(value)
    if severity is None:
        sev = [None] * len(names)
    else:
        sev = [severity] if not isinstance(severity, (list, tuple)) else list(severity)
        if len(sev) != len(names):
            raise ValueError(f"{where}: {len(names)} distortion types but {len(sev)} severities")
    return {str(n).lower(): _severity(s, where) for n, s in zip(names, sev)}


def _severity(value: Any, where: str) -> float | int | None:
    """A severity in [0, 1] (float), a level 1..5 (int) or None; words via :data:`SEVERITY_WORDS`."""
    if value is None:
        return None
    if isinstance(value, str):
        word = value.strip().lower()
        if word in SEVERITY_WORDS:
            return SEVERITY_WORDS[word]
        try:
            value = float(word)
        except ValueError:
            raise ValueError(
                f"{where}: unknown severity word {value!r}; known: {sorted(SEVERITY_WORDS)}"
            ) from None
    if isinstance(value, bool):
        raise ValueError(f"{where}: severity must be a number or a word, got {value!r}")
    if isinstance(value, (int, np.integer)) or (
        isinstance(value, float) and value.is_integer() and value > 1
    ):
        return int(value)
    return float(value)


def _roi_from(obj: Any, field_map: dict[str, str], where: str) -> RoiRecord:
    if isinstance(obj, str) or (isinstance(obj, dict) and "counts" in obj):
        return RoiRecord(_parse_rle(obj, where), None)
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: unreadable ROI {_shape_of(obj)}")
    rle = _parse_rle(_get(obj, "rle", field_map), where)
    box = _get(obj, "box", field_map)
    if box is None and _get(obj, "bbox", field_map) is not None:
        x, y, bw, bh = (float(v) for v in _get(obj, "bbox", field_map))
        box = [x, y, x + bw, y + bh]
    if rle is None and box is None:
        raise ValueError(
            f"{where}: ROI has neither a mask ({', '.join(_aliases('rle', field_map))}) nor a box "
            f"({', '.join(_aliases('box', field_map))}); found keys {sorted(obj)}"
        )
    return RoiRecord(
        rle,
        None if box is None else [float(v) for v in box],
        _float(_get(obj, "quality", field_map), f"{where} quality"),
        _float(_get(obj, "importance", field_map), f"{where} importance"),
        _parse_distortions(_get(obj, "distortions", field_map), _get(obj, "severity", field_map), where),
    )


def _per_image(data: Any, field_map: dict[str, str], what: str) -> dict[str, list[Any]]:
    """``{image stem: [ROI objects]}`` from ``{image: [ROI, ...]}``, ``{image: {"rois": [...]}}`` or a list
    of records ``{"img": ..., <ROI fields> | "rois": [...]}`` (one record per ROI or per image)."""
    out: dict[str, list[Any]] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            if isinstance(value, dict) and _get(value, "rois", field_map) is not None:
                value = _get(value, "rois", field_map)
            out.setdefault(_stem(key), []).extend(value if isinstance(value, list) else [value])
        return out
    if isinstance(data, list):
        for i, rec in enumerate(data):
            name = _get(rec, "image", field_map) if isinstance(rec, dict) else None
            if name is None:
                raise ValueError(
                    f"{what}: record {i} names no image (keys {', '.join(_aliases('image', field_map))}); "
                    f"found {_shape_of(rec)}"
                )
            rois = _get(rec, "rois", field_map)
            out.setdefault(_stem(name), []).extend(rois if isinstance(rois, list) else [rec])
        return out
    raise ValueError(f"{what}: expected a JSON object or list, found {_shape_of(data)}")


# --------------------------------------------------------------------------- readers


def _distorted_key(key: str) -> tuple[str, str, str] | None:
    """``(Type, Type_k, id)`` from keys like ``Blur/Blur_3/id.png``, ``Dist.Images/Blur/Blur_3/id``,
    ``Blur_3/id.png`` or ``Blur_3_id``."""
    m = re.search(
        r"(?:^|/)(?:([A-Za-z]+)/)?(([A-Za-z]+)_(\d+))[/_]([^/]+?)(?:\.\w+)?$", key.replace("\\", "/")
    )
    if not m:
        return None
    kind = m.group(3)
    return kind, m.group(2), m.group(5)


def read_seagull100w(
    root: Path, field_map: dict[str, str] | None = None, importance_is_similarity: bool = False, **_: Any
) -> tuple[list[ImageRecord], dict[str, Any]]:
    """SEAGULL-100w, as its dataset card documents it (zips extracted in place)::

        Dist.Images/<Type>/<Type>_<k>/<id>.png   Type in Blur, Colorfulness, Compression, Contrast,
                                                 Exposure, Noise; k = 0..19 (a parameter index, not a degree)
        Ref.Images/<id>.png
        Labels/SEAGULL-100w_mask-based-rois.json   the ROIs of every reference id
        Labels/SEAGULL-100w_scores.json            per distorted image, the labels of its ROIs
        (Labels/*_fast-view.json: small excerpts; used only with --labels-suffix _fast-view)

    ROI file: ``{id: [roi, ...]}`` or records ``{"img": id, "rle": ..., "points": [x0, y0, x1, y1]}``.
    Score file: ``{"<Type>/<Type>_<k>/<id>.png": [{"quality": q, "importance": i}, ...]}`` (one entry per
    ROI, in the ROI file's order; keys may also be ``<Type>_<k>/<id>``), or records with an image key
    and ``rois``; per-ROI ``{"quality": [...], "importance": [...]}`` lists are accepted too.
    One row per distorted image; every ROI gets the folder's type without a severity.
    """
    field_map = field_map or {}
    suffix = _.get("labels_suffix", "")
    dist_root = root / "Dist.Images"
    ref_root = root / "Ref.Images"
    for folder in (dist_root, ref_root):
        if not folder.is_dir():
            zips = sorted(root.glob(f"{folder.name}*.zip")) + sorted(dist_root.glob("*/*.zip"))
            hint = f" (found {zips[0].name}: extract the archives in place first)" if zips else ""
            raise FileNotFoundError(f"SEAGULL-100w folder not found: {folder}{hint}")
    rois_by_ref = _per_image(
        _load_json(root / "Labels" / f"SEAGULL-100w_mask-based-rois{suffix}.json"),
        field_map,
        "mask-based-rois",
    )
    scores = _load_json(root / "Labels" / f"SEAGULL-100w_scores{suffix}.json")
    if isinstance(scores, list):
        scores = {str(_get(r, "image", field_map)): _get(r, "rois", field_map, r) for r in scores}
    if not isinstance(scores, dict):
        raise ValueError(f"SEAGULL-100w scores: expected an object keyed by image, found {_shape_of(scores)}")
    records = []
    for key, labels in scores.items():
        parsed = _distorted_key(str(key))
        if parsed is None or parsed[0] not in SEAGULL100W_TYPES:
            raise ValueError(
                f"SEAGULL-100w scores: cannot read the distorted image key {key!r} "
                f"(expected <Type>/<Type>_<k>/<id>.png with Type in {sorted(SEAGULL100W_TYPES)})"
            )
        kind, folder, ref_id = parsed
        if ref_id not in rois_by_ref:
            raise ValueError(f"SEAGULL-100w: {key!r} has scores but the ROI file has no ROIs for {ref_id!r}")
        roi_objs = rois_by_ref[ref_id]
        if isinstance(labels, dict):  # {"quality": [...], "importance": [...]}
            q = _get(labels, "quality", field_map)
            i = _get(labels, "importance", field_map)
            q = q if isinstance(q, list) else [q]
            i = i if isinstance(i, list) else [i] * len(q)
            labels = [{"quality": a, "importance": b} for a, b in zip(q, i)]
        if not isinstance(labels, list) or len(labels) != len(roi_objs):
            raise ValueError(
                f"SEAGULL-100w: {key!r} has {len(labels) if isinstance(labels, list) else _shape_of(labels)} "
                f"score entries for {len(roi_objs)} ROIs of {ref_id!r}"
            )
        rois = []
        for j, (obj, lab) in enumerate(zip(roi_objs, labels)):
            where = f"{key} ROI {j}"
            roi = _roi_from(obj, field_map, where)
            if isinstance(lab, dict):
                roi.quality = _float(_get(lab, "quality", field_map), f"{where} quality")
                roi.importance = _float(_get(lab, "importance", field_map), f"{where} importance")
            else:
                roi.quality = _float(lab, f"{where} quality")
            roi.distortions = {SEAGULL100W_TYPES[kind]: None}
            rois.append(roi)
        image = dist_root / kind / folder / f"{ref_id}.png"
        records.append(
            ImageRecord(
                f"{folder}/{ref_id}", image, ref_id, "seagull100w", SEAGULL100W_TYPES[kind], folder, rois
            )
        )
    meta = {
        "dataset": "seagull100w",
        "citation": "Chen et al. SEAGULL: No-reference Image Quality Assessment for Regions of Interest via "
        "Vision-Language Instruction Tuning. arXiv 2411.10161, 2024.",
        "notes": "labels from TOPIQ-FR; folder index k kept as `implementation`, not a severity",
        "importance_is_similarity": importance_is_similarity,
    }
    return records, meta


def read_seagull3k(
    root: Path,
    field_map: dict[str, str] | None = None,
    importance_is_similarity: bool = False,
    **options: Any,
) -> tuple[list[ImageRecord], dict[str, Any]]:
    """SEAGULL-3k (authentic distortions, human labels). NOT released yet: no layout is documented. Read::

        Images/<name>                       (or images/, or next to the label file; found by name)
        Labels/*.json  or  --labels FILE    records, one per ROI or per image with "rois":
            {"img": "<name>", "rle": <COCO RLE or counts string> | "points": [x0, y0, x1, y1],
             "quality": q, "importance": i,
             "distortions": {"blur": "moderate", "noise": 0.4} | ["blur", "noise"] (+ "severity": [...]),
             "split": "train" | "test" (optional)}

    Severities may be words (:data:`SEVERITY_WORDS`), levels 1..5 or values in [0, 1].
    """
    field_map = field_map or {}
    labels = options.get("labels")
    if labels is None:
        candidates = sorted((root / "Labels").glob("*.json")) + sorted(root.glob("*.json"))
        if not candidates:
            raise FileNotFoundError(
                f"SEAGULL-3k: no label JSON in {root / 'Labels'} or {root} (or pass --labels)"
            )
        labels = candidates[0]
    data = _load_json(Path(labels))
    splits: dict[str, str] = {}
    if isinstance(data, list):
        for rec in data:
            if isinstance(rec, dict) and _get(rec, "split", field_map) is not None:
                splits[_stem(_get(rec, "image", field_map))] = str(_get(rec, "split", field_map)).lower()
    index = {}
    for folder in (root / "Images", root / "images", root):
        if folder.is_dir():
            for p in sorted(folder.rglob("*")):
                if p.is_file() and p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif"):
                    index.setdefault(p.stem, p)
    records = []
    for stem, objs in _per_image(data, field_map, Path(labels).name).items():
        if stem not in index:
            raise FileNotFoundError(
                f"SEAGULL-3k: image {stem!r} of {Path(labels).name} not found under {root}"
            )
        rois = [_roi_from(o, field_map, f"{stem} ROI {j}") for j, o in enumerate(objs)]
        split = splits.get(stem)
        split = (
            {"training": "train", "testing": "test", "val": "validation"}.get(split, split) if split else None
        )
        records.append(ImageRecord(stem, index[stem], stem, "seagull3k", None, None, rois, split))
    meta = {
        "dataset": "seagull3k",
        "citation": "Chen et al. SEAGULL, arXiv 2411.10161, 2024 (SEAGULL-3k: human ROI labels).",
        "notes": "layout assumed (SEAGULL-3k is not released); see read_seagull3k",
        "importance_is_similarity": importance_is_similarity,
    }
    return records, meta


ROI_CONVERTERS: dict[str, Callable[..., tuple[list[ImageRecord], dict[str, Any]]]] = {
    "seagull100w": read_seagull100w,
    "seagull3k": read_seagull3k,
}


# --------------------------------------------------------------------------- conversion


def _scale(values: Iterable[float | None]) -> float:
    """100 when every known value lies in [0, 1] (TOPIQ-like scores), else 1 (already 0..100)."""
    known = [v for v in values if v is not None]
    return 100.0 if known and max(known) <= 1.0 and min(known) >= 0.0 else 1.0


def _roi_row(
    roi: RoiRecord, size: tuple[int, int], q_scale: float, i_scale: float, as_similarity: bool, where: str
):
    h, w = size
    if roi.rle is not None:
        rle = dict(roi.rle)
        if rle.get("size") is None:
            rle["size"] = [h, w]
        mask = rs.rle_to_mask(rle)
        if mask.shape != (h, w):
            raise ValueError(f"{where}: mask of size {list(mask.shape)} for an image of {h}x{w}")
        shape = "mask"
    else:
        x0, y0, x1, y1 = (int(round(v)) for v in roi.box)
        mask = rs.box_mask((h, w), (max(0, x0), max(0, y0), min(w, x1), min(h, y1)))
        shape = "box"
    if not mask.any():
        raise ValueError(f"{where}: empty mask")
    quality = None if roi.quality is None else roi.quality * q_scale
    if roi.importance is None:
        importance = None
    elif as_similarity:  # the FR similarity (0..1 or 0..100) of the image with only this ROI distorted
        importance = rs.importance_from_similarity(roi.importance * i_scale / 100.0)
    else:
        importance = roi.importance * i_scale
    # levels (ints) and severities in [0, 1] (floats); level 0 / severity ~0 = the type is absent
    present = {
        name: value
        for name, value in roi.distortions.items()
        if value is None or (severity_level(value, rs.NUM_LEVELS) if isinstance(value, float) else value) > 0
    }
    names = sorted(present)
    sev = [present[n] for n in names]
    known = all(v is not None for v in sev)
    levels = [v if isinstance(v, int) else severity_level(v, rs.NUM_LEVELS) for v in sev] if known else []
    severities = [v / rs.NUM_LEVELS if isinstance(v, int) else float(v) for v in sev] if known else []
    return {
        "rle": rs.mask_to_rle(mask),
        "box": list(rs.mask_box(mask)),
        "shape": shape,
        "area": float(mask.mean()),
        "quality": quality,
        "importance": importance,
        "quality_raw": roi.quality,
        "importance_raw": roi.importance,
        "distortions": names,
        "levels": levels,
        "severities": severities,
    }


def convert_rois(
    dataset: str,
    root: str | Path,
    out: str | Path,
    seed: int = 0,
    test_fraction: float = 0.05,
    shard_size: int = 200,
    field_map: dict[str, str] | None = None,
    importance_is_similarity: bool = False,
    progress: bool = True,
    **options: Any,
) -> dict[str, Any]:
    """Read ``dataset`` from ``root`` and write (or resume) the ROI dataset in ``out``; returns its metadata."""
    if dataset not in ROI_CONVERTERS:
        raise ValueError(f"Unknown ROI dataset {dataset!r}; choose from {sorted(ROI_CONVERTERS)}")
    root, out = Path(root), Path(out)
    if not root.is_dir():
        raise FileNotFoundError(f"{dataset} root folder not found: {root}")
    records, meta = ROI_CONVERTERS[dataset](
        root, field_map=field_map, importance_is_similarity=importance_is_similarity, **options
    )
    if not records:
        raise ValueError(f"{dataset}: no labelled images under {root}")
    missing = [str(r.image) for r in records if not r.image.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{dataset}: {len(missing)} labelled image(s) are missing, e.g. {missing[:3]}"
        )
    if all(r.split for r in records):
        meta["split"] = "official"
    else:
        for r, s in zip(records, assign_splits([r.reference_id for r in records], seed, test_fraction)):
            r.split = s
        meta.update(split="random over reference images", split_seed=seed, test_fraction=test_fraction)
    q_scale = _scale(roi.quality for r in records for roi in r.rois)
    i_scale = _scale(roi.importance for r in records for roi in r.rois)
    meta.update(quality_scale=q_scale, importance_scale=i_scale, field_map=field_map or {})
    settings = {"dataset": dataset, "root": str(root.resolve()), "shard_size": shard_size, **meta}
    meta_path = out / META_FILE
    if meta_path.exists() and json.loads(meta_path.read_text()).get("settings") != settings:
        raise ValueError(f"{out} holds another conversion (other settings); use another --out folder")
    (out / "data").mkdir(parents=True, exist_ok=True)
    meta_path.write_text(json.dumps({"settings": settings, "status": "converting"}, indent=2) + "\n")

    from PIL import Image

    features = rs.roi_dataset_features()
    by_split: dict[str, list[ImageRecord]] = {}
    for r in sorted(records, key=lambda r: r.sample_id):
        by_split.setdefault(r.split, []).append(r)
    total = len(records)
    with tqdm(total=total, desc=f"{dataset} -> ROI dataset", unit="image", disable=not progress) as bar:
        for split, rows in sorted(by_split.items()):
            n = -(-len(rows) // shard_size)
            for i in range(n):
                path = out / "data" / f"{split}-{i:05d}-of-{n:05d}.parquet"
                chunk = rows[i * shard_size : (i + 1) * shard_size]
                if shard_finished(path, len(chunk)):
                    bar.update(len(chunk))
                    continue
                out_rows = []
                for rec in chunk:
                    with Image.open(rec.image) as im:
                        w, h = im.size
                    rois = [
                        _roi_row(
                            roi,
                            (h, w),
                            q_scale,
                            i_scale,
                            importance_is_similarity,
                            f"{rec.sample_id} ROI {j}",
                        )
                        for j, roi in enumerate(rec.rois)
                    ]
                    out_rows.append(
                        {
                            "sample_id": rec.sample_id,
                            "image": {"bytes": rec.image.read_bytes(), "path": None},
                            "reference_id": rec.reference_id,
                            "source": rec.source,
                            "split": split,
                            "width": w,
                            "height": h,
                            "distortion": rec.distortion,
                            "implementation": rec.implementation,
                            "parameter": None,
                            "level": None,
                            "severity": None,
                            "rois": rois,
                        }
                    )
                    bar.update(1)
                write_parquet_shard(out_rows, features, path)
    final = {
        "settings": settings,
        "status": "complete",
        "num_rows": {s: len(v) for s, v in by_split.items()},
        "num_rois": {s: sum(len(r.rois) for r in v) for s, v in by_split.items()},
    }
    meta_path.write_text(json.dumps(final, indent=2) + "\n")
    return final


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", choices=sorted(ROI_CONVERTERS))
    parser.add_argument("--root", required=True, type=Path, help="the extracted dataset folder")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--seed", type=int, default=0, help="split seed when there is no official split")
    parser.add_argument("--test-fraction", type=float, default=0.05)
    parser.add_argument("--shard-size", type=int, default=200)
    parser.add_argument("--labels", type=Path, help="seagull3k: the label JSON (default: Labels/*.json)")
    parser.add_argument(
        "--labels-suffix", default="", help="seagull100w: '_fast-view' to convert the small excerpt files"
    )
    parser.add_argument(
        "--field-map",
        default="{}",
        help='JSON {"field": "key in your files"}; fields: ' + ", ".join(FIELD_ALIASES),
    )
    parser.add_argument(
        "--importance-is-similarity",
        action="store_true",
        help="the importance values are FR similarities of the image with only that ROI distorted",
    )
    args = parser.parse_args(argv)
    try:
        field_map = json.loads(args.field_map)
    except json.JSONDecodeError as err:
        parser.error(f"--field-map is not JSON: {err}")
    unknown = sorted(set(field_map) - set(FIELD_ALIASES))
    if unknown:
        parser.error(f"--field-map: unknown field(s) {unknown}; fields: {sorted(FIELD_ALIASES)}")
    options: dict[str, Any] = {}
    if args.dataset == "seagull3k" and args.labels:
        options["labels"] = args.labels
    if args.dataset == "seagull100w":
        options["labels_suffix"] = args.labels_suffix
    meta = convert_rois(
        args.dataset,
        args.root,
        args.out,
        seed=args.seed,
        test_fraction=args.test_fraction,
        shard_size=args.shard_size,
        field_map=field_map,
        importance_is_similarity=args.importance_is_similarity,
        **options,
    )
    print(
        f"{args.dataset}: wrote {args.out} ({json.dumps(meta['num_rows'])} images, {json.dumps(meta['num_rois'])} ROIs)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
