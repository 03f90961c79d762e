"""Smoke run of the recipe that trains the shipped model (examples/train_rsfiqa_mobile.py) on a few real images."""

from __future__ import annotations

import importlib.util
import json

import pytest
from conftest import ROOT


def load_recipe():
    """Import the script by path: putting examples/ on sys.path would shadow the `evaluate` package."""
    spec = importlib.util.spec_from_file_location(
        "train_rsfiqa_mobile", ROOT / "examples" / "train_rsfiqa_mobile.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_recipe_runs_end_to_end_and_keys_its_caches(shared_dir, tmp_path):
    recipe = load_recipe()

    weights = shared_dir / "weights" / "mobilenetv2_100.tf2ptq_in1k.safetensors"
    if not weights.is_file():
        pytest.skip("MobileNetV2 weights are not in ../shared")
    out, cache = tmp_path / "run", tmp_path / "cache"
    common = [
        "--output_dir",
        str(out),
        "--cache_dir",
        str(cache),
        "--limit",
        "10",
        "--epochs",
        "1",
        "--batch_size",
        "4",
        "--synthetic_distortions",
        "jpeg",
        "--synthetic_groups",
        "1",
    ]
    recipe.main(common)

    final = out / "final"
    summary = json.loads((final / "training_summary.json").read_text())
    assert summary["n_train"] == 8 and summary["n_val"] == 2
    assert set(summary["pipeline_validation"]) == {"srcc", "plcc"}
    config = json.loads((final / "config.json").read_text())
    processor = json.loads((final / "processor_config.json").read_text())
    # the cached training maps used --train_work_size; the saved model keeps the preset's inference setting
    assert summary["train_work_size"] == 256 and config["superpixel_work_size"] == 64
    assert processor["superpixel_work_size"] == 64
    card = (final / "README.md").read_text()
    assert 'through `pipeline("image-quality")`' in card and "{" not in card.split("```")[-1]
    assert json.loads((final / "reference_scores.json").read_text())["skimage"]
    assert {"NOTICE.txt", "LIVE_COPYRIGHT.txt", "model.safetensors"} <= {p.name for p in final.iterdir()}

    prefix_dirs = sorted(cache.glob("prefix-*"))
    region_dirs = sorted(cache.glob("regions-*"))
    assert len(prefix_dirs) == 1 and len(region_dirs) == 1
    cached = sorted(p.name for p in prefix_dirs[0].glob("*.pt"))
    assert "prefix_00000.pt" in cached and any(n.startswith("synthetic-train-") for n in cached)
    assert json.loads((region_dirs[0] / "settings.json").read_text())["superpixel_work_size"] == 256

    # other partition settings: the features are reused, the region maps get a cache of their own
    mtimes = {p.name: p.stat().st_mtime_ns for p in prefix_dirs[0].glob("*.pt")}
    recipe.main([*common, "--train_work_size", "128", "--epochs", "0.5", "--synthetic_weight", "0"])
    assert sorted(cache.glob("prefix-*")) == prefix_dirs
    assert {p.name: p.stat().st_mtime_ns for p in prefix_dirs[0].glob("*.pt")} == mtimes
    assert len(list(cache.glob("regions-*"))) == 2

    # the shipped recipe fine-tunes the whole backbone from pixels: the stem moves, the card says so, and the
    # held-out order is measured from pixels (the cached prefix features no longer match the network)
    from safetensors.torch import load_file

    px = tmp_path / "px"
    recipe.main([*common, "--output_dir", str(px), "--train_from_pixels", "--skip_pipeline_validation"])
    summary = json.loads((px / "final" / "training_summary.json").read_text())
    assert summary["config_overrides"] == {"backbone_freeze_prefix": False}
    assert "synthetic_order_acc" in summary["metrics"]
    assert json.loads((px / "final" / "config.json").read_text())["backbone_freeze_prefix"] is False
    assert "the whole backbone fine-tuned" in (px / "final" / "README.md").read_text()
    stem = "backbone.conv_stem.weight"
    frozen, moved = load_file(final / "model.safetensors"), load_file(px / "final" / "model.safetensors")
    assert stem in frozen and not frozen[stem].equal(moved[stem])
