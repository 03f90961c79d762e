"""Build video quality datasets from still photos with PyAV: synthetic distortions and CLIVE clips.

    python datasets_scripts/video_clips.py synthetic --pristine ../shared/data/pristine --out DIR
    python datasets_scripts/video_clips.py clive --src ../shared/data/clive-train --out DIR

Both write, into ``DIR`` (keep it OUTSIDE the repository, e.g. ``../cache/qclip-clips/synthetic``):

    videos/<name>.mp4          the clips (H.264 in mp4 unless told otherwise)
    data/<split>.parquet       one row per clip (``Dataset.to_parquet``); ``video`` is the clip's path
                               relative to DIR, so the folder can be moved as a whole
    rsfiqa_dataset.json        what the label means (:class:`~datasets_scripts.convert.DatasetMeta`),
                               the build settings, split sizes and label statistics
    progress.jsonl             finished clips; a re-run skips them (resume after an interruption)

:func:`load_clip_dataset` returns the ``DatasetDict`` with absolute video paths.

**synthetic** -- every photo of ``--pristine`` (its sub-folders kodak24 / cbsd68 / sun-hays80) becomes
a 2 s clip with a seeded random camera move (pan, zoom in or out, or both; mild hand-held shake on
half of them; :class:`~modeling_rsfiqa.video_synthesis.CameraPath`), rendered once and then made in
``1 + 5 x 5`` versions: the pristine clip (``distortion_type = "pristine"``, level 0, H.264 at the base
CRF) and five types x five levels (:data:`VIDEO_DISTORTIONS`): ``h264`` (the CRF rises with the
level), ``gaussian_blur``, ``white_noise`` (fresh noise in every frame), ``brighten`` and ``darken``
(the exposure changes of KADID-10k), the last four at the base CRF. Split: kodak24 is the held-out
``validation`` split, cbsd68 and sun-hays80 ``train``; kodak24 also gets a ``stutter`` split (frames
repeated; level = number of repeats, label left empty: mean-pooled frame features cannot see it, and
a full-reference metric would only measure the misalignment) for reporting whether a model notices.

Quality label (``mos``, 0..100, higher is better) of a synthetic clip: ``100 x`` the mean over frames
(every second frame: I, P and B frames alike) of HaarPSI (Reisenhofer, Bosse, Kutyniok, Wiegand, "A
Haar wavelet-based perceptual similarity index for image quality assessment", Signal Processing:
Image Communication 61, 2018; the implementation of the maintained ``piq`` library) between each DECODED frame and the same frame of the clean render
(passed through the same 4:2:0 colour conversion, so that chroma subsampling, common to every clip,
is not counted as a defect). Why a full-reference metric and not the level: it puts all types on one
scale (level 3 of blur and level 3 of noise are not equally bad), it measures what the model will see
after the encoder (x264 partly removes noise and adds its own blocking), and it follows the content
(the same CRF hurts a textured photo more than a smooth one). Why HaarPSI: it is bounded in [0, 1]
with 1 = identical, so ``100 x`` is a natural 0..100 scale, it needs no learned weights (nothing to
download), and its paper reports it among the FR metrics closest to human scores on LIVE, TID2013
and CSIQ, which mix the same distortion families (blur, noise, compression, intensity shifts).
PSNR and SSIM (scikit-image) and the level are stored too, for other labellings.

**clive** -- each of the 813 CLIVE training photos becomes a 2 s clip with a slow move (zoom 1 -> 1.1
or a short pan at zoom 1.1, no shake), encoded near-transparently (CRF 16) so the photo's authentic
distortions dominate; ``mos`` / ``mos_std`` are the photo's MOS (0..100). The HaarPSI / PSNR / SSIM
columns here measure the encode against the clean render (how transparent it was). Split: the
validation photos of ``examples/train_rsfiqa_mobile.py`` (file names sorted,
``np.random.RandomState(0).permutation``, the last 20%), so a video model trained on these clips is
never validated on a clip of a photo it trained on, and numbers compare with RSFIQA's.

Seeded: the camera move of a photo depends only on ``--seed`` and the photo's name, noise only on those
and the frame index; x264 is deterministic, so a rebuilt clip is identical.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tqdm.auto import tqdm  # noqa: E402

from datasets_scripts.convert import DatasetMeta  # noqa: E402
from modeling_rsfiqa import video_synthesis as vs  # noqa: E402
from modeling_rsfiqa.image_io import load_image_rgb  # noqa: E402

__all__ = [
    "PRISTINE_SETS",
    "VALIDATION_SET",
    "VIDEO_DISTORTIONS",
    "VideoDistortion",
    "build_clive_clips",
    "build_synthetic_clips",
    "clip_features",
    "clip_fidelity",
    "clip_size",
    "clive_split",
    "label_statistics",
    "load_clip_dataset",
    "main",
]

META_FILE = "rsfiqa_dataset.json"
PROGRESS_FILE = "progress.jsonl"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
PRISTINE_SETS = ("kodak24", "cbsd68", "sun-hays80")
VALIDATION_SET = "kodak24"
BASE_CRF = 18  # near-transparent H.264 for every type but h264 itself


@dataclass(frozen=True)
class VideoDistortion:
    """A distortion type of the synthetic set: what changes with the level (1 mildest .. 5 strongest)."""

    name: str
    description: str
    levels: tuple[float, ...]  # the parameter per level (CRF for h264, the distortions.py value else)


VIDEO_DISTORTIONS: dict[str, VideoDistortion] = {
    "h264": VideoDistortion("h264", "H.264 (libx264) constant rate factor", (30, 35, 40, 45, 50)),
    "gaussian_blur": VideoDistortion("gaussian_blur", "Gaussian blur sigma (px)", (0.5, 1.0, 2.0, 3.0, 5.0)),
    "white_noise": VideoDistortion(
        "white_noise", "Gaussian noise variance, fresh every frame", (0.001, 0.002, 0.003, 0.005, 0.01)
    ),
    "brighten": VideoDistortion("brighten", "Lab lightness gamma (brighter)", (1.3, 1.6, 2.0, 2.6, 3.4)),
    "darken": VideoDistortion("darken", "Lab lightness gamma (darker)", (1.3, 1.6, 2.0, 2.6, 3.4)),
}
STUTTER_EVERY = 8  # frames between two stutter events; the level is the number of repeats
LABEL_STRIDE = 2  # HaarPSI / SSIM on every second frame (I, P and B frames alike): half the cost

# ----------------------------------------------------------------------------- schema


def clip_features():
    """The ``datasets.Features`` of every clip dataset (synthetic and CLIVE rows concatenate)."""
    from datasets import Features, Value

    return Features(
        {
            "video": Value("string"),
            "name": Value("string"),
            "mos": Value("float32"),
            "mos_std": Value("float32"),
            "distortion_type": Value("string"),
            "distortion_level": Value("int32"),
            "reference": Value("string"),
            "source_set": Value("string"),
            "split": Value("string"),
            "width": Value("int32"),
            "height": Value("int32"),
            "fps": Value("float32"),
            "num_frames": Value("int32"),
            "duration": Value("float32"),
            "codec": Value("string"),
            "crf": Value("float32"),
            "gop": Value("int32"),
            "camera": Value("string"),
            "seed": Value("int64"),
            "haarpsi": Value("float32"),
            "psnr": Value("float32"),
            "ssim": Value("float32"),
            "bytes": Value("int64"),
        }
    )


# ----------------------------------------------------------------------------- helpers


def _seed(seed: int, key: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:4], "little")


def _even(x: float) -> int:
    return max(2, int(round(x / 2)) * 2)


def clip_size(image_size: tuple[int, int], max_side: int, aspect: str) -> tuple[int, int]:
    """(width, height) of a clip: 16:9 / 9:16 by the photo's orientation (``"video"``) or the photo's own
    aspect ratio (``"source"``); longest side ``max_side``; even sizes (4:2:0)."""
    w, h = image_size
    if aspect == "video":
        return (max_side, _even(max_side * 9 / 16)) if w >= h else (_even(max_side * 9 / 16), max_side)
    if aspect == "source":
        s = max_side / max(w, h)
        return _even(w * s), _even(h * s)
    raise ValueError(f"aspect must be 'video' or 'source', got {aspect!r}")


def _yuv420_roundtrip(frame: np.ndarray) -> np.ndarray:
    """The frame after the RGB -> yuv420p -> RGB conversion every clip goes through (no compression)."""
    import av

    vf = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="yuv420p")
    return vf.to_ndarray(format="rgb24")


def clip_fidelity(
    decoded: Sequence[np.ndarray], reference: Sequence[np.ndarray], stride: int = 1
) -> dict[str, float]:
    """Full-reference fidelity of decoded frames against reference frames, averaged over frames.

    ``haarpsi``: HaarPSI (piq) on RGB in [0, 1]; ``ssim``: SSIM (scikit-image) on the luma (BT.601 Y);
    ``psnr``: PSNR on RGB (capped at 100 dB for identical frames). ``stride`` > 1 computes HaarPSI and
    SSIM on every ``stride``-th frame only (from the first), PSNR always on all of them.
    """
    try:
        import piq
    except ImportError as err:
        raise ImportError(
            "the quality labels of the clip datasets need piq: pip install 'rsfiqa[video-data]'"
        ) from err
    import torch
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    if len(decoded) != len(reference) or not len(decoded):
        raise ValueError(f"{len(decoded)} decoded frames for {len(reference)} reference frames")
    dec = np.stack(decoded)
    ref = np.stack(reference)
    with np.errstate(divide="ignore"):  # identical frames: infinite PSNR, capped
        psnr = [min(100.0, peak_signal_noise_ratio(r, d, data_range=255)) for r, d in zip(ref, dec)]
    dec, ref = dec[:: max(1, stride)], ref[:: max(1, stride)]
    with torch.no_grad():
        x = torch.from_numpy(dec).permute(0, 3, 1, 2).float() / 255.0
        y = torch.from_numpy(ref).permute(0, 3, 1, 2).float() / 255.0
        haar = piq.haarpsi(x, y, data_range=1.0, reduction="none")
    luma = np.array([0.299, 0.587, 0.114])
    ssim = [
        structural_similarity(r @ luma, d @ luma, data_range=255.0)
        for r, d in zip(ref.astype(np.float64), dec.astype(np.float64))
    ]
    return {"haarpsi": float(haar.mean()), "psnr": float(np.mean(psnr)), "ssim": float(np.mean(ssim))}


def _read_progress(out: Path) -> dict[str, dict[str, Any]]:
    done: dict[str, dict[str, Any]] = {}
    log = out / PROGRESS_FILE
    if log.exists():
        for line in log.read_text().splitlines():
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill: that clip is redone
                continue
            if (out / row["video"]).is_file():
                done[row["name"]] = row
    return done


class _Progress:
    """Append-only log of finished clips (one JSON row per line, flushed and fsynced)."""

    def __init__(self, out: Path):
        self.file = (out / PROGRESS_FILE).open("a")

    def add(self, row: dict[str, Any]) -> None:
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()


def _encode_and_label(
    path: Path,
    spec: vs.ClipSpec,
    clean: list[np.ndarray],
    reference: list[np.ndarray] | None,
) -> tuple[vs.ClipInfo, dict[str, float | None]]:
    info = vs.make_clip(path, None, spec, clean_frames=clean)
    if reference is None:
        return info, {"haarpsi": None, "psnr": None, "ssim": None}
    decoded = list(vs.iter_video_frames(path))
    if len(decoded) != len(reference):
        path.unlink(missing_ok=True)
        raise vs.VideoSynthesisError(f"{path}: decoded {len(decoded)} frames, expected {len(reference)}")
    return info, clip_fidelity(decoded, reference, stride=LABEL_STRIDE)


def _row(
    out: Path,
    name: str,
    info: vs.ClipInfo,
    spec: vs.ClipSpec,
    fidelity: dict[str, float | None],
    **fields: Any,
) -> dict[str, Any]:
    return {
        "video": info.path.relative_to(out).as_posix(),
        "name": name,
        "width": info.width,
        "height": info.height,
        "fps": info.fps,
        "num_frames": info.num_frames,
        "duration": info.duration,
        "codec": info.codec,
        "crf": info.crf,
        "gop": info.gop,
        "camera": json.dumps(spec.camera.to_dict()),
        "seed": spec.seed,
        "bytes": info.bytes,
        **fidelity,
        **fields,
    }


def _write_outputs(
    out: Path, rows: list[dict[str, Any]], meta: DatasetMeta, split_order: Sequence[str], settings: dict
):
    from datasets import Dataset, DatasetDict

    features = clip_features()
    (out / "data").mkdir(parents=True, exist_ok=True)
    splits = {}
    for split in split_order:
        part = [r for r in rows if r["split"] == split]
        if not part:
            continue
        ds = Dataset.from_dict({k: [r.get(k) for r in part] for k in features}, features=features)
        ds.info.description = meta.to_json()
        tmp = out / "data" / f".{split}.parquet.part"
        ds.to_parquet(str(tmp))
        os.replace(tmp, out / "data" / f"{split}.parquet")
        splits[split] = ds
    sidecar = json.loads(meta.to_json())
    sidecar["num_rows"] = {k: v.num_rows for k, v in splits.items()}
    sidecar["build"] = settings
    sidecar["label_statistics"] = label_statistics(rows)
    sidecar["total_bytes"] = int(sum(r["bytes"] for r in rows))
    (out / META_FILE).write_text(json.dumps(sidecar, indent=2, sort_keys=True) + "\n")
    return DatasetDict(splits)


def load_clip_dataset(path: str | os.PathLike):
    """Load a built clip dataset: ``(DatasetDict with absolute video paths, DatasetMeta, sidecar dict)``."""
    import pyarrow.parquet as pq
    from datasets import Dataset, DatasetDict
    from datasets.table import InMemoryTable

    path = Path(path)
    sidecar_path = path / META_FILE
    if not sidecar_path.is_file():
        raise FileNotFoundError(f"not a built clip dataset (no {META_FILE}): {path}")
    sidecar = json.loads(sidecar_path.read_text())
    meta_fields = set(DatasetMeta.__dataclass_fields__)
    meta = DatasetMeta.from_json(json.dumps({k: v for k, v in sidecar.items() if k in meta_fields}))
    root = path.resolve()
    splits = {}
    for split in sidecar["num_rows"]:
        file = path / "data" / f"{split}.parquet"
        if not file.is_file():
            raise FileNotFoundError(f"{file} is missing (listed in {sidecar_path})")
        table = pq.read_table(file)  # read straight into memory: no copy in the datasets cache
        ds = Dataset(InMemoryTable(table))
        columns = ds.column_names
        videos = [str(root / v) for v in ds["video"]]
        ds = ds.remove_columns("video").add_column("video", videos).select_columns(columns)
        splits[split] = ds
    return DatasetDict(splits), meta, sidecar


def label_statistics(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per distortion type: count, label mean / std / range, and how the label follows the level:
    Spearman's rho pooled over all photos, and the share of photos whose labels fall strictly as the
    level rises."""
    from scipy.stats import spearmanr

    out: dict[str, dict[str, float]] = {}
    by_type: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r.get("mos") is not None and r.get("distortion_type"):
            by_type.setdefault(r["distortion_type"], []).append(r)
    for name, items in sorted(by_type.items()):
        mos = np.array([r["mos"] for r in items], dtype=float)
        haar = [r["haarpsi"] for r in items if r.get("haarpsi") is not None]
        stats = {
            "count": len(items),
            "haarpsi_mean": float(np.mean(haar)) if haar else math.nan,
            "mos_mean": float(mos.mean()),
            "mos_std": float(mos.std()),
            "mos_min": float(mos.min()),
            "mos_max": float(mos.max()),
        }
        levels = np.array([r["distortion_level"] or 0 for r in items])
        if len(set(levels)) > 1:
            stats["srcc_level_vs_mos"] = float(spearmanr(levels, mos).statistic)
            per_photo: dict[str, list[tuple[int, float]]] = {}
            for r in items:
                per_photo.setdefault(r["reference"], []).append((r["distortion_level"], r["mos"]))
            mono = [all(np.diff([m for _, m in sorted(v)]) < 0) for v in per_photo.values() if len(v) > 1]
            stats["photos_strictly_monotone"] = float(np.mean(mono)) if mono else math.nan
        out[name] = stats
    return out


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _render(image, size, spec: vs.ClipSpec) -> list[np.ndarray]:
    times = [c for _, c in vs.frame_plan(spec)]
    return list(vs.iter_camera_frames(image, size, times, spec.duration, spec.camera))


# ----------------------------------------------------------------------------- synthetic


def build_synthetic_clips(
    pristine: str | os.PathLike,
    out: str | os.PathLike,
    *,
    sets: Sequence[str] = PRISTINE_SETS,
    types: Sequence[str] | None = None,
    levels: Sequence[int] = (1, 2, 3, 4, 5),
    max_side: int = 384,
    fps: float = 12.0,
    duration: float = 2.0,
    gop: int | None = None,
    base_crf: float = BASE_CRF,
    preset: str = "medium",
    aspect: str = "video",
    stutter: bool = True,
    seed: int = 0,
    limit: int | None = None,
    threads: int = 1,
    progress: bool = True,
    on_clip: Callable[[str], None] | None = None,
    snapshot: bool = False,
):
    """Build (or resume) the synthetic clip set; returns the ``DatasetDict`` (see the module docstring).

    ``limit`` keeps the first N photos of each set (for quick runs). ``on_clip(name)`` is called after
    each new clip is logged (tests use it to interrupt a build). ``snapshot=True`` makes nothing new: it
    writes the Parquet of the photos whose clips are all finished (e.g. while a long build still runs,
    so that training can start; the build overwrites it when it ends).
    """
    pristine, out = Path(pristine), Path(out)
    types = list(types) if types else list(VIDEO_DISTORTIONS)
    unknown = sorted(set(types) - set(VIDEO_DISTORTIONS))
    if unknown:
        raise ValueError(f"Unknown video distortion type(s) {unknown}; available: {list(VIDEO_DISTORTIONS)}")
    if any(not 1 <= int(lv) <= 5 for lv in levels):
        raise ValueError(f"levels must be in 1..5, got {list(levels)}")
    photos: list[tuple[str, Path]] = []
    for name in sets:
        folder = pristine / name
        if not folder.is_dir():
            raise FileNotFoundError(f"pristine photo folder not found: {folder}")
        found = _list_images(folder)[:limit]
        if not found:
            raise FileNotFoundError(f"no images in {folder}")
        photos += [(name, p) for p in found]
    (out / "videos").mkdir(parents=True, exist_ok=True)
    done = _read_progress(out)

    def plan_for(set_name: str, photo: Path) -> list[tuple[str, str, int]]:
        items = [("pristine", "pristine", 0)]
        items += [(t, t, int(lv)) for t in types for lv in levels]
        if stutter and set_name == VALIDATION_SET:
            items += [("stutter", "stutter", int(lv)) for lv in levels]
        return items

    total = sum(len(plan_for(s, p)) for s, p in photos)
    rows: list[dict[str, Any]] = []
    log = _Progress(out)
    try:
        with tqdm(total=total, desc="synthetic clips", unit="clip", disable=not progress) as bar:
            for set_name, photo in photos:
                key = f"{set_name}/{photo.name}"
                stem = f"{set_name}-{photo.stem}"
                items = plan_for(set_name, photo)
                names = [f"{stem}__{t}__L{lv}" for t, _, lv in items]
                if all(n in done for n in names):
                    rows += [done[n] for n in names]
                    bar.update(len(items))
                    continue
                if snapshot:
                    bar.update(len(items))
                    continue
                photo_seed = _seed(seed, key)
                image = load_image_rgb(photo)
                size = clip_size(image.size, max_side, aspect)
                camera = vs.CameraPath.random(np.random.default_rng(photo_seed))
                base = vs.ClipSpec(
                    size=size,
                    fps=fps,
                    duration=duration,
                    gop=gop,
                    crf=base_crf,
                    preset=preset,
                    threads=threads,
                    camera=camera,
                    seed=photo_seed,
                )
                clean = _render(image, size, base)
                reference = [_yuv420_roundtrip(f) for f in clean]
                split = "validation" if set_name == VALIDATION_SET else "train"
                for (dtype, _, level), name in zip(items, names):
                    if name in done:
                        rows.append(done[name])
                        bar.update(1)
                        continue
                    spec, frames, ref = base, clean, reference
                    row_split = split
                    if dtype == "h264":
                        spec = replace(base, crf=VIDEO_DISTORTIONS["h264"].levels[level - 1])
                    elif dtype == "stutter":
                        spec = replace(base, stutter=vs.stutter_events(base.num_frames, level, STUTTER_EVERY))
                        frames, ref, row_split = _render(image, size, spec), None, "stutter"
                    elif dtype != "pristine":
                        spec = replace(base, distortion=dtype, level=level)
                    info, fidelity = _encode_and_label(out / "videos" / f"{name}.mp4", spec, frames, ref)
                    haar = fidelity["haarpsi"]
                    row = _row(
                        out,
                        name,
                        info,
                        spec,
                        fidelity,
                        mos=None if haar is None else 100.0 * haar,
                        mos_std=None,
                        distortion_type=dtype,
                        distortion_level=level,
                        reference=key,
                        source_set=set_name,
                        split=row_split,
                    )
                    log.add(row)
                    done[name] = row
                    rows.append(row)
                    bar.update(1)
                    if on_clip is not None:
                        on_clip(name)
    finally:
        log.close()

    meta = DatasetMeta(
        "synthetic-clips",
        (0.0, 100.0),
        True,
        score_name="100 x HaarPSI of the decoded frames against the clean render (mean over frames)",
        synthetic=True,
        citation="Distortion types after Lin, Hosu, Saupe, KADID-10k (QoMEX 2019); label: Reisenhofer et al., "
        "HaarPSI (Signal Processing: Image Communication 61, 2018), implementation of piq.",
        notes=f"photos from {pristine.resolve()} ({', '.join(sets)}); {VALIDATION_SET} = validation "
        "(+ the stutter split, unlabelled); the others = train",
        split="official",
        split_seed=None,
        test_fraction=None,
        split_groups="reference",
    )
    settings = {
        "kind": "synthetic",
        "sets": list(sets),
        "types": types,
        "levels": [int(lv) for lv in levels],
        "level_parameters": {t: list(VIDEO_DISTORTIONS[t].levels) for t in types},
        "max_side": max_side,
        "fps": fps,
        "duration": duration,
        "gop": gop,
        "base_crf": base_crf,
        "preset": preset,
        "aspect": aspect,
        "stutter_every": STUTTER_EVERY if stutter else None,
        "seed": seed,
        "limit": limit,
        "snapshot": snapshot,
        "photos": len({r["reference"] for r in rows}),
    }
    if not rows:
        raise ValueError(f"{out}: no finished photo to write (snapshot of a build that has not finished one)")
    return _write_outputs(out, rows, meta, ("train", "validation", "stutter"), settings)


# ----------------------------------------------------------------------------- CLIVE


def clive_split(file_names: Sequence[str], val_fraction: float = 0.2) -> dict[str, str]:
    """``file_name -> "train" | "validation"``, the split of ``examples/train_rsfiqa_mobile.py``: names
    sorted, ``np.random.RandomState(0).permutation(n)``, the first ``round((1 - f) n)`` train."""
    names = sorted(file_names)
    perm = np.random.RandomState(0).permutation(len(names))
    cut = int(round((1 - val_fraction) * len(names)))
    train = {int(i) for i in perm[:cut]}
    return {n: ("train" if i in train else "validation") for i, n in enumerate(names)}


def build_clive_clips(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    max_side: int = 384,
    fps: float = 12.0,
    duration: float = 2.0,
    gop: int | None = None,
    crf: float = 16,
    preset: str = "medium",
    aspect: str = "source",
    max_zoom: float = 1.1,
    val_fraction: float = 0.2,
    seed: int = 0,
    limit: int | None = None,
    threads: int = 1,
    progress: bool = True,
    on_clip: Callable[[str], None] | None = None,
):
    """Build (or resume) the CLIVE clip set; returns the ``DatasetDict`` (see the module docstring)."""
    src, out = Path(src), Path(out)
    meta_csv = src / "metadata.csv"
    if not meta_csv.is_file():
        raise FileNotFoundError(f"CLIVE metadata.csv (file_name,mos,mos_std) not found in {src}")
    with meta_csv.open() as f:
        labels = sorted(csv.DictReader(f), key=lambda r: r["file_name"])
    splits = clive_split([r["file_name"] for r in labels], val_fraction)  # over ALL photos, before --limit
    labels = labels[:limit] if limit else labels
    missing = [r["file_name"] for r in labels if not (src / r["file_name"]).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} CLIVE image(s) listed in {meta_csv} are missing, e.g. {missing[:3]}"
        )
    (out / "videos").mkdir(parents=True, exist_ok=True)
    done = _read_progress(out)
    rows: list[dict[str, Any]] = []
    log = _Progress(out)
    try:
        for r in tqdm(labels, desc="CLIVE clips", unit="clip", disable=not progress):
            name = f"clive-{Path(r['file_name']).stem}"
            if name in done:
                rows.append(done[name])
                continue
            photo_seed = _seed(seed, r["file_name"])
            rng = np.random.default_rng(photo_seed)
            if rng.random() < 0.5:
                camera = vs.CameraPath(zoom=(1.0, max_zoom), easing="smooth")
            else:
                a = tuple(float(v) for v in rng.uniform(-0.6, 0.6, 2))
                camera = vs.CameraPath(zoom=(max_zoom, max_zoom), pan=(a, (-a[0], -a[1])))
            image = load_image_rgb(src / r["file_name"])
            size = clip_size(image.size, max_side, aspect)
            spec = vs.ClipSpec(
                size=size,
                fps=fps,
                duration=duration,
                gop=gop,
                crf=crf,
                preset=preset,
                threads=threads,
                camera=camera,
                seed=photo_seed,
            )
            clean = _render(image, size, spec)
            reference = [_yuv420_roundtrip(f) for f in clean]
            info, fidelity = _encode_and_label(out / "videos" / f"{name}.mp4", spec, clean, reference)
            std = r.get("mos_std")
            row = _row(
                out,
                name,
                info,
                spec,
                fidelity,
                mos=float(r["mos"]),
                mos_std=float(std) if std not in (None, "") else None,
                distortion_type="authentic",
                distortion_level=None,
                reference=r["file_name"],
                source_set="clive-train",
                split=splits[r["file_name"]],
            )
            log.add(row)
            done[name] = row
            rows.append(row)
            if on_clip is not None:
                on_clip(name)
    finally:
        log.close()
    for extra in sorted(src.iterdir()):
        if extra.is_file() and "copyright" in extra.name.lower():
            (out / extra.name).write_bytes(extra.read_bytes())  # the LIVE notice travels with any copy
    meta = DatasetMeta(
        "clive-clips",
        (0.0, 100.0),
        True,
        score_name="MOS of the source photo (CLIVE, 0-100)",
        citation="Ghadiyaram, Bovik. Massive online crowdsourced study of subjective and objective picture "
        "quality. IEEE TIP 25(1), 2016.",
        notes="Each clip: a slow pan or zoom over one CLIVE training photo, near-transparent H.264; "
        "validation = the validation photos of examples/train_rsfiqa_mobile.py (seed 0, "
        f"{val_fraction:.0%}).",
        split="random",
        split_seed=0,
        test_fraction=val_fraction,
        split_groups="image",
    )
    settings = {
        "kind": "clive",
        "max_side": max_side,
        "fps": fps,
        "duration": duration,
        "gop": gop,
        "crf": crf,
        "preset": preset,
        "aspect": aspect,
        "max_zoom": max_zoom,
        "val_fraction": val_fraction,
        "seed": seed,
        "limit": limit,
    }
    return _write_outputs(out, rows, meta, ("train", "validation"), settings)


# ----------------------------------------------------------------------------- CLI


def _print_summary(out: Path, seconds: float) -> None:
    sidecar = json.loads((out / META_FILE).read_text())
    print(
        f"wrote {out}: {sidecar['num_rows']} clips, {sidecar['total_bytes'] / 2**20:.1f} MiB of video, {seconds:.0f} s"
    )
    for name, stats in sidecar["label_statistics"].items():
        line = f"  {name:14s} n={stats['count']:5d} mos {stats['mos_mean']:6.2f} +- {stats['mos_std']:5.2f}"
        line += f" [{stats['mos_min']:.1f}, {stats['mos_max']:.1f}] HaarPSI {stats['haarpsi_mean']:.3f}"
        if "srcc_level_vs_mos" in stats:
            line += f"  SRCC(level, mos) {stats['srcc_level_vs_mos']:+.3f}"
            line += f"  monotone photos {stats['photos_strictly_monotone']:.1%}"
        print(line)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="kind", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", required=True, type=Path, help="output folder (outside the repository)")
    common.add_argument("--max-side", type=int, default=384)
    common.add_argument("--fps", type=float, default=12.0)
    common.add_argument("--duration", type=float, default=2.0)
    common.add_argument("--gop", type=int, default=None, help="frames per GOP (default: one second)")
    common.add_argument("--preset", default="medium", help="libx264 preset")
    common.add_argument("--seed", type=int, default=0)
    common.add_argument("--limit", type=int, default=None, help="first N photos (per set) only")
    common.add_argument("--threads", type=int, default=1, help="encoder threads")

    syn = sub.add_parser("synthetic", parents=[common], help="distorted clips from pristine photos")
    syn.add_argument("--pristine", type=Path, default=Path("../shared/data/pristine"))
    syn.add_argument("--sets", default=",".join(PRISTINE_SETS))
    syn.add_argument("--types", default=",".join(VIDEO_DISTORTIONS))
    syn.add_argument("--levels", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    syn.add_argument("--base-crf", type=float, default=BASE_CRF)
    syn.add_argument("--aspect", choices=["video", "source"], default="video")
    syn.add_argument("--no-stutter", action="store_true")
    syn.add_argument(
        "--snapshot",
        action="store_true",
        help="make no clip; write the Parquet of the photos finished so far (while a build runs)",
    )

    cl = sub.add_parser("clive", parents=[common], help="CLIVE training photos as short clips with their MOS")
    cl.add_argument("--src", type=Path, default=Path("../shared/data/clive-train"))
    cl.add_argument("--crf", type=float, default=16)
    cl.add_argument("--aspect", choices=["video", "source"], default="source")
    cl.add_argument("--max-zoom", type=float, default=1.1)
    cl.add_argument("--val-fraction", type=float, default=0.2)

    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)  # the labels are small convolutions; one thread is the polite choice here
    common_kw = dict(
        max_side=args.max_side,
        fps=args.fps,
        duration=args.duration,
        gop=args.gop,
        preset=args.preset,
        seed=args.seed,
        limit=args.limit,
        threads=args.threads,
        aspect=args.aspect,
    )
    start = time.perf_counter()
    if args.kind == "synthetic":
        build_synthetic_clips(
            args.pristine,
            args.out,
            sets=[s for s in args.sets.split(",") if s],
            types=[t for t in args.types.split(",") if t],
            levels=args.levels,
            base_crf=args.base_crf,
            stutter=not args.no_stutter,
            snapshot=args.snapshot,
            **common_kw,
        )
    else:
        build_clive_clips(
            args.src,
            args.out,
            crf=args.crf,
            max_zoom=args.max_zoom,
            val_fraction=args.val_fraction,
            **common_kw,
        )
    _print_summary(args.out, time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
