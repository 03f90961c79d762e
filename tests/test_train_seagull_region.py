"""Training the small ROI model: Parquet ROI rows -> batches with labels, the held-out property figures (checked
by hand), and examples/train_seagull_region.py end to end on a tiny fabricated ROI dataset."""

from __future__ import annotations

import importlib.util
import json
import math
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, random_image
from PIL import Image
from seagull_testing import tiny_region_config

from modeling_rsfiqa.processing_seagull import SeagullProcessor
from modeling_rsfiqa.roi_synthesis import (
    SEAGULL_DISTORTION_TYPES,
    box_mask,
    mask_to_rle,
    pair_order_fraction,
    roi_dataset_features,
    roi_property_figures,
)
from modeling_rsfiqa.training_seagull import SeagullRegionCollator, predict_roi_rows, roi_row_labels

TYPES = list(SEAGULL_DISTORTION_TYPES)


def _roi(h, w, box, quality, importance, kind=None, level=0):
    mask = box_mask((h, w), box)
    return {
        "rle": mask_to_rle(mask),
        "box": list(box),
        "shape": "box",
        "area": float(mask.mean()),
        "quality": quality,
        "importance": importance,
        "quality_raw": quality / 100.0,
        "importance_raw": 1.0 - importance / 100.0,
        "distortions": [kind] if kind else [],
        "levels": [level] if kind else [],
        "severities": [level / 5.0] if kind else [],
    }


def _row(k: int, split: str = "train", h: int = 48, w: int = 64) -> dict:
    kind, level = TYPES[k % 6], k % 5 + 1
    side = 12 + 4 * (k % 3)
    rois = [
        _roi(h, w, [2, 2, 2 + side, 2 + side], 100.0 - 15 * level, 10.0 * level, kind, level),
        _roi(h, w, [40, 20, 60, 44], 100.0, 0.0),
    ]
    if k % 2:
        rois.append(_roi(h, w, [20, 30, 36, 46], 100.0, 0.0))
    return {
        "sample_id": f"fake/{k}#000",
        "image": Image.fromarray(random_image(h, w, seed=k)),
        "reference_id": f"fake/{k}",
        "source": "fake",
        "split": split,
        "width": w,
        "height": h,
        "distortion": kind,
        "implementation": kind,
        "parameter": float(level),
        "level": level,
        "severity": level / 5.0,
        "rois": rois,
    }


@pytest.fixture(scope="module")
def processor():
    return SeagullProcessor.from_model_config(tiny_region_config())


def test_row_labels_are_unit_targets_per_roi():
    row = _row(7)  # noise? 7 % 6 = 1 -> colorfulness, level 3
    labels = roi_row_labels(row, TYPES)
    assert labels.shape == (3, 2 + len(TYPES))
    np.testing.assert_allclose(labels[0, :2], [0.55, 0.30], atol=1e-6)
    assert labels[0, 2 + TYPES.index("colorfulness")] == pytest.approx(0.6)
    assert labels[0, 2:].sum() == pytest.approx(0.6)  # only its own type
    np.testing.assert_allclose(labels[1], [1.0, 0.0] + [0.0] * len(TYPES))


def test_row_labels_name_an_unknown_type():
    row = _row(0)
    row["rois"][0]["distortions"] = ["haze"]
    with pytest.raises(ValueError, match=r"fake/0#000, ROI 0.*'haze'"):
        roi_row_labels(row, TYPES)


def test_collator_keeps_every_roi_of_an_image_in_the_batch(processor):
    rows = [_row(0), _row(1), _row(2)]
    batch = SeagullRegionCollator(processor)(rows)
    n = sum(len(r["rois"]) for r in rows)  # 2 + 3 + 2
    assert batch["labels"].shape == (n, 2 + len(TYPES))
    assert batch["roi_image_index"].tolist() == [0, 0, 1, 1, 1, 2, 2]
    assert batch["pixel_values"].shape[0] == 3 and batch["roi_masks"].shape[0] == n
    assert batch["roi_pixel_values"].shape[0] == n
    assert float(batch["labels"].min()) >= 0.0 and float(batch["labels"].max()) <= 1.0
    # the first ROI's mask covers its box (16 px at the 48x64 image -> the 16x16 mask grid)
    assert batch["roi_masks"][0].sum() > 0 and batch["roi_masks"][1].sum() > 0


def test_pair_order_fraction_by_hand():
    # group a: keys 1, 2, 3 with scores 0.1, 0.3, 0.2 -> pairs (1,2) ok, (1,3) ok, (2,3) wrong
    # group b: keys 1, 1 (no pair); group c: keys 1, 2 with tied scores -> wrong
    scores = [0.1, 0.3, 0.2, 5.0, 6.0, 0.4, 0.4]
    keys = [1, 2, 3, 1, 1, 1, 2]
    groups = ["a", "a", "a", "b", "b", "c", "c"]
    frac, n = pair_order_fraction(scores, keys, groups)
    assert n == 4 and frac == pytest.approx(2 / 4)
    # area ratio filter: keys 1, 1.2, 3 -> only pairs whose larger key is >= 2x the smaller
    frac, n = pair_order_fraction([0.0, 1.0, 2.0], [1.0, 1.2, 3.0], ["g"] * 3, min_ratio=2.0)
    assert n == 2 and frac == 1.0
    assert math.isnan(pair_order_fraction([1.0], [1.0], ["g"])[0])


def _records(good: bool) -> list[dict]:
    records = []
    for t in TYPES:
        for level in range(1, 6):
            for area in (0.02, 0.1):
                q = 100.0 - 15 * level if good else 10.0 * level
                imp = level * 10.0 + 10 * area if good else 100.0 - level * 10.0 - 10 * area
                sev = [0.0] * len(TYPES)
                sev[TYPES.index(t) if good else (TYPES.index(t) + 1) % len(TYPES)] = level / 5.0
                records.append(
                    {
                        "distortion": t,
                        "level": level,
                        "area": area,
                        "quality": 100.0 - 15 * level,
                        "importance": level * 10.0,
                        "pred_quality": q,
                        "pred_importance": imp,
                        "pred_severity": sev,
                    }
                )
    records.append(dict(records[0], distortion=None, level=0))  # a clean ROI is ignored by the figures
    return records


def test_property_figures_perfect_and_reversed():
    good = roi_property_figures(_records(True))
    for key in ("severity_order", "type_top1_strong", "importance_vs_severity", "importance_vs_area"):
        assert good[key] == 1.0, key
    # per type: 10 ROIs, levels 1..5 twice -> C(10,2) - 5 same-level pairs = 40 pairs; 6 types
    assert good["severity_order_pairs"] == 6 * 40
    assert good["type_top1_strong_n"] == 6 * 2 * 2 and good["n_distorted_rois"] == 60
    bad = roi_property_figures(_records(False))
    for key in ("severity_order", "type_top1_strong", "importance_vs_severity", "importance_vs_area"):
        assert bad[key] == 0.0, key
    labels = roi_property_figures(_records(True), prefix="")
    assert labels["severity_order"] == 1.0 and "type_top1_strong" not in labels
    assert labels["importance_vs_area"] == 0.0  # the fabricated labels do not grow with area (ties)


def _write_dataset(folder, rows_by_split):
    import datasets

    features = roi_dataset_features()
    (folder / "data").mkdir(parents=True)
    for split, rows in rows_by_split.items():
        ds = datasets.Dataset.from_list(rows, features=features)
        ds.to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))


def test_training_script_end_to_end(tmp_path):
    data = tmp_path / "rois"
    _write_dataset(
        data, {"train": [_row(k) for k in range(8)], "validation": [_row(k, "validation") for k in range(12)]}
    )
    # controlled sweeps (datasets_scripts/seagull_sweeps.py layout): one severity series of 5 levels
    import datasets

    from datasets_scripts.seagull_sweeps import sweep_features

    sweeps = tmp_path / "sweeps"
    (sweeps / "data").mkdir(parents=True)
    series = [dict(_row(6 * lv, "sweep"), sweep="severity", group="s0") for lv in range(5)]
    assert [r["level"] for r in series] == [1, 2, 3, 4, 5]
    datasets.Dataset.from_list(series, features=sweep_features()).to_parquet(
        str(sweeps / "data" / "sweep-00000-of-00001.parquet")
    )
    config = tmp_path / "tiny.json"
    tiny_region_config().to_json_file(config)
    spec = importlib.util.spec_from_file_location(
        "train_seagull_region", ROOT / "examples" / "train_seagull_region.py"
    )
    script = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = script  # dataclasses look their module up
    spec.loader.exec_module(script)
    out = tmp_path / "out"
    torch.manual_seed(0)
    results = script.main(
        [
            "--model_name_or_path", str(config),
            "--pretrained_backbone", "none",
            "--dataset_dir", str(data),
            "--sweep_dir", str(sweeps),
            "--output_dir", str(out),
            "--max_steps", "3",
            "--per_device_train_batch_size", "4",
            "--learning_rate", "1e-3",
            "--use_cpu",
            "--report_to", "none",
            "--save_strategy", "no",
            "--torch_threads", "1",
        ]
    )  # fmt: skip
    assert results["train"]["train_loss"] > 0 and math.isfinite(results["train"]["train_loss"])
    saved = json.loads((out / "eval_results.json").read_text())
    for key in ("severity_order", "type_top1_strong", "importance_vs_severity"):  # 12 rows: no area pairs
        assert 0.0 <= saved[f"eval_{key}"] <= 1.0, key
    assert saved["eval_severity_order_pairs"] == 6 and saved["eval_type_top1_strong_n"] == 4
    assert saved["eval_labels_severity_order"] == 1.0  # the fabricated quality labels fall with the level
    swept = json.loads((out / "sweep_results.json").read_text())
    assert swept["sweep_severity_order_pairs"] == 10 and 0.0 <= swept["sweep_severity_order"] <= 1.0
    assert swept["sweep_labels_severity_order"] == 1.0 and swept["sweep_labels_importance_vs_severity"] == 1.0
    card = (out / "README.md").read_text()
    assert "severity order of ROI quality" in card and "train_seagull_region.py" in card
    assert "Controlled sweeps" in card and "same ROI, levels 1-5" in card
    assert (out / "model.safetensors").is_file() and (out / "processor_config.json").is_file()

    # the saved folder reloads with the Auto classes and predicts the same numbers
    from transformers import AutoModel, AutoProcessor

    import modeling_rsfiqa  # noqa: F401

    model, proc = AutoModel.from_pretrained(out), AutoProcessor.from_pretrained(out)
    rows = [_row(k, "validation") for k in range(2)]
    first = predict_roi_rows(model, proc, rows)
    again = predict_roi_rows(model, proc, rows)
    assert len(first) == 5 and first == again
    assert all(0.0 <= r["pred_quality"] <= 100.0 and len(r["pred_severity"]) == 6 for r in first)


def test_cached_vision_features_give_the_same_outputs(processor):
    from modeling_rsfiqa.modeling_seagull import SeagullForRegionQuality
    from modeling_rsfiqa.training_seagull import VisionFeatureCache

    torch.manual_seed(0)
    model = SeagullForRegionQuality(tiny_region_config()).eval()
    rows = [_row(k) for k in range(3)]
    cache = VisionFeatureCache()
    cache.fill(model, processor, rows, batch_size=2)
    assert len(cache) == 3
    plain = SeagullRegionCollator(processor)(rows)
    cached = SeagullRegionCollator(processor, feature_cache=cache)(rows)
    assert "pixel_values" not in cached and len(cached["vision_features"]) == 4
    with torch.no_grad():
        a, b = model(**plain), model(**cached)
    torch.testing.assert_close(a.quality, b.quality, atol=2e-3, rtol=0)  # float16 cache
    torch.testing.assert_close(a.severity, b.severity, atol=2e-3, rtol=0)
    with pytest.raises(KeyError, match="fake/9#000"):
        SeagullRegionCollator(processor, feature_cache=cache)([_row(9)])
