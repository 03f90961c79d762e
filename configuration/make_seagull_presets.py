"""Regenerate the SEAGULL presets in configuration/models/seagull-*.json.

    python configuration/make_seagull_presets.py

* ``seagull-7b``: the released checkpoint (Zevin2023/SEAGULL-7B, converted with
  ``examples/convert_seagull_checkpoint.py``): open_clip's CLIP ConvNeXt-L (``convnext_large_d_320`` vision
  tower, timm ``convnext_large`` trunk, drop-path 0.1) run at 512x512, the ``mlp2x_gelu`` projector on res4
  (768 -> 4096), the MFE of ``seagull/model/layer.py`` (1024 wide, 8 heads, MLP 2048) and a Vicuna-7B-v1.5
  lineage Llama (4096 hidden, 32 layers, 32 heads, 11008 MLP). The vocabulary is Llama's 32000 plus the
  reference's added ``<im_patch>``, ``<global>``, ``<local>`` and our ``<image>`` placeholder (the reference
  used the index -200 instead); the converter takes the real sizes from the checkpoint's tensors.
* ``seagull-tiny``: the same architecture at toy size (tests; ~0.25 M parameters, a 400-token BPE tokenizer
  trained in code).
* ``seagull-region-mobile``: the small ROI model's architecture (MobileNetV2 multi-level features + MFE +
  heads) with the ImageNet MobileNetV2 of ``../shared/weights``; training and shipping it is a separate job.
"""

from __future__ import annotations

from pathlib import Path

from modeling_rsfiqa.configuration_seagull import SeagullConfig, SeagullRegionConfig

OUT = Path(__file__).resolve().parent / "models"

VICUNA_7B = {  # lmsys/vicuna-7b-v1.5 config.json (Llama-2-7B architecture)
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
    "vocab_size": 32004,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
    "tie_word_embeddings": False,
}

TINY_LLAMA = {
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
    "vocab_size": 400,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 3,
    "tie_word_embeddings": False,
}


def presets() -> dict[str, SeagullConfig]:
    return {
        "seagull-7b": SeagullConfig(
            vision_backbone="convnext_large",
            vision_backbone_kwargs={"drop_path_rate": 0.1},
            text_config=dict(VICUNA_7B),
            tokenizer_name_or_path="Zevin2023/SEAGULL-7B",
            vision_pretrained=None,
        ),
        "seagull-tiny": SeagullConfig(
            vision_backbone="convnext_atto",
            vision_backbone_kwargs={"depths": [1, 1, 1, 1], "dims": [8, 16, 32, 64]},
            vision_feature_channels=[8, 16, 32, 64],
            image_size=64,
            mfe_hidden_size=32,
            mfe_num_heads=2,
            mfe_mlp_dim=64,
            local_crop_size=32,
            local_pool=2,
            local_mlp_hidden_size=32,
            crop_source_max_height=None,
            text_config=dict(TINY_LLAMA),
        ),
        "seagull-region-mobile": SeagullRegionConfig(
            vision_backbone="mobilenetv2_100",
            vision_backbone_kwargs={"pad_type": "same"},
            vision_pretrained="../shared/weights/mobilenetv2_100.tf2ptq_in1k.safetensors",
        ),
    }


def main() -> None:
    for name, config in presets().items():
        config.to_json_file(str(OUT / f"{name}.json"), use_diff=False)
        print("wrote", OUT / f"{name}.json")


if __name__ == "__main__":
    main()
