"""Reference SEAGULL checkpoint -> ours: every key mapped or documented as unused, strict loads."""

from __future__ import annotations

import re

import pytest
import timm
import torch

from modeling_rsfiqa.convert_seagull_checkpoint import UNUSED, convert_state_dict
from modeling_rsfiqa.factory import create_model, preset_config
from modeling_rsfiqa.modeling_seagull import SeagullForConditionalGeneration

TRUNK = "model.vision_tower.vision_tower.visual.trunk."


def reference_state_dict(config, make) -> dict[str, torch.Tensor]:
    """A state dict with the reference's key names and shape rules (``seagull/model/layer.py``,
    ``seagull_llama.py``, Osprey's open_clip ConvNeXt tower) for ``config``'s sizes; ``make(shape)`` makes
    a tensor (random, or on the meta device)."""
    e, d = config.mfe_hidden_size, config.token_size
    sd: dict[str, torch.Tensor] = {}

    def linear(name, i, o, bias=True):
        sd[f"{name}.weight"] = make((o, i))
        if bias:
            sd[f"{name}.bias"] = make((o,))

    # the LLM (LlamaForCausalLM names; the reference vocabulary has no <image> row)
    text = config.text_config
    with torch.device("meta"):
        llm = SeagullForConditionalGeneration(config).language_model
    for key, value in llm.state_dict().items():
        shape = tuple(value.shape)
        if key in ("model.embed_tokens.weight", "lm_head.weight"):
            shape = (text.vocab_size - 1, shape[1])
        sd[key] = make(shape)
    sd["model.layers.0.self_attn.rotary_emb.inv_freq"] = make(
        (text.hidden_size // text.num_attention_heads // 2,)
    )
    # projector (mlp2x_gelu: Sequential(Linear, GELU, Linear))
    c4 = config.vision_feature_channels[config.projector_feature_level]
    linear("model.mm_projector.0", c4, d)
    linear("model.mm_projector.2", d, d)
    # open_clip TimmModel: the full timm trunk (with its head norm) + the MLP projection head
    with torch.device("meta"):
        trunk = timm.create_model(config.vision_backbone, num_classes=0, **config.vision_backbone_kwargs)
    for key, value in trunk.state_dict().items():
        sd[TRUNK + key] = make(tuple(value.shape))
    c5 = config.vision_feature_channels[-1]
    linear("model.vision_tower.vision_tower.visual.head.mlp.fc1", c5, 2 * c5)
    linear("model.vision_tower.vision_tower.visual.head.mlp.fc2", 2 * c5, c5, bias=False)
    # MaskExtractor
    p = "mask_extractor"
    mask_shape = 7
    linear(f"{p}.feat_linear", e, d)
    linear(f"{p}.cross_feat_linear", e, d)
    linear(f"{p}.mask_linear.layers.0", mask_shape * mask_shape, e)
    linear(f"{p}.mask_linear.layers.1", e, e)
    linear(f"{p}.mask_linear.layers.2", e, d)
    for proj in ("q", "k", "v"):
        linear(f"{p}.cross_att_res.self_attn.{proj}_proj", e, e)
        linear(f"{p}.cross_att_res.cross_attn.{proj}_proj", e, e // config.mfe_attention_downsample_rate)
    linear(f"{p}.cross_att_res.self_attn.out_proj", e, e)
    linear(f"{p}.cross_att_res.cross_attn.out_proj", e // config.mfe_attention_downsample_rate, e)
    for norm in ("norm1", "norm2"):
        sd[f"{p}.cross_att_res.{norm}.weight"], sd[f"{p}.cross_att_res.{norm}.bias"] = make((e,)), make((e,))
    linear(f"{p}.cross_att_res.mlp.lin1", e, config.mfe_mlp_dim)
    linear(f"{p}.cross_att_res.mlp.lin2", config.mfe_mlp_dim, e)
    for level, (c, s) in enumerate(zip(config.vision_feature_channels, config.feature_sizes)):
        linear(f"{p}.res{level + 2}", c, e)
        linear(f"{p}.g_res{level + 2}", s * s, e)
    linear(f"{p}.final_mlp", 2 * d, d)
    lc = config.local_channels
    sd[f"{p}.global_vit.0.weight"], sd[f"{p}.global_vit.0.bias"] = make((lc, 3, 1, 1)), make((lc,))
    sd[f"{p}.global_vit.3.weight"], sd[f"{p}.global_vit.3.bias"] = make((1, lc, 1, 1)), make((1,))
    g = config.local_grid_size**2
    for proj in ("q", "k", "v", "out"):
        linear(f"{p}.sa.{proj}_proj", g, g)
    h = config.local_mlp_hidden_size
    linear(f"{p}.mlp.layers.0", g, h)
    linear(f"{p}.mlp.layers.1", h, h)
    linear(f"{p}.mlp.layers.2", h, d)
    return sd


def _random(shape):
    return torch.randn(shape)


def test_tiny_reference_checkpoint_converts_and_loads_strict():
    model, _ = create_model("seagull-tiny")
    config = model.config
    reference = reference_state_dict(config, _random)
    converted, report = convert_state_dict(reference, config.text_config.vocab_size)
    assert not report["unknown"], report["unknown"]
    assert len(report["mapped"]) + len(report["unused"]) == len(reference)  # every key accounted for
    for key in report["unused"]:
        assert any(re.fullmatch(p, key) for p in UNUSED)
    assert {k.split(".")[1] for k in report["unused"] if k.startswith("mask_extractor")} == {
        "mask_linear",
        "sa",
    }
    result = model.load_state_dict(converted, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    sd = model.state_dict()
    torch.testing.assert_close(
        sd["mask_extractor.level_projections.0.weight"], reference["mask_extractor.res2.weight"]
    )
    torch.testing.assert_close(
        sd["mask_extractor.channel_key_projections.3.weight"], reference["mask_extractor.g_res5.weight"]
    )
    torch.testing.assert_close(
        sd["mask_extractor.block.fc2.bias"], reference["mask_extractor.cross_att_res.mlp.lin2.bias"]
    )
    torch.testing.assert_close(
        sd["mask_extractor.local_encoder.out_proj.weight"], reference["mask_extractor.sa.out_proj.weight"]
    )
    torch.testing.assert_close(
        sd["vision_tower.trunk.stages_2.blocks.0.conv_dw.weight"],
        reference[TRUNK + "stages.2.blocks.0.conv_dw.weight"],
    )
    torch.testing.assert_close(
        sd["multi_modal_projector.linear_2.weight"], reference["model.mm_projector.2.weight"]
    )
    emb = sd["language_model.model.embed_tokens.weight"]
    ref_emb = reference["model.embed_tokens.weight"]
    torch.testing.assert_close(emb[:-1], ref_emb)
    torch.testing.assert_close(emb[-1], ref_emb.mean(0))  # the <image> placeholder row
    assert sd["language_model.lm_head.weight"][-1].abs().sum() == 0
    # the converted model runs
    assert torch.isfinite(model.mask_extractor.local_encoder(torch.randn(2, 3, 32, 32))).all()


def test_unknown_keys_are_reported_not_dropped():
    _, report = convert_state_dict(
        {"model.something_new.weight": torch.zeros(1), "lm_head.weight": torch.zeros(3, 2)}
    )
    assert report["unknown"] == ["model.something_new.weight"]


@pytest.mark.parametrize("prefix", ["", "model."])
def test_mask_extractor_under_either_prefix(prefix):
    converted, report = convert_state_dict({f"{prefix}mask_extractor.g_res4.weight": torch.zeros(2, 2)})
    assert list(converted) == ["mask_extractor.channel_key_projections.2.weight"] and not report["unknown"]


def test_paper_scale_shape_rules_on_meta():
    """The reference's hard-coded sizes (Linear(192, 1024), Linear(16384, 1024), 4096-wide LLM, ...) land on the
    seagull-7b preset's shapes exactly (on the meta device: no memory, no download)."""
    config = preset_config("seagull-7b")
    reference = reference_state_dict(config, lambda shape: torch.empty(shape, device="meta"))
    assert reference["mask_extractor.res2.weight"].shape == (1024, 192)
    assert reference["mask_extractor.g_res2.weight"].shape == (1024, 16384)
    assert reference["mask_extractor.sa.v_proj.weight"].shape == (1024, 1024)
    assert reference["mask_extractor.mlp.layers.0.weight"].shape == (512, 1024)
    assert reference["model.mm_projector.0.weight"].shape == (4096, 768)
    converted, report = convert_state_dict(reference, config.text_config.vocab_size)
    assert not report["unknown"]
    with torch.device("meta"):
        model = SeagullForConditionalGeneration(config)
    result = model.load_state_dict(converted, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys
