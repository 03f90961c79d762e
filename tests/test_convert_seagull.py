"""SEAGULL-100w / SEAGULL-3k converters on tiny fabricated trees in the documented folder layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("pycocotools")

from datasets_scripts import convert_seagull as cs  # noqa: E402
from modeling_rsfiqa import roi_synthesis as rs  # noqa: E402

H, W = 40, 48


def _img(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)).save(path)


def _blob(seed: int) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W]
    cy, cx = 10 + 5 * seed, 12 + 6 * seed
    return (yy - cy) ** 2 / 49 + (xx - cx) ** 2 / 64 < 1


def make_seagull100w(root: Path, ids=("r1", "r2", "r3", "r4"), records_form: bool = False) -> dict:
    masks = {}
    roi_file: dict | list = [] if records_form else {}
    for n, ref in enumerate(ids):
        _img(root / "Ref.Images" / f"{ref}.png", n)
        m0, m1 = _blob(0), _blob(2)
        masks[ref] = (m0, m1)
        rle0 = rs.mask_to_rle(m0)
        rois = [
            {"rle": rle0["counts"], "points": list(rs.mask_box(m0))},  # the reference demo's form
            {"segmentation": rs.mask_to_rle(m1)},  # COCO form
        ]
        if records_form:
            roi_file.extend({"img": f"{ref}.png", **roi} for roi in rois)
        else:
            roi_file[ref] = rois
    scores = {}
    for n, ref in enumerate(ids):
        for kind, k in (("Blur", 0), ("Noise", 13)):
            _img(root / "Dist.Images" / kind / f"{kind}_{k}" / f"{ref}.png", 100 + n)
            scores[f"{kind}/{kind}_{k}/{ref}.png"] = [
                {"quality": 0.5 + 0.1 * n, "importance": 0.2},
                {"quality": 0.9, "importance": 0.05 * (n + 1)},
            ]
    (root / "Labels").mkdir(parents=True)
    (root / "Labels" / "SEAGULL-100w_mask-based-rois.json").write_text(json.dumps(roi_file))
    (root / "Labels" / "SEAGULL-100w_scores.json").write_text(json.dumps(scores))
    return masks


def test_seagull100w_documented_layout(tmp_path):
    root = tmp_path / "SEAGULL-100w"
    masks = make_seagull100w(root)
    meta = cs.convert_rois("seagull100w", root, tmp_path / "out", test_fraction=0.25, progress=False)
    assert sum(meta["num_rows"].values()) == 8 and sum(meta["num_rois"].values()) == 16
    dd = rs.load_roi_dataset(tmp_path / "out", cache_dir=str(tmp_path / "hf"))
    assert set(dd) == {"train", "test"} and dd["train"].features == rs.roi_dataset_features()
    assert not set(dd["train"]["reference_id"]) & set(dd["test"]["reference_id"])  # reference-disjoint
    rows = {r["sample_id"]: r for split in dd.values() for r in split}
    row = rows["Noise_13/r2"]
    assert row["distortion"] == "noise" and row["implementation"] == "Noise_13" and row["level"] is None
    assert np.asarray(row["image"]).shape == (H, W, 3) and row["reference_id"] == "r2"
    first, second = row["rois"]
    np.testing.assert_array_equal(rs.rle_to_mask(first["rle"]), masks["r2"][0])
    np.testing.assert_array_equal(rs.rle_to_mask(second["rle"]), masks["r2"][1])
    assert first["box"] == list(rs.mask_box(masks["r2"][0])) and first["shape"] == "mask"
    assert first["quality"] == pytest.approx(60.0) and first["quality_raw"] == pytest.approx(
        0.6
    )  # 0..1 -> 0..100
    assert second["importance"] == pytest.approx(10.0)
    assert (
        first["distortions"] == ["noise"] and first["levels"] == [] and first["severities"] == []
    )  # unknown
    assert meta["settings"]["quality_scale"] == 100.0 and "random" in meta["settings"]["split"]


def test_seagull100w_record_form_resume_and_similarity_importance(tmp_path):
    root = tmp_path / "s"
    make_seagull100w(root, ids=("a", "b"), records_form=True)
    out = tmp_path / "out"
    kwargs = dict(importance_is_similarity=True, shard_size=1, progress=False)
    cs.convert_rois("seagull100w", root, out, **kwargs)
    shards = sorted((out / "data").glob("*.parquet"))
    stamps = [p.stat().st_mtime_ns for p in shards]
    cs.convert_rois("seagull100w", root, out, **kwargs)  # finished shards are kept
    assert [p.stat().st_mtime_ns for p in shards] == stamps
    row = rs.load_roi_dataset(out, split="train", cache_dir=str(tmp_path / "hf"))[0]
    assert row["rois"][0]["importance"] == pytest.approx(rs.importance_from_similarity(0.2))
    with pytest.raises(ValueError, match="another conversion"):
        cs.convert_rois("seagull100w", root, out, seed=3, progress=False)


def test_seagull100w_errors_name_the_problem(tmp_path):
    root = tmp_path / "s"
    make_seagull100w(root, ids=("a",))
    scores_path = root / "Labels" / "SEAGULL-100w_scores.json"
    scores = json.loads(scores_path.read_text())
    scores["Blur/Blur_0/a.png"].pop()
    scores_path.write_text(json.dumps(scores))
    with pytest.raises(ValueError, match=r"Blur/Blur_0/a.png.*1 score entries for 2 ROIs"):
        cs.convert_rois("seagull100w", root, tmp_path / "o1", progress=False)
    scores_path.write_text(json.dumps({"Sharpness/Sharpness_1/a.png": []}))
    with pytest.raises(ValueError, match="cannot read the distorted image key"):
        cs.convert_rois("seagull100w", root, tmp_path / "o2", progress=False)
    scores_path.write_text(json.dumps({"Blur/Blur_0/zz.png": []}))
    with pytest.raises(ValueError, match="no ROIs for 'zz'"):
        cs.convert_rois("seagull100w", root, tmp_path / "o3", progress=False)
    (root / "Labels" / "SEAGULL-100w_mask-based-rois.json").write_text(json.dumps({"a": [{"quality": 1}]}))
    scores_path.write_text(json.dumps({"Blur/Blur_0/a.png": [{"quality": 0.5}]}))
    with pytest.raises(ValueError, match="neither a mask"):
        cs.convert_rois("seagull100w", root, tmp_path / "o4", progress=False)
    (root / "Dist.Images").rename(root / "elsewhere")
    (root / "Dist.Images.zip").write_bytes(b"PK")
    with pytest.raises(FileNotFoundError, match="extract the archives"):
        cs.convert_rois("seagull100w", root, tmp_path / "o5", progress=False)


def test_seagull3k_records_with_words_boxes_and_official_split(tmp_path):
    root = tmp_path / "SEAGULL-3k"
    for i in range(3):
        _img(root / "Images" / f"live_{i}.png", i)
    m = _blob(1)
    records = [
        {
            "img": "live_0.png",
            "rle": rs.mask_to_rle(m),
            "quality": 62.5,
            "importance": 80,
            "distortions": {"blur": "moderate", "noise": "slight"},
            "split": "train",
        },
        {
            "img": "live_0.png",
            "bbox": [4, 6, 10, 8],
            "quality": 30,
            "importance": 12,
            "distortions": [],
            "split": "train",
        },
        {
            "img": "live_1.png",
            "points": [0, 0, 20, 10],
            "quality": 50,
            "importance": 40,
            "distortions": ["exposure", "contrast"],
            "severity": [0.8, 2],
            "split": "test",
        },
        {"img": "live_2.png", "points": [1, 1, 9, 9], "quality": 70, "importance": 5, "split": "training"},
    ]
    (root / "Labels").mkdir()
    (root / "Labels" / "seagull3k.json").write_text(json.dumps(records))
    meta = cs.convert_rois("seagull3k", root, tmp_path / "out", progress=False)
    assert meta["settings"]["split"] == "official" and meta["num_rows"] == {"test": 1, "train": 2}
    dd = rs.load_roi_dataset(tmp_path / "out", cache_dir=str(tmp_path / "hf"))
    rows = {r["sample_id"]: r for split in dd.values() for r in split}
    a, b = rows["live_0"]["rois"]
    assert a["quality"] == 62.5 and a["importance"] == 80 and a["shape"] == "mask"  # already 0..100: kept
    assert a["distortions"] == ["blur", "noise"] and a["levels"] == [3, 1]
    assert a["severities"] == pytest.approx([0.6, 0.2])
    assert b["box"] == [4, 6, 14, 14] and b["shape"] == "box" and b["distortions"] == []  # COCO xywh
    c = rows["live_1"]["rois"][0]
    assert c["distortions"] == ["contrast", "exposure"] and c["levels"] == [2, 4]
    assert c["severities"] == pytest.approx([0.4, 0.8])
    from modeling_rsfiqa.quality_metrics import compute_roi_distortion_metrics

    truth = [dict(zip(r["distortions"], r["severities"])) for r in (a, b, c)]
    assert compute_roi_distortion_metrics(truth, truth)["severity_f1"] == 1.0

    records[0]["distortions"] = {"blur": "blurry-ish"}
    (root / "Labels" / "seagull3k.json").write_text(json.dumps(records))
    with pytest.raises(ValueError, match="unknown severity word 'blurry-ish'"):
        cs.convert_rois("seagull3k", root, tmp_path / "o2", progress=False)
    records[0]["img"] = "missing.png"
    (root / "Labels" / "seagull3k.json").write_text(json.dumps(records))
    with pytest.raises(FileNotFoundError, match="'missing' of seagull3k.json not found"):
        cs.convert_rois("seagull3k", root, tmp_path / "o3", progress=False)


def test_field_map_and_cli(tmp_path, capsys):
    root = tmp_path / "3k"
    _img(root / "Images" / "x.png", 0)
    (root / "Labels").mkdir()
    (root / "Labels" / "l.json").write_text(
        json.dumps([{"picture": "x.png", "points": [0, 0, 8, 8], "mos": 0.4, "importance": 0.9}])
    )
    with pytest.raises(ValueError, match="names no image"):
        cs.convert_rois("seagull3k", root, tmp_path / "o1", progress=False)
    args = ["seagull3k", "--root", str(root), "--out", str(tmp_path / "o2")]
    assert cs.main([*args, "--field-map", '{"image": "picture", "quality": "mos"}']) == 0
    assert "seagull3k: wrote" in capsys.readouterr().out
    row = rs.load_roi_dataset(tmp_path / "o2", cache_dir=str(tmp_path / "hf"))["train"][0]
    assert row["rois"][0]["quality"] == pytest.approx(40.0) and row["rois"][0]["importance"] == pytest.approx(
        90.0
    )
    with pytest.raises(SystemExit):
        cs.main([*args, "--field-map", '{"colour": "x"}'])
