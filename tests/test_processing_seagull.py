"""SEAGULL processor: ROIs in every form, the reference prompts, bad input named by image and ROI index."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import random_image, tiny_sam_config, tiny_sam_image_processor

from modeling_rsfiqa.factory import create_model, list_presets, preset_config
from modeling_rsfiqa.processing_seagull import (
    RegionError,
    SeagullProcessor,
    format_distortion_answer,
    mask_box,
    mask_to_grid,
    regions_to_masks,
)

H, W = 48, 80


@pytest.fixture(scope="module")
def tiny():
    return create_model("seagull-tiny")


@pytest.fixture(scope="module")
def processor(tiny):
    return tiny[1]


def _rle(mask):
    from pycocotools import mask as mask_utils

    enc = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in enc["size"]], "counts": enc["counts"].decode()}


def _blob():
    yy, xx = np.mgrid[:H, :W]
    return (yy - 30) ** 2 + (xx - 50) ** 2 < 80


def test_every_roi_form_gives_the_same_mask(processor):
    image = random_image(H, W)
    box_mask = np.zeros((H, W), bool)
    box_mask[8:20, 10:40] = True
    blob = _blob()
    flat = blob.flatten(order="F").astype(np.int8)  # uncompressed RLE: run lengths in column-major order
    runs = np.diff(np.flatnonzero(np.diff(np.r_[-1, flat, -1]) != 0))
    counts = ([0] if flat[0] else []) + runs.tolist()
    regions = [
        [10, 8, 40, 20],  # box
        box_mask,  # bool mask
        blob.astype(np.uint8) * 255,  # uint8 mask
        _rle(blob),  # compressed COCO RLE
        {"size": [H, W], "counts": counts},  # uncompressed RLE
        {"mask": blob},
        {"box": (10.0, 8.0, 40.0, 20.0)},
    ]
    expected = [box_mask, box_mask, blob, blob, blob, blob, box_mask]
    out = processor(image, regions)
    grid = processor.image_size // processor.mask_stride
    assert out["roi_masks"].shape == (len(regions), grid, grid)
    assert out["pixel_values"].shape[0] == 1  # one image, encoded once for all its ROIs
    for i, mask in enumerate(expected):
        np.testing.assert_array_equal(out["roi_masks"][i].numpy() > 0, mask_to_grid(mask, grid, grid))
        assert out["roi_boxes"][i].tolist() == mask_box(mask)
        assert out["roi_areas"][i].item() == pytest.approx(mask.mean())
    assert out["roi_image_index"].tolist() == [0] * len(regions)
    assert out["roi_pixel_values"].shape == (
        len(regions),
        3,
        processor.local_crop_size,
        processor.local_crop_size,
    )
    assert torch.equal(out["roi_pixel_values"][0], out["roi_pixel_values"][1])  # box == its mask: same crop


def test_point_prompts_go_through_sam_and_the_image_is_encoded_once():
    from transformers import SamModel

    torch.manual_seed(0)
    sam = SamModel(tiny_sam_config()).eval()
    calls = []
    sam.vision_encoder.register_forward_hook(lambda *a: calls.append(1))
    image = random_image(H, W)
    from PIL import Image

    masks, errors = regions_to_masks(
        Image.fromarray(image),
        [{"points": [[10, 10]]}, [0, 0, 5, 5], {"points": [[40, 30], [60, 40]], "labels": [1, 0]}],
        sam,
        tiny_sam_image_processor(),
    )
    assert len(calls) == 1  # one encoding for both prompts
    assert errors == [None, None, None]
    assert all(m is not None and m.shape == (H, W) and m.any() for m in masks)


def test_crop_is_the_roi_bounding_box(processor):
    image = np.zeros((H, W, 3), np.uint8)
    image[8:20, 10:40] = 255  # the box is white, the rest black
    out = processor(image, [[10, 8, 40, 20], [0, 30, 8, 48]])
    crops = out["roi_pixel_values"]
    assert crops[0].flatten(1).std(1).max() < 1e-4 and crops[0].mean() > 1.0  # all white (normalised)
    assert crops[1].mean() < -1.0  # all black


def test_many_images_many_rois(processor):
    images = [random_image(H, W, seed=1), random_image(30, 30, seed=2)]
    out = processor(images, [[[0, 0, 10, 10], [5, 5, 20, 20]], [[0, 0, 30, 30]]], questions="all")
    assert out["pixel_values"].shape[0] == 2
    assert out["roi_image_index"].tolist() == [0, 0, 1]
    assert out["input_ids"].shape[0] == 9  # 3 ROIs x 3 questions, ROI-major
    assert out["sequence_image_index"].tolist() == [0, 0, 0, 0, 0, 0, 1, 1, 1]
    assert out["sequence_roi_index"][:, 0].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_prompt_follows_the_reference(processor):
    out = processor(random_image(H, W), [[0, 0, 10, 10]], questions=["quality", "importance", "distortion"])
    tok = processor.tokenizer
    for b, question in enumerate(["quality", "importance", "distortion"]):
        ids = out["input_ids"][b][out["attention_mask"][b] > 0]
        assert (ids == tok.convert_tokens_to_ids("<image>")).sum() == processor.num_image_tokens
        g = (ids == tok.convert_tokens_to_ids("<global>")).nonzero().flatten().tolist()
        loc = (ids == tok.convert_tokens_to_ids("<local>")).nonzero().flatten().tolist()
        assert len(g) == 1 and loc == [g[0] + 1]  # one adjacent <global><local> pair
        text = tok.decode(ids, skip_special_tokens=True)
        assert processor.questions[question] in text
        assert "Here is the region" in text and "USER:" in text and text.endswith("ASSISTANT:")
        assert ids[0] == tok.bos_token_id
    assert (out["attention_mask"][:, -1] == 1).all()  # left padding: the answer position is the last


def test_answers_become_labels_on_the_answer_only(processor):
    answers = ["The quality of this region is poor.", format_distortion_answer({"blur": 4}, processor)]
    assert answers[1] == "The distortions of this region are: blur (severe)."
    out = processor(
        random_image(H, W), [[0, 0, 10, 10]], questions=["quality", "distortion"], answers=answers
    )
    tok = processor.tokenizer
    for b, answer in enumerate(answers):
        supervised = out["labels"][b][out["labels"][b] != -100]
        assert tok.decode(supervised, skip_special_tokens=True).strip() == answer
        assert supervised[-1] == tok.eos_token_id
        assert out["attention_mask"][b, 0] == 1  # right padding for training


def test_format_distortion_answer_round_trips_through_the_parser(processor):
    from modeling_rsfiqa.level_scoring import parse_distortions

    for sev in ({"blur": 1, "noise": 5}, {"exposure": 3}, {}, {"contrast": 0.55, "compression": 0.9}):
        text = format_distortion_answer(sev, processor)
        parsed = parse_distortions(text, processor.distortion_types, processor.severity_words)
        assert set(parsed) == {t for t, s in sev.items() if s}
        for t, s in sev.items():
            idx = s - 1 if isinstance(s, int) else int(np.ceil(s * 5)) - 1
            assert parsed[t] == processor.severity_words[idx]


@pytest.mark.parametrize(
    "region, message",
    [
        (np.zeros((H, W), bool), "empty"),
        (np.ones((H + 1, W), bool), "mask of size"),
        ([0, 0, W + 5, 10], "outside"),
        ([20, 0, 10, 10], "x1 <= x0"),
        ({"size": [H, W], "counts": "not-an-rle-@@@"}, "does not decode"),
        ({"size": [H, W], "counts": [5, 7]}, "does not decode"),
        ({"size": [H + 2, W], "counts": "PP"}, "RLE of size"),
        ({"points": [[3, 3]]}, "need SAM"),
        ({"points": [[3, 3 + H]]}, "outside"),
        ("a string", "ROI"),
    ],
)
def test_bad_rois_are_named_by_image_and_index(processor, region, message):
    good = [0, 0, 10, 10]
    with pytest.raises(RegionError, match=message) as info:
        processor(random_image(H, W), [good, region])
    assert "ROI 1" in str(info.value) and "ndarray" in str(info.value)  # the image's name, the ROI index
    out = processor(random_image(H, W), [good, region, good], skip_errors=True)
    assert out["roi_masks"].shape[0] == 2 and out["roi_input_index"] == [0, 2]
    assert list(out["roi_errors"][0]) == [1] and "ROI 1" in out["roi_errors"][0][1]


def test_file_name_in_errors(processor, tmp_path):
    from PIL import Image

    path = tmp_path / "photo.png"
    Image.fromarray(random_image(H, W)).save(path)
    with pytest.raises(RegionError, match=r"photo\.png: ROI 0 \(box\)"):
        processor(str(path), [[0, 0, 500, 10]])
    with pytest.raises(RegionError, match="no ROI"):
        processor(str(path), [])


def test_processor_save_load_round_trip(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    loaded = SeagullProcessor.from_pretrained(tmp_path)
    image, rois = random_image(H, W), [[0, 0, 10, 10], _blob()]
    a = processor(image, rois, questions="all")
    b = loaded(image, rois, questions="all")
    for key in ("pixel_values", "roi_masks", "roi_pixel_values", "input_ids", "sequence_roi_index"):
        torch.testing.assert_close(a[key], b[key])
    assert loaded.questions == processor.questions and loaded.num_image_tokens == processor.num_image_tokens


def test_region_processor_save_load_keeps_every_setting(tmp_path):
    """The region processor names its settings (ProcessorMixin loads only named ones): none may fall back to
    its default on load, e.g. roi_mask_mode (area masks trained, any-coverage masks served)."""
    from seagull_testing import tiny_region_config

    from modeling_rsfiqa.processing_seagull import PROCESSOR_SETTINGS, SeagullRegionProcessor

    config = tiny_region_config(roi_mask_mode="area")
    processor = SeagullProcessor.from_model_config(config)
    processor.save_pretrained(tmp_path)
    loaded = SeagullRegionProcessor.from_pretrained(tmp_path)
    for name in (*PROCESSOR_SETTINGS, "mask_stride", "num_image_tokens"):
        assert getattr(loaded, name) == getattr(processor, name), name
    image, rois = random_image(H, W), [[0, 0, 10, 10], _blob()]
    torch.testing.assert_close(loaded(image, rois)["roi_masks"], processor(image, rois)["roi_masks"])


def test_presets():
    assert {"seagull-tiny", "seagull-7b"} <= set(list_presets("seagull"))
    assert "seagull-7b" not in list_presets("rsfiqa")
    paper = preset_config("seagull-7b")
    assert paper.image_size == 512 and paper.vision_backbone == "convnext_large"
    assert paper.feature_sizes == [128, 64, 32, 16] and paper.num_image_tokens == 1024
    assert paper.text_config.hidden_size == 4096 and paper.text_config.num_hidden_layers == 32
    assert paper.token_size == 4096 and paper.local_grid_size == 32
