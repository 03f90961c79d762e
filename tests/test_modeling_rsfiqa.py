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
        return tiny_config(
            backbone_name="test_vit",
            backbone_out_indices=[1, 2],
            use_region_descriptions=False,
            image_size=[160, 160],
            backbone_kwargs={"img_size": 160},
        )

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
    from modeling_rsfiqa.factory import create_model

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
    out = model(
        prefix_features=model.encode_prefix(x), region_labels=labels, labels=torch.tensor([30.0, 70.0])
    )
    out.loss.backward()
    later = [p for p in model.backbone.parameters() if p.requires_grad]
    assert later and all(p.grad is not None for p in later)


def _randomise_batchnorm(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial running statistics and affine terms, so that folding them is actually tested."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)


@pytest.mark.parametrize(
    "backbone,kwargs",
    [("test_efficientnet", {}), ("test_efficientnet", {"pad_type": "same"}), ("resnet18", {})],
)
def test_fused_inference_backbone_matches_the_backbone(backbone, kwargs):
    torch.manual_seed(0)
    config = tiny_config(backbone_name=backbone, backbone_kwargs=kwargs, use_region_descriptions=False)
    model = RSFIQAForQualityScoring(config).eval()
    _randomise_batchnorm(model)
    x = torch.randn(2, 3, *config.image_size)
    labels = make_region_labels(config, 2)
    with torch.no_grad():
        fused = model.inference_backbone()
        assert fused is not model.backbone
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
        for ref, out in zip(model.backbone(x), fused(x), strict=True):
            torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
        fast = model(pixel_values=x, region_labels=labels).score
        model.config.inference_fuse_batchnorm = False
        slow = model(pixel_values=x, region_labels=labels).score
    torch.testing.assert_close(fast, slow, atol=1e-4, rtol=1e-5)
    # the copy lives outside the module tree: weights on disk and parameters() are unchanged
    assert set(model.state_dict()) == set(RSFIQAForQualityScoring(config).state_dict())
    assert not any(m is fused for m in model.modules())


def test_inference_backbone_only_when_safe_and_rebuilt_when_weights_change():
    torch.manual_seed(0)
    config = tiny_config(use_region_descriptions=False)
    model = RSFIQAForQualityScoring(config)
    _randomise_batchnorm(model)
    x = torch.randn(2, 3, *config.image_size)
    labels = make_region_labels(config, 2)
    model.train()
    with torch.no_grad():
        assert model.inference_backbone() is model.backbone  # training: batch statistics
    model.eval()
    assert model.inference_backbone() is model.backbone  # gradients on
    with torch.no_grad():
        first = model.inference_backbone()
        assert first is not model.backbone and model.inference_backbone() is first  # cached
        handle = model.backbone.conv_stem.register_forward_hook(lambda *a: None)
        assert model.inference_backbone() is model.backbone  # a hook would not fire in the copy
        handle.remove()
        assert model.inference_backbone() is first

    # an optimizer step changes the weights: the next eval forward folds them again
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(pixel_values=x, region_labels=labels, labels=torch.tensor([20.0, 80.0])).loss.backward()
    opt.step()
    model.eval()
    with torch.no_grad():
        rebuilt = model.inference_backbone()
        assert rebuilt is not first
        for ref, out in zip(model.backbone(x), rebuilt(x), strict=True):
            torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
        # load_state_dict copies in place (no train() call): detected by the tensors' version counters
        state = {k: v + 0.01 if k.endswith("running_mean") else v for k, v in model.state_dict().items()}
        model.load_state_dict(state)
        reloaded = model.inference_backbone()
        assert reloaded is not rebuilt
        for ref, out in zip(model.backbone(x), reloaded(x), strict=True):
            torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


def test_fuse_conv_batchnorm_refuses_a_conv_output_with_another_consumer():
    from modeling_rsfiqa.modeling_rsfiqa import fuse_conv_batchnorm

    class Branchy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.bn = torch.nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y  # folding the BN into the conv would change the second term

    module = Branchy().eval()
    _randomise_batchnorm(module)
    x = torch.randn(1, 3, 16, 16)
    same, n = fuse_conv_batchnorm(module, x)
    assert same is module and n == 0
    plain = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU()
    ).eval()
    _randomise_batchnorm(plain)
    fused, n = fuse_conv_batchnorm(plain, x)
    assert n == 1 and isinstance(fused[1], torch.nn.Identity)
    torch.testing.assert_close(fused(x), plain(x), atol=1e-5, rtol=1e-5)


def test_cpu_inference_splits_large_batches_without_changing_results():
    """config.inference_batch_pixels: the backbone runs chunk by chunk in eval/no-grad CPU inference only."""
    torch.manual_seed(0)
    config = tiny_config(use_region_descriptions=False)
    model = RSFIQAForQualityScoring(config).eval()
    _randomise_batchnorm(model)
    x = torch.randn(5, 3, *config.image_size)
    labels = make_region_labels(config, 5)
    pixels = config.image_size[0] * config.image_size[1]
    calls = []
    with torch.no_grad():
        whole = model(pixel_values=x, region_labels=labels).score
        model.config.inference_batch_pixels = 2 * pixels  # chunks of 2 images: 2 + 2 + 1
        hook = model.inference_backbone().register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[0]))
        split = model(pixel_values=x, region_labels=labels).score
        hook.remove()
        assert calls == [2, 2, 1]
        model.config.inference_batch_pixels = 1  # smaller than one image: still one image at a time
        assert model._inference_chunk(x) == 1
    torch.testing.assert_close(split, whole, atol=1e-5, rtol=1e-5)
    model.train()  # batch statistics while training: never split
    assert model._inference_chunk(x) == 5
    model.eval()
    assert model._inference_chunk(x) == 5  # gradients on


def test_conv_head_stage_feeds_rsa_and_trains(tmp_path):
    """backbone_conv_head: the classifier's 1x1 conv_head (+ bn2) after the last stage is one more RSA stage."""
    torch.manual_seed(0)
    config = tiny_config(use_region_descriptions=False, backbone_out_indices=[3, 4], backbone_conv_head=True)
    model = RSFIQAForQualityScoring(config)
    assert model.stage_channels == [48, 64, 256]
    x = torch.randn(2, 3, *config.image_size)
    labels = make_region_labels(config, 2)
    out = model(pixel_values=x, region_labels=labels, labels=torch.tensor([30.0, 70.0]))
    out.loss.backward()
    assert (
        model.backbone_head[0].weight.grad is not None and model.backbone_head[0].weight.grad.abs().sum() > 0
    )
    model.eval()
    with torch.no_grad():
        fast = model(pixel_values=x, region_labels=labels).score  # folded backbone + head
        prefix = model(prefix_features=model.encode_prefix(x), region_labels=labels).score
    torch.testing.assert_close(prefix, fast, atol=1e-4, rtol=1e-4)
    model.save_pretrained(tmp_path)
    reloaded = RSFIQAForQualityScoring.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(pixel_values=x, region_labels=labels).score, fast)
    model.config.backbone_freeze_bn = True
    model.train()
    assert not model.backbone_head[1].training  # its batch norm follows backbone_freeze_bn
    with pytest.raises(ValueError, match="conv_head"):
        RSFIQAForQualityScoring(tiny_config(backbone_out_indices=[2, 3], backbone_conv_head=True))


def test_conv_head_weights_load_with_the_backbone(tmp_path):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(3)
    classifier = timm.create_model("test_efficientnet", pretrained=False)
    weights = tmp_path / "test_efficientnet.safetensors"
    save_file({k: v.contiguous() for k, v in classifier.state_dict().items()}, str(weights))
    config = tiny_config(use_region_descriptions=False, backbone_out_indices=[3, 4], backbone_conv_head=True)
    model = RSFIQAForQualityScoring(config)
    model.load_pretrained_backbone(str(weights))
    torch.testing.assert_close(model.backbone_head[0].weight, classifier.conv_head.weight)
    torch.testing.assert_close(model.backbone_head[1].running_var, classifier.bn2.running_var)
    torch.testing.assert_close(model.backbone.conv_stem.weight, classifier.conv_stem.weight)


class TestRSFIQASemanticHead(TestRSFIQAWithDescriptions):
    """`semantic_head`: the RSA region tokens also feed the head (round trip, batching, gradients)."""

    def make_config(self):
        return tiny_config(semantic_head=True)


@pytest.mark.parametrize("semantic_head", [False, True])
def test_absolute_levels_reach_the_score_only_with_the_semantic_head(semantic_head):
    """One region: attention cannot re-weight anything (the head's LayerNorm cancels a shared rescaling), so
    without the semantic head an all-"bad" and an all-"excellent" annotation give the same score."""
    torch.manual_seed(0)
    config = tiny_config(semantic_head=semantic_head, rsa_dropout=0.0, head_dropout=0.0)
    model = RSFIQAForQualityScoring(config).eval()
    k, n_dims = config.max_regions, len(config.distortion_dimensions)
    inputs = {
        "pixel_values": torch.randn(1, 3, *config.image_size),
        "region_labels": torch.zeros(1, *config.label_size, dtype=torch.long),
        "region_text_embeds": torch.randn(1, k, config.description_embed_dim),
        "region_annotation_mask": torch.ones(1, k, dtype=torch.bool),
    }
    with torch.no_grad():
        bad = model(**inputs, region_distortion_levels=torch.zeros(1, k, n_dims)).score
        excellent = model(**inputs, region_distortion_levels=torch.ones(1, k, n_dims)).score
    if semantic_head:
        assert (bad - excellent).abs().item() > 1e-3
    else:
        torch.testing.assert_close(bad, excellent, atol=1e-4, rtol=0)
