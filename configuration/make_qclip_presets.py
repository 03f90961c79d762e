"""Regenerate the Q-CLIP model presets in configuration/models/qclip-*.json from QCLIPConfig.

    python configuration/make_qclip_presets.py

* ``qclip-pe-core-l14-336``: the paper's model. Vision: PE-Core-L14-336 (timm ``vit_pe_core_large_patch14_336``:
  ViT-L/14 at 336 px, 24 blocks of width 1024, RoPE + absolute positions, attention pooling, 1024-d projection);
  text: PE's CLIP text transformer (24 blocks of width 1024, 16 heads, 32 positions, GELU, EOT pooling, CLIP
  BPE vocabulary of 49408, 1024-d projection). Weights: Meta's ``PE-Core-L14-336.pt`` (Hub
  ``facebook/PE-Core-L14-336``), read by ``modeling_qclip.load_pretrained_vlm`` /
  ``load_pe_core_checkpoint``; tokenizer: CLIP's BPE (``openai/clip-vit-large-patch14``) truncated to 32
  tokens. E-SCMA in the last 6 blocks of both towers (core 128), P-SCMA on, frames squashed to 336x336,
  normalised with mean = std = 0.5 (the reference's transform). Neither the weights nor the tokenizer can be
  downloaded on an offline machine: the prompt fields are filled when the tokenizer is available.
* ``qclip-tiny``: a tiny random CLIP (2+2 blocks of width 32) with the prompt-vocabulary tokenizer, for tests.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import CLIPConfig, CLIPTextConfig

from modeling_rsfiqa.configuration_qclip import PECoreCLIPConfig, QCLIPConfig
from modeling_rsfiqa.processing_qclip import prompt_vocabulary_tokenizer

OUT = Path(__file__).resolve().parent / "models"

PE_CORE_L14_336_TEXT = dict(
    vocab_size=49408,
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=24,
    num_attention_heads=16,
    max_position_embeddings=32,
    hidden_act="gelu",
    layer_norm_eps=1e-5,
    projection_dim=1024,
    bos_token_id=49406,
    eos_token_id=49407,
    pad_token_id=0,
)


def tiny_vlm_config(vocab_size: int, bos: int, eos: int, pad: int) -> CLIPConfig:
    return CLIPConfig(
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=32,
            patch_size=8,
        ),
        text_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            vocab_size=vocab_size,
            max_position_embeddings=16,
            bos_token_id=bos,
            eos_token_id=eos,
            pad_token_id=pad,
        ),
        projection_dim=24,
    )


def presets() -> dict[str, QCLIPConfig]:
    from modeling_rsfiqa.processing_qclip import QCLIPProcessor

    pe = PECoreCLIPConfig(
        vision_model_name="vit_pe_core_large_patch14_336",
        text_config=CLIPTextConfig(**PE_CORE_L14_336_TEXT).to_dict(),
        projection_dim=1024,
    )
    paper = QCLIPConfig(
        vlm_config=pe.to_dict(),
        vlm_name_or_path="facebook/PE-Core-L14-336/PE-Core-L14-336.pt",
        tokenizer_name_or_path="openai/clip-vit-large-patch14",
        adapter_dim=128,
        adapter_layers=6,
        share_layer_adapters=True,
        image_size=[336, 336],
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    config = QCLIPConfig(
        adapter_dim=8, adapter_layers=2, image_size=[32, 32], tokenizer_name_or_path="prompt-vocabulary"
    )
    words = sorted({w for p in config.prompts for w in p.split()})
    tok = prompt_vocabulary_tokenizer(words, model_max_length=16)
    config.vlm_config = tiny_vlm_config(len(tok), tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)
    tiny = QCLIPProcessor.from_model_config(config, tok).fill_prompt_fields(config)
    return {"qclip-pe-core-l14-336": paper, "qclip-tiny": tiny}


def main() -> None:
    for name, config in presets().items():
        data = config.to_dict()
        for key in ("transformers_version", "architectures"):
            data.pop(key, None)
        path = OUT / f"{name}.json"
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
