"""Build a SEAGULL-100w-style synthetic ROI dataset (Parquet shards) from folders of clean photos.

    python datasets_scripts/seagull_synthetic.py --pristine ../shared/data/pristine --out DIR \\
        [--train-per-image 15] [--validation-per-image 20] [--max-side 512] [--seed 0] [--shard-size 50]

Every sample is one clean photo with ONE ROI distorted inside the ROI only (a SEAGULL type x 5 levels, one
of several implementations per type) plus 2-4 untouched ROIs of the same image, labelled as SEAGULL-100w
labels them: ROI quality and importance from a full-reference metric (HaarPSI by default), type and
severity from the synthesis. Sample making, label definitions and mappings: ``modeling_rsfiqa/roi_synthesis.py``.

Split: ``--validation-sources`` (default kodak24, held out) -> ``validation``; ``--train-sources`` (default
cbsd68, sun-hays80) -> ``train``; folders under ``--pristine``. Photos are down-scaled to ``--max-side``.
Types and levels are balanced: the g-th sample of a split has type ``g % 6`` and level ``(g // 6) % 5 + 1``
(every 30 consecutive samples hold each (type, level) once). Everything else (implementation, ROI shape,
size, place, clean ROIs, noise) is drawn from a seed derived from ``(--seed, split, reference id, k)``,
so a sample does not depend on the shard size, on the other samples, or on being resumed.

Output (``OUT/``):

    data/<split>-XXXXX-of-NNNNN.parquet   the samples (a ``datasets`` Parquet export; features below)
    references/<split>.parquet            reference_id, source, width, height, image (the clean photo)
    rsfiqa_roi_dataset.json               the settings (checked on resume), counts, label statistics
    README.md                             dataset card (``load_dataset(OUT)`` reads its ``configs``)

Load with ``modeling_rsfiqa.roi_synthesis.load_roi_dataset(OUT)`` or ``datasets.load_dataset(OUT)``.

Schema (one row = one image; ``rois[0]`` is the distorted ROI, the others are clean):

    sample_id       str     "<reference_id>#<k>"
    image           Image   the image with only rois[0] distorted (PNG, lossless)
    reference_id    str     "<source>/<file stem>"; its clean image is in references/<split>.parquet
    source, split   str     source folder (kodak24 ...), "train" / "validation"
    width, height   int32   image size (after --max-side)
    distortion      str     SEAGULL type of rois[0]: blur, colorfulness, compression, contrast, exposure, noise
    implementation  str     the modeling_rsfiqa.distortions implementation (e.g. webp, exposure_down)
    parameter       float32 its parameter value (unit in DISTORTION_SPECS / EXTRA_DISTORTION_SPECS)
    level           int32   1 (mildest) .. 5
    severity        float32 level / 5
    rois            list of
        rle           {size: [h, w], counts: str}   COCO RLE of the mask (pycocotools)
        box           [x0, y0, x1, y1]              int pixels, x1/y1 exclusive
        shape         str                           "box" | "blob"
        area          float32                       mask area / image area
        quality       float32  0..100, higher better   100 * FR(distorted box patch, reference box patch)
        importance    float32  0..100, higher = matters more   from FR(image with only this ROI distorted, ref)
        quality_raw, importance_raw  float32           the FR similarities before mapping
        distortions   list[str]     [] for a clean ROI
        levels        list[int32]   aligned with distortions
        severities    list[float32] aligned with distortions (clean = no entry = severity 0)

Cached and resumable: a shard is written atomically (temporary file, then rename) once all its samples are
made; a re-run with the same arguments skips the finished shards (interrupt it at any time and re-run).
Different arguments into an existing folder stop with an error naming the differing settings.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from modeling_rsfiqa import roi_synthesis as rs  # noqa: E402
from modeling_rsfiqa.image_io import load_image_rgb  # noqa: E402

__all__ = [
    "SamplePlan",
    "plan_samples",
    "build_roi_dataset",
    "label_statistics",
    "write_parquet_shard",
    "shard_finished",
    "sample_record",
    "main",
]

FORMAT_VERSION = 1
META_FILE = "rsfiqa_roi_dataset.json"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
SPLITS = ("train", "validation")


@dataclass(frozen=True)
class SamplePlan:
    """What one sample will be; everything else is drawn from ``seed``."""

    split: str
    index: int  # position in the split
    reference_id: str
    source: str
    path: str
    k: int  # sample number of this reference
    distortion: str
    level: int
    seed: int

    @property
    def sample_id(self) -> str:
        return f"{self.reference_id}#{self.k:03d}"


def _list_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"source folder of clean images not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return files


def plan_samples(
    pristine: Path,
    sources: dict[str, Sequence[str]],
    per_image: dict[str, int],
    seed: int = 0,
    limit_images: int | None = None,
) -> dict[str, list[SamplePlan]]:
    """The deterministic sample list of every split (see the module docstring for the balancing rule)."""
    types = rs.SEAGULL_DISTORTION_TYPES
    plans: dict[str, list[SamplePlan]] = {}
    for split, folders in sources.items():
        images = [(name, p) for name in folders for p in _list_images(Path(pristine) / name)]
        images = images[:limit_images] if limit_images else images
        rows, n = [], per_image[split]
        for j, (source, path) in enumerate(images):
            ref_id = f"{source}/{path.stem}"
            for k in range(n):
                g = j * n + k
                rows.append(
                    SamplePlan(
                        split,
                        g,
                        ref_id,
                        source,
                        str(path),
                        k,
                        types[g % len(types)],
                        (g // len(types)) % rs.NUM_LEVELS + 1,
                        rs.stable_seed(seed, split, ref_id, k),
                    )
                )
        plans[split] = rows
    return plans


def _load_reference(path: str, max_side: int | None) -> np.ndarray:
    image = load_image_rgb(path)
    if max_side and max(image.size) > max_side:
        scale = max_side / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    return np.asarray(image, dtype=np.uint8)


def _png(array: np.ndarray) -> dict[str, Any]:
    import io

    buf = io.BytesIO()
    Image.fromarray(array, mode="RGB").save(buf, format="PNG", compress_level=6)
    return {"bytes": buf.getvalue(), "path": None}


def write_parquet_shard(rows: list[dict[str, Any]], features, path: Path) -> None:
    """Write ``rows`` as one Parquet shard, atomically (a temporary file renamed into place)."""
    from datasets import Dataset
    from datasets.utils.logging import disable_progress_bar, enable_progress_bar, is_progress_bar_enabled

    tmp = path.with_name(f".{path.name}.tmp")
    enabled = is_progress_bar_enabled()
    disable_progress_bar()  # one bar (the samples), not one per shard
    try:
        Dataset.from_list(rows, features=features).to_parquet(str(tmp))
    finally:
        if enabled:
            enable_progress_bar()
    os.replace(tmp, path)


def shard_finished(path: Path, rows: int) -> bool:
    """True when ``path`` is a readable Parquet file of ``rows`` rows (a finished shard)."""
    if not path.is_file():
        return False
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path).metadata.num_rows == rows
    except Exception:  # a truncated or foreign file: rebuild it
        return False


def _settings(args: dict[str, Any], plans: dict[str, list[SamplePlan]]) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        **args,
        "references": {s: sorted({p.reference_id for p in rows}) for s, rows in plans.items()},
        "implementations": {
            t: [[impl.name, list(impl.parameters)] for impl in impls]
            for t, impls in rs.ROI_DISTORTIONS.items()
        },
        "feather_px": rs.FEATHER_PX,
        "importance_saturation": rs.IMPORTANCE_SATURATION,
    }


def _check_settings(out: Path, settings: dict[str, Any], meta_file: str = META_FILE) -> None:
    """Stop when ``out`` holds a build with other ``settings`` (or foreign files); ``meta_file`` names the
    builder's metadata file (the sweeps builder has its own)."""
    meta = out / meta_file
    if not meta.exists():
        if (out / "data").is_dir() and any((out / "data").iterdir()):
            raise ValueError(
                f"{out}/data holds files but {meta_file} is missing: not a dataset of this builder"
            )
        return
    old = json.loads(meta.read_text()).get("settings", {})
    diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
    if diff:
        raise ValueError(
            f"{out} was built with other settings ({', '.join(diff)} differ); use another --out folder "
            "or delete it to rebuild"
        )


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)


def _make_shard(job: tuple[str, list[SamplePlan], int | None, str, tuple[int, int]]) -> int:
    """One shard in a worker process (``num_proc > 1``): make its samples, write it; returns its size."""
    path, rows, max_side, metric, num_clean = job
    refs: dict[str, np.ndarray] = {}
    records = []
    for plan in rows:
        if plan.path not in refs:
            refs = {plan.path: _load_reference(plan.path, max_side)}
        records.append(_sample_row(plan, refs[plan.path], metric, num_clean))
    write_parquet_shard(records, rs.roi_dataset_features(), Path(path))
    return len(records)


def _sample_row(plan: SamplePlan, reference: np.ndarray, metric: str, num_clean: tuple[int, int]) -> dict:
    sample = rs.synthesize_roi_sample(
        reference, plan.distortion, plan.level, plan.seed, num_clean=num_clean, metric=metric
    )
    return sample_record(sample, plan.sample_id, plan.reference_id, plan.source, plan.split)


def sample_record(sample: rs.RoiSample, sample_id: str, reference_id: str, source: str, split: str) -> dict:
    """The stored row of one ``RoiSample`` (schema in the module docstring)."""
    h, w = sample.image.shape[:2]
    return {
        "sample_id": sample_id,
        "image": _png(sample.image),
        "reference_id": reference_id,
        "source": source,
        "split": split,
        "width": w,
        "height": h,
        "distortion": sample.distortion,
        "implementation": sample.implementation,
        "parameter": sample.parameter,
        "level": sample.level,
        "severity": sample.severity,
        "rois": [labels.to_record() for labels in sample.rois],
    }


def build_roi_dataset(
    pristine: str | Path,
    out: str | Path,
    train_sources: Sequence[str] = ("cbsd68", "sun-hays80"),
    validation_sources: Sequence[str] = ("kodak24",),
    train_per_image: int = 15,
    validation_per_image: int = 20,
    max_side: int | None = 512,
    seed: int = 0,
    shard_size: int = 50,
    metric: str = "haarpsi",
    num_clean: tuple[int, int] = (2, 4),
    limit_images: int | None = None,
    progress: bool = True,
    num_proc: int = 1,
) -> dict[str, Any]:
    """Make (or resume) the dataset in ``out``; returns the metadata written to ``rsfiqa_roi_dataset.json``.

    ``num_proc > 1`` makes shards in that many worker processes (the samples do not change).
    """
    if metric not in rs.FR_METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose from {sorted(rs.FR_METRICS)}")
    if shard_size < 1 or train_per_image < 1 or validation_per_image < 1:
        raise ValueError("shard_size and the samples per image must be >= 1")
    if set(train_sources) & set(validation_sources):
        raise ValueError(
            f"a source cannot be in both splits: {sorted(set(train_sources) & set(validation_sources))}"
        )
    out = Path(out)
    sources = {"train": list(train_sources), "validation": list(validation_sources)}
    per_image = {"train": train_per_image, "validation": validation_per_image}
    plans = plan_samples(Path(pristine), sources, per_image, seed, limit_images)
    args = {
        "sources": sources,
        "per_image": per_image,
        "max_side": max_side,
        "seed": seed,
        "shard_size": shard_size,
        "metric": metric,
        "num_clean": list(num_clean),
        "limit_images": limit_images,
    }
    settings = _settings(args, plans)
    _check_settings(out, settings)
    rs.check_implementations()
    (out / "data").mkdir(parents=True, exist_ok=True)
    (out / "references").mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {"settings": settings, "status": "building"}
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")

    features = rs.roi_dataset_features()
    started = time.time()
    cache: dict[str, np.ndarray] = {}

    def reference(plan: SamplePlan) -> np.ndarray:
        if plan.path not in cache:
            cache.clear()  # samples of one reference are contiguous: keep one decoded photo
            cache[plan.path] = _load_reference(plan.path, max_side)
        return cache[plan.path]

    shards = []
    for split in SPLITS:
        rows = plans[split]
        n = max(1, -(-len(rows) // shard_size))
        for i in range(n):
            shards.append(
                (
                    out / "data" / f"{split}-{i:05d}-of-{n:05d}.parquet",
                    rows[i * shard_size : (i + 1) * shard_size],
                )
            )
    total = sum(len(r) for _, r in shards)
    done = sum(len(r) for p, r in shards if shard_finished(p, len(r)))
    made = 0
    todo = [(path, rows) for path, rows in shards if not shard_finished(path, len(rows))]
    with tqdm(
        total=total, initial=done, desc="seagull ROI samples", unit="sample", disable=not progress
    ) as bar:
        if num_proc > 1 and len(todo) > 1:
            import multiprocessing

            jobs = [(str(path), rows, max_side, metric, tuple(num_clean)) for path, rows in todo]
            ctx = multiprocessing.get_context("spawn")  # no fork of a process that may hold torch threads
            with ctx.Pool(min(num_proc, len(jobs)), initializer=_worker_init) as pool:
                for count in pool.imap_unordered(_make_shard, jobs):
                    bar.update(count)
                    made += count
        else:
            for path, rows in todo:
                records = []
                for plan in rows:
                    records.append(_sample_row(plan, reference(plan), metric, num_clean))
                    bar.update(1)
                write_parquet_shard(records, features, path)
                made += len(records)
        for split in SPLITS:
            path = out / "references" / f"{split}.parquet"
            refs = sorted({(p.reference_id, p.source, p.path) for p in plans[split]})
            if shard_finished(path, len(refs)):
                continue
            ref_rows = []
            for ref_id, source, src in refs:
                arr = _load_reference(src, max_side)
                ref_rows.append(
                    {
                        "reference_id": ref_id,
                        "source": source,
                        "width": arr.shape[1],
                        "height": arr.shape[0],
                        "image": _png(arr),
                    }
                )
            from datasets import Features, Value
            from datasets import Image as ImageFeature

            ref_features = Features(
                {
                    "reference_id": Value("string"),
                    "source": Value("string"),
                    "width": Value("int32"),
                    "height": Value("int32"),
                    "image": ImageFeature(),
                }
            )
            write_parquet_shard(ref_rows, ref_features, path)

    stats = label_statistics(out)
    meta = {
        "settings": settings,
        "status": "complete",
        "num_rows": {s: len(plans[s]) for s in SPLITS},
        "num_rois": stats.pop("num_rois"),
        "size_bytes": sum(p.stat().st_size for p in out.rglob("*.parquet")),
        "seconds_this_run": round(time.time() - started, 1),
        "samples_this_run": made,
        "label_statistics": stats,
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    _write_card(out, meta)
    return meta


def _roi_table(out: Path):
    """All ROIs of all shards as flat numpy columns (images are not read)."""
    import pyarrow.parquet as pq

    cols: dict[str, list] = {
        k: [] for k in ("split", "distortion", "level", "roi", "area", "quality", "importance", "clean")
    }
    for path in sorted((out / "data").glob("*.parquet")):
        table = pq.read_table(path, columns=["split", "rois"]).to_pylist()
        for row in table:
            for i, roi in enumerate(row["rois"]):
                cols["split"].append(row["split"])
                cols["roi"].append(i)
                cols["distortion"].append(roi["distortions"][0] if roi["distortions"] else "none")
                cols["level"].append(roi["levels"][0] if roi["levels"] else 0)
                cols["area"].append(roi["area"])
                cols["quality"].append(roi["quality"])
                cols["importance"].append(roi["importance"])
                cols["clean"].append(not roi["distortions"])
    return {k: np.asarray(v) for k, v in cols.items()}


def _srcc(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman correlation rounded to 4 digits; None where it is undefined (< 3 pairs, constant input)."""
    from scipy import stats

    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return round(float(stats.spearmanr(a, b)[0]), 4)


def label_statistics(out: str | Path) -> dict[str, Any]:
    """Per split and type: SRCC of quality with level (expected negative), SRCC of importance with area
    and with level (expected positive), the mean SRCC of importance with area at a fixed level, quality
    means per level and label ranges; plus the clean ROIs' labels. Undefined correlations are None."""
    t = _roi_table(Path(out))
    levels = range(1, rs.NUM_LEVELS + 1)
    result: dict[str, Any] = {"num_rois": {}}
    for split in SPLITS:
        in_split = t["split"] == split
        if not in_split.any():
            continue
        dm, cm = in_split & ~t["clean"], in_split & t["clean"]
        result["num_rois"][split] = {"distorted": int(dm.sum()), "clean": int(cm.sum())}
        per_type: dict[str, Any] = {}
        for dist in rs.SEAGULL_DISTORTION_TYPES:
            m = in_split & (t["distortion"] == dist)
            if not m.any():
                continue
            within = [
                _srcc(t["importance"][m & (t["level"] == lv)], t["area"][m & (t["level"] == lv)])
                for lv in levels
            ]
            within = [v for v in within if v is not None]
            per_type[dist] = {
                "n": int(m.sum()),
                "srcc_quality_level": _srcc(t["quality"][m], t["level"][m]),
                "srcc_importance_area": _srcc(t["importance"][m], t["area"][m]),
                "srcc_importance_level": _srcc(t["importance"][m], t["level"][m]),
                "srcc_importance_area_within_level": round(float(np.mean(within)), 4) if within else None,
                "quality_mean_by_level": [
                    round(float(t["quality"][m & (t["level"] == lv)].mean()), 2)
                    if (m & (t["level"] == lv)).any()
                    else None
                    for lv in levels
                ],
                "quality_range": [
                    round(float(t["quality"][m].min()), 2),
                    round(float(t["quality"][m].max()), 2),
                ],
                "importance_range": [
                    round(float(t["importance"][m].min()), 2),
                    round(float(t["importance"][m].max()), 2),
                ],
            }
        per_type["all"] = {
            "srcc_quality_level": _srcc(t["quality"][dm], t["level"][dm]),
            "srcc_importance_area": _srcc(t["importance"][dm], t["area"][dm]),
            "srcc_importance_level": _srcc(t["importance"][dm], t["level"][dm]),
            "clean_quality_min": round(float(t["quality"][cm].min()), 2) if cm.any() else None,
            "clean_importance_max": round(float(t["importance"][cm].max()), 2) if cm.any() else None,
        }
        result[split] = per_type
    return result


def _write_card(out: Path, meta: dict[str, Any]) -> None:
    s = meta["settings"]
    lines = [
        "---",
        "configs:",
        "- config_name: default",
        "  data_files:",
        *[f"  - split: {sp}\n    path: data/{sp}-*" for sp in SPLITS],
        "- config_name: references",
        "  data_files:",
        *[f"  - split: {sp}\n    path: references/{sp}.parquet" for sp in SPLITS],
        "---",
        "",
        "# Synthetic SEAGULL-style ROI quality dataset",
        "",
        "Built by `datasets_scripts/seagull_synthetic.py` (rsfiqa): one ROI per image distorted inside the ROI "
        "only (blur, colorfulness, compression, contrast, exposure, noise x 5 levels, several implementations "
        "per type), plus untouched ROIs; quality / importance labels from the full-reference metric "
        f"`{s['metric']}`. Schema and label definitions: the docstrings of "
        "`datasets_scripts/seagull_synthetic.py` and `modeling_rsfiqa/roi_synthesis.py`.",
        "",
        f"- sources: {json.dumps(s['sources'])}; samples per image: {json.dumps(s['per_image'])}; "
        f"max side {s['max_side']} px; seed {s['seed']}",
        f"- rows: {json.dumps(meta['num_rows'])}; ROIs: {json.dumps(meta['num_rois'])}",
        "",
        "Label statistics (`rsfiqa_roi_dataset.json`):",
        "",
        "```json",
        json.dumps(meta["label_statistics"], indent=1),
        "```",
        "",
        "After SEAGULL (Chen et al., arXiv 2411.10161). Photos: Kodak24 (unrestricted), CBSD68 and Sun-Hays 80 "
        "(research use).",
        "",
    ]
    (out / "README.md").write_text("\n".join(lines))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pristine", required=True, type=Path, help="folder holding the source folders")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--train-sources", default="cbsd68,sun-hays80")
    parser.add_argument("--validation-sources", default="kodak24")
    parser.add_argument("--train-per-image", type=int, default=15)
    parser.add_argument("--validation-per-image", type=int, default=20)
    parser.add_argument(
        "--max-side", type=int, default=512, help="down-scale photos to this longest side (0: keep)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shard-size", type=int, default=50)
    parser.add_argument("--metric", default="haarpsi", choices=sorted(rs.FR_METRICS))
    parser.add_argument("--clean-rois", type=int, nargs=2, default=(2, 4), metavar=("MIN", "MAX"))
    parser.add_argument(
        "--limit-images", type=int, default=None, help="use only the first N photos of each split"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the metric (default 1)")
    parser.add_argument("--num-proc", type=int, default=1, help="worker processes, one shard each at a time")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(max(1, args.threads))
    meta = build_roi_dataset(
        args.pristine,
        args.out,
        train_sources=[s for s in args.train_sources.split(",") if s],
        validation_sources=[s for s in args.validation_sources.split(",") if s],
        train_per_image=args.train_per_image,
        validation_per_image=args.validation_per_image,
        max_side=args.max_side or None,
        seed=args.seed,
        shard_size=args.shard_size,
        metric=args.metric,
        num_clean=tuple(args.clean_rois),
        limit_images=args.limit_images,
        num_proc=args.num_proc,
    )
    print(
        f"wrote {args.out} ({json.dumps(meta['num_rows'])} rows, {meta['size_bytes'] / 1e6:.1f} MB, "
        f"{meta['samples_this_run']} samples made in {meta['seconds_this_run']} s)"
    )
    print(json.dumps(meta["label_statistics"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
