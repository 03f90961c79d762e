"""SEAGULL-style ROI synthesis and the Parquet dataset builder, on tiny fabricated images.

Properties: labels are monotone in the level for every type and implementation, the distortion never
leaves the ROI, importance grows with ROI area, clean ROIs are clean, the build resumes after an
interruption with the same result, and the stored schema round-trips.
"""

from __future__ import annotations

import json
import os
import zlib

import datasets
import numpy as np
import pytest
from PIL import Image

pytest.importorskip("piq")
pytest.importorskip("pycocotools")

from datasets_scripts import seagull_synthetic as ss  # noqa: E402
from modeling_rsfiqa import roi_synthesis as rs  # noqa: E402


def fabricated_photo(height: int = 128, width: int = 160, seed: int = 0) -> np.ndarray:
    """Smooth colour gradients + hard-edged shapes + fine texture: enough structure for every metric."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    base = np.stack(
        [0.5 + 0.3 * np.sin(3 * xx + 1), 0.45 + 0.3 * np.cos(4 * yy), 0.4 + 0.25 * np.sin(2 * (xx + yy))], -1
    )
    for _ in range(6):
        cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(8, 30)
        inside = (np.mgrid[0:height, 0:width][0] - cy) ** 2 + (
            np.mgrid[0:height, 0:width][1] - cx
        ) ** 2 < r**2
        base[inside] = rng.uniform(0.1, 0.9, 3)
    small = rng.uniform(-0.08, 0.08, (height // 2, width // 2, 3))
    texture = (
        np.asarray(Image.fromarray(((small + 0.5) * 255).astype(np.uint8)).resize((width, height))) / 255
        - 0.5
    )
    return np.clip(np.rint((base + 0.6 * texture) * 255), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return fabricated_photo()


def _center_box(photo: np.ndarray, side: int = 64) -> rs.Roi:
    h, w = photo.shape[:2]
    box = ((w - side) // 2, (h - side) // 2, (w + side) // 2, (h + side) // 2)
    return rs.Roi(rs.box_mask((h, w), box), box, "box")


@pytest.mark.parametrize("distortion", rs.SEAGULL_DISTORTION_TYPES)
def test_labels_are_monotone_in_level_for_every_implementation(photo, distortion):
    roi = _center_box(photo)
    for impl in rs.ROI_DISTORTIONS[distortion]:
        samples = [
            rs.synthesize_roi_sample(
                photo, distortion, lv, seed=7, implementation=impl.name, roi=roi, num_clean=0
            )
            for lv in range(1, rs.NUM_LEVELS + 1)
        ]
        quality = [s.rois[0].quality for s in samples]
        importance = [s.rois[0].importance for s in samples]
        assert all(a > b for a, b in zip(quality, quality[1:])), (
            f"{impl.name}: quality {np.round(quality, 2)}"
        )
        assert all(a < b for a, b in zip(importance, importance[1:])), f"{impl.name}: importance {importance}"
        assert 0 <= min(quality) and max(quality) < 100 and 0 < min(importance) and max(importance) <= 100
        assert [s.severity for s in samples] == [0.2, 0.4, 0.6, 0.8, 1.0]
        assert samples[0].rois[0].distortions == [distortion] and samples[-1].rois[0].levels == [5]


def test_every_type_has_varied_implementations():
    assert tuple(rs.ROI_DISTORTIONS) == rs.SEAGULL_DISTORTION_TYPES
    names = {t: {i.name for i in impls} for t, impls in rs.ROI_DISTORTIONS.items()}
    assert all(len(v) >= 3 for v in names.values())
    assert {"exposure_up", "exposure_down", "brighten", "darken"} <= names["exposure"]  # up AND down
    assert {"jpeg", "webp", "avif", "jpeg2000_psnr"} <= names["compression"]  # several codecs
    assert {"color_saturation_decrease", "color_saturation_increase"} <= names["colorfulness"]
    assert {"contrast_change", "contrast_increase"} <= names["contrast"]
    assert {"white_noise", "poisson_noise", "impulse_noise"} <= names["noise"]
    # every parameter table runs in the direction of its level (checked above through the labels)
    assert all(len(i.parameters) == rs.NUM_LEVELS for impls in rs.ROI_DISTORTIONS.values() for i in impls)


@pytest.mark.parametrize("kind", ["box", "blob"])
def test_distortion_stays_inside_the_roi(photo, kind):
    rng = np.random.default_rng(3)
    for distortion in rs.SEAGULL_DISTORTION_TYPES:
        roi = rs.random_roi(photo.shape[:2], rng, kind=kind, area_range=(0.1, 0.2))
        sample = rs.synthesize_roi_sample(photo, distortion, 5, seed=11, roi=roi, num_clean=0)
        outside = ~roi.mask
        np.testing.assert_array_equal(sample.image[outside], photo[outside], err_msg=f"{distortion} leaked")
        core = rs.feather_weights(roi.mask) >= 1.0  # the soft edge fades inward; the core is fully distorted
        changed = np.any(sample.image != photo, axis=-1)
        assert changed[core].mean() > 0.5, (
            f"{distortion}: only {changed[core].mean():.2f} of the core changed"
        )


def test_soft_edge_fades_inward(photo):
    roi = _center_box(photo, 40)
    w = rs.feather_weights(roi.mask, feather=3.0)
    x0, y0, x1, y1 = roi.box
    assert w[~roi.mask].max() == 0.0 and w[y0 + 20, x0 + 20] == 1.0
    assert 0 < w[y0, x0 + 20] < w[y0 + 1, x0 + 20] < w[y0 + 3, x0 + 20] == 1.0
    hard = rs.feather_weights(roi.mask, feather=0)
    np.testing.assert_array_equal(hard, roi.mask.astype(np.float32))


def test_importance_grows_with_area(photo):
    h, w = photo.shape[:2]
    for distortion in ("blur", "noise", "exposure", "colorfulness"):
        importance = []
        for side in (32, 48, 64, 88, 112):
            box = ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)
            roi = rs.Roi(rs.box_mask((h, w), box), box, "box")
            s = rs.synthesize_roi_sample(
                photo, distortion, 3, seed=5, implementation=None, roi=roi, num_clean=0
            )
            importance.append(s.rois[0].importance)
        assert all(a < b for a, b in zip(importance, importance[1:])), (
            f"{distortion}: {np.round(importance, 2)}"
        )


def test_clean_rois_are_clean_and_apart(photo):
    sample = rs.synthesize_roi_sample(photo, "noise", 4, seed=2, num_clean=(3, 3), area_range=(0.03, 0.06))
    assert len(sample.rois) >= 2
    distorted, clean = sample.rois[0], sample.rois[1:]
    for i, c in enumerate(clean):
        assert c.quality == 100.0 and c.importance == 0.0 and c.distortions == [] and c.severities == []
        assert not rs._boxes_overlap(c.roi.box, distorted.roi.box)
        assert all(not rs._boxes_overlap(c.roi.box, o.roi.box) for o in clean[i + 1 :])
        assert (
            c.roi.shape in ("box", "blob")
            and min(c.roi.box[2] - c.roi.box[0], c.roi.box[3] - c.roi.box[1]) >= 32
        )


def test_clean_rois_helper_keeps_apart_and_stops_when_full():
    rng = np.random.default_rng(0)
    first = rs.random_roi((256, 256), rng, kind="box", area_range=(0.05, 0.05))
    found = rs.clean_rois((256, 256), rng, first, 4, kind="box", area_range=(0.01, 0.03))
    assert 1 <= len(found) <= 4 and all(r.shape == "box" for r in found)
    boxes = [first.box] + [r.box for r in found]
    assert not any(rs._boxes_overlap(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
    # no room left for a half-image ROI beside a centred one: none found, no error
    centre = rs.Roi(rs.box_mask((256, 256), (64, 64, 192, 192)), (64, 64, 192, 192), "box")
    assert rs.clean_rois((256, 256), rng, centre, 3, kind="box", area_range=(0.5, 0.5)) == []


def test_random_rois_shapes_and_rle_round_trip():
    rng = np.random.default_rng(0)
    shape = (120, 200)
    for kind in ("box", "blob", None):
        for _ in range(10):
            roi = rs.random_roi(shape, rng, kind=kind, min_side=24)
            assert roi is not None and roi.mask.any()
            x0, y0, x1, y1 = roi.box
            assert rs.mask_box(roi.mask) == roi.box and x1 - x0 >= 24 and y1 - y0 >= 24
            rle = rs.mask_to_rle(roi.mask)
            assert rle["size"] == [120, 200] and isinstance(rle["counts"], str)
            np.testing.assert_array_equal(rs.rle_to_mask(json.loads(json.dumps(rle))), roi.mask)
    blob = rs.random_roi(shape, np.random.default_rng(1), kind="blob", area_range=(0.1, 0.1))
    assert (
        0.5 < blob.mask.sum() / ((blob.box[2] - blob.box[0]) * (blob.box[3] - blob.box[1])) < 1.0
    )  # irregular
    assert rs.random_roi(shape, rng, avoid=[(0, 0, 200, 120)]) is None  # no room left
    with pytest.raises(ValueError, match="does not decode"):
        rs.rle_to_mask({"size": [4, 4], "counts": "garbage!"})
    with pytest.raises(ValueError, match="outside"):
        rs.box_mask((10, 10), (5, 5, 12, 8))


def test_label_mappings_and_bad_arguments(photo):
    assert rs.quality_from_similarity(1.0) == 100.0 and rs.quality_from_similarity(0.42) == pytest.approx(
        42.0
    )
    assert rs.importance_from_similarity(1.0) == 0.0
    assert rs.importance_from_similarity(1 - rs.IMPORTANCE_SATURATION) == pytest.approx(100.0)
    assert rs.importance_from_similarity(1 - rs.IMPORTANCE_SATURATION / 4) == pytest.approx(50.0)
    assert rs.FR_METRICS["haarpsi"](photo, photo) == 1.0
    with pytest.raises(ValueError, match="unknown SEAGULL distortion"):
        rs.synthesize_roi_sample(photo, "sharpness", 1, seed=0)
    with pytest.raises(ValueError, match="level"):
        rs.synthesize_roi_sample(photo, "blur", 6, seed=0)
    with pytest.raises(ValueError, match="not an implementation"):
        rs.synthesize_roi_sample(photo, "blur", 1, seed=0, implementation="jpeg")
    with pytest.raises(ValueError, match="at least 161"):
        rs.FR_METRICS["ms_ssim"](photo, photo[::-1].copy())
    with pytest.raises(ValueError, match="unknown full-reference metric"):
        rs.label_roi(_center_box(photo), photo, photo, metric="lpips")


def test_samples_are_deterministic(photo):
    a = rs.synthesize_roi_sample(photo, "compression", 2, seed=99)
    b = rs.synthesize_roi_sample(photo, "compression", 2, seed=99)
    np.testing.assert_array_equal(a.image, b.image)
    assert [r.to_record() for r in a.rois] == [r.to_record() for r in b.rois]
    c = rs.synthesize_roi_sample(photo, "compression", 2, seed=100)
    assert not np.array_equal(a.image, c.image) or a.rois[0].roi.box != c.rois[0].roi.box


# --------------------------------------------------------------------------- the Parquet builder


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = tmp_path_factory.mktemp("pristine")
    for source, n, size in (
        ("kodak24", 2, (128, 96)),
        ("cbsd68", 2, (112, 96)),
        ("sun-hays80", 1, (160, 128)),
    ):
        (root / source).mkdir()
        for i in range(n):
            arr = fabricated_photo(size[1], size[0], seed=zlib.crc32(f"{source}{i}".encode()))
            Image.fromarray(arr).save(root / source / f"img{i:02d}.png")
    return root


BUILD = dict(train_per_image=3, validation_per_image=3, max_side=None, shard_size=2, progress=False)


def test_build_schema_round_trips_and_splits(pristine, tmp_path):
    out = tmp_path / "roi"
    meta = ss.build_roi_dataset(pristine, out, **BUILD)
    assert meta["status"] == "complete" and meta["num_rows"] == {"train": 9, "validation": 6}
    dd = rs.load_roi_dataset(out, cache_dir=str(tmp_path / "hf"))
    assert set(dd) == {"train", "validation"}
    assert dd["train"].features == rs.roi_dataset_features()
    assert {r.split("/")[0] for r in dd["validation"]["reference_id"]} == {"kodak24"}  # held out
    assert {r.split("/")[0] for r in dd["train"]["reference_id"]} == {"cbsd68", "sun-hays80"}
    references = datasets.load_dataset(str(out), "references", cache_dir=str(tmp_path / "hf"))
    refs = {r["reference_id"]: np.asarray(r["image"]) for split in references.values() for r in split}
    for row in dd["validation"]:
        image = np.asarray(row["image"])
        assert image.shape == (row["height"], row["width"], 3)
        assert row["severity"] == pytest.approx(row["level"] / 5) and row["sample_id"].startswith(
            row["reference_id"]
        )
        first = row["rois"][0]
        mask = rs.rle_to_mask(first["rle"])
        assert list(rs.mask_box(mask)) == first["box"] and first["area"] == pytest.approx(mask.mean())
        assert first["distortions"] == [row["distortion"]] and first["levels"] == [row["level"]]
        np.testing.assert_array_equal(image[~mask], refs[row["reference_id"]][~mask])  # only the ROI changed
        assert all(
            r["quality"] == 100 and r["importance"] == 0 and r["distortions"] == [] for r in row["rois"][1:]
        )
    saved = json.loads((out / ss.META_FILE).read_text())
    assert saved["label_statistics"]["validation"]["all"]["clean_quality_min"] == 100.0
    assert "config_name: references" in (out / "README.md").read_text()
    # the g-th sample of a split has type g % 6 and level (g // 6) % 5 + 1
    rows = sorted(dd["train"], key=lambda r: (r["reference_id"], r["sample_id"]))
    assert [r["distortion"] for r in rows[:6]] == list(rs.SEAGULL_DISTORTION_TYPES)


def test_build_resumes_after_an_interruption(pristine, tmp_path, monkeypatch):
    reference = tmp_path / "uninterrupted"
    ss.build_roi_dataset(pristine, reference, **BUILD)

    out = tmp_path / "interrupted"
    real = rs.synthesize_roi_sample
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(ss.rs, "synthesize_roi_sample", flaky)
    with pytest.raises(KeyboardInterrupt):
        ss.build_roi_dataset(pristine, out, **BUILD)
    finished = sorted((out / "data").glob("*.parquet"))
    assert [p.name for p in finished] == ["train-00000-of-00005.parquet", "train-00001-of-00005.parquet"]
    assert not list((out / "data").glob(".*.tmp"))  # no half-written shard
    stamps = {p.name: p.stat().st_mtime_ns for p in finished}
    with pytest.raises(ValueError, match="unfinished"):
        rs.load_roi_dataset(out)

    monkeypatch.setattr(ss.rs, "synthesize_roi_sample", real)
    calls["n"] = 0
    meta = ss.build_roi_dataset(pristine, out, **BUILD)
    assert meta["samples_this_run"] == 15 - 4  # the 4 finished samples were not made again
    assert {p.name: p.stat().st_mtime_ns for p in finished} == stamps

    import pyarrow.parquet as pq

    for path in sorted((reference / "data").glob("*.parquet")):
        assert pq.read_table(path).equals(pq.read_table(out / "data" / path.name)), path.name
    again = ss.build_roi_dataset(pristine, out, **BUILD)  # a finished build is a no-op
    assert again["samples_this_run"] == 0


def test_samples_do_not_depend_on_sharding_and_settings_are_checked(pristine, tmp_path):
    a = tmp_path / "a"
    b = tmp_path / "b"
    ss.build_roi_dataset(pristine, a, **{**BUILD, "shard_size": 2})
    ss.build_roi_dataset(pristine, b, **{**BUILD, "shard_size": 4, "num_proc": 2})  # worker processes
    import pyarrow as pa
    import pyarrow.parquet as pq

    def rows(path):
        return pa.concat_tables(
            [pq.read_table(p) for p in sorted((path / "data").glob("*.parquet"))]
        ).to_pylist()

    assert rows(a) == rows(b)
    with pytest.raises(ValueError, match="other settings.*seed"):
        ss.build_roi_dataset(pristine, a, **{**BUILD, "seed": 1})
    with pytest.raises(ValueError, match="both splits"):
        ss.build_roi_dataset(
            pristine, tmp_path / "c", train_sources=["kodak24"], validation_sources=["kodak24"]
        )
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ss.build_roi_dataset(pristine, tmp_path / "d", train_sources=["nowhere"], **BUILD)


def test_cli_entry_point(pristine, tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["--pristine", str(pristine), "--out", str(out), "--limit-images", "1", "--train-per-image", "2"]
    assert ss.main([*args, "--validation-per-image", "2", "--max-side", "0", "--clean-rois", "1", "2"]) == 0
    printed = capsys.readouterr().out
    assert "wrote" in printed and '"train": 2' in printed
    assert os.path.isfile(out / "data" / "validation-00000-of-00001.parquet")


# --------------------------------------------------------------------------- controlled sweeps


@pytest.mark.parametrize("kind", ["box", "blob"])
def test_nested_rois_are_nested_and_grow(kind):
    rng = np.random.default_rng(3)
    areas = (0.05, 0.12, 0.3)
    rois = rs.nested_rois((192, 256), rng, areas, kind=kind, min_side=16)
    assert rois is not None and [r.shape for r in rois] == [kind] * 3
    for small, large in zip(rois, rois[1:]):
        assert not (small.mask & ~large.mask).any()  # inside the next one
        assert large.area > 1.5 * small.area
    if kind == "box":
        for roi, area in zip(rois, areas):
            assert roi.area == pytest.approx(area, rel=0.1)
    assert rs.nested_rois((64, 64), rng, (0.01, 0.5), min_side=32) is None  # the smallest is too small
    with pytest.raises(ValueError, match="fractions"):
        rs.nested_rois((64, 64), rng, (0.0, 0.5))


def test_sweep_samples_change_one_factor(photo):
    rng = np.random.default_rng(1)
    roi = _center_box(photo, 56)
    clean = [rs.Roi(rs.box_mask(photo.shape[:2], (2, 2, 30, 30)), (2, 2, 30, 30), "box")]
    series = rs.sweep_roi_samples(photo, "blur", "gaussian_blur", [roi], [1, 2, 3, 4, 5], seed=7, clean=clean)
    assert [s.level for s in series] == [1, 2, 3, 4, 5]
    quality = [s.rois[0].quality for s in series]
    importance = [s.rois[0].importance for s in series]
    assert quality == sorted(quality, reverse=True) and importance == sorted(importance)
    for s in series:  # the same ROI and clean ROIs, only the ROI changed
        assert s.rois[0].roi is roi and [r.roi for r in s.rois[1:]] == clean and s.rois[1].quality == 100
        np.testing.assert_array_equal(s.image[~roi.mask], photo[~roi.mask])
    rois = rs.nested_rois(photo.shape[:2], rng, (0.08, 0.2, 0.45), kind="box", min_side=16)
    series = rs.sweep_roi_samples(photo, "noise", "white_noise", rois, [4], seed=7)
    importance = [s.rois[0].importance for s in series]
    assert importance == sorted(importance) and len(set(importance)) == 3
    with pytest.raises(ValueError, match="not an implementation"):
        rs.sweep_roi_samples(photo, "blur", "jpeg", [roi], [1], seed=0)


def test_sweep_figures_by_hand():
    # one severity series (levels 1..5): quality 90, 70, 80, 60, 50 -> only the pair (2,3) is wrong
    # importance 10, 20, 30 -> all right; one area series (areas .1 < .3): importance 5 > 4 -> wrong
    records = [
        {"sweep": "severity", "group": "g", "distortion": "blur", "level": lv, "area": 0.1,
         "quality": 100.0 - 10 * lv, "importance": 10.0 * lv, "pred_quality": q, "pred_importance": 10.0 * lv,
         "pred_severity": [0.9 if lv != 5 else 0.0, 0, 0, 0, 0, 0.5]}
        for lv, q in ((1, 90.0), (2, 70.0), (3, 80.0), (4, 60.0), (5, 50.0))
    ] + [
        {"sweep": "area", "group": "a", "distortion": "noise", "level": 4, "area": a,
         "quality": 50.0, "importance": 10 * a, "pred_quality": 50.0, "pred_importance": imp}
        for a, imp in ((0.1, 5.0), (0.3, 4.0))
    ] + [{"sweep": None, "group": None, "distortion": None, "level": 0, "area": 0.1}]  # fmt: skip
    model = rs.roi_sweep_figures(records)
    # 10 level pairs, only (2,3) wrong; levels 4-5: blur named at 4, noise at 5
    assert model["severity_order"] == pytest.approx(9 / 10) and model["severity_order_pairs"] == 10
    assert model["importance_vs_severity"] == 1.0 and model["severity_order_blur"] == pytest.approx(9 / 10)
    assert model["type_top1_strong"] == 0.5 and model["type_top1_strong_n"] == 2
    assert model["importance_vs_area"] == 0.0 and model["importance_vs_area_pairs"] == 1
    labels = rs.roi_sweep_figures(records, prefix="")
    assert labels["severity_order"] == labels["importance_vs_area"] == 1.0
    with pytest.raises(ValueError, match="no sweep records"):
        rs.roi_sweep_figures(records[-1:])


def test_sweep_builder_resumes_and_labels_order(pristine, tmp_path):
    from datasets_scripts import seagull_sweeps as sw

    design = sw.SweepDesign(severity_rois=1, area_sweeps=1, areas=(0.3, 0.15, 0.5))
    assert design.areas == (0.15, 0.3, 0.5) and design.rows_per_photo == 6 * (5 + 3)
    kwargs = dict(max_side=None, design=design, progress=False)
    out = tmp_path / "sweeps"
    meta = sw.build_roi_sweeps(pristine, out, **kwargs)
    assert meta["status"] == "complete" and meta["num_rows"] == 2 * 6 * (5 + 3)
    rows = rs.load_roi_dataset(out, "sweep", cache_dir=str(tmp_path / "hf"))
    assert set(rows["sweep"]) == {"severity", "area"} and len(set(rows["group"])) == 2 * 6 * 2
    first = next(r for r in rows if r["sweep"] == "severity")
    assert first["distortion"] in rs.SEAGULL_DISTORTION_TYPES and len(first["rois"]) >= 2
    records = [
        {"sweep": r["sweep"], "group": r["group"], "distortion": r["distortion"], "level": r["level"],
         "area": r["rois"][0]["area"], "quality": r["rois"][0]["quality"], "importance": r["rois"][0]["importance"]}
        for r in rows
    ]  # fmt: skip
    labels = rs.roi_sweep_figures(records, prefix="")
    assert labels["severity_order"] >= 0.9 and labels["importance_vs_area"] >= 0.9
    # an interrupted build resumes: remove one shard, rebuild, same bytes
    shard = sorted((out / "data").glob("*.parquet"))[1]
    before = shard.read_bytes()
    shard.unlink()
    sw.build_roi_sweeps(pristine, out, **kwargs)
    assert shard.read_bytes() == before
    with pytest.raises(ValueError, match="area_level"):
        sw.SweepDesign(area_level=9)
    with pytest.raises(ValueError, match="other settings"):
        sw.build_roi_sweeps(pristine, out, **dict(kwargs, design=sw.SweepDesign(area_level=3)))


def test_sweep_cli_builds_and_scores_a_saved_model(pristine, tmp_path, capsys):
    from seagull_testing import save_tiny_region_model

    from datasets_scripts import seagull_sweeps as sw

    model = save_tiny_region_model(tmp_path / "tiny")
    results = tmp_path / "figures.json"
    args = ["--pristine", str(pristine), "--out", str(tmp_path / "sw"), "--limit-images", "1",
            "--severity-rois", "1", "--area-sweeps", "1", "--areas", "0.15,0.3,0.5"]  # fmt: skip
    assert sw.main([*args, "--evaluate", str(model), "--results", str(results)]) == 0
    figures = json.loads(results.read_text())
    assert figures["severity_order_pairs"] == 6 * 10 and figures["importance_vs_area_pairs"] == 6 * 3
    assert 0.0 <= figures["severity_order"] <= 1.0 and figures["type_top1_strong_n"] == 6 * 2
    assert figures["labels_severity_order"] >= 0.9 and figures["model"] == str(model)
    assert '"num_rows": 48' in capsys.readouterr().out
