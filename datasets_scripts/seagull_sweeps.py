"""Build the CONTROLLED held-out ROI sweeps that check the SEAGULL ROI properties of issue #9 (Parquet shards).

    python datasets_scripts/seagull_sweeps.py --pristine ../shared/data/pristine --out DIR \\
        [--sources kodak24] [--max-side 384] [--severity-rois 2] [--area-sweeps 1] [--area-level 4]

The random ROI datasets of ``seagull_synthetic.py`` pair ROIs ACROSS photos, shapes and sizes, where even the
labels order only ~90% of level pairs (a mild blur on a textured ROI loses more than a strong one on the sky).
The properties "quality falls with the severity" and "importance grows with the severity and with the area"
are about one factor at a time, so here every series changes ONE factor and holds the rest fixed:

* severity sweeps: per photo, type and ROI (``--severity-rois`` per type, drawn like ``random_roi``), the
  same ROI, implementation and noise seed at levels 1..5;
* area sweeps: per photo and type (``--area-sweeps`` per type), nested ROIs of the same shape, centre and
  aspect (``roi_synthesis.nested_rois``, area fractions ``--areas``) at one level (``--area-level``).

Each series also holds the same 2 clean ROIs (boxes away from its largest ROI), since the model looks at
all ROIs of an image together. Labels as in ``seagull_synthetic.py`` (HaarPSI). The implementation of a
series cycles through the type's implementations over photos and ROIs, so every one is covered.

Output: ``OUT/data/sweep-XXXXX-of-NNNNN.parquet`` (one shard per photo; resumable: finished shards are
skipped) with the schema of ``seagull_synthetic.py`` plus ``sweep`` (``"severity"`` | ``"area"``) and
``group`` (the series id), and ``OUT/rsfiqa_roi_sweeps.json`` (the settings, checked on resume). Read with
``roi_synthesis.load_roi_dataset(OUT, "sweep")``; score a model with ``--evaluate MODEL`` (a saved folder
or preset; figures from ``roi_synthesis.roi_sweep_figures``), ``examples/train_seagull_region.py --sweep_dir OUT``
or ``evaluate_sweeps`` below.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tqdm.auto import tqdm  # noqa: E402

from datasets_scripts.seagull_synthetic import (  # noqa: E402
    _check_settings,
    _list_images,
    _load_reference,
    sample_record,
    shard_finished,
    write_parquet_shard,
)
from modeling_rsfiqa import roi_synthesis as rs  # noqa: E402

__all__ = ["SweepDesign", "sweep_features", "photo_sweep_rows", "build_roi_sweeps", "evaluate_sweeps", "main"]

FORMAT_VERSION = 1
META_FILE = "rsfiqa_roi_sweeps.json"
SPLIT = "sweep"


def sweep_features():
    """``datasets.Features``: the ROI dataset schema plus ``sweep`` and ``group``."""
    from datasets import Features, Value

    features = dict(rs.roi_dataset_features())
    features["sweep"] = Value("string")
    features["group"] = Value("string")
    return Features(features)


def _clean_rois(shape: tuple[int, int], rng: np.random.Generator, avoid: rs.Roi, n: int) -> list[rs.Roi]:
    return rs.clean_rois(shape, rng, avoid, n, kind="box", area_range=(0.005, 0.08))


@dataclass(frozen=True)
class SweepDesign:
    """What the sweeps of one photo hold (the command-line options of the same names)."""

    severity_rois: int = 2  # severity series per photo and type
    area_sweeps: int = 1  # area series per photo and type
    areas: tuple[float, ...] = (0.02, 0.05, 0.12, 0.3)  # area fractions of the nested ROIs
    area_level: int = 4  # distortion level of the area series
    num_clean: int = 2  # clean ROIs held in every series
    metric: str = "haarpsi"  # full-reference metric of the labels

    def __post_init__(self) -> None:
        object.__setattr__(self, "areas", tuple(sorted(float(a) for a in self.areas)))
        if self.metric not in rs.FR_METRICS:
            raise ValueError(f"unknown metric {self.metric!r}; choose from {sorted(rs.FR_METRICS)}")
        if not 1 <= self.area_level <= rs.NUM_LEVELS:
            raise ValueError(f"area_level must be in 1..{rs.NUM_LEVELS}, got {self.area_level}")
        if self.severity_rois < 0 or self.area_sweeps < 0 or self.severity_rois + self.area_sweeps == 0:
            raise ValueError("give at least one severity ROI or area sweep per type")

    @property
    def rows_per_photo(self) -> int:
        return len(rs.SEAGULL_DISTORTION_TYPES) * (
            self.severity_rois * rs.NUM_LEVELS + self.area_sweeps * len(self.areas)
        )


def photo_sweep_rows(
    reference: np.ndarray,
    reference_id: str,
    source: str,
    photo_index: int,
    seed: int = 0,
    design: SweepDesign = SweepDesign(),
) -> list[dict[str, Any]]:
    """Every sweep row of one photo (deterministic in ``seed``, the photo id and its index)."""
    d = design
    shape = reference.shape[:2]
    rows: list[dict[str, Any]] = []

    def emit(samples: list[rs.RoiSample], sweep: str, group: str, steps: Sequence[Any]) -> None:
        for step, sample in zip(steps, samples):
            row = sample_record(sample, f"{group}/{step}", reference_id, source, SPLIT)
            rows.append({**row, "sweep": sweep, "group": group})

    for kind in rs.SEAGULL_DISTORTION_TYPES:
        impls = [impl.name for impl in rs.ROI_DISTORTIONS[kind]]
        for r in range(d.severity_rois):
            rng = np.random.default_rng(rs.stable_seed(seed, reference_id, "severity", kind, r))
            roi = rs.random_roi(shape, rng, area_range=(0.03, 0.3))
            if roi is None:  # pragma: no cover - a photo always has room for one ROI
                continue
            impl = impls[(photo_index + r) % len(impls)]
            levels = list(range(1, rs.NUM_LEVELS + 1))
            samples = rs.sweep_roi_samples(
                reference, kind, impl, [roi], levels, int(rng.integers(2**31)),
                _clean_rois(shape, rng, roi, d.num_clean), d.metric,
            )  # fmt: skip
            emit(samples, "severity", f"{reference_id}/severity/{kind}/{r}", [f"L{v}" for v in levels])
        for r in range(d.area_sweeps):
            rng = np.random.default_rng(rs.stable_seed(seed, reference_id, "area", kind, r))
            rois = None
            for _ in range(20):
                rois = rs.nested_rois(shape, rng, d.areas)
                if rois is not None:
                    break
            if rois is None:
                raise ValueError(
                    f"{reference_id}: nested ROIs of areas {list(d.areas)} do not fit {shape[1]}x{shape[0]}"
                )
            impl = impls[(photo_index + d.severity_rois + r) % len(impls)]
            samples = rs.sweep_roi_samples(
                reference, kind, impl, rois, [d.area_level], int(rng.integers(2**31)),
                _clean_rois(shape, rng, rois[-1], d.num_clean), d.metric,
            )  # fmt: skip
            emit(samples, "area", f"{reference_id}/area/{kind}/{r}", [f"A{a:g}" for a in d.areas])
    return rows


def build_roi_sweeps(
    pristine: str | Path,
    out: str | Path,
    sources: Sequence[str] = ("kodak24",),
    max_side: int | None = 384,
    seed: int = 0,
    design: SweepDesign = SweepDesign(),
    limit_images: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Make (or resume) the sweeps in ``out``; returns the metadata written to ``rsfiqa_roi_sweeps.json``."""
    out = Path(out)
    photos = [(name, p) for name in sources for p in _list_images(Path(pristine) / name)]
    photos = photos[:limit_images] if limit_images else photos
    settings = {
        "format_version": FORMAT_VERSION,
        "sources": list(sources),
        "references": [f"{name}/{p.stem}" for name, p in photos],
        "max_side": max_side,
        "seed": seed,
        **{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(design).items()},
        "implementations": {t: [i.name for i in impls] for t, impls in rs.ROI_DISTORTIONS.items()},
    }
    meta_path = out / META_FILE
    _check_settings(out, settings, META_FILE)
    rs.check_implementations()
    (out / "data").mkdir(parents=True, exist_ok=True)
    meta_path.write_text(json.dumps({"settings": settings, "status": "building"}, indent=2) + "\n")
    per_photo = design.rows_per_photo
    features, started, n = sweep_features(), time.time(), len(photos)
    paths = [out / "data" / f"{SPLIT}-{j:05d}-of-{n:05d}.parquet" for j in range(n)]
    done = sum(shard_finished(p, per_photo) for p in paths)
    with tqdm(total=n, initial=done, desc="ROI sweeps", unit="photo", disable=not progress) as bar:
        for j, ((source, path), shard) in enumerate(zip(photos, paths)):
            if shard_finished(shard, per_photo):
                continue
            rows = photo_sweep_rows(
                _load_reference(str(path), max_side), f"{source}/{path.stem}", source, j, seed, design
            )
            write_parquet_shard(rows, features, shard)
            bar.update(1)
    meta = {
        "settings": settings,
        "status": "complete",
        "num_rows": n * per_photo,
        "seconds_this_run": round(time.time() - started, 1),
    }
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def evaluate_sweeps(model: Any, processor: Any, out: str | Path, batch_size: int = 8) -> dict[str, Any]:
    """``roi_synthesis.roi_sweep_figures`` of a ``SeagullForRegionQuality`` on the sweeps in ``out``, with the
    labels' own figures under ``labels_*``."""
    import torch

    from modeling_rsfiqa.training_seagull import predict_roi_rows

    rows = rs.load_roi_dataset(out, SPLIT)
    with torch.inference_mode():
        records = predict_roi_rows(model, processor, rows, batch_size=batch_size, progress=True)
    types = processor.distortion_types
    figures = rs.roi_sweep_figures(records, distortion_types=types)
    labels = rs.roi_sweep_figures(records, prefix="", distortion_types=types)
    figures.update({f"labels_{k}": v for k, v in labels.items()})
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pristine", required=True, type=Path, help="folder holding the source folders")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--sources", default="kodak24", help="comma-separated folders under --pristine")
    parser.add_argument("--max-side", type=int, default=384, help="down-scale photos to this longest side")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--severity-rois", type=int, default=2, help="severity sweeps per photo and type")
    parser.add_argument("--area-sweeps", type=int, default=1, help="area sweeps per photo and type")
    parser.add_argument("--areas", default="0.02,0.05,0.12,0.3", help="area fractions of the nested ROIs")
    parser.add_argument("--area-level", type=int, default=4, help="distortion level of the area sweeps")
    parser.add_argument("--num-clean", type=int, default=2, help="clean ROIs held in every series")
    parser.add_argument("--metric", default="haarpsi", choices=sorted(rs.FR_METRICS))
    parser.add_argument("--limit-images", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument(
        "--evaluate",
        default=None,
        metavar="MODEL",
        help="then score a small ROI model (saved folder or preset) on the sweeps and print its figures",
    )
    parser.add_argument("--results", type=Path, default=None, help="with --evaluate: write the figures here")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    design = SweepDesign(
        args.severity_rois,
        args.area_sweeps,
        tuple(float(a) for a in args.areas.split(",") if a),
        args.area_level,
        args.num_clean,
        args.metric,
    )
    sources = [s for s in args.sources.split(",") if s]
    meta = build_roi_sweeps(
        args.pristine, args.out, sources, args.max_side, args.seed, design, args.limit_images
    )
    print(json.dumps({k: v for k, v in meta.items() if k != "settings"}, indent=2))
    if args.evaluate:
        import modeling_rsfiqa  # noqa: F401  (registers the families)
        from modeling_rsfiqa.factory import create_model

        model, processor = create_model(args.evaluate)
        if model.config.model_type != "seagull_region":
            raise ValueError(f"{args.evaluate} is a {model.config.model_type!r} model, not seagull_region")
        figures = {
            "model": str(args.evaluate),
            "sweeps": str(args.out),
            **evaluate_sweeps(model, processor, args.out),
        }
        print(json.dumps(figures, indent=2))
        if args.results:
            args.results.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
