"""Convert published IQA datasets from their archive layout to a ``datasets.DatasetDict`` on disk.

    python datasets_scripts/convert.py <dataset> --root DIR --out DIR [--seed 0] [--test-fraction 0.2]

Every converter reads the dataset exactly as its authors publish it (file names, label files, score
scale and direction; the expected layout is in each ``read_*`` docstring) and produces rows with the
same columns, so datasets can be concatenated:

    image (datasets.Image)  mos (float32, the dataset's own scale)  mos_std (float32 or None)
    distortion_type (str or None)  distortion_level (int32 or None)  reference (str or None)
    name (path of the image inside the archive)  split (train / validation / test)
    + a few dataset-specific columns (e.g. prompt for AGIQA-3K, attribute scores for SPAQ).

The score scale and direction (``mos_range``, ``higher_is_better``, ``score_name``), the split policy
and the citation are stored as JSON in ``info.description`` of every split and in the sidecar
``rsfiqa_dataset.json``; :func:`load_converted` returns both. Images are embedded by
``save_to_disk``, so the output does not depend on the source folder afterwards.

Splits: official splits where they exist (KonIQ-10k's ``set`` column); otherwise a seeded 80/20
train/test split (seeds 0..9 by convention, ``--seed``). For synthetic datasets (KADID-10k, TID2013,
CSIQ, LIVE) the split is drawn over REFERENCE images, so the distorted versions of one content never
fall on both sides. :func:`resplit` re-draws the split of a converted dataset for another seed with
the same rule, without going back to the archive.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import datasets  # noqa: E402
from datasets import Dataset, DatasetDict, Features, Value  # noqa: E402

__all__ = [
    "DatasetMeta",
    "CONVERTERS",
    "TID2013_DISTORTIONS",
    "LIVE_FOLDERS",
    "CSIQ_TYPES",
    "assign_splits",
    "build_dataset_dict",
    "convert",
    "load_converted",
    "load_imagefolder",
    "resplit",
    "main",
]

META_FILE = "rsfiqa_dataset.json"


@dataclass
class DatasetMeta:
    """What a score means: its range and direction, and how the split was made."""

    dataset: str
    mos_range: tuple[float, float]
    higher_is_better: bool
    score_name: str = "MOS"
    synthetic: bool = False  # split groups = reference images
    citation: str = ""
    notes: str = ""
    split: str = "random"  # "official" or "random"
    split_seed: int | None = 0
    test_fraction: float | None = 0.2
    split_groups: str = "image"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> DatasetMeta:
        data = json.loads(text)
        data["mos_range"] = tuple(data["mos_range"])
        return cls(**data)


# --------------------------------------------------------------------------- generic helpers


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def _first_existing(candidates: Sequence[Path], what: str) -> Path:
    for path in candidates:
        if path.exists():
            return path
    raise FileNotFoundError(f"{what} not found; looked for: {', '.join(str(p) for p in candidates)}")


def _file_index(folder: Path) -> dict[str, Path]:
    """Case-insensitive map ``basename.lower() -> path`` of every file below ``folder``."""
    index: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            index.setdefault(path.name.lower(), path)
    return index


def _read_table(path: Path, sheet: str | int | None = 0, header: int | None = 0):
    """A CSV / TSV / XLSX label file as a pandas DataFrame; XLSX needs the optional ``openpyxl``."""
    import pandas as pd

    _require(path, "label file")
    if path.suffix.lower() in (".xlsx", ".xlsm", ".xls"):
        try:
            import openpyxl  # noqa: F401
        except ImportError as err:
            raise ImportError(
                f"Reading {path.name} needs the optional package openpyxl (pip install openpyxl); "
                "alternatively export the sheet as CSV and pass it with --labels FILE.csv"
            ) from err
        return pd.read_excel(path, sheet_name=sheet, header=header)
    sep = "\t" if path.suffix.lower() in (".tsv", ".txt") else ","
    return pd.read_csv(path, sep=sep, header=header)


def _mat_strings(value: Any) -> list[str]:
    """Flatten a MATLAB cell array of strings read by ``scipy.io.loadmat`` into a list of str."""
    out: list[str] = []
    for item in np.asarray(value, dtype=object).reshape(-1):
        while isinstance(item, np.ndarray) and item.dtype == object and item.size == 1:
            item = item.reshape(-1)[0]
        if isinstance(item, np.ndarray):
            item = "".join(item.reshape(-1).tolist()) if item.dtype.kind == "U" else item.item()
        out.append(str(item).strip())
    return out


def _loadmat(path: Path, key: str) -> Any:
    from scipy.io import loadmat

    data = loadmat(str(_require(path, "MATLAB label file")))
    if key not in data:
        raise KeyError(
            f"{path} has no variable {key!r} (found: {sorted(k for k in data if not k.startswith('__'))})"
        )
    return data[key]


def _float_or_none(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _record(
    image: Path,
    root: Path,
    mos: float,
    mos_std: float | None = None,
    distortion_type: str | None = None,
    distortion_level: int | None = None,
    reference: str | None = None,
    split: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    try:
        name = image.relative_to(root).as_posix()
    except ValueError:
        name = image.name
    return {
        "image": str(image),
        "name": name,
        "mos": float(mos),
        "mos_std": _float_or_none(mos_std),
        "distortion_type": distortion_type,
        "distortion_level": None if distortion_level is None else int(distortion_level),
        "reference": reference,
        "split": split,
        **extra,
    }


def _check_images(records: list[dict[str, Any]], allow_missing: bool) -> list[dict[str, Any]]:
    missing = [r["image"] for r in records if not Path(r["image"]).is_file()]
    if missing and not allow_missing:
        raise FileNotFoundError(
            f"{len(missing)} image(s) listed in the labels are missing, e.g. {missing[:3]} "
            "(pass --allow-missing to skip them)"
        )
    if missing:
        print(f"warning: skipping {len(missing)} missing image(s), e.g. {missing[:3]}", file=sys.stderr)
    return [r for r in records if Path(r["image"]).is_file()]


# --------------------------------------------------------------------------- splits


def assign_splits(groups: Sequence[str], seed: int, test_fraction: float = 0.2) -> list[str]:
    """``"train"``/``"test"`` per row, drawn over the UNIQUE groups (reference-disjoint when groups are
    reference names): the sorted groups are permuted by ``np.random.default_rng(seed)`` and the first
    ``round(test_fraction * n_groups)`` (at least 1 when there are 2+ groups) go to test."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    unique = sorted(set(groups))
    n_test = min(len(unique) - 1, max(1, round(test_fraction * len(unique)))) if len(unique) > 1 else 0
    perm = np.random.default_rng(seed).permutation(len(unique))
    test = {unique[i] for i in perm[:n_test]}
    return ["test" if g in test else "train" for g in groups]


def _groups(rows_reference: Sequence[str | None], rows_name: Sequence[str], synthetic: bool) -> list[str]:
    if synthetic:
        return [ref if ref is not None else name for ref, name in zip(rows_reference, rows_name)]
    return list(rows_name)


_BASE_FEATURES = {
    "image": datasets.Image(),
    "name": Value("string"),
    "mos": Value("float32"),
    "mos_std": Value("float32"),
    "distortion_type": Value("string"),
    "distortion_level": Value("int32"),
    "reference": Value("string"),
    "split": Value("string"),
}


def build_dataset_dict(
    records: list[dict[str, Any]],
    meta: DatasetMeta,
    seed: int = 0,
    test_fraction: float = 0.2,
    extra_features: dict[str, Any] | None = None,
) -> DatasetDict:
    """Rows -> ``DatasetDict`` keyed by split; official splits are kept when every row has one."""
    if not records:
        raise ValueError(f"{meta.dataset}: no rows to convert")
    if all(r.get("split") for r in records):
        meta.split, meta.split_seed, meta.test_fraction = "official", None, None
    else:
        groups = _groups([r["reference"] for r in records], [r["name"] for r in records], meta.synthetic)
        for r, s in zip(records, assign_splits(groups, seed, test_fraction)):
            r["split"] = s
        meta.split, meta.split_seed, meta.test_fraction = "random", seed, test_fraction
    meta.split_groups = "reference" if meta.synthetic else "image"
    features = Features({**_BASE_FEATURES, **(extra_features or {})})
    columns = {key: [r.get(key) for r in records] for key in features}
    full = Dataset.from_dict(columns, features=features)
    order = [s for s in ("train", "validation", "test") if s in set(columns["split"])]
    order += sorted(set(columns["split"]) - set(order))
    splits = {}
    for name in order:
        part = full.select([i for i, s in enumerate(columns["split"]) if s == name])
        part.info.description = meta.to_json()
        splits[name] = part
    return DatasetDict(splits)


def resplit(data: Dataset | DatasetDict, seed: int, test_fraction: float = 0.2) -> DatasetDict:
    """Re-draw the seeded train/test split of a converted dataset (same rule as the converter)."""
    parts = list(data.values()) if isinstance(data, DatasetDict) else [data]
    full = datasets.concatenate_datasets(parts)
    meta = DatasetMeta.from_json(parts[0].info.description)
    groups = _groups(list(full["reference"]), list(full["name"]), meta.synthetic)
    labels = assign_splits(groups, seed, test_fraction)
    full = full.remove_columns("split").add_column("split", labels, feature=Value("string"))
    meta.split, meta.split_seed, meta.test_fraction = "random", seed, test_fraction
    out = {}
    for name in ("train", "test"):
        part = full.select([i for i, s in enumerate(labels) if s == name])
        part.info.description = meta.to_json()
        out[name] = part
    return DatasetDict(out)


_LICENCE_PATTERN = re.compile(r"(copyright|licen[cs]e|readme)", re.IGNORECASE)


def save(dataset_dict: DatasetDict, out: Path, source_root: Path | None = None) -> None:
    """``save_to_disk`` plus the sidecar ``rsfiqa_dataset.json`` (meta + split sizes).

    Top-level copyright / licence / readme text files of ``source_root`` are copied next to the
    data: several IQA databases (e.g. the LIVE ones) require their notice to travel with any copy.
    """
    out = Path(out)
    dataset_dict.save_to_disk(str(out))
    if source_root is not None:
        for path in sorted(Path(source_root).iterdir()):
            if path.is_file() and _LICENCE_PATTERN.search(path.name) and path.stat().st_size < 1_000_000:
                shutil.copyfile(path, out / path.name)
    first = next(iter(dataset_dict.values()))
    sidecar = json.loads(first.info.description)
    sidecar["num_rows"] = {k: v.num_rows for k, v in dataset_dict.items()}
    (out / META_FILE).write_text(json.dumps(sidecar, indent=2, sort_keys=True) + "\n")


def load_converted(path: str | Path) -> tuple[DatasetDict, DatasetMeta]:
    """Load a converted dataset and its :class:`DatasetMeta`."""
    path = Path(path)
    dd = datasets.load_from_disk(str(_require(path, "converted dataset")))
    if isinstance(dd, Dataset):
        dd = DatasetDict({"train": dd})
    sidecar = path / META_FILE
    text = next(iter(dd.values())).info.description
    if not text and sidecar.exists():
        text = json.dumps({k: v for k, v in json.loads(sidecar.read_text()).items() if k != "num_rows"})
    return dd, DatasetMeta.from_json(text)


# --------------------------------------------------------------------------- readers (one per dataset)


def read_koniq10k(root: Path, labels: Path | None = None, **_: Any) -> tuple[list[dict], DatasetMeta, dict]:
    """KonIQ-10k (Hosu et al., IEEE TIP 2020). Layout of the OSF release::

        koniq10k_distributions_sets.csv   (image_name,c1..c5,c_total,MOS,SD,MOS_zscore,set)  or
        koniq10k_scores_and_distributions.csv   (same without `set`); also accepted under metadata/
        1024x768/<image_name>   (or 512x384/)

    ``mos`` = MOS on 1-5 (higher is better), ``mos_std`` = SD, plus ``mos_zscore`` (0-100). The
    official split is the ``set`` column (training / validation / test) when present.
    """
    names = ["koniq10k_distributions_sets.csv", "koniq10k_scores_and_distributions.csv"]
    label_path = labels or _first_existing(
        [root / n for n in names] + [root / "metadata" / n for n in names], "KonIQ-10k label file"
    )
    df = _read_table(label_path)
    image_dir = _first_existing(
        [root / "1024x768", root / "512x384", root / "images"], "KonIQ-10k image folder"
    )
    split_map = {"training": "train", "train": "train", "validation": "validation", "test": "test"}
    has_set = "set" in df.columns
    records = []
    for r in df.to_dict("records"):
        split = split_map.get(str(r["set"]).strip().lower()) if has_set else None
        records.append(
            _record(
                image_dir / str(r["image_name"]),
                root,
                r["MOS"],
                r.get("SD"),
                split=split,
                mos_zscore=_float_or_none(r.get("MOS_zscore")),
            )
        )
    meta = DatasetMeta(
        "koniq10k",
        (1.0, 5.0),
        True,
        citation="Hosu, Lin, Sziranyi, Saupe. KonIQ-10k: An ecologically valid database for deep learning "
        "of blind image quality assessment. IEEE TIP 29, 2020.",
        notes="mos = MOS (1-5); mos_zscore = MOS_zscore (0-100) also provided.",
    )
    return records, meta, {"mos_zscore": Value("float32")}


SPAQ_ATTRIBUTES = ("Brightness", "Colorfulness", "Contrast", "Noisiness", "Sharpness")


def read_spaq(root: Path, labels: Path | None = None, **_: Any) -> tuple[list[dict], DatasetMeta, dict]:
    """SPAQ (Fang et al., CVPR 2020). Layout of the release::

        Annotations/MOS and Image attribute scores.xlsx  (Image name, MOS, Brightness, Colorfulness,
                                                          Contrast, Noisiness, Sharpness)
        TestImage/00001.jpg ...

    The XLSX needs ``openpyxl``; a CSV export with the same header is accepted (``--labels`` or
    ``Annotations/*.csv``). ``mos`` on 0-100, higher is better; the five attribute scores are kept as
    lower-case float32 columns. No official split: seeded 80/20. Images are full-resolution phone
    photos (papers usually resize them; not done here).
    """
    if labels is None:
        xlsx = root / "Annotations" / "MOS and Image attribute scores.xlsx"
        csvs = sorted((root / "Annotations").glob("*.csv")) if (root / "Annotations").is_dir() else []
        labels = xlsx if xlsx.exists() or not csvs else csvs[0]
    df = _read_table(_require(labels, "SPAQ label file"))
    df.columns = [str(c).strip() for c in df.columns]
    image_dir = _first_existing([root / "TestImage", root / "images"], "SPAQ image folder")
    records = []
    for r in df.to_dict("records"):
        attrs = {a.lower(): _float_or_none(r.get(a)) for a in SPAQ_ATTRIBUTES}
        records.append(_record(image_dir / str(r["Image name"]).strip(), root, r["MOS"], **attrs))
    meta = DatasetMeta(
        "spaq",
        (0.0, 100.0),
        True,
        citation="Fang, Zhu, Zeng, Ma, Wang. Perceptual quality assessment of smartphone photography. CVPR 2020.",
    )
    return records, meta, {a.lower(): Value("float32") for a in SPAQ_ATTRIBUTES}


def read_clive(
    root: Path, include_training_images: bool = False, **_: Any
) -> tuple[list[dict], DatasetMeta, dict]:
    """LIVE In the Wild Image Quality Challenge (Ghadiyaram & Bovik, IEEE TIP 2016). Layout::

        Data/AllImages_release.mat   (AllImages_release: 1169x1 cell of file names)
        Data/AllMOS_release.mat      (AllMOS_release: 1x1169, 0-100, higher is better)
        Data/AllStdDev_release.mat   (AllStdDev_release, optional)
        Images/<name>.JPG|bmp ;  Images/trainingImages/t1.bmp..t7.bmp  (the 7 practice images)

    The 7 practice images (listed first, stored in Images/trainingImages) are dropped, as is
    standard (1162 rows), unless ``include_training_images``. No official split: seeded 80/20.
    """
    data = root / "Data"
    names = _mat_strings(_loadmat(data / "AllImages_release.mat", "AllImages_release"))
    mos = np.asarray(_loadmat(data / "AllMOS_release.mat", "AllMOS_release"), dtype=float).reshape(-1)
    std_path = data / "AllStdDev_release.mat"
    std = (
        np.asarray(_loadmat(std_path, "AllStdDev_release"), dtype=float).reshape(-1)
        if std_path.exists()
        else np.full(len(names), np.nan)
    )
    if not len(names) == len(mos) == len(std):
        raise ValueError(
            f"CLIVE label files disagree in length: {len(names)} names, {len(mos)} MOS, {len(std)} std"
        )
    images, training = root / "Images", root / "Images" / "trainingImages"
    _require(images, "CLIVE image folder")
    training_names = {p.name.lower() for p in training.iterdir()} if training.is_dir() else set()
    records = []
    for name, m, s in zip(names, mos, std):
        is_training = name.lower() in training_names and not (images / name).exists()
        if is_training and not include_training_images:
            continue
        records.append(_record((training if is_training else images) / name, root, m, s))
    meta = DatasetMeta(
        "clive",
        (0.0, 100.0),
        True,
        citation="Ghadiyaram, Bovik. Massive online crowdsourced study of subjective and objective picture "
        "quality. IEEE TIP 25(1), 2016.",
    )
    return records, meta, {}


def _kadid_names() -> tuple[str, ...]:
    try:
        from modeling_rsfiqa.distortions import KADID_DISTORTION_NAMES
    except ImportError:  # pragma: no cover - the repository root is on sys.path in normal use
        return tuple(f"kadid_{i:02d}" for i in range(1, 26))
    return KADID_DISTORTION_NAMES


def read_kadid10k(root: Path, labels: Path | None = None, **_: Any) -> tuple[list[dict], DatasetMeta, dict]:
    """KADID-10k (Lin, Hosu, Saupe, QoMEX 2019). Layout of the release::

        dmos.csv   (dist_img,ref_img,dmos,var)
        images/I01.png, images/I01_01_01.png ...   (reference I<ref>, distorted I<ref>_<type>_<level>)

    (``distorted_images/`` + ``reference_images/`` re-packagings are accepted too.) Despite its name,
    ``dmos`` is a quality score on 1-5, higher is better. The published ``var`` column is kept as-is in
    ``mos_var`` (a third-party audit reports it actually holds standard deviations, so it is not
    converted). Distortion types use the 25 KADID names of ``modeling_rsfiqa.distortions``.
    Split: seeded 80/20 over the 81 reference images.
    """
    df = _read_table(labels or _require(root / "dmos.csv", "KADID-10k label file dmos.csv"))
    folders = [root / "images", root / "distorted_images", root / "reference_images"]
    index: dict[str, Path] = {}
    for folder in folders:
        if folder.is_dir():
            for k, v in _file_index(folder).items():
                index.setdefault(k, v)
    if not index:
        raise FileNotFoundError(
            f"KADID-10k image folder not found; looked for: {', '.join(map(str, folders))}"
        )
    kadid = _kadid_names()
    pattern = re.compile(r"^i(\d+)_(\d+)_(\d+)\.", re.IGNORECASE)
    records = []
    for r in df.to_dict("records"):
        dist = str(r["dist_img"])
        m = pattern.match(dist)
        if m is None:
            raise ValueError(
                f"KADID-10k: unexpected distorted image name {dist!r} (expected I<ref>_<type>_<level>.png)"
            )
        type_id, level = int(m.group(2)), int(m.group(3))
        path = index.get(dist.lower(), root / "images" / dist)
        records.append(
            _record(
                path,
                root,
                r["dmos"],
                None,
                kadid[type_id - 1] if 1 <= type_id <= len(kadid) else f"kadid_{type_id:02d}",
                level,
                str(r["ref_img"]),
                mos_var=_float_or_none(r.get("var")),
            )
        )
    meta = DatasetMeta(
        "kadid10k",
        (1.0, 5.0),
        True,
        score_name="DMOS (quality-oriented)",
        synthetic=True,
        citation="Lin, Hosu, Saupe. KADID-10k: A large-scale artificially distorted IQA database. QoMEX 2019.",
    )
    return records, meta, {"mos_var": Value("float32")}


#: TID2013 distortion ids 1..24 (Ponomarenko et al. 2015, Table 1), as short snake-case names.
TID2013_DISTORTIONS: tuple[str, ...] = (
    "additive_gaussian_noise",
    "additive_noise_color_components",
    "spatially_correlated_noise",
    "masked_noise",
    "high_frequency_noise",
    "impulse_noise",
    "quantization_noise",
    "gaussian_blur",
    "image_denoising",
    "jpeg",
    "jpeg2000",
    "jpeg_transmission_errors",
    "jpeg2000_transmission_errors",
    "non_eccentricity_pattern_noise",
    "local_blockwise_distortions",
    "mean_shift",
    "contrast_change",
    "change_of_color_saturation",
    "multiplicative_gaussian_noise",
    "comfort_noise",
    "lossy_compression_of_noisy_images",
    "color_quantization_with_dither",
    "chromatic_aberrations",
    "sparse_sampling_and_reconstruction",
)


def read_tid2013(root: Path, labels: Path | None = None, **_: Any) -> tuple[list[dict], DatasetMeta, dict]:
    """TID2013 (Ponomarenko et al., Signal Processing: Image Communication 2015). Layout::

        mos_with_names.txt   ("<MOS> <name>" per line, e.g. "5.51429 i01_01_1.bmp")
        mos_std.txt          (optional, one std per line, same order)
        distorted_images/i01_01_1.bmp ...   reference_images/I01.BMP ... I25.BMP

    MOS on 0-9 (higher is better). File-name case varies between copies, so lookups ignore case.
    Split: seeded 80/20 over the 25 reference images.
    """
    label_path = labels or _require(root / "mos_with_names.txt", "TID2013 label file mos_with_names.txt")
    lines = [ln.split() for ln in label_path.read_text().splitlines() if ln.strip()]
    std_path = root / "mos_std.txt"
    std = [float(x) for x in std_path.read_text().split()] if std_path.exists() else [None] * len(lines)
    if len(std) != len(lines):
        raise ValueError(f"TID2013: {len(lines)} MOS lines but {len(std)} values in {std_path}")
    dist_index = _file_index(_require(root / "distorted_images", "TID2013 folder distorted_images"))
    ref_dir = root / "reference_images"
    ref_index = _file_index(ref_dir) if ref_dir.is_dir() else {}
    pattern = re.compile(r"^i(\d+)_(\d+)_(\d+)\.", re.IGNORECASE)
    records = []
    for (mos, name), s in zip(lines, std):
        m = pattern.match(name)
        if m is None:
            raise ValueError(f"TID2013: unexpected image name {name!r} in {label_path.name}")
        ref_id, type_id, level = int(m.group(1)), int(m.group(2)), int(m.group(3))
        ref_path = ref_index.get(f"i{ref_id:02d}.bmp")
        reference = ref_path.name if ref_path is not None else f"I{ref_id:02d}.BMP"
        dtype = TID2013_DISTORTIONS[type_id - 1] if 1 <= type_id <= 24 else f"tid_{type_id:02d}"
        path = dist_index.get(name.lower(), root / "distorted_images" / name)
        records.append(_record(path, root, float(mos), s, dtype, level, reference))
    meta = DatasetMeta(
        "tid2013",
        (0.0, 9.0),
        True,
        synthetic=True,
        citation="Ponomarenko et al. Image database TID2013: Peculiarities, results and perspectives. "
        "Signal Processing: Image Communication 30, 2015.",
    )
    return records, meta, {}


#: CSIQ ``dst_type`` -> (folder under dst_imgs/, token in the file name), as in the published archive.
CSIQ_TYPES: dict[str, tuple[str, str]] = {
    "noise": ("awgn", "AWGN"),
    "jpeg": ("jpeg", "JPEG"),
    "jpeg 2000": ("jpeg2000", "jpeg2000"),
    "fnoise": ("fnoise", "fnoise"),
    "blur": ("blur", "BLUR"),
    "contrast": ("contrast", "contrast"),
}


def _csiq_table(path: Path):
    """The ``all_by_image`` sheet (or its CSV export): the header row is located, not assumed."""
    raw = (
        _read_table(path, sheet="all_by_image", header=None)
        if path.suffix.lower() != ".csv"
        else _read_table(path, header=None)
    )
    for i in range(min(len(raw), 50)):
        cells = [str(c).strip().lower() for c in raw.iloc[i].tolist()]
        if "image" in cells and "dmos" in cells:
            table = raw.iloc[i + 1 :].copy()
            table.columns = cells
            return table.dropna(subset=["image"])
    raise ValueError(f"CSIQ: no header row with 'image' and 'dmos' in {path}")


def read_csiq(root: Path, labels: Path | None = None, **_: Any) -> tuple[list[dict], DatasetMeta, dict]:
    """CSIQ (Larson & Chandler, J. Electronic Imaging 2010). Layout of the release::

        csiq.DMOS.xlsx   (sheet all_by_image; header row image,dst_idx,dst_type,dst_lev,dmos_std,dmos)
        src_imgs/1600.png ...
        dst_imgs/<awgn|jpeg|jpeg2000|fnoise|blur|contrast>/1600.AWGN.1.png ...

    The XLSX needs ``openpyxl``; a CSV export of that sheet (``csiq.DMOS.csv`` or ``--labels``) is
    accepted. DMOS on 0-1, LOWER is better. Split: seeded 80/20 over the 30 reference images.
    """
    if labels is None:
        labels = _first_existing([root / "csiq.DMOS.xlsx", root / "csiq.DMOS.csv"], "CSIQ label file")
    table = _csiq_table(labels)
    dist_dir = _first_existing([root / "dst_imgs", root / "dst_imgs_all"], "CSIQ folder dst_imgs")
    index = _file_index(dist_dir)
    records = []
    for _, r in table.iterrows():
        image = r["image"]
        image = (
            str(int(image))
            if isinstance(image, (int, float)) and float(image).is_integer()
            else str(image).strip()
        )
        dst_type = str(r["dst_type"]).strip().lower()
        if dst_type not in CSIQ_TYPES:
            raise ValueError(f"CSIQ: unknown dst_type {dst_type!r}; expected one of {sorted(CSIQ_TYPES)}")
        folder, token = CSIQ_TYPES[dst_type]
        level = int(float(r["dst_lev"]))
        fname = f"{image}.{token}.{level}.png"
        path = index.get(fname.lower(), dist_dir / folder / fname)
        records.append(
            _record(path, root, float(r["dmos"]), r.get("dmos_std"), folder, level, f"{image}.png")
        )
    meta = DatasetMeta(
        "csiq",
        (0.0, 1.0),
        False,
        score_name="DMOS",
        synthetic=True,
        citation="Larson, Chandler. Most apparent distortion: full-reference image quality assessment and the "
        "role of strategy. J. Electronic Imaging 19(1), 2010.",
    )
    return records, meta, {}


#: LIVE release 2 distortion folders, in the order of dmos.mat, with their published image counts.
LIVE_FOLDERS: tuple[tuple[str, int], ...] = (
    ("jp2k", 227),
    ("jpeg", 233),
    ("wn", 174),
    ("gblur", 174),
    ("fastfading", 174),
)


def read_live(
    root: Path, realigned: bool = False, keep_reference_copies: bool = False, **_: Any
) -> tuple[list[dict], DatasetMeta, dict]:
    """LIVE IQA release 2 (Sheikh, Sabir, Bovik, IEEE TIP 2006). Layout::

        dmos.mat            (dmos, orgs: 1x982; orgs == 1 marks the reference copies, DMOS 0)
        dmos_realigned.mat  (dmos_new, dmos_std, orgs; used with realigned=True)
        refnames_all.mat    (refnames_all: 1x982 cell of reference names)
        jp2k/ jpeg/ wn/ gblur/ fastfading/  img1.bmp .. imgN.bmp   refimgs/

    The 982 entries run through the folders in the order above (published counts 227, 233, 174,
    174, 174; counts are taken from the folders and must add up). Reference copies are dropped
    (779 rows) unless ``keep_reference_copies``. DMOS ~0-100, LOWER is better. Levels are not
    given per image (see each folder's info.txt), so ``distortion_level`` is None.
    Split: seeded 80/20 over the 29 reference images.
    """
    if realigned:
        mat = root / "dmos_realigned.mat"
        dmos = np.asarray(_loadmat(mat, "dmos_new"), dtype=float).reshape(-1)
        std = np.asarray(_loadmat(mat, "dmos_std"), dtype=float).reshape(-1)
        orgs = np.asarray(_loadmat(mat, "orgs")).reshape(-1)
    else:
        mat = root / "dmos.mat"
        dmos = np.asarray(_loadmat(mat, "dmos"), dtype=float).reshape(-1)
        std = np.full(dmos.shape, np.nan)
        orgs = np.asarray(_loadmat(mat, "orgs")).reshape(-1)
    refs = _mat_strings(_loadmat(root / "refnames_all.mat", "refnames_all"))
    counts = []
    for folder, _published in LIVE_FOLDERS:
        d = _require(root / folder, f"LIVE folder {folder}/")
        counts.append(sum(1 for p in d.iterdir() if re.fullmatch(r"img\d+\.bmp", p.name, re.IGNORECASE)))
    if not len(dmos) == len(orgs) == len(refs) == sum(counts):
        raise ValueError(
            f"LIVE: dmos ({len(dmos)}), orgs ({len(orgs)}), refnames ({len(refs)}) and images in "
            f"{[f for f, _ in LIVE_FOLDERS]} ({sum(counts)}: {counts}) must have the same length"
        )
    records, offset = [], 0
    for (folder, _published), count in zip(LIVE_FOLDERS, counts):
        for k in range(count):
            i = offset + k
            if orgs[i] == 1 and not keep_reference_copies:
                continue
            records.append(
                _record(
                    root / folder / f"img{k + 1}.bmp",
                    root,
                    dmos[i],
                    std[i],
                    folder,
                    None,
                    refs[i],
                    is_reference_copy=bool(orgs[i] == 1),
                )
            )
        offset += count
    meta = DatasetMeta(
        "live",
        (0.0, 100.0),
        False,
        score_name="DMOS",
        synthetic=True,
        citation="Sheikh, Sabir, Bovik. A statistical evaluation of recent full reference image quality "
        "assessment algorithms. IEEE TIP 15(11), 2006.",
        notes="dmos_realigned.mat" if realigned else "dmos.mat",
    )
    return records, meta, {"is_reference_copy": Value("bool")}


def read_agiqa3k(root: Path, labels: Path | None = None, **_: Any) -> tuple[list[dict], DatasetMeta, dict]:
    """AGIQA-3K (Li et al., IEEE TCSVT 2023): AI-generated images. Layout of the GitHub release::

        data.csv   (name,prompt,adj1,adj2,style,mos_quality,std_quality,mos_align,std_align)
        <name>.jpg|png  (next to data.csv or in a sub-folder; found by name)

    ``mos`` = mos_quality, ``mos_std`` = std_quality (higher is better); prompt, mos_align and
    std_align are kept. The published scores lie within 0-5 as far as we know (the paper does not
    state the bounds explicitly). No official split: seeded 80/20.
    """
    df = _read_table(labels or _require(root / "data.csv", "AGIQA-3K label file data.csv"))
    index = _file_index(root)
    records = []
    for r in df.to_dict("records"):
        name = str(r["name"])
        records.append(
            _record(
                index.get(name.lower(), root / name),
                root,
                r["mos_quality"],
                r.get("std_quality"),
                prompt=str(r.get("prompt", "")),
                mos_align=_float_or_none(r.get("mos_align")),
                std_align=_float_or_none(r.get("std_align")),
            )
        )
    meta = DatasetMeta(
        "agiqa3k",
        (0.0, 5.0),
        True,
        citation="Li et al. AGIQA-3K: An open database for AI-generated image quality assessment. IEEE TCSVT 2023.",
    )
    return (
        records,
        meta,
        {"prompt": Value("string"), "mos_align": Value("float32"), "std_align": Value("float32")},
    )


def read_imagefolder(
    root: Path, mos_range: Sequence[float] | None = None, lower_is_better: bool = False, **_: Any
) -> tuple[list[dict], DatasetMeta, dict]:
    """Generic ``imagefolder`` layout: ``metadata.csv`` (file_name, mos[, mos_std, ...]) + the images.

    ``mos_range`` defaults to the observed min/max (recorded as such in the notes).
    """
    import pandas as pd

    df = pd.read_csv(_require(root / "metadata.csv", "imagefolder metadata file metadata.csv"))
    for col in ("file_name", "mos"):
        if col not in df.columns:
            raise ValueError(f"{root / 'metadata.csv'} needs a {col!r} column (has {list(df.columns)})")
    df = df.astype(object).where(df.notna(), None)  # NaN -> None in optional columns
    records = []
    for r in df.to_dict("records"):
        level = _float_or_none(r.get("distortion_level"))
        ref, dtype = r.get("reference"), r.get("distortion_type")
        records.append(
            _record(
                root / str(r["file_name"]),
                root,
                r["mos"],
                r.get("mos_std"),
                None if dtype is None else str(dtype),
                None if level is None else int(level),
                None if ref is None else str(ref),
            )
        )
    observed = mos_range is None
    lo, hi = (
        (float(df["mos"].min()), float(df["mos"].max()))
        if observed
        else (float(mos_range[0]), float(mos_range[1]))
    )
    meta = DatasetMeta(
        root.name,
        (lo, hi),
        not lower_is_better,
        synthetic=bool(df.get("reference") is not None and df["reference"].notna().any()),
        notes="mos_range observed in the data" if observed else "",
    )
    return records, meta, {}


CONVERTERS: dict[str, Callable[..., tuple[list[dict], DatasetMeta, dict]]] = {
    "koniq10k": read_koniq10k,
    "spaq": read_spaq,
    "clive": read_clive,
    "kadid10k": read_kadid10k,
    "tid2013": read_tid2013,
    "csiq": read_csiq,
    "live": read_live,
    "agiqa3k": read_agiqa3k,
    "imagefolder": read_imagefolder,
}


def convert(
    dataset: str,
    root: str | Path,
    out: str | Path | None = None,
    seed: int = 0,
    test_fraction: float = 0.2,
    allow_missing: bool = False,
    **options: Any,
) -> DatasetDict:
    """Read ``dataset`` from its published layout under ``root``; save to ``out`` when given."""
    if dataset not in CONVERTERS:
        raise ValueError(f"Unknown dataset {dataset!r}; choose from {sorted(CONVERTERS)}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{dataset} root folder not found: {root}")
    if options.get("labels") is not None:
        options["labels"] = Path(options["labels"])
    records, meta, extra = CONVERTERS[dataset](root, **options)
    records = _check_images(records, allow_missing)
    dd = build_dataset_dict(records, meta, seed=seed, test_fraction=test_fraction, extra_features=extra)
    if out is not None:
        save(dd, Path(out), source_root=root)
    return dd


def load_imagefolder(data_dir: str | Path, split: str = "train", cache_dir: str | None = None) -> Dataset:
    """``load_dataset("imagefolder", data_dir=...)`` of a ``metadata.csv`` layout, MOS cast to float32."""
    data_dir = Path(data_dir)
    _require(data_dir / "metadata.csv", "imagefolder metadata file metadata.csv")
    ds = datasets.load_dataset("imagefolder", data_dir=str(data_dir), split=split, cache_dir=cache_dir)
    if "mos" not in ds.column_names:
        raise ValueError(f"{data_dir / 'metadata.csv'} has no 'mos' column (columns: {ds.column_names})")
    for col in ("mos", "mos_std"):
        if col in ds.column_names:
            ds = ds.cast_column(col, Value("float32"))
    return ds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("dataset", choices=sorted(CONVERTERS))
    parser.add_argument("--root", required=True, type=Path, help="extracted archive folder")
    parser.add_argument("--out", required=True, type=Path, help="output folder for save_to_disk")
    parser.add_argument(
        "--seed", type=int, default=0, help="split seed when there is no official split (0..9)"
    )
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument(
        "--labels", type=Path, help="label file to use instead of the published one (e.g. a CSV export)"
    )
    parser.add_argument("--allow-missing", action="store_true", help="skip label rows whose image is missing")
    parser.add_argument(
        "--include-training-images", action="store_true", help="clive: keep the 7 practice images"
    )
    parser.add_argument("--realigned", action="store_true", help="live: use dmos_realigned.mat")
    parser.add_argument("--keep-reference-copies", action="store_true", help="live: keep rows with orgs == 1")
    parser.add_argument(
        "--mos-range", type=float, nargs=2, metavar=("LOW", "HIGH"), help="imagefolder: score range"
    )
    parser.add_argument("--lower-is-better", action="store_true", help="imagefolder: scores are DMOS-like")
    args = parser.parse_args(argv)
    options: dict[str, Any] = {"labels": args.labels}
    if args.dataset == "clive":
        options["include_training_images"] = args.include_training_images
    if args.dataset == "live":
        options.update(realigned=args.realigned, keep_reference_copies=args.keep_reference_copies)
    if args.dataset == "imagefolder":
        options.update(mos_range=args.mos_range, lower_is_better=args.lower_is_better)
    dd = convert(
        args.dataset,
        args.root,
        args.out,
        seed=args.seed,
        test_fraction=args.test_fraction,
        allow_missing=args.allow_missing,
        **options,
    )
    sizes = ", ".join(f"{k}={v.num_rows}" for k, v in dd.items())
    print(f"{args.dataset}: wrote {args.out} ({sizes})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
