"""Q-CLIP model: shared model checks on tiny CLIP and SigLIP towers, SCMA wiring, text cache, presets, PE loading."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from conftest import run_remote_script
from model_tester_mixin import ModelTesterMixin

from modeling_rsfiqa.configuration_qclip import PECoreCLIPConfig, QCLIPConfig
from modeling_rsfiqa.factory import create_model, qclip_preset_config
from modeling_rsfiqa.modeling_qclip import (
    PECoreCLIPModel,
    QCLIPForVideoQualityScoring,
    convert_pe_core_state_dict,
)
from modeling_rsfiqa.processing_qclip import QCLIPProcessor, prompt_vocabulary_tokenizer

WORDS = sorted(set("X a video of bad poor fair good excellent quality".split()))


def _tokenizer():
    return prompt_vocabulary_tokenizer(WORDS, model_max_length=16)


def _towers(tok, width=32, text_width=32, layers=3):
    vision = dict(
        hidden_size=width,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
    )
    text = dict(
        hidden_size=text_width,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        vocab_size=len(tok),
        max_position_embeddings=16,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    return vision, text


def tiny_qclip_config(kind: str = "clip", **overrides) -> QCLIPConfig:
    from transformers import CLIPConfig, SiglipConfig

    tok = _tokenizer()
    vision, text = _towers(tok, text_width=overrides.pop("text_width", 32))
    vlm = (
        CLIPConfig(vision_config=vision, text_config=text, projection_dim=24)
        if kind == "clip"
        else SiglipConfig(vision_config=vision, text_config=text)
    )
    config = QCLIPConfig(
        vlm_config=vlm.to_dict(), adapter_dim=8, adapter_layers=2, image_size=[32, 32], **overrides
    )
    return QCLIPProcessor.from_model_config(config, tok).fill_prompt_fields(config)


class _QCLIPTests(ModelTesterMixin):
    model_class = QCLIPForVideoQualityScoring
    output_keys = ("score", "frame_scores", "level_similarity")
    kind = "clip"

    def make_config(self):
        return tiny_qclip_config(self.kind)

    def make_inputs(self, config, batch_size: int = 3) -> dict:
        g = torch.Generator().manual_seed(batch_size)
        return {"pixel_values_videos": torch.randn(batch_size, 4, 3, 32, 32, generator=g)}

    def test_frozen_towers_get_no_gradient(self):
        model = self.make_model()
        model.train()
        out = model(**self.training_inputs(model.config, batch_size=4))
        out.loss.backward()
        assert all(p.grad is None for p in model.vlm.parameters())
        assert not any(p.requires_grad for p in model.vlm.parameters())
        trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
        assert "vlm" not in trainable
        assert trainable >= {
            "core",
            "vision_adapters",
            "prompt_context",
            "level_weights",
            "alpha_vision",
            "beta_text",
        }

    def test_output_shapes_and_frame_scores(self):
        model = self.make_model()
        with torch.no_grad():
            out = model(**self.make_inputs(model.config, batch_size=2))
        assert out.score.shape == (2,) and out.logits.shape == (2,)
        assert out.frame_scores.shape == (2, 4) and out.frame_level_similarity.shape == (2, 4, 5)
        assert out.text_embeds.shape[0] == 5 and out.video_embeds.shape[0] == 2
        torch.testing.assert_close(out.video_embeds.norm(dim=-1), torch.ones(2))
        # a video of one repeated frame scores exactly as that frame does
        frame = torch.randn(1, 1, 3, 32, 32)
        with torch.no_grad():
            still = model(pixel_values_videos=frame.expand(1, 4, 3, 32, 32))
        torch.testing.assert_close(still.score, still.frame_scores[:, 0], atol=1e-4, rtol=0)

    def test_frame_mask_excludes_padding(self):
        model = self.make_model()
        x = torch.randn(1, 4, 3, 32, 32)
        with torch.no_grad():
            short = model(pixel_values_videos=x[:, :2])
            padded = model(pixel_values_videos=x, video_frame_mask=torch.tensor([[True, True, False, False]]))
        torch.testing.assert_close(short.score, padded.score, atol=1e-4, rtol=0)

    def test_text_features_cached_and_invalidated(self):
        model = self.make_model()
        calls = []
        handle = model.vlm.text_model.register_forward_hook(lambda *a: calls.append(1))
        x = self.make_inputs(model.config, batch_size=1)
        with torch.no_grad():
            first = model(**x).score
            model(**x)
            assert len(calls) == 1  # constant prompts: the text tower ran once
            model.prompt_context.add_(0.5)  # a trainable text-side weight changed
            changed = model(**x).score
        assert len(calls) == 2 and not torch.allclose(first, changed)
        model.train()
        model(**self.training_inputs(model.config, batch_size=2)).loss.backward()
        model(**self.training_inputs(model.config, batch_size=2))
        assert len(calls) == 4  # with gradients the prompts are always re-encoded
        handle.remove()


class TestQCLIPWithCLIP(_QCLIPTests):
    kind = "clip"

    def test_reference_sharing_and_counts(self):
        model = self.make_model()
        assert model.share_layer_adapters and model.text_adapters is None
        report = model.trainable_parameter_report()
        # 2 layers x (Down 32x8+8, Up 8x32+32, LN 64) shared by both towers; core 2 x (8x8+8)
        assert report["escma_layers"] == 2 * (32 * 8 + 8 + 8 * 32 + 32 + 64)
        assert report["escma_core"] == 2 * (8 * 8 + 8)
        assert report["pscma"] == (32 * 8 + 8) + (8 * 8 + 8) + (8 * 24 + 24)
        assert report["prompt_context"] == 3 * 32 and report["level_weights"] == 5 and report["scales"] == 4
        assert report["total_trainable"] == sum(
            v for k, v in report.items() if k not in ("total_trainable", "frozen_vlm")
        )

    def test_unequal_widths_use_separate_layer_adapters(self):
        config = tiny_qclip_config("clip", text_width=16)
        model = QCLIPForVideoQualityScoring(config)
        assert not model.share_layer_adapters and model.text_adapters is not None
        assert model.text_projection_adapter is not None
        with pytest.raises(ValueError, match="equal tower widths"):
            QCLIPForVideoQualityScoring(tiny_qclip_config("clip", text_width=16, share_layer_adapters=True))

    def test_projection_adapter_off(self):
        model = QCLIPForVideoQualityScoring(tiny_qclip_config("clip", use_projection_adapter=False))
        assert model.projection_adapter is None
        assert model.trainable_parameter_report()["scales"] == 2

    def test_context_starts_from_the_context_word_embedding(self):
        model = self.make_model()
        emb = model.vlm.text_model.embeddings.token_embedding.weight
        x_id = _tokenizer().convert_tokens_to_ids("X")
        torch.testing.assert_close(model.prompt_context, emb[x_id].expand(3, -1))


class TestQCLIPWithSiglip(_QCLIPTests):
    kind = "siglip"

    def test_text_pooling_matches_siglip(self):
        model = self.make_model()
        ids = torch.tensor(model.config.prompt_input_ids)
        with torch.no_grad():
            ref = model.vlm.text_model(input_ids=ids).pooler_output
            ours = model._towers.text_projection(model.vlm)(model._towers.text_pooled(model.vlm, ids, None))
        torch.testing.assert_close(ours, ref)


# ---------------------------------------------------------------------------------------------------- presets
def test_tiny_preset_through_the_factory(tmp_path):
    model, processor = create_model("qclip-tiny")
    assert isinstance(model, QCLIPForVideoQualityScoring) and isinstance(processor, QCLIPProcessor)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    again, proc2 = create_model(str(tmp_path))
    x = torch.randn(1, 8, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x).score, again(x).score)
    assert proc2.video_processor.num_frames == 8


def test_paper_preset_shapes_and_parameter_counts():
    """PE-Core-L14-336 built on the meta device: the reference's 1.908 M trainable parameters."""
    config = qclip_preset_config(
        "qclip-pe-core-l14-336",
        prompt_input_ids=[[49406, 343, 343, 343, 320, 1455, 539, 2103, 3027, 49407] + [0] * 22] * 5,
        prompt_attention_mask=[[1] * 10 + [0] * 22] * 5,
        prompt_context_positions=[1, 2, 3],
    )
    assert isinstance(config.vlm_config, PECoreCLIPConfig)
    with torch.device("meta"):
        model = QCLIPForVideoQualityScoring(config)
    report = model.trainable_parameter_report()
    assert report["total_trainable"] == 1_907_977
    assert model.vision_positions == list(range(18, 24)) and model.text_positions == list(range(18, 24))
    assert model.vlm.vision_model.head.weight.shape == (1024, 1024)
    config.adapter_dim = 8
    with torch.device("meta"):
        small = QCLIPForVideoQualityScoring(config)
    assert small.trainable_parameter_report()["total_trainable"] == 137_497  # ~ the paper's 0.14 M


def _tiny_pe_config() -> PECoreCLIPConfig:
    tok = _tokenizer()
    _, text = _towers(tok, text_width=32, layers=2)
    return PECoreCLIPConfig(
        vision_model_name="vit_pe_core_tiny_patch16_384",
        vision_kwargs={"img_size": 32, "depth": 2, "embed_dim": 32, "num_heads": 2},
        text_config={**text, "hidden_act": "gelu"},
        projection_dim=24,
    )


def _to_meta_format(model: PECoreCLIPModel, gamma: float = 0.5) -> dict[str, torch.Tensor]:
    """Meta's PE checkpoint layout (text part written by hand, LayerScale included; vision via the inverse of
    timm's renames) -- the opposite direction of convert_pe_core_state_dict."""
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    out: dict[str, torch.Tensor] = {}
    t = "text_model."
    out["token_embedding.weight"] = sd[t + "embeddings.token_embedding.weight"]
    out["positional_embedding"] = sd[t + "embeddings.position_embedding.weight"]
    out["ln_final.weight"], out["ln_final.bias"] = (
        sd[t + "final_layer_norm.weight"],
        sd[t + "final_layer_norm.bias"],
    )
    out["text_projection"] = sd["text_projection.weight"].t()
    out["logit_scale"] = sd["logit_scale"]
    for i in range(model.config.text_config.num_hidden_layers):
        s, d = f"{t}encoder.layers.{i}.", f"transformer.resblocks.{i}."
        out[d + "attn.in_proj_weight"] = torch.cat([sd[s + f"self_attn.{n}_proj.weight"] for n in "qkv"])
        out[d + "attn.in_proj_bias"] = torch.cat([sd[s + f"self_attn.{n}_proj.bias"] for n in "qkv"])
        g = torch.full_like(sd[s + "self_attn.out_proj.bias"], gamma)
        out[d + "attn.out_proj.weight"] = sd[s + "self_attn.out_proj.weight"] / gamma
        out[d + "attn.out_proj.bias"] = sd[s + "self_attn.out_proj.bias"] / gamma
        out[d + "ls_1.gamma"] = g
        out[d + "mlp.c_fc.weight"], out[d + "mlp.c_fc.bias"] = (
            sd[s + "mlp.fc1.weight"],
            sd[s + "mlp.fc1.bias"],
        )
        out[d + "mlp.c_proj.weight"], out[d + "mlp.c_proj.bias"] = (
            sd[s + "mlp.fc2.weight"],
            sd[s + "mlp.fc2.bias"],
        )
        for a, b in (("ln_1", "layer_norm1"), ("ln_2", "layer_norm2")):
            out[d + f"{a}.weight"], out[d + f"{a}.bias"] = sd[s + f"{b}.weight"], sd[s + f"{b}.bias"]
    v = {k.removeprefix("vision_model."): w for k, w in sd.items() if k.startswith("vision_model.")}
    renames = [
        ("patch_embed.proj", "conv1"),
        ("blocks.", "transformer.resblocks."),
        ("norm_pre", "ln_pre"),
        ("gamma_1", "ls_1.gamma"),
        ("gamma_2", "ls_2.gamma"),
        ("attn.qkv.", "attn.in_proj_"),
        ("attn.proj", "attn.out_proj"),
        ("mlp.fc1", "mlp.c_fc"),
        ("mlp.fc2", "mlp.c_proj"),
        (".norm1", ".ln_1"),
        (".norm2", ".ln_2"),
    ]
    for k, w in v.items():
        if k.startswith("attn_pool."):
            rest = k.removeprefix("attn_pool.")
            if rest.startswith(("q.", "kv.")):
                continue
            rest = rest.replace("latent", "probe").replace("norm", "layernorm").replace("mlp.fc1", "mlp.c_fc")
            rest = rest.replace("mlp.fc2", "mlp.c_proj")
            rest = "attn.out_proj." + rest.removeprefix("proj.") if rest.startswith("proj.") else rest
            out["visual.attn_pool." + rest] = w
            continue
        if k == "cls_token":
            out["visual.class_embedding"] = w.reshape(-1)
            continue
        if k == "pos_embed":
            out["visual.positional_embedding"] = w[0]
            continue
        if k == "head.weight":
            out["visual.proj"] = w.t()
            continue
        if k == "head.bias":
            continue
        if k.startswith("norm."):
            out["visual." + k.replace("norm.", "ln_post.")] = w
            continue
        for a, b in renames:
            k = k.replace(a, b)
        out["visual." + k] = w
    for part in ("weight", "bias"):
        out[f"visual.attn_pool.attn.in_proj_{part}"] = torch.cat(
            [v[f"attn_pool.q.{part}"], v[f"attn_pool.kv.{part}"]]
        )
    return out


def test_pe_core_checkpoint_conversion_round_trip(tmp_path):
    torch.manual_seed(0)
    model = PECoreCLIPModel(_tiny_pe_config()).eval()
    meta = _to_meta_format(model)
    converted = convert_pe_core_state_dict(meta, model)
    own = model.state_dict()
    assert set(converted) == set(own), (set(own) - set(converted), set(converted) - set(own))
    for key, value in converted.items():
        torch.testing.assert_close(value, own[key], msg=key)
    # and through the file loader, into a fresh model
    path = tmp_path / "PE-Core-tiny.pt"
    torch.save(meta, path)
    fresh = PECoreCLIPModel(_tiny_pe_config()).eval()
    from modeling_rsfiqa.modeling_qclip import load_pe_core_checkpoint

    load_pe_core_checkpoint(fresh, path)
    ids = torch.tensor([[1, 4, 4, 4, 5, 2, 0]])
    with torch.no_grad():
        torch.testing.assert_close(fresh.get_text_features(ids), model.get_text_features(ids))
        img = torch.randn(1, 3, 32, 32)
        torch.testing.assert_close(fresh.get_image_features(img), model.get_image_features(img))


def test_qclip_on_pe_core_towers():
    config = QCLIPConfig(
        vlm_config=_tiny_pe_config().to_dict(), adapter_dim=8, adapter_layers=2, image_size=[32, 32]
    )
    QCLIPProcessor.from_model_config(config, _tokenizer()).fill_prompt_fields(config)
    model = QCLIPForVideoQualityScoring(config)
    model.train()
    out = model(pixel_values_videos=torch.randn(3, 2, 3, 32, 32), labels=torch.tensor([1.0, 3.0, 2.0]))
    out.loss.backward()
    missing = [
        n
        for n, p in model.named_parameters()
        if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)
    ]
    assert not missing, missing


# ---------------------------------------------------------------------------------------------------- remote code
REMOTE_SCRIPT = textwrap.dedent(
    """
    import importlib.abc, json, sys
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("modeling_rsfiqa", "rsfiqa"):
                raise ImportError("this environment does not have rsfiqa: " + name)
    sys.meta_path.insert(0, Block())
    import torch
    from transformers import AutoModel, AutoProcessor
    folder, video = sys.argv[1], sys.argv[2]
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    inputs = processor(videos=video)
    with torch.no_grad():
        score = model(pixel_values_videos=inputs["pixel_values_videos"]).score.item()
    from transformers import pipeline
    pipe = pipeline(model=folder, trust_remote_code=True)
    piped = pipe(video)["score"]
    print(json.dumps({"model": type(model).__module__ + "." + type(model).__name__, "pipeline": type(pipe).__name__,
                      "piped": piped,
                      "processor": type(processor).__name__,
                      "video_processor": type(processor.video_processor).__name__, "score": score}))
    """
)


@pytest.mark.slow
def test_remote_code_without_the_package(tmp_path):
    from qclip_testing import write_video
    from transformers import pipeline

    model, processor = create_model("qclip-tiny")
    staging, folder = tmp_path / "staging", tmp_path / "hub-folder"
    model.save_pretrained(staging)
    processor.save_pretrained(staging)
    pipeline("video-quality", model=str(staging)).save_pretrained(
        folder
    )  # model + processor + custom pipeline
    assert (
        "default" not in json.loads((folder / "config.json").read_text())["custom_pipelines"]["video-quality"]
    )
    assert json.loads((folder / "config.json").read_text())["auto_map"]["AutoModel"] == (
        "modeling_qclip.QCLIPForVideoQualityScoring"
    )
    video = write_video(tmp_path / "clip.mp4", num_frames=12)
    with torch.no_grad():
        expected = model(pixel_values_videos=processor(videos=str(video))["pixel_values_videos"]).score.item()
    result = run_remote_script(REMOTE_SCRIPT, tmp_path, str(folder), str(video))
    assert result["model"].startswith("transformers_modules.") and result["model"].endswith(
        "QCLIPForVideoQualityScoring"
    )
    assert result["processor"] == "QCLIPProcessor" and result["video_processor"] == "QCLIPVideoProcessor"
    assert result["score"] == pytest.approx(expected, abs=1e-5)
    assert result["pipeline"] == "VideoQualityPipeline"
    assert result["piped"] == pytest.approx(min(max(expected, 0.0), 100.0), abs=1e-5)
