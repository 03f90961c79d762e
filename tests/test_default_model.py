"""The shipped default model (rsfiqa-mobile): loads offline with no model argument, reproduces its recorded
scores, ranks distortion levels, and (with ../shared) matches its validation metrics."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import skimage.data
from PIL import Image
from transformers import pipeline

import modeling_rsfiqa
from modeling_rsfiqa.distortions import distort

pytestmark = pytest.mark.skipif(
    not (modeling_rsfiqa.DEFAULT_MODEL_DIR / "model.safetensors").is_file(),
    reason="default model not shipped",
)
REFERENCE = modeling_rsfiqa.DEFAULT_MODEL_DIR / "reference_scores.json"


@pytest.fixture(scope="module")
def iqa():
    return pipeline("image-quality")  # no model argument: the packaged default, offline


def test_default_pipeline_uses_the_packaged_model(iqa):
    assert str(modeling_rsfiqa.DEFAULT_MODEL_DIR) in str(iqa.model.config._name_or_path)
    assert iqa.model.config.backbone_name == "mobilenetv2_100"
    assert iqa.model.config.score_range == [0.0, 100.0] and iqa.model.config.higher_is_better


def test_reproduces_recorded_scores(iqa):
    """Calibration against the numbers recorded when the model was shipped (same code, any machine)."""
    reference = json.loads(REFERENCE.read_text())
    for name, expected in reference["skimage"].items():
        got = iqa(Image.fromarray(getattr(skimage.data, name)()))["score"]
        assert got == pytest.approx(expected, abs=0.05), name


@pytest.mark.parametrize("distortion", ["gaussian_blur", "white_noise"])
def test_ranks_distortion_levels(iqa, distortion):
    clean = Image.fromarray(skimage.data.chelsea())
    scores = [iqa(clean)["score"]] + [iqa(distort(clean, distortion, lv, seed=0))["score"] for lv in (2, 4)]
    assert scores[0] > scores[1] > scores[2], scores


def test_identical_input_same_score_and_region_consistency(iqa):
    image = Image.fromarray(skimage.data.coffee())
    a, b = iqa(image), iqa(image)
    assert a["score"] == b["score"]
    assert 2 <= len(a["regions"]) <= iqa.model.config.max_regions
    assert all(0.0 <= r["importance"] <= 1.0 for r in a["regions"])


def phone_photo(path, name: str = "astronaut", size=(4032, 3024), seed: int = 0) -> None:
    """A 12 MP JPEG like a phone's: a real photo upscaled, with luma grain at full resolution, quality 92."""
    big = Image.fromarray(getattr(skimage.data, name)()).convert("RGB").resize(size, Image.LANCZOS)
    grain = np.random.default_rng(seed).normal(0, 2.5, (size[1], size[0], 1))
    Image.fromarray(np.clip(np.asarray(big) + grain, 0, 255).astype(np.uint8)).save(path, quality=92)


@pytest.mark.parametrize("name", ["astronaut", "coffee"])
def test_twelve_megapixel_jpeg_scores_like_a_full_decode(iqa, tmp_path, name):
    """A 12 MP JPEG is decoded at 1/2 scale (2016x1512, still 4x the 500 px input) and partitioned at the
    working size: the score stays within 1 MOS point of a full decode (measured on 24 such photos made from
    sun-hays80 and CLIVE images: mean 0.16, max 0.76), regions are reported in full-resolution pixels."""
    path = tmp_path / f"{name}.jpg"
    phone_photo(path, name)
    fast, full = iqa(str(path)), iqa(str(path), reduced_decode=False)
    assert fast["size"] == full["size"] == (4032, 3024)
    assert fast["score"] == pytest.approx(full["score"], abs=1.0)
    for region in fast["regions"]:
        x0, y0, x1, y1 = region["box"]
        assert 0 <= x0 < x1 <= 4032 and 0 <= y0 < y1 <= 3024
    assert sum(r["area"] for r in fast["regions"]) == pytest.approx(1.0)
    region_map = iqa(str(path), return_region_map=True)["region_map"]
    assert region_map.shape == (3024, 4032) and region_map.max() + 1 == len(fast["regions"])


def test_model_size_jpeg_is_decoded_in_full(iqa, tmp_path):
    path = tmp_path / "clive-like.jpg"
    Image.fromarray(skimage.data.astronaut()).resize((500, 500)).save(path, quality=90)
    assert iqa(str(path))["score"] == iqa(str(path), reduced_decode=False)["score"]


@pytest.mark.slow
def test_validation_metrics_match_the_card(iqa, shared_dir):
    """Re-score the whole validation split end to end (about 10 s) and compare with the recorded figures."""
    from scipy.stats import pearsonr, spearmanr

    summary = json.loads((modeling_rsfiqa.DEFAULT_MODEL_DIR / "training_summary.json").read_text())
    data = shared_dir / "data" / "clive-train"
    rows = sorted(csv.DictReader(open(data / "metadata.csv")), key=lambda r: r["file_name"])
    perm = np.random.RandomState(0).permutation(len(rows))
    val = np.sort(perm[int(round(0.8 * len(rows))) :])
    assert len(val) == summary["n_val"]
    preds = [iqa(str(data / rows[i]["file_name"]))["score"] for i in val]
    mos = [float(rows[i]["mos"]) for i in val]
    srcc, plcc = spearmanr(preds, mos)[0], pearsonr(preds, mos)[0]
    recorded = summary["pipeline_validation"]
    assert srcc == pytest.approx(recorded["srcc"], abs=0.005) and plcc == pytest.approx(
        recorded["plcc"], abs=0.005
    )
    assert srcc >= 0.80 and plcc >= 0.80  # the targets


def test_preset_is_the_shipped_architecture():
    """`create_model("rsfiqa-mobile")` builds what ships, so the training command reproduces the shipped model."""
    from modeling_rsfiqa import RSFIQAConfig
    from modeling_rsfiqa.factory import preset_config

    preset = preset_config("rsfiqa-mobile").to_dict()
    shipped = RSFIQAConfig.from_pretrained(modeling_rsfiqa.DEFAULT_MODEL_DIR).to_dict()
    # set by the training script; backbone_freeze_prefix only decides what training updates (False when the
    # whole backbone was fine-tuned, --train_from_pixels), inference runs the same layers either way
    learned = {"label_mean", "label_std", "backbone_pretrained", "loss_weights", "backbone_freeze_prefix"}
    bookkeeping = {"architectures", "auto_map", "transformers_version", "dtype", "use_cache", "_name_or_path"}
    differ = (
        {k for k in set(preset) | set(shipped) if preset.get(k) != shipped.get(k)} - learned - bookkeeping
    )
    assert not differ, {k: (preset.get(k), shipped.get(k)) for k in differ}
    processor = json.loads((modeling_rsfiqa.DEFAULT_MODEL_DIR / "processor_config.json").read_text())
    assert processor["superpixel_work_size"] == shipped["superpixel_work_size"]
