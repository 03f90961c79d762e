"""Build a KADID-10k-style synthetic IQA dataset from a folder of clean images.

    python datasets_scripts/synthetic.py --src ../shared/data/pristine/kodak24 --out DIR \\
        [--types jpeg,white_noise] [--levels 1 2 3 4 5] [--seed 0] [--max-side 512] [--fr-metrics]

For every clean image x distortion type x level (``modeling_rsfiqa.distortions``, after
Lin et al., KADID-10k, QoMEX 2019) a distorted PNG is written to ``DIR/images/`` and the clean image
to ``DIR/references/``. Labels: ``mos = 6 - level`` (5 for the mildest level .. 1 for the strongest,
higher is better; a label derived from the level, not from observers), and with ``--fr-metrics``
also the full-reference PSNR and SSIM (scikit-image) against the clean image.

Outputs: ``DIR/images/metadata.csv`` (an ``imagefolder`` layout: file_name, reference,
distortion_type, distortion_level, mos[, psnr, ssim]) and ``DIR/dataset/``, a ``DatasetDict``
saved with ``save_to_disk`` with a seeded 80/20 split over REFERENCE images (see convert.py).

Deterministic: the noise of (image, type) depends only on ``--seed`` and the image name, and is the
same at every level. Resumable: finished items are logged in ``DIR/progress.jsonl`` and skipped on
a re-run; files are written atomically.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tqdm.auto import tqdm  # noqa: E402

from datasets_scripts.convert import DatasetMeta, build_dataset_dict, save  # noqa: E402
from modeling_rsfiqa.distortions import NUM_LEVELS, distort, list_distortions  # noqa: E402
from modeling_rsfiqa.image_io import load_image_rgb  # noqa: E402

__all__ = ["IMAGE_SUFFIXES", "list_clean_images", "level_to_mos", "build_synthetic", "main"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
PROGRESS_FILE = "progress.jsonl"


def level_to_mos(level: int) -> float:
    """Label of a distortion level on a 1-5 MOS-like scale: level 1 (mildest) -> 5, level 5 -> 1."""
    return float(NUM_LEVELS + 1 - level)


def list_clean_images(src: str | Path) -> list[Path]:
    """Image files directly inside ``src``, sorted by name."""
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"source folder of clean images not found: {src}")
    files = sorted(p for p in src.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {src}")
    return files


def _image_seed(seed: int, stem: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{stem}".encode()).digest()[:4], "little")


def _save_atomic(image: Image.Image, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    image.save(tmp, format="PNG")
    os.replace(tmp, path)


def _prepare(path: Path, max_side: int | None) -> Image.Image:
    image = load_image_rgb(path)
    if max_side and max(image.size) > max_side:
        scale = max_side / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    return image


def build_synthetic(
    src: str | Path,
    out: str | Path,
    types: Sequence[str] | None = None,
    levels: Sequence[int] = tuple(range(1, NUM_LEVELS + 1)),
    seed: int = 0,
    max_side: int | None = None,
    fr_metrics: bool = False,
    test_fraction: float = 0.2,
    limit: int | None = None,
    progress: bool = True,
):
    """Generate (or resume) the distorted images and save the dataset; returns the ``DatasetDict``."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    types = list(types) if types else list_distortions()
    unknown = sorted(set(types) - set(list_distortions()))
    if unknown:
        raise ValueError(f"Unknown distortion type(s) {unknown}; available: {list_distortions()}")
    bad = [lv for lv in levels if not 1 <= int(lv) <= NUM_LEVELS]
    if bad:
        raise ValueError(f"levels must be in 1..{NUM_LEVELS}, got {bad}")
    sources = list_clean_images(src)[:limit]
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "references").mkdir(parents=True, exist_ok=True)

    done: dict[str, dict[str, Any]] = {}
    log_path = out / PROGRESS_FILE
    if log_path.exists():
        for line in log_path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                if (out / "images" / row["file_name"]).is_file():
                    done[row["file_name"]] = row

    plan = [(p, t, int(lv)) for p in sources for t in types for lv in levels]
    rows: list[dict[str, Any]] = []
    with log_path.open("a") as log, tqdm(total=len(plan), desc="synthetic", disable=not progress) as bar:
        for path in sources:
            ref_name = f"{path.stem}.png"
            todo = [(t, lv) for (p, t, lv) in plan if p == path]
            names = {(t, lv): f"{path.stem}__{t}__L{lv}.png" for t, lv in todo}
            if all(names[k] in done for k in todo) and (out / "references" / ref_name).is_file():
                rows.extend(done[names[k]] for k in todo)
                bar.update(len(todo))
                continue
            clean = _prepare(path, max_side)
            if not (out / "references" / ref_name).is_file():
                _save_atomic(clean, out / "references" / ref_name)
            clean_arr = np.asarray(clean)
            for t, lv in todo:
                name = names[(t, lv)]
                if name not in done:
                    distorted = distort(clean, t, lv, seed=_image_seed(seed, path.stem))
                    _save_atomic(distorted, out / "images" / name)
                    row: dict[str, Any] = {
                        "file_name": name,
                        "reference": ref_name,
                        "distortion_type": t,
                        "distortion_level": lv,
                        "mos": level_to_mos(lv),
                    }
                    if fr_metrics:
                        arr = np.asarray(distorted)
                        row["psnr"] = float(peak_signal_noise_ratio(clean_arr, arr))
                        row["ssim"] = float(structural_similarity(clean_arr, arr, channel_axis=-1))
                    log.write(json.dumps(row) + "\n")
                    log.flush()
                    done[name] = row
                rows.append(done[name])
                bar.update(1)

    fields = ["file_name", "reference", "distortion_type", "distortion_level", "mos"]
    if fr_metrics:
        fields += ["psnr", "ssim"]
    with (out / "images" / "metadata.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)

    from datasets import Value

    records = [
        {
            "image": str(out / "images" / r["file_name"]),
            "name": f"images/{r['file_name']}",
            "mos": r["mos"],
            "mos_std": None,
            "distortion_type": r["distortion_type"],
            "distortion_level": r["distortion_level"],
            "reference": r["reference"],
            "split": None,
            **({"psnr": r.get("psnr"), "ssim": r.get("ssim")} if fr_metrics else {}),
        }
        for r in rows
    ]
    meta = DatasetMeta(
        f"synthetic-{Path(src).name}",
        (1.0, 5.0),
        True,
        score_name="level-derived MOS (6 - level)",
        synthetic=True,
        citation="Distortions after Lin, Hosu, Saupe. KADID-10k: A large-scale artificially distorted IQA "
        "database. QoMEX 2019.",
        notes=f"source={Path(src).resolve()}, types={types}, levels={list(levels)}, seed={seed}, max_side={max_side}",
    )
    extra = {"psnr": Value("float32"), "ssim": Value("float32")} if fr_metrics else {}
    dd = build_dataset_dict(records, meta, seed=seed, test_fraction=test_fraction, extra_features=extra)
    save(dd, out / "dataset")
    return dd


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", required=True, type=Path, help="folder of clean images")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument(
        "--types", default="", help=f"comma-separated subset of: {','.join(list_distortions())}"
    )
    parser.add_argument("--levels", type=int, nargs="+", default=list(range(1, NUM_LEVELS + 1)))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--max-side", type=int, default=None, help="down-scale clean images to this longest side"
    )
    parser.add_argument("--fr-metrics", action="store_true", help="add PSNR and SSIM against the clean image")
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--limit", type=int, default=None, help="use only the first N clean images")
    args = parser.parse_args(argv)
    types = [t.strip() for t in args.types.split(",") if t.strip()] or None
    dd = build_synthetic(
        args.src,
        args.out,
        types,
        args.levels,
        args.seed,
        args.max_side,
        args.fr_metrics,
        args.test_fraction,
        args.limit,
    )
    print(f"wrote {args.out / 'dataset'} ({', '.join(f'{k}={v.num_rows}' for k, v in dd.items())})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
