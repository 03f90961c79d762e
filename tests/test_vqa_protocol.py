"""VQA label converters (reference data_labels formats) and the reference evaluation / 10-split protocol."""

from __future__ import annotations

import random
import warnings

import numpy as np
import pytest

from datasets_scripts.convert_vqa import VQA_CONVERTERS, convert_vqa, load_converted_vqa, read_label_file
from modeling_rsfiqa.quality_metrics import (
    TEN_SPLIT_SEEDS,
    MetricWarning,
    compute_vqa_metrics,
    reference_split,
    summarize_split_metrics,
    zscore_rescale,
)


# ---------------------------------------------------------------------------------------------------- metrics
def test_vqa_metrics_against_hand_computation():
    pred, mos = [1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 40.0, 30.0]
    # rescale: z-scores of pred times std(mos)=sqrt(125) plus mean(mos)=25 -> [10, 20, 30, 40]
    assert zscore_rescale(pred, mos).tolist() == pytest.approx([10.0, 20.0, 30.0, 40.0])
    m = compute_vqa_metrics(pred, mos)
    assert m["srcc"] == pytest.approx(0.8)  # 1 - 6 * (0 + 0 + 1 + 1) / (4 * 15)
    assert m["krcc"] == pytest.approx(4 / 6)  # 5 concordant, 1 discordant pair
    assert m["plcc"] == pytest.approx(400 / 500)  # centred [-15,-5,15,5] . [-15,-5,5,15] / 500
    assert m["rmse"] == pytest.approx(np.sqrt(50.0))  # errors 0, 0, 10, 10


def test_vqa_metrics_invariance_and_degenerate_inputs():
    rng = np.random.default_rng(0)
    pred, mos = rng.normal(size=30), rng.uniform(1, 5, size=30)
    a, b = compute_vqa_metrics(pred, mos), compute_vqa_metrics(3.0 * pred - 7.0, mos)
    assert a == pytest.approx(b)  # any positive linear map of the predictions gives the same numbers
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        flat = compute_vqa_metrics(np.ones(5), [1, 2, 3, 4, 5])
    assert np.isnan(flat["srcc"]) and flat["rmse"] == pytest.approx(np.std([1, 2, 3, 4, 5]))
    assert any(issubclass(w.category, MetricWarning) for w in caught)


def test_reference_split_is_the_reference_shuffle():
    rows = list(range(17))
    expected = list(rows)
    random.Random(42).shuffle(expected)
    train, test = reference_split(17, 42)
    assert train == expected[: int(17 * 0.8)] and test == expected[int(17 * 0.8) :]
    assert len(set(train) | set(test)) == 17 and not set(train) & set(test)
    assert len(TEN_SPLIT_SEEDS) == 10
    splits = {tuple(reference_split(50, s)[1]) for s in TEN_SPLIT_SEEDS}
    assert len(splits) == 10


def test_summarize_split_metrics():
    per_split = [{"srcc": v, "plcc": v + 0.1} for v in (0.7, 0.8, 0.9)]
    summary = summarize_split_metrics(per_split)
    assert summary["srcc"]["mean"] == pytest.approx(0.8) and summary["srcc"]["median"] == pytest.approx(0.8)
    assert summary["plcc"]["std"] == pytest.approx(np.std([0.8, 0.9, 1.0]))
    assert summary["srcc"]["splits"] == 3


# ---------------------------------------------------------------------------------------------------- converters
def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


LAYOUTS = {
    "konvid1k": (
        "labels.txt",
        [
            "KoNViD_1k_videos/4542323058.mp4, 8.008, 29.97002997002997, 3.22",
            "KoNViD_1k_videos/9753414792.mp4, 8.008008, 29.97, 3.84",
            "KoNViD_1k_videos/6935410837.mp4, 8.0, 25.0, 3.24",
            "KoNViD_1k_videos/8171831850.mp4, 8.008, 29.97002997002997, 4.444029851",
            "KoNViD_1k_videos/11465976586.mp4, 8.008008, 29.97, 3.94",
        ],
        "",
    ),
    "livevqc": (
        "labels.txt",
        [
            "Video/A001.mp4, 10.002367, 30.0, 80.232",
            "Video/A002.mp4, 10.04, 29.97002997002997, 57.3005",
            "Video/A003.mp4, 10.008333, 29.97002997002997, 78.1558",
            "Video/B001.mp4, 10.019677999999999, 11.083333333333334, 27.2485",
            "Video/B002.mp4, 10.031467, 30.0, 73.4245",
        ],
        "",
    ),
    "youtube_ugc": (
        "labels.txt",
        [
            "Sports_2160P-4e9f_crf_10_ss_00_t_20.0.mp4, -1, -1, 4.405",
            "Animation_480P-7a31_crf_10_ss_00_t_20.0.mp4, -1, -1, 3.487",
            "CoverSong_480P-59f2_crf_10_ss_00_t_20.0.mp4, -1, -1, 3.418",
            "Sports_360P-32d3_crf_10_ss_00_t_20.0.mp4, -1, -1, 3.012",
            "LiveMusic_480P-38f3_crf_10_ss_00_t_20.0.mp4, -1, -1, 2.973",
        ],
        "original_videos_h264",
    ),
    "cvd2014": (
        "labels.txt",
        [
            "Test3/City/Test03_City_D12.avi, 14.948471, 29.099967117037156, 20.65",
            "Test5/City/Test05_City_D05.avi, 15.0, 24.0, 42.92",
            "Test3/Talking_head/Test03_Talking_Head_D10.avi, 16.4, 25.0, 53.33",
            "Test4/City/Test04_City_D06.avi, 14.990694, 10.739996498761142, -6.5",
            "Test1/Traffic/Test01_Traffic_D01.avi, 23.166435, 30.00030000300003, 67.74",
        ],
        "",
    ),
}


@pytest.mark.parametrize("dataset", sorted(LAYOUTS))
def test_converters_on_fabricated_layouts(tmp_path, dataset):
    label_name, lines, folder = LAYOUTS[dataset]
    root = tmp_path / "root"
    (root / label_name).parent.mkdir(parents=True, exist_ok=True)
    (root / label_name).write_text("\n".join(lines) + "\n\n")
    for line in lines:
        _touch(root / folder / line.split(",")[0])
    out = tmp_path / "out"
    dd = convert_vqa(dataset, root, out, seed=42)
    assert set(dd) == {"train", "test"} and dd["train"].num_rows == 4 and dd["test"].num_rows == 1
    loaded, meta = load_converted_vqa(out)
    rows = loaded["train"].to_list() + loaded["test"].to_list()
    by_name = {r["name"]: r for r in rows}
    first = lines[0].split(",")
    row = by_name[first[0]]
    assert row["mos"] == pytest.approx(float(first[3]), rel=1e-6)
    assert row["video"].endswith(first[0]) and (root / folder / first[0]).samefile(row["video"])
    assert meta.split == "random" and meta.split_seed == 42 and meta.higher_is_better
    # the test row is the one the reference's shuffle puts last
    _, test_idx = reference_split(5, 42)
    assert loaded["test"][0]["name"] == lines[test_idx[0]].split(",")[0]
    if dataset == "youtube_ugc":
        assert row["category"] == "Sports" and row["resolution"] == "2160P"
        assert row["duration"] is None and row["fps"] is None  # -1 = unknown
    if dataset == "cvd2014":
        assert row["test_set"] == "Test3" and row["scene"] == "City"
        assert meta.mos_range == (-6.5, 67.74)


def test_lsvq_official_splits(tmp_path):
    root = tmp_path / "LSVQ_root"
    files = {
        "labels.txt": [
            "yfcc-batch1/1.mp4, -1, -1, 50.5",
            "yfcc-batch1/2.mp4, -1, -1, 61.0",
            "ia-batch1/3.mp4, -1, -1, 40",
        ],
        "labels_test.txt": ["yfcc-batch1/747.mp4, -1, -1, 67.75"],
        "labels_1080p.txt": ["yfcc-batch3/9.mp4, -1, -1, 77.0", "yfcc-batch3/10.mp4, -1, -1, 71.0"],
    }
    for name, lines in files.items():
        root.mkdir(exist_ok=True)
        (root / name).write_text("\n".join(lines) + "\n")
        for line in lines:
            _touch(root / line.split(",")[0])
    dd = convert_vqa("lsvq", root, tmp_path / "out")
    assert {k: v.num_rows for k, v in dd.items()} == {"train": 3, "test": 1, "test_1080p": 2}
    _, meta = load_converted_vqa(tmp_path / "out")
    assert meta.split == "official" and meta.mos_range == (0.0, 100.0)


def test_live_qualcomm_frame_folders_and_reencoded_files(tmp_path):
    root = tmp_path / "LIVE-Qualcomm_8png"
    lines = [
        "Focus/1024_TableTennisAtBalboa_HTCOneVx_VIDEO0138.yuv, -1, -1, 41.64888182462034",
        "Exposure/0911panGarden_Note4_20150911_152420.yuv, -1, -1, 44.69628201977274",
        "Color/1006_EmergencyScene_GS6_20151006_160038.yuv, -1, -1, 58.33545178737855",
    ]
    root.mkdir()
    (root / "labels.txt").write_text("\n".join(lines) + "\n")
    for k in range(8):  # the reference's 8 PNG frames per video, in a folder named after the .yuv stem
        _touch(root / "Focus" / "1024_TableTennisAtBalboa_HTCOneVx_VIDEO0138" / f"{k:03d}.png")
    _touch(root / "Exposure" / "0911panGarden_Note4_20150911_152420.mp4")  # re-encoded
    with pytest.raises(FileNotFoundError, match="1 video"):
        convert_vqa("live_qualcomm", root)
    dd = convert_vqa("live_qualcomm", root, allow_missing=True, seed=0)
    rows = {r["category"]: r for split in dd.values() for r in split.to_list()}
    assert set(rows) == {"Focus", "Exposure"}
    assert rows["Focus"]["video"].endswith("1024_TableTennisAtBalboa_HTCOneVx_VIDEO0138")
    assert rows["Exposure"]["video"].endswith(".mp4")


def test_label_file_errors_name_the_line(tmp_path):
    bad = tmp_path / "labels.txt"
    bad.write_text("a.mp4, 1, 2, 3\nb.mp4, 1, 2\n")
    with pytest.raises(ValueError, match=r"labels.txt:2"):
        read_label_file(bad)
    bad.write_text("a.mp4, 1, 2, nan\n")
    with pytest.raises(ValueError, match="finite"):
        read_label_file(bad)
    assert set(VQA_CONVERTERS) == {"konvid1k", "livevqc", "youtube_ugc", "lsvq", "cvd2014", "live_qualcomm"}
