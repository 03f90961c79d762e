"""Dataset converters on small FAKE trees in each dataset's published layout, plus the synthetic builder.

Every fake tree reproduces the published file names, label files, score scale and direction of the
dataset (see the docstrings of datasets_scripts/convert.py), with tiny images.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio
from PIL import Image

from datasets_scripts import convert as cv

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def _img(path: Path, value: int = 100, size: tuple[int, int] = (8, 6)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((size[1], size[0], 3), value % 256, dtype=np.uint8)
    arr[0, 0] = (value * 7) % 256
    Image.fromarray(arr).save(path)
    return path


def _write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _cell(names: list[str], column: bool = True) -> np.ndarray:
    arr = np.empty((len(names), 1) if column else (1, len(names)), dtype=object)
    arr.reshape(-1)[:] = names
    return arr


def _all_rows(dd) -> list[dict]:
    return [row for split in dd.values() for row in split.remove_columns("image")]


def _assert_reference_disjoint(dd) -> None:
    train = set(dd["train"]["reference"])
    test = set(dd["test"]["reference"])
    assert train and test and not train & test


# --------------------------------------------------------------------------- authentic datasets


def test_koniq10k_official_split(tmp_path):
    root = tmp_path / "koniq10k"
    sets = ["training"] * 4 + ["validation", "test"]
    rows = []
    for i, s in enumerate(sets):
        name = f"{1000 + i}.jpg"
        _img(root / "1024x768" / name, i)
        rows.append([name, 0.1, 0.2, 0.3, 0.2, 0.2, 100, 1.5 + i * 0.5, 0.6, 30.0 + i, s])
    _write_csv(
        root / "koniq10k_distributions_sets.csv",
        ["image_name", "c1", "c2", "c3", "c4", "c5", "c_total", "MOS", "SD", "MOS_zscore", "set"],
        rows,
    )
    dd = cv.convert("koniq10k", root, tmp_path / "out")
    assert {k: v.num_rows for k, v in dd.items()} == {"train": 4, "validation": 1, "test": 1}
    assert dd["test"][0]["name"] == "1024x768/1005.jpg" and dd["test"][0]["mos"] == pytest.approx(4.0)
    assert dd["train"].features["mos"].dtype == "float32" and dd["train"][0]["mos_zscore"] == pytest.approx(
        30.0
    )
    loaded, meta = cv.load_converted(tmp_path / "out")
    assert meta.split == "official" and meta.mos_range == (1.0, 5.0) and meta.higher_is_better
    assert loaded["validation"][0]["image"].size == (8, 6)


def test_koniq10k_without_set_column_gets_seeded_split(tmp_path):
    root = tmp_path / "koniq"
    rows = []
    for i in range(10):
        _img(root / "1024x768" / f"{i}.jpg", i)
        rows.append([f"{i}.jpg", 100, 2.0 + i / 10, 0.5, 40.0])
    _write_csv(
        root / "koniq10k_scores_and_distributions.csv",
        ["image_name", "c_total", "MOS", "SD", "MOS_zscore"],
        rows,
    )
    a, b, c = (cv.convert("koniq10k", root, seed=s) for s in (0, 0, 1))
    assert {k: v.num_rows for k, v in a.items()} == {"train": 8, "test": 2}
    assert list(a["test"]["name"]) == list(b["test"]["name"])
    assert cv.DatasetMeta.from_json(a["train"].info.description).split_seed == 0
    assert list(a["test"]["name"]) != list(c["test"]["name"])  # another seed, another split
    assert sorted([*a["test"]["name"], *a["train"]["name"]]) == sorted(
        [*c["test"]["name"], *c["train"]["name"]]
    )


def test_spaq_csv_export_and_missing_openpyxl(tmp_path):
    root = tmp_path / "SPAQ"
    header = ["Image name", "MOS", "Brightness", "Colorfulness", "Contrast", "Noisiness", "Sharpness"]
    rows = []
    for i in range(1, 6):
        _img(root / "TestImage" / f"{i:05d}.jpg", i)
        rows.append([f"{i:05d}.jpg", 20.0 * i - 5, 50, 60, 55, 40, 70 + i])
    with pytest.raises(FileNotFoundError, match="MOS and Image attribute scores.xlsx"):
        cv.convert("spaq", root)
    _write_csv(root / "Annotations" / "MOS and Image attribute scores.csv", header, rows)
    dd = cv.convert("spaq", root)
    rows_out = _all_rows(dd)
    assert len(rows_out) == 5 and {r["sharpness"] for r in rows_out} == {71, 72, 73, 74, 75}
    assert cv.DatasetMeta.from_json(dd["train"].info.description).mos_range == (0.0, 100.0)
    try:
        import openpyxl  # noqa: F401
    except ImportError:
        (root / "Annotations" / "MOS and Image attribute scores.xlsx").write_bytes(b"PK\x03\x04")
        with pytest.raises(ImportError, match="openpyxl"):
            cv.convert("spaq", root)


def test_spaq_xlsx(tmp_path):
    pytest.importorskip("openpyxl")
    import pandas as pd

    root = tmp_path / "SPAQ"
    for i in range(1, 4):
        _img(root / "TestImage" / f"{i:05d}.jpg", i)
    (root / "Annotations").mkdir(parents=True)
    pd.DataFrame(
        {
            "Image name": [f"{i:05d}.jpg" for i in range(1, 4)],
            "MOS": [10.0, 50.0, 90.0],
            **{a: [1.0, 2.0, 3.0] for a in cv.SPAQ_ATTRIBUTES},
        }
    ).to_excel(root / "Annotations" / "MOS and Image attribute scores.xlsx", index=False)
    assert len(_all_rows(cv.convert("spaq", root))) == 3


def test_clive_mat_files_drop_the_training_images(tmp_path):
    root = tmp_path / "ChallengeDB_release"
    names = ["t1.bmp", "t2.bmp"] + [f"{i}.JPG" for i in range(10, 16)] + ["100.bmp"]
    for n in names[:2]:
        _img(root / "Images" / "trainingImages" / n, 1)
    for i, n in enumerate(names[2:]):
        _img(root / "Images" / n, i)
    mos = np.linspace(10, 90, len(names))[None, :]
    (root / "Data").mkdir()
    sio.savemat(root / "Data" / "AllImages_release.mat", {"AllImages_release": _cell(names)})
    sio.savemat(root / "Data" / "AllMOS_release.mat", {"AllMOS_release": mos})
    sio.savemat(root / "Data" / "AllStdDev_release.mat", {"AllStdDev_release": np.full_like(mos, 15.0)})
    dd = cv.convert("clive", root)
    rows = _all_rows(dd)
    assert len(rows) == 7 and "Images/100.bmp" in {r["name"] for r in rows}
    assert all(r["mos_std"] == pytest.approx(15.0) for r in rows)
    assert min(r["mos"] for r in rows) == pytest.approx(mos[0, 2], rel=1e-6)
    assert len(_all_rows(cv.convert("clive", root, include_training_images=True))) == 9
    (root / "Data" / "AllMOS_release.mat").unlink()
    with pytest.raises(FileNotFoundError, match="AllMOS_release.mat"):
        cv.convert("clive", root)


def test_agiqa3k_and_script_entry_point(tmp_path):
    root = tmp_path / "AGIQA-3K"
    rows = []
    for i in range(6):
        name = f"sd1.5_normal_{i:03d}.jpg" if i % 2 else f"midjourney_normal_{i:03d}.png"
        _img(root / name, i)
        rows.append(
            [name, f"a photo of thing {i}", "adj", "", "normal", 1.0 + 0.5 * i, 0.3, 2.0 + 0.1 * i, 0.4]
        )
    _write_csv(
        root / "data.csv",
        ["name", "prompt", "adj1", "adj2", "style", "mos_quality", "std_quality", "mos_align", "std_align"],
        rows,
    )
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "datasets_scripts" / "convert.py"),
            "agiqa3k",
            "--root",
            str(root),
            "--out",
            str(out),
            "--seed",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    dd, meta = cv.load_converted(out)
    rows_out = _all_rows(dd)
    assert len(rows_out) == 6 and meta.split_seed == 3 and meta.dataset == "agiqa3k"
    assert {r["prompt"] for r in rows_out} == {f"a photo of thing {i}" for i in range(6)}
    assert {round(r["mos_align"], 3) for r in rows_out} == {round(2.0 + 0.1 * i, 3) for i in range(6)}


# --------------------------------------------------------------------------- synthetic datasets (reference-disjoint)


def test_kadid10k(tmp_path):
    root = tmp_path / "kadid10k"
    rows = []
    for ref in range(1, 6):
        _img(root / "images" / f"I{ref:02d}.png", ref)
        for t in (1, 10):
            for lvl in (1, 5):
                name = f"I{ref:02d}_{t:02d}_{lvl:02d}.png"
                _img(root / "images" / name, ref + lvl)
                rows.append([name, f"I{ref:02d}.png", 5.0 - 0.7 * lvl, 0.9])
    _write_csv(root / "dmos.csv", ["dist_img", "ref_img", "dmos", "var"], rows)
    dd = cv.convert("kadid10k", root, tmp_path / "out", seed=4)
    _assert_reference_disjoint(dd)
    out = _all_rows(dd)
    assert len(out) == 20 and {r["distortion_type"] for r in out} == {"gaussian_blur", "jpeg"}
    assert {r["distortion_level"] for r in out} == {1, 5} and out[0]["mos_var"] == pytest.approx(0.9)
    _, meta = cv.load_converted(tmp_path / "out")
    assert meta.mos_range == (1.0, 5.0) and meta.higher_is_better and meta.split_groups == "reference"
    with pytest.raises(FileNotFoundError, match="dmos.csv"):
        cv.convert("kadid10k", tmp_path / "out")


def test_tid2013_case_insensitive_names(tmp_path):
    root = tmp_path / "tid2013"
    lines, stds = [], []
    for ref in range(1, 6):
        _img(root / "reference_images" / f"I{ref:02d}.BMP", ref)
        for t, lvl in ((1, 1), (8, 3), (24, 5)):
            name = f"i{ref:02d}_{t:02d}_{lvl}.bmp"
            disk_name = name.upper() if ref == 2 else name  # some copies ship upper-case names
            _img(root / "distorted_images" / disk_name, ref * lvl)
            lines.append(f"{6.5 - lvl:.5f} {name}")
            stds.append(f"{0.1 * lvl:.3f}")
    (root / "mos_with_names.txt").write_text("\n".join(lines) + "\n")
    (root / "mos_std.txt").write_text("\n".join(stds) + "\n")
    dd = cv.convert("tid2013", root, seed=1)
    _assert_reference_disjoint(dd)
    out = _all_rows(dd)
    assert len(out) == 15 and {r["reference"] for r in out} == {f"I{i:02d}.BMP" for i in range(1, 6)}
    assert {r["distortion_type"] for r in out} == {
        "additive_gaussian_noise",
        "gaussian_blur",
        "sparse_sampling_and_reconstruction",
    }
    by_name = {r["name"].lower(): r for r in out}
    assert by_name["distorted_images/i02_08_3.bmp"]["mos"] == pytest.approx(3.5)
    assert by_name["distorted_images/i02_08_3.bmp"]["mos_std"] == pytest.approx(0.3)
    assert cv.DatasetMeta.from_json(dd["train"].info.description).mos_range == (0.0, 9.0)
    (root / "distorted_images" / "i05_01_1.bmp").unlink()
    with pytest.raises(FileNotFoundError, match="missing"):
        cv.convert("tid2013", root)
    assert len(_all_rows(cv.convert("tid2013", root, allow_missing=True))) == 14


def _csiq_tree(root: Path) -> list[list]:
    rows = []
    for ref in ("1600", "aerial_city", "boston", "bridge", "cactus"):
        _img(root / "src_imgs" / f"{ref}.png", len(ref))
        for dst_type, (folder, token) in list(cv.CSIQ_TYPES.items())[:3]:
            for lvl in (1, 2):
                _img(root / "dst_imgs" / folder / f"{ref}.{token}.{lvl}.png", lvl)
                rows.append([None, None, None, ref, 1, dst_type, lvl, 0.05, 0.1 * lvl])
    return rows


def test_csiq_csv_export_lower_is_better(tmp_path):
    root = tmp_path / "CSIQ"
    rows = _csiq_tree(root)
    # the all_by_image sheet starts with title rows; its table sits in columns D..I from row 4
    with (root / "csiq.DMOS.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["CSIQ DMOS"] + [""] * 8)
        writer.writerow([""] * 9)
        writer.writerow([""] * 9)
        writer.writerow(["", "", "", "image", "dst_idx", "dst_type", "dst_lev", "dmos_std", "dmos"])
        writer.writerows(["" if v is None else v for v in r] for r in rows)
    dd = cv.convert("csiq", root, seed=2)
    _assert_reference_disjoint(dd)
    out = _all_rows(dd)
    assert len(out) == 30 and {r["distortion_type"] for r in out} == {"awgn", "jpeg", "jpeg2000"}
    assert {r["reference"] for r in out} >= {"1600.png", "aerial_city.png"}
    meta = cv.DatasetMeta.from_json(dd["train"].info.description)
    assert not meta.higher_is_better and meta.mos_range == (0.0, 1.0) and meta.score_name == "DMOS"


def test_csiq_xlsx(tmp_path):
    pytest.importorskip("openpyxl")
    import pandas as pd

    root = tmp_path / "CSIQ"
    rows = _csiq_tree(root)
    table = pd.DataFrame(
        [r[3:] for r in rows], columns=["image", "dst_idx", "dst_type", "dst_lev", "dmos_std", "dmos"]
    )
    table.to_excel(root / "csiq.DMOS.xlsx", sheet_name="all_by_image", startrow=3, startcol=3, index=False)
    assert len(_all_rows(cv.convert("csiq", root))) == 30


def _live_tree(root: Path, per_folder: int = 2) -> int:
    refs = ["bikes.bmp", "buildings.bmp", "caps.bmp", "house.bmp", "lighthouse.bmp"]
    names, dmos, orgs = [], [], []
    for f_idx, (folder, _) in enumerate(cv.LIVE_FOLDERS):
        for k in range(per_folder):
            _img(root / folder / f"img{k + 1}.bmp", f_idx * 10 + k)
            names.append(refs[(f_idx + k) % len(refs)])
            is_ref = f_idx == 0 and k == 0
            orgs.append(1 if is_ref else 0)
            dmos.append(0.0 if is_ref else 20.0 + f_idx * 10 + k)
    sio.savemat(root / "dmos.mat", {"dmos": np.array([dmos]), "orgs": np.array([orgs])})
    sio.savemat(
        root / "dmos_realigned.mat",
        {
            "dmos_new": np.array([dmos]) + 1,
            "dmos_std": np.full((1, len(dmos)), 9.0),
            "orgs": np.array([orgs]),
        },
    )
    sio.savemat(root / "refnames_all.mat", {"refnames_all": _cell(names, column=False)})
    return len(dmos)


def test_live_release2(tmp_path):
    root = tmp_path / "databaserelease2"
    n = _live_tree(root)
    dd = cv.convert("live", root, seed=0)
    _assert_reference_disjoint(dd)
    out = _all_rows(dd)
    assert len(out) == n - 1 and not any(r["is_reference_copy"] for r in out)
    assert {r["distortion_type"] for r in out} == {f for f, _ in cv.LIVE_FOLDERS}
    wn = next(r for r in out if r["name"] == "wn/img2.bmp")
    assert wn["mos"] == pytest.approx(41.0) and wn["reference"] == "house.bmp" and wn["mos_std"] is None
    assert not cv.DatasetMeta.from_json(dd["train"].info.description).higher_is_better
    realigned = _all_rows(cv.convert("live", root, realigned=True, keep_reference_copies=True))
    assert len(realigned) == n and {r["mos_std"] for r in realigned} == {9.0}
    _img(root / "gblur" / "img3.bmp")  # one image more than labels
    with pytest.raises(ValueError, match="same length"):
        cv.convert("live", root)


def test_resplit_seeds_are_reference_disjoint_and_deterministic(tmp_path):
    root = tmp_path / "databaserelease2"
    _live_tree(root, per_folder=4)
    dd = cv.convert("live", root)
    tests = []
    for seed in range(10):
        re_dd = cv.resplit(dd, seed)
        _assert_reference_disjoint(re_dd)
        assert cv.DatasetMeta.from_json(re_dd["test"].info.description).split_seed == seed
        tests.append(tuple(sorted(set(re_dd["test"]["reference"]))))
    assert len(set(tests)) > 1
    assert tuple(sorted(set(list(cv.resplit(dd, 0)["test"]["reference"])))) == tuple(
        sorted(set(dd["test"]["reference"]))
    )
    assert cv.assign_splits(list("aabbccddee"), 0) == cv.assign_splits(list("aabbccddee"), 0)
    with pytest.raises(ValueError, match="test_fraction"):
        cv.assign_splits(["a", "b"], 0, test_fraction=1.0)


# --------------------------------------------------------------------------- imagefolder, errors


def test_imagefolder_layout_and_images_are_embedded(tmp_path):
    root = tmp_path / "folder"
    rows = [[f"images/{i}.png", 10.0 * i, 2.0] for i in range(5)]
    for r in rows:
        _img(root / r[0], int(r[1]))
    _write_csv(root / "metadata.csv", ["file_name", "mos", "mos_std"], rows)
    (root / "LIVE_COPYRIGHT.txt").write_text("notice")
    ds = cv.load_imagefolder(root, cache_dir=str(tmp_path / "cache"))
    assert ds.num_rows == 5 and ds.features["mos"].dtype == "float32" and ds[0]["image"].size == (8, 6)
    cv.main(["imagefolder", "--root", str(root), "--out", str(tmp_path / "out"), "--mos-range", "0", "100"])
    shutil.rmtree(root)  # the saved dataset must not depend on the source images
    dd, meta = cv.load_converted(tmp_path / "out")
    assert meta.mos_range == (0.0, 100.0) and sum(v.num_rows for v in dd.values()) == 5
    assert dd["train"][0]["image"].mode == "RGB"
    assert (tmp_path / "out" / "LIVE_COPYRIGHT.txt").read_text() == "notice"
    with pytest.raises(FileNotFoundError, match="metadata.csv"):
        cv.load_imagefolder(tmp_path)
    with pytest.raises(ValueError, match="Unknown dataset"):
        cv.convert("kadid", tmp_path)
    with pytest.raises(FileNotFoundError, match="root folder"):
        cv.convert("kadid10k", tmp_path / "nope")


@pytest.mark.skipif(
    not (SHARED / "data" / "clive-train" / "metadata.csv").exists(), reason="../shared data absent"
)
def test_real_clive_train_imagefolder(tmp_path):
    ds = cv.load_imagefolder(SHARED / "data" / "clive-train", cache_dir=str(tmp_path / "cache"))
    assert ds.num_rows == 813 and {"image", "mos", "mos_std"} <= set(ds.column_names)
    mos = np.asarray(ds["mos"])
    assert 0 <= mos.min() and mos.max() <= 100


# --------------------------------------------------------------------------- synthetic builder


def test_synthetic_builder_is_seeded_and_resumable(tmp_path):
    from datasets_scripts import synthetic

    src = tmp_path / "clean"
    src.mkdir()
    rng = np.random.default_rng(0)
    base = np.linspace(0, 255, 48)[None, :, None] * np.ones((40, 1, 3))
    for i in range(3):
        textured = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(textured).save(src / f"c{i}.png")
    out = tmp_path / "syn"
    kwargs = dict(types=["white_noise", "pixelate"], levels=[1, 5], seed=0, fr_metrics=True, progress=False)
    dd = synthetic.build_synthetic(src, out, **kwargs)
    rows = _all_rows(dd)
    assert len(rows) == 12 and {r["mos"] for r in rows} == {5.0, 1.0}
    _assert_reference_disjoint(dd)
    for r in rows:  # stronger level -> lower PSNR against the clean image, per (reference, type)
        if r["distortion_level"] == 5:
            mild = next(
                m
                for m in rows
                if m["reference"] == r["reference"]
                and m["distortion_type"] == r["distortion_type"]
                and m["distortion_level"] == 1
            )
            assert r["psnr"] < mild["psnr"] and r["ssim"] < mild["ssim"]
    first = out / "images" / "c0__white_noise__L5.png"
    stamp, pixels = first.stat().st_mtime_ns, np.asarray(Image.open(first))
    dd2 = synthetic.build_synthetic(src, out, **kwargs)  # resume: nothing regenerated
    assert first.stat().st_mtime_ns == stamp and _all_rows(dd2) == rows
    first.unlink()  # a lost file is regenerated identically (seeded)
    synthetic.build_synthetic(src, out, **kwargs)
    np.testing.assert_array_equal(np.asarray(Image.open(first)), pixels)
    ds = cv.load_imagefolder(out / "images", cache_dir=str(tmp_path / "cache"))
    assert ds.num_rows == 12 and {"reference", "distortion_type", "psnr"} <= set(ds.column_names)
    with pytest.raises(ValueError, match="Unknown distortion"):
        synthetic.build_synthetic(src, out, types=["blurr"], progress=False)
