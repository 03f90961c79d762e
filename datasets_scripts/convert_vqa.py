"""Convert published video-quality datasets (their label files as the Q-CLIP reference reads them) to ``datasets``.

    python datasets_scripts/convert_vqa.py <dataset> --root DATA_ROOT [--labels FILE] --out DIR [--seed 42]

The Q-CLIP reference (``datasets/vqa_datasets.py``) and its lineage (FAST-VQA / DOVER ``data_labels``) keep one
text file per dataset with one video per line: ``filename, duration, fps, label`` (duration and fps are -1
where unknown), ``filename`` relative to the dataset's folder. Each converter below knows its dataset's
default label file name, where the videos live under ``--root``, the score scale and direction, and the split
policy; rows become

    video (str: absolute path of the file, or of the frame folder)  name (as in the label file)
    mos (float32, the dataset's scale)  duration (float32 or None)  fps (float32 or None)  split (str)
    + dataset-specific columns (category, test set, ...)

Videos are referenced by path (not embedded): decode them with ``QCLIPVideoProcessor``. Splits: LSVQ's official
train / test / test-1080p label files; every other dataset gets the reference's seeded 80/20 split
(``quality_metrics.reference_split``: ``random.Random(seed)`` shuffles the rows; the 10-split protocol uses
seeds ``TEN_SPLIT_SEEDS``). The score scale and split policy are stored in ``info.description`` and in the
sidecar ``rsfiqa_dataset.json`` (the same :class:`DatasetMeta` as ``convert.py``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasets import Dataset, DatasetDict, Features, Value  # noqa: E402

from datasets_scripts.convert import META_FILE, DatasetMeta  # noqa: E402
from modeling_rsfiqa.quality_metrics import reference_split  # noqa: E402
from modeling_rsfiqa.video_io import FRAME_EXTENSIONS, VIDEO_EXTENSIONS  # noqa: E402

__all__ = ["VQA_CONVERTERS", "LabelRow", "read_label_file", "convert_vqa", "load_converted_vqa", "main"]


class LabelRow(dict):
    """One line of a reference label file: name, duration, fps, mos (and the 1-based line number)."""


def read_label_file(path: str | Path) -> list[LabelRow]:
    """Parse ``filename, duration, fps, label`` lines (blank lines skipped; -1 means unknown)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label file not found: {path}")
    rows = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 4:
            raise ValueError(f"{path}:{line_no}: expected 'filename, duration, fps, label', got {line!r}")
        try:
            duration, fps, mos = float(fields[1]), float(fields[2]), float(fields[3])
        except ValueError as err:
            raise ValueError(f"{path}:{line_no}: {err}") from None
        if not math.isfinite(mos):
            raise ValueError(f"{path}:{line_no}: label is not a finite number: {fields[3]!r}")
        rows.append(
            LabelRow(
                name=fields[0],
                duration=duration if duration > 0 else None,
                fps=fps if fps > 0 else None,
                mos=mos,
                line=line_no,
            )
        )
    if not rows:
        raise ValueError(f"{path} holds no labelled videos")
    return rows


def _locate(folder: Path, name: str) -> Path | None:
    """The video for a label-file entry: the file itself, a frame folder named after its stem (e.g. LIVE-Qualcomm
    extracted to PNG), or a file with the same stem and another video extension (e.g. .yuv re-encoded to .mp4)."""
    path = folder / name
    if path.is_file():
        return path
    stem = path.with_suffix("")
    if stem.is_dir() and any(p.suffix.lower() in FRAME_EXTENSIONS for p in stem.iterdir()):
        return stem
    for ext in VIDEO_EXTENSIONS:
        candidate = stem.with_suffix(ext)
        if candidate.is_file():
            return candidate
    return None


def _label_file(root: Path, labels: Path | None, default: Sequence[str], what: str) -> Path:
    if labels is not None:
        return labels
    for name in default:
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(
        f"{what} label file not found under {root}; looked for {list(default)} (or pass --labels)"
    )


def _records(
    rows: list[LabelRow], folder: Path, split: str | None = None, **extra_fn: Callable
) -> list[dict]:
    out = []
    for r in rows:
        record = {
            "video": str(_locate(folder, r["name"]) or folder / r["name"]),
            "name": r["name"],
            "mos": r["mos"],
            "duration": r["duration"],
            "fps": r["fps"],
            "split": split,
        }
        for key, fn in extra_fn.items():
            record[key] = fn(r["name"])
        out.append(record)
    return out


def _first_dir(root: Path, candidates: Sequence[str]) -> Path:
    for c in candidates:
        if (root / c).is_dir():
            return root / c
    return root


# ---------------------------------------------------------------------------------------------------- readers
def read_konvid1k(root: Path, labels: Path | None = None, **_: Any):
    """KoNViD-1k (Hosu et al., QoMEX 2017): 1,200 Flickr videos, MOS 1-5 (higher better). Label file
    ``KoNViD/labels.txt`` (or ``labels.txt``); names ``KoNViD_1k_videos/<id>.mp4`` relative to ``--root``."""
    path = _label_file(root, labels, ["labels.txt", "KoNViD/labels.txt"], "KoNViD-1k")
    meta = DatasetMeta(
        "konvid1k",
        (1.0, 5.0),
        True,
        citation="Hosu et al. The Konstanz natural video database (KoNViD-1k). QoMEX 2017.",
    )
    return _records(read_label_file(path), root), meta, {}


def read_livevqc(root: Path, labels: Path | None = None, **_: Any):
    """LIVE-VQC (Sinno & Bovik, IEEE TIP 2019): 585 mobile videos, MOS 0-100. Label file ``labels.txt``; names
    ``Video/A001.mp4`` relative to ``--root`` (the reference's ``LIVE-VQC/data``)."""
    path = _label_file(root, labels, ["labels.txt", "LIVE_VQC/labels.txt"], "LIVE-VQC")
    meta = DatasetMeta(
        "livevqc",
        (0.0, 100.0),
        True,
        citation="Sinno, Bovik. Large-scale study of perceptual video quality. IEEE TIP 28(2), 2019.",
    )
    return _records(read_label_file(path), root), meta, {}


def read_youtube_ugc(root: Path, labels: Path | None = None, **_: Any):
    """YouTube-UGC (Wang et al., MMSP 2019): MOS 1-5. Label file ``labels.txt``; names
    ``<Category>_<res>P-<id>_crf_10_ss_00_t_20.0.mp4`` in ``original_videos_h264/`` (or ``--root`` itself).
    The category (Sports, Gaming, ...) and resolution are kept."""
    path = _label_file(root, labels, ["labels.txt", "YouTubeUGC/labels.txt"], "YouTube-UGC")
    folder = _first_dir(root, ["original_videos_h264"])
    meta = DatasetMeta(
        "youtube_ugc",
        (1.0, 5.0),
        True,
        citation="Wang, Inguva, Adsumilli. YouTube UGC dataset for video compression research. MMSP 2019.",
    )
    rows = _records(
        read_label_file(path),
        folder,
        category=lambda n: Path(n).name.split("_", 1)[0],
        resolution=lambda n: Path(n).name.split("_", 1)[1].split("-", 1)[0] if "_" in Path(n).name else None,
    )
    return rows, meta, {"category": Value("string"), "resolution": Value("string")}


def read_lsvq(root: Path, labels: Path | None = None, **_: Any):
    """LSVQ (Ying et al., CVPR 2021): ~39k videos, MOS 0-100, official splits. Label files ``labels.txt``
    (train), ``labels_test.txt`` (test) and ``labels_1080p.txt`` (test-1080p), in ``--root`` or ``LSVQ/``;
    names ``yfcc-batchN/<id>.mp4`` relative to ``--root``. ``--labels`` converts one file as ``train``."""
    meta = DatasetMeta(
        "lsvq",
        (0.0, 100.0),
        True,
        citation="Ying et al. Patch-VQ: 'patching up' the video quality problem. CVPR 2021.",
    )
    if labels is not None:
        return _records(read_label_file(labels), root, split="train"), meta, {}
    records = []
    for split, names in (
        ("train", ["labels.txt", "LSVQ/labels.txt"]),
        ("test", ["labels_test.txt", "LSVQ/labels_test.txt"]),
        ("test_1080p", ["labels_1080p.txt", "LSVQ/labels_1080p.txt"]),
    ):
        found = next((root / n for n in names if (root / n).is_file()), None)
        if found is None:
            if split == "train":
                raise FileNotFoundError(f"LSVQ train label file not found under {root}; looked for {names}")
            continue
        records += _records(read_label_file(found), root, split=split)
    return records, meta, {}


def read_cvd2014(root: Path, labels: Path | None = None, **_: Any):
    """CVD2014 (Nuutinen et al., IEEE TIP 2016): 234 videos from 78 cameras in 6 test sets and 5 scenes. Label
    file ``labels.txt``; names ``Test<k>/<Scene>/Test0<k>_<Scene>_D<nn>.avi`` relative to ``--root``. Its
    realigned MOS runs from about -7 to 94 (higher better); the range is recorded as observed. Test set and
    scene are kept."""
    path = _label_file(root, labels, ["labels.txt", "CVD2014/labels.txt"], "CVD2014")
    rows = _records(
        read_label_file(path),
        root,
        test_set=lambda n: Path(n).parts[0] if len(Path(n).parts) > 1 else None,
        scene=lambda n: Path(n).parts[1] if len(Path(n).parts) > 2 else None,
    )
    mos = [r["mos"] for r in rows]
    meta = DatasetMeta(
        "cvd2014",
        (min(mos), max(mos)),
        True,
        citation="Nuutinen et al. CVD2014 - a database for evaluating no-reference video quality assessment "
        "algorithms. IEEE TIP 25(7), 2016.",
        notes="mos_range observed in the label file (realigned scale, can be negative)",
    )
    return rows, meta, {"test_set": Value("string"), "scene": Value("string")}


def read_live_qualcomm(root: Path, labels: Path | None = None, **_: Any):
    """LIVE-Qualcomm (Ghadiyaram et al., IEEE TCSVT 2018): 208 1080p mobile videos, MOS 0-100, six distortion
    categories. Label file ``labels.txt``; names ``<Category>/<name>.yuv``. The raw YUV files need their size
    to decode, so the reference extracts frames: a folder ``<Category>/<name>/`` of PNG frames (as in
    ``LIVE-Qualcomm_8png``) or a re-encoded ``<Category>/<name>.mp4`` are used when present. The distortion
    category (Artifacts, Color, Exposure, Focus, Sharpness, Stabilization) is kept."""
    path = _label_file(root, labels, ["labels.txt", "LIVE_Qualcomm/labels.txt"], "LIVE-Qualcomm")
    meta = DatasetMeta(
        "live_qualcomm",
        (0.0, 100.0),
        True,
        citation="Ghadiyaram et al. In-capture mobile video distortions: a study of subjective behavior and "
        "objective algorithms. IEEE TCSVT 28(9), 2018.",
    )
    rows = _records(
        read_label_file(path), root, category=lambda n: Path(n).parts[0] if len(Path(n).parts) > 1 else None
    )
    return rows, meta, {"category": Value("string")}


VQA_CONVERTERS: dict[str, Callable[..., tuple[list[dict], DatasetMeta, dict]]] = {
    "konvid1k": read_konvid1k,
    "livevqc": read_livevqc,
    "youtube_ugc": read_youtube_ugc,
    "lsvq": read_lsvq,
    "cvd2014": read_cvd2014,
    "live_qualcomm": read_live_qualcomm,
}

_BASE_FEATURES = {
    "video": Value("string"),
    "name": Value("string"),
    "mos": Value("float32"),
    "duration": Value("float32"),
    "fps": Value("float32"),
    "split": Value("string"),
}


def convert_vqa(
    dataset: str,
    root: str | Path,
    out: str | Path | None = None,
    labels: str | Path | None = None,
    seed: int = 42,
    train_ratio: float = 0.8,
    allow_missing: bool = False,
) -> DatasetDict:
    """Read ``dataset``'s label file(s) under ``root``; split; save to ``out`` when given."""
    if dataset not in VQA_CONVERTERS:
        raise ValueError(f"Unknown dataset {dataset!r}; choose from {sorted(VQA_CONVERTERS)}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{dataset} root folder not found: {root}")
    records, meta, extra = VQA_CONVERTERS[dataset](root, labels=Path(labels) if labels else None)
    missing = [r["name"] for r in records if not Path(r["video"]).exists()]
    if missing and not allow_missing:
        raise FileNotFoundError(
            f"{len(missing)} video(s) listed in the labels are missing under {root}, e.g. {missing[:3]} "
            "(pass --allow-missing to skip them)"
        )
    records = [r for r in records if Path(r["video"]).exists()]
    if not records:
        raise ValueError(f"{dataset}: no video to convert")
    if all(r["split"] for r in records):
        meta.split, meta.split_seed, meta.test_fraction = "official", None, None
    else:
        train, _ = reference_split(len(records), seed, train_ratio)
        train_set = set(train)
        for i, r in enumerate(records):
            r["split"] = "train" if i in train_set else "test"
        meta.split, meta.split_seed, meta.test_fraction = "random", seed, round(1.0 - train_ratio, 6)
    meta.split_groups = "video"
    features = Features({**_BASE_FEATURES, **extra})
    full = Dataset.from_dict({k: [r.get(k) for r in records] for k in features}, features=features)
    names = [
        s for s in ("train", "validation", "test", "test_1080p") if any(r["split"] == s for r in records)
    ]
    parts = {}
    for name in names:
        part = full.select([i for i, r in enumerate(records) if r["split"] == name])
        part.info.description = meta.to_json()
        parts[name] = part
    dd = DatasetDict(parts)
    if out is not None:
        out = Path(out)
        dd.save_to_disk(str(out))
        sidecar = json.loads(meta.to_json())
        sidecar["num_rows"] = {k: v.num_rows for k, v in dd.items()}
        (out / META_FILE).write_text(json.dumps(sidecar, indent=2, sort_keys=True) + "\n")
    return dd


def load_converted_vqa(path: str | Path) -> tuple[DatasetDict, DatasetMeta]:
    from datasets import load_from_disk

    dd = load_from_disk(str(path))
    return dd, DatasetMeta.from_json(next(iter(dd.values())).info.description)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", choices=sorted(VQA_CONVERTERS))
    parser.add_argument(
        "--root", required=True, type=Path, help="the dataset's folder (the reference's data_prefix)"
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder for save_to_disk")
    parser.add_argument(
        "--labels", type=Path, help="label file (default: the dataset's usual name under --root)"
    )
    parser.add_argument("--seed", type=int, default=42, help="split seed (the 10-split protocol uses 42..51)")
    parser.add_argument("--train-ratio", type=float, default=0.8)
    parser.add_argument("--allow-missing", action="store_true", help="skip label rows whose video is missing")
    args = parser.parse_args(argv)
    dd = convert_vqa(
        args.dataset, args.root, args.out, args.labels, args.seed, args.train_ratio, args.allow_missing
    )
    print(f"{args.dataset}: wrote {args.out} ({', '.join(f'{k}={v.num_rows}' for k, v in dd.items())})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
