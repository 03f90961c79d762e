"""Config and processor: round trips, presets, validation, annotation padding, SAM path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import random_image, tiny_config, tiny_sam_config

from modeling_rsfiqa import RSFIQAConfig, RSFIQAImageProcessor, RSFIQAImageProcessorPil, RSFIQAProcessor
from modeling_rsfiqa.factory import create_model, list_presets, preset_config


def test_config_round_trip(tmp_path):
    config = tiny_config(partition_method="sam", sam_config=tiny_sam_config(), max_regions=5)
    config.save_pretrained(tmp_path)
    loaded = RSFIQAConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert type(loaded.sam_config).__name__ == "SamConfig"


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"partition_method": "grid"}, "partition_method"),
        ({"partition_method": "sam"}, "sam_config"),
        ({"max_regions": 0}, "max_regions"),
        ({"min_region_area": 1.5}, "min_region_area"),
        ({"level_words": ["bad", "good"]}, "level_words"),
        ({"rsa_hidden_size": 30, "rsa_num_heads": 4}, "divisible"),
        ({"score_range": [5, 1]}, "score_range"),
    ],
)
def test_config_validation(bad, match):
    with pytest.raises(ValueError, match=match):
        RSFIQAConfig(**bad)


def test_presets_exist_and_build():
    assert {"rsfiqa-tiny", "rsfiqa-mobile", "rsfiqa-paper", "rsfiqa-paper-swin"} <= set(list_presets())
    paper = preset_config("rsfiqa-paper")
    assert paper.partition_method == "sam" and paper.sam_config.vision_config.hidden_size == 1280
    assert paper.mllm_config.model_type == "qwen2_5_vl" and paper.description_embed_dim == 3584
    with pytest.raises(FileNotFoundError, match="rsfiqa-tiny"):
        preset_config("no-such-preset")
    model, processor = create_model("rsfiqa-tiny")
    assert processor.image_processor.size["height"] == model.config.image_size[0]


def test_processor_round_trip(tmp_path):
    processor = RSFIQAProcessor.from_model_config(tiny_config(max_regions=5, superpixel_segments=9))
    processor.save_pretrained(tmp_path)
    loaded = RSFIQAProcessor.from_pretrained(tmp_path)
    assert loaded.max_regions == 5 and loaded.superpixel_segments == 9
    assert loaded.partition_settings == processor.partition_settings
    image = random_image(50, 70)
    a, b = processor(image), loaded(image)
    torch.testing.assert_close(a["pixel_values"], b["pixel_values"])
    assert torch.equal(a["region_labels"], b["region_labels"])


def test_processor_outputs_and_precomputed_labels():
    config = tiny_config()
    processor = RSFIQAProcessor.from_model_config(config)
    images = [random_image(50, 70, seed=i) for i in range(2)]
    batch = processor(images, return_region_maps=True)
    assert batch["pixel_values"].shape == (2, 3, *config.image_size)
    assert (
        batch["region_labels"].shape == (2, *config.label_size)
        and batch["region_labels"].dtype == torch.int64
    )
    assert [m.shape for m in batch["region_maps"]] == [(50, 70), (50, 70)]
    given = [np.zeros((50, 70), np.int32), np.ones((10, 10), np.int32)]
    given[0][:, 35:] = 1
    batch = processor(images, region_labels=given)
    assert set(batch["region_labels"][0].unique().tolist()) == {0, 1}
    with pytest.raises(ValueError, match="2 images"):
        processor(images, region_labels=given[:1])
    with pytest.raises(ValueError, match="max_regions"):
        processor(images[:1], region_labels=[np.full((4, 4), 99)])


def test_processor_pads_annotations():
    config = tiny_config()
    processor = RSFIQAProcessor.from_model_config(config)
    d = config.description_embed_dim
    ann = {
        "text_embeds": np.ones((3, d), np.float32),
        "distortion_levels": np.array([[1, 2, 3, 4, 5, 3]] * 3, np.float32),
    }
    batch = processor([random_image(), random_image(seed=2)], annotations=[ann, None])
    assert batch["region_text_embeds"].shape == (2, config.max_regions, d)
    assert batch["region_annotation_mask"].tolist()[0][:4] == [True, True, True, False]
    assert not batch["region_annotation_mask"][1].any()
    torch.testing.assert_close(
        batch["region_distortion_levels"][0, 0], torch.tensor([0, 0.25, 0.5, 0.75, 1, 0.5])
    )
    wider = {"text_embeds": np.ones((3, d + 1)), "distortion_levels": np.ones((3, 6))}
    with pytest.raises(ValueError, match="annotations\\[1\\]"):
        processor([random_image(), random_image()], annotations=[ann, wider])
    with pytest.raises(ValueError, match="annotations\\[0\\]"):
        processor(
            [random_image()],
            annotations=[{"text_embeds": np.ones((3, d)), "distortion_levels": np.ones((3, 2))}],
        )


def test_both_image_processor_backends_agree():
    kwargs = dict(size={"height": 64, "width": 64}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    image = random_image(90, 120)
    a = RSFIQAImageProcessor(**kwargs)(image, return_tensors="pt")["pixel_values"]
    b = RSFIQAImageProcessorPil(**kwargs)(image, return_tensors="pt")["pixel_values"]
    assert a.shape == b.shape == (1, 3, 64, 64)
    assert (a - b).abs().max() < 0.05  # resampling implementations differ by a level or so


def test_processor_sam_path():
    from transformers import SamModel

    torch.manual_seed(0)
    config = tiny_config(
        partition_method="sam",
        sam_config=tiny_sam_config(),
        sam_points_per_side=3,
        sam_pred_iou_thresh=-1.0,
        sam_stability_score_thresh=-1.0,
        sam_longest_edge=64,
    )
    processor = RSFIQAProcessor.from_model_config(config)
    processor.sam_image_processor.pad_size = {"height": 64, "width": 64}
    with pytest.raises(ValueError, match="sam_model"):
        processor(random_image())
    batch = processor(random_image(), sam_model=SamModel(config.sam_config).eval())
    assert batch["region_labels"].max() < config.max_regions
