"""pipeline("region-quality") with a saved SEAGULL folder: per-ROI results in input order, bad ROIs named."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import random_image
from seagull_testing import save_tiny_region_model
from transformers import pipeline

import modeling_rsfiqa  # noqa: F401  (registers the task)
from modeling_rsfiqa.factory import create_model
from modeling_rsfiqa.processing_seagull import RegionError

TYPES = ["blur", "colorfulness", "compression", "contrast", "exposure", "noise"]


@pytest.fixture(scope="module")
def generative(tmp_path_factory):
    model, processor = create_model("seagull-tiny")
    folder = tmp_path_factory.mktemp("seagull-tiny")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return pipeline("region-quality", model=str(folder))


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    folder = save_tiny_region_model(tmp_path_factory.mktemp("seagull-region"))
    return pipeline("region-quality", model=str(folder))


def _check(result, generative: bool):
    assert 0.0 <= result["quality"] <= 100.0 and 0.0 <= result["importance"] <= 100.0
    assert set(result["distortions"]) == set(TYPES)
    assert all(0.0 <= s <= 1.0 for s in result["distortions"].values())
    assert ("answer" in result) is generative
    if generative:
        assert set(result["answer"]) == {"quality", "importance", "distortion"}


@pytest.mark.parametrize("which", ["small", "generative"])
def test_results_per_roi_in_input_order(which, request):
    rq = request.getfixturevalue(which)
    image = random_image(40, 56)
    mask = np.zeros((40, 56), bool)
    mask[5:25, 30:50] = True
    rois = [[0, 0, 20, 20], mask, [10, 10, 40, 30]]
    out = rq(image, regions=rois, max_new_tokens=4)
    assert len(out) == 3
    for result in out:
        _check(result, which == "generative")
    assert [r["box"] for r in out] == [[0, 0, 20, 20], [30, 5, 50, 25], [10, 10, 40, 30]]
    assert out[1]["area"] == pytest.approx(mask.mean())
    # the same ROI set, in another order: the same numbers per ROI
    again = rq(image, regions=[rois[2], rois[0], rois[1]], max_new_tokens=4)
    for a, b in zip([again[1], again[2], again[0]], out):
        assert a["quality"] == pytest.approx(b["quality"], abs=1e-4)


@pytest.mark.parametrize("which", ["small", "generative"])
def test_skip_errors_marks_only_the_bad_roi(which, request, tmp_path):
    from PIL import Image

    rq = request.getfixturevalue(which)
    path = tmp_path / "photo.png"
    Image.fromarray(random_image(40, 56)).save(path)
    rois = [[0, 0, 20, 20], [0, 0, 500, 5], np.zeros((40, 56), bool), [5, 5, 30, 30]]
    with pytest.raises(RegionError, match=r"photo\.png: ROI 1"):
        rq(str(path), regions=rois)
    out = rq(str(path), regions=rois, skip_errors=True, max_new_tokens=4)
    assert [("error" in r) for r in out] == [False, True, True, False]
    assert "photo.png: ROI 1 (box)" in out[1]["error"] and "outside" in out[1]["error"]
    assert "ROI 2 (mask)" in out[2]["error"] and "empty" in out[2]["error"]
    alone = rq(str(path), regions=[rois[0], rois[3]], max_new_tokens=4)
    assert out[0]["quality"] == pytest.approx(
        alone[0]["quality"], abs=1e-4
    )  # bad ROIs do not disturb the rest
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    assert "broken.jpg" in rq(str(broken), regions=rois, skip_errors=True)[0]["error"]


def test_several_images_as_dicts(small):
    out = small(
        [
            {"image": random_image(40, 56, seed=1), "regions": [[0, 0, 9, 9]]},
            {"image": random_image(30, 30), "regions": [[0, 0, 5, 5], [1, 1, 30, 30]]},
        ]
    )
    assert [len(o) for o in out] == [1, 2]


def test_generative_quality_is_the_level_word_expectation(generative):
    image = random_image(40, 56)
    result = generative(image, regions=[[0, 0, 20, 20]], max_new_tokens=2)[0]
    processor, model = generative.processor, generative.model
    batch = processor(image, [[0, 0, 20, 20]], questions="quality")
    scores = model.score_regions({k: batch[k] for k in processor.model_input_names}, processor, "quality")
    assert result["quality"] == pytest.approx(float(scores["score"][0]), abs=1e-3)
