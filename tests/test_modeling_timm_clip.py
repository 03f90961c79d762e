"""TimmCLIPModel (frozen timm CNN + frozen random CLIP text tower) inside Q-CLIP, on a tiny random version."""

from __future__ import annotations

import pytest
import torch
from conftest import run_remote_script
from safetensors.torch import save_file

from modeling_rsfiqa.configuration_qclip import QCLIPConfig
from modeling_rsfiqa.configuration_timm_clip import TimmCLIPConfig
from modeling_rsfiqa.factory import qclip_preset_config
from modeling_rsfiqa.modeling_qclip import QCLIPForVideoQualityScoring
from modeling_rsfiqa.modeling_timm_clip import ChannelsLastBlock, TimmCLIPModel
from modeling_rsfiqa.processing_qclip import QCLIPProcessor, prompt_vocabulary_tokenizer

WORDS = sorted(set("X a video of bad poor fair good excellent quality".split()))


def tiny_config(**overrides) -> tuple[QCLIPConfig, QCLIPProcessor]:
    tok = prompt_vocabulary_tokenizer(WORDS, model_max_length=16)
    text = dict(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        vocab_size=len(tok),
        max_position_embeddings=16,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    vlm = TimmCLIPConfig(vision_model_name="mobilenetv2_035", text_config=text, projection_dim=12)
    config = QCLIPConfig(
        vlm_config=vlm,
        tokenizer_name_or_path="prompt-vocabulary",
        adapter_dim=8,
        adapter_layers=2,
        image_size=[32, 32],
        **overrides,
    )
    processor = QCLIPProcessor.from_model_config(config, tok)
    return processor.fill_prompt_fields(config), processor


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    config, processor = tiny_config()
    return QCLIPForVideoQualityScoring(config).eval(), processor


def test_cnn_stage_is_adapted_channels_last(tiny):
    model, _ = tiny
    blocks = model.vlm.vision_model.blocks
    assert all(isinstance(b, ChannelsLastBlock) for b in blocks)
    width = blocks[0].hidden_size  # stage 5 of MobileNetV2-0.35: 56 channels
    assert [a.down.in_features for a in model.vision_adapters] == [width, width]
    assert model.text_adapters is not None  # text width 16 != 56: separate Down/Up/LN, ONE shared core


def test_forward_backward_trains_only_adapters_prompts_and_w(tiny):
    model, _ = tiny
    model.train()
    out = model(torch.randn(3, 4, 3, 32, 32), labels=torch.tensor([10.0, 50.0, 90.0]))
    out.loss.backward()
    assert out.score.shape == (3,) and out.frame_scores.shape == (3, 4)
    assert all(p.grad is None for p in model.vlm.parameters())
    assert model.prompt_context.grad.abs().sum() > 0 and model.core[0].weight.grad.abs().sum() > 0
    assert not model.vlm.training  # the frozen towers stay in eval mode (BatchNorm statistics)
    model.zero_grad(set_to_none=True)
    model.eval()


def test_prefix_features_give_the_same_output(tiny):
    model, _ = tiny
    x = torch.randn(2, 3, 3, 32, 32)
    with torch.no_grad():
        full = model(x).logits
        prefix = model.vlm.vision_model.prefix(x.flatten(0, 1)).unflatten(0, (2, 3))
        cached = model(prefix).logits
    torch.testing.assert_close(full, cached)


def test_text_pooling_at_eos(tiny):
    """eos_token_id == 2 (word-level vocabulary) must still pool at <eos>, not at the highest token id."""
    model, _ = tiny
    config = model.config
    ids = torch.tensor(config.prompt_input_ids)
    assert model.vlm.text_model.config.eos_token_id == 2
    with torch.no_grad():
        out = model.vlm.text_model(input_ids=ids, attention_mask=torch.tensor(config.prompt_attention_mask))
    eos = (ids == 2).int().argmax(-1)
    assert (eos > ids.argmax(-1)).all()  # the legacy argmax pooling would have picked an earlier word
    torch.testing.assert_close(out.pooler_output, out.last_hidden_state[torch.arange(5), eos])


def test_text_tower_is_seeded():
    a, b = TimmCLIPModel(tiny_config()[0].vlm_config), TimmCLIPModel(tiny_config()[0].vlm_config)
    for (k, v), w in zip(a.text_model.state_dict().items(), b.text_model.state_dict().values()):
        torch.testing.assert_close(v, w, msg=k)


def test_load_timm_weights(tmp_path):
    import timm

    config = tiny_config()[0].vlm_config
    donor = timm.create_model(config.vision_model_name, pretrained=False, num_classes=0).eval()
    save_file({k: v.contiguous() for k, v in donor.state_dict().items()}, str(tmp_path / "w.safetensors"))
    model = TimmCLIPModel(config)
    model.load_vision_weights(tmp_path / "w.safetensors")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.vision_model(x).pooler_output, donor(x))
    save_file({"other": torch.zeros(1)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match="does not fit"):
        model.load_vision_weights(tmp_path / "bad.safetensors")


def test_save_load_round_trip(tiny, tmp_path):
    model, processor = tiny
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = QCLIPForVideoQualityScoring.from_pretrained(tmp_path).eval()
    assert isinstance(loaded.vlm, TimmCLIPModel)
    x = torch.randn(1, 2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, loaded(x).logits)


def test_mobile_preset():
    config = qclip_preset_config("qclip-mobile")
    assert isinstance(config.vlm_config, TimmCLIPConfig)
    assert config.vlm_config.vision_model_name == "mobilenetv2_100"


@pytest.mark.slow
def test_remote_code_without_the_package(tiny, tmp_path):
    from qclip_testing import write_video
    from test_modeling_qclip import REMOTE_SCRIPT
    from transformers import pipeline

    model, processor = tiny
    model.save_pretrained(tmp_path / "staging")
    processor.save_pretrained(tmp_path / "staging")
    pipeline("video-quality", model=str(tmp_path / "staging")).save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "modeling_timm_clip.py").is_file()
    video = write_video(tmp_path / "clip.mp4", num_frames=12)
    with torch.no_grad():
        expected = model(pixel_values_videos=processor(videos=str(video))["pixel_values_videos"]).score.item()
    result = run_remote_script(REMOTE_SCRIPT, tmp_path, str(tmp_path / "m"), str(video))
    assert result["model"].endswith("QCLIPForVideoQualityScoring")
    assert result["score"] == pytest.approx(expected, abs=1e-5)
