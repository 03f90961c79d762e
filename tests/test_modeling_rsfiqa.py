"""RSFIQAForQualityScoring on tiny random configs: the shared mixin plus RSA-specific properties."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_config, tiny_sam_config
from model_tester_mixin import QualityModelTesterMixin

from modeling_rsfiqa import RSFIQAForQualityScoring
from modeling_rsfiqa.modeling_rsfiqa import region_geometry, region_masks_from_labels


def make_region_labels(config, batch_size: int, seed: int = 0) -> torch.Tensor:
    """Label maps with a DIFFERENT number of regions per image (2, 3, ... up to max_regions)."""
    h, w = config.label_size
    rng = np.random.RandomState(seed)
    maps = []
    for i in range(batch_size):
        n = min(config.max_regions, 2 + i)
        cuts = np.sort(rng.choice(np.arange(1, w), n - 1, replace=False))
        cols = np.searchsorted(cuts, np.arange(w), side="right")
        maps.append(np.broadcast_to(cols[None, :], (h, w)))
    return torch.from_numpy(np.stack(maps).astype(np.int64))


class TestRSFIQACNNNoDescriptions(QualityModelTesterMixin):
    model_class = RSFIQAForQualityScoring

    def make_config(self):
        return tiny_config(use_region_descriptions=False)

    def make_inputs(self, config, batch_size=3):
        torch.manual_seed(1)
        return {
            "pixel_values": torch.randn(batch_size, 3, *config.image_size),
            "region_labels": make_region_labels(config, batch_size),
        }


class TestRSFIQAWithDescriptions(QualityModelTesterMixin):
    model_class = RSFIQAForQualityScoring

    def make_config(self):
        return tiny_config()

    def make_inputs(self, config, batch_size=3):
        torch.manual_seed(1)
        k = config.max_regions
        labels = make_region_labels(config, batch_size)
        present = region_masks_from_labels(labels, k).sum((-2, -1)) > 0
        annotated = present.clone()
        annotated[:, 0] = False  # some regions have no MLLM annotation: the learned embedding is used
        return {
            "pixel_values": torch.randn(batch_size, 3, *config.image_size),
            "region_labels": labels,
            "region_text_embeds": torch.randn(batch_size, k, config.description_embed_dim),
            "region_distortion_levels": torch.rand(batch_size, k, len(config.distortion_dimensions)),
            "region_annotation_mask": annotated,
        }


class TestRSFIQAViTBackbone(QualityModelTesterMixin):
    """Backbone-agnostic: a timm ViT (single-resolution token maps) works the same way."""

    model_class = RSFIQAForQualityScoring

    def make_config(self):
        return tiny_config(backbone_name="test_vit", backbone_out_indices=[1, 2], use_region_descriptions=False,
                           image_size=[160, 160], backbone_kwargs={"img_size": 160})

    def make_inputs(self, config, batch_size=3):
        torch.manual_seed(1)
        return {
            "pixel_values": torch.randn(batch_size, 3, *config.image_size),
            "region_labels": make_region_labels(config, batch_size),
        }


def test_region_order_does_not_matter():
    """Permuting region ids (and their annotations) leaves the score unchanged."""
    torch.manual_seed(0)
    config = tiny_config()
    model = RSFIQAForQualityScoring(config).eval()
    inputs = TestRSFIQAWithDescriptions().make_inputs(config, batch_size=2)
    perm = torch.randperm(config.max_regions)
    inv = torch.argsort(perm)
    permuted = dict(inputs)
    permuted["region_labels"] = perm[inputs["region_labels"]]
    for key in ("region_text_embeds", "region_distortion_levels", "region_annotation_mask"):
        permuted[key] = inputs[key][:, inv]
    with torch.no_grad():
        a, b = model(**inputs), model(**permuted)
    torch.testing.assert_close(a.score, b.score, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.attention_map, b.attention_map, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.region_scores[:, inv], b.region_scores, atol=1e-5, rtol=1e-5)


def test_descriptions_change_the_score():
    torch.manual_seed(0)
    config = tiny_config()
    model = RSFIQAForQualityScoring(config).eval()
    inputs = TestRSFIQAWithDescriptions().make_inputs(config, batch_size=1)
    without = {k: inputs[k] for k in ("pixel_values", "region_labels")}
    with torch.no_grad():
        assert not torch.allclose(model(**inputs).score, model(**without).score)


def test_without_region_labels_is_one_region():
    torch.manual_seed(0)
    config = tiny_config(use_region_descriptions=False)
    model = RSFIQAForQualityScoring(config).eval()
    x = torch.randn(2, 3, *config.image_size)
    with torch.no_grad():
        out = model(pixel_values=x)
        ones = model(pixel_values=x, region_labels=torch.zeros(2, *config.label_size, dtype=torch.long))
    assert out.region_mask.sum(-1).tolist() == [1, 1]
    torch.testing.assert_close(out.score, ones.score)


def test_attention_map_is_constant_inside_each_region():
    torch.manual_seed(0)
    config = tiny_config(use_region_descriptions=False)
    model = RSFIQAForQualityScoring(config).eval()
    labels = make_region_labels(config, 2)
    with torch.no_grad():
        out = model(pixel_values=torch.randn(2, 3, *config.image_size), region_labels=labels)
    for b in range(2):
        for k in labels[b].unique():
            values = out.attention_map[b][labels[b] == k]
            assert torch.allclose(values, values[0].expand_as(values))
            assert torch.isclose(values[0], out.region_importance[b, k])


def test_bad_region_labels_raise():
    config = tiny_config(use_region_descriptions=False)
    model = RSFIQAForQualityScoring(config).eval()
    x = torch.randn(1, 3, *config.image_size)
    with pytest.raises(ValueError, match="max_regions"):
        model(pixel_values=x, region_labels=torch.full((1, *config.label_size), config.max_regions))
    with pytest.raises(ValueError, match="batch"):
        model(pixel_values=x, region_labels=torch.zeros(2, *config.label_size, dtype=torch.long))


def test_region_geometry_of_halves():
    labels = torch.zeros(1, 4, 8, dtype=torch.long)
    labels[:, :, 4:] = 1
    geo = region_geometry(region_masks_from_labels(labels, 2))[0]
    torch.testing.assert_close(geo[:, 0], torch.tensor([0.5, 0.5]))  # areas
    torch.testing.assert_close(geo[:, 1], torch.tensor([0.25, 0.75]))  # x centroids
    torch.testing.assert_close(geo[:, 2], torch.tensor([0.5, 0.5]))  # y centroids


def test_sam_segmenter_is_built_frozen_and_saved():
    import tempfile

    torch.manual_seed(0)
    config = tiny_config(partition_method="sam", sam_config=tiny_sam_config(), use_region_descriptions=False)
    model = RSFIQAForQualityScoring(config)
    assert model.segmenter is not None
    assert not any(p.requires_grad for p in model.segmenter.parameters())
    model.train()
    assert not model.segmenter.training
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        loaded = RSFIQAForQualityScoring.from_pretrained(tmp)
    for (n, a), (_, b) in zip(model.segmenter.state_dict().items(), loaded.segmenter.state_dict().items()):
        torch.testing.assert_close(a, b, msg=n)


def test_pretrained_backbone_loads_after_construction(shared_dir):
    weights = shared_dir / "weights" / "mobilenetv2_100.tf2ptq_in1k.safetensors"
    from modeling_rsfiqa.presets_rsfiqa import create_model

    model, _ = create_model("rsfiqa-mobile", pretrained_backbone=str(weights))
    from safetensors.torch import load_file

    ref = load_file(str(weights))
    torch.testing.assert_close(model.backbone.conv_stem.weight, ref["conv_stem.weight"])


@pytest.mark.parametrize("backbone", ["test_efficientnet", "resnet18"])
def test_frozen_prefix_cache_equals_full_forward(backbone):
    torch.manual_seed(0)
    config = tiny_config(backbone_name=backbone, backbone_freeze_prefix=True, use_region_descriptions=False)
    model = RSFIQAForQualityScoring(config)
    x = torch.randn(2, 3, *config.image_size)
    labels = make_region_labels(config, 2)
    model.eval()
    with torch.no_grad():
        full = model(pixel_values=x, region_labels=labels)
        cached = model(prefix_features=model.encode_prefix(x), region_labels=labels)
    torch.testing.assert_close(full.score, cached.score, atol=1e-5, rtol=1e-5)
    prefix_params = {id(p) for m in model._prefix_modules() for p in m.parameters()}
    assert prefix_params and all(not p.requires_grad for p in model.parameters() if id(p) in prefix_params)
    model.train()
    assert all(not m.training for m in model._prefix_modules())
    out = model(prefix_features=model.encode_prefix(x), region_labels=labels, labels=torch.tensor([30.0, 70.0]))
    out.loss.backward()
    later = [p for p in model.backbone.parameters() if p.requires_grad]
    assert later and all(p.grad is not None for p in later)
