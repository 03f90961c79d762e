"""Regenerate the model presets in configuration/models/*.json from RSFIQAConfig.

    python configuration/make_presets.py

The paper-scale presets are written for the real checkpoints' names and shapes (SAM ViT-B/H from
facebook/sam-vit-*, Qwen2.5-VL-7B-Instruct, timm ResNet-50 / Swin-B), even though none of them can be
downloaded on an offline machine; `RSFIQAForQualityScoring(config)` then builds the right shapes and
`load_pretrained_backbone("timm")` / `load_pretrained_segmenter("facebook/sam-vit-huge")` fill them.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import Qwen2_5_VLConfig, SamConfig

from modeling_rsfiqa.configuration_rsfiqa import RSFIQAConfig

OUT = Path(__file__).resolve().parent / "models"

SAM_VIT = {  # facebook/sam-vit-{base,huge}: vision tower sizes; prompt encoder / mask decoder are shared
    "base": {
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "global_attn_indexes": [2, 5, 8, 11],
    },
    "huge": {
        "hidden_size": 1280,
        "num_hidden_layers": 32,
        "num_attention_heads": 16,
        "global_attn_indexes": [7, 15, 23, 31],
    },
}

QWEN25_VL_7B = {  # Qwen/Qwen2.5-VL-7B-Instruct config.json (text + vision towers)
    "text_config": {
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "vocab_size": 152064,
        "max_position_embeddings": 128000,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
        "tie_word_embeddings": False,
        "hidden_act": "silu",
        "sliding_window": 32768,
    },
    "vision_config": {
        "depth": 32,
        "hidden_size": 1280,
        "intermediate_size": 3420,
        "num_heads": 16,
        "out_hidden_size": 3584,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 112,
        "fullatt_block_indexes": [7, 15, 23, 31],
        "in_chans": 3,
        "hidden_act": "silu",
    },
    "image_token_id": 151655,
    "video_token_id": 151656,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
    "tie_word_embeddings": False,
}

LIVE_MOS = {"score_range": [0.0, 100.0], "higher_is_better": True, "label_mean": 50.0, "label_std": 20.0}


def sam_config(size: str) -> dict:
    return SamConfig(vision_config=SAM_VIT[size]).to_dict()


def presets() -> dict[str, RSFIQAConfig]:
    return {
        # tiny random model for tests: timm's 82k-parameter test EfficientNet, superpixels, 8 regions
        "rsfiqa-tiny": RSFIQAConfig(
            backbone_name="test_efficientnet",
            backbone_out_indices=[3, 4],
            image_size=[64, 64],
            image_mean=[0.5, 0.5, 0.5],
            image_std=[0.5, 0.5, 0.5],
            max_regions=8,
            superpixel_segments=12,
            region_label_stride=4,
            description_embed_dim=16,
            rsa_hidden_size=32,
            rsa_num_heads=4,
            head_hidden_size=32,
            **LIVE_MOS,
        ),
        # the shipped default (modeling_rsfiqa/default_model is trained from exactly this preset by
        # examples/train_rsfiqa_mobile.py): MobileNetV2 with the TF-PTQ ImageNet weights from ../shared and their
        # TF "same" padding, 500x500 input (a 384 px variant was 1.6x faster but lost 0.04 SRCC), BN folded
        # into biases by the weights' origin and kept frozen, stem..stage 3 frozen so its output can be cached
        # for CPU fine-tuning; superpixels on a 64 px copy (the label map is 63x63: finer gains nothing)
        "rsfiqa-mobile": RSFIQAConfig(
            backbone_name="mobilenetv2_100",
            backbone_kwargs={"pad_type": "same"},
            backbone_out_indices=[3, 4],
            backbone_freeze_bn=True,
            backbone_freeze_prefix=True,
            image_size=[500, 500],
            image_mean=[0.5, 0.5, 0.5],
            image_std=[0.5, 0.5, 0.5],
            max_regions=16,
            superpixel_segments=24,
            superpixel_work_size=64,
            region_label_stride=8,
            use_region_descriptions=False,
            rsa_hidden_size=128,
            rsa_num_heads=4,
            head_hidden_size=256,
            backbone_pretrained="../shared/weights/mobilenetv2_100.tf2ptq_in1k.safetensors",
            **LIVE_MOS,
        ),
        # paper scale: SAM ViT-H regions + Qwen2.5-VL-7B descriptions (hidden 3584) + ResNet-50
        "rsfiqa-paper": RSFIQAConfig(
            backbone_name="resnet50.a1_in1k",
            backbone_out_indices=[3, 4],
            backbone_pretrained="timm",
            image_size=[384, 384],
            partition_method="sam",
            sam_config=sam_config("huge"),
            sam_points_per_side=32,
            max_regions=32,
            min_region_area=0.002,
            mllm_name_or_path="Qwen/Qwen2.5-VL-7B-Instruct",
            mllm_config=Qwen2_5_VLConfig(**QWEN25_VL_7B).to_dict(),
            description_embed_dim=3584,
            rsa_hidden_size=512,
            rsa_num_layers=2,
            rsa_num_heads=8,
            head_hidden_size=512,
            **LIVE_MOS,
        ),
        # paper scale with a ViT-style backbone: SAM ViT-B + Qwen2.5-VL-7B + Swin-B (384, window 12)
        "rsfiqa-paper-swin": RSFIQAConfig(
            backbone_name="swin_base_patch4_window12_384.ms_in22k_ft_in1k",
            backbone_out_indices=[2, 3],
            backbone_pretrained="timm",
            image_size=[384, 384],
            partition_method="sam",
            sam_config=sam_config("base"),
            sam_points_per_side=32,
            max_regions=32,
            min_region_area=0.002,
            mllm_name_or_path="Qwen/Qwen2.5-VL-7B-Instruct",
            mllm_config=Qwen2_5_VLConfig(**QWEN25_VL_7B).to_dict(),
            description_embed_dim=3584,
            rsa_hidden_size=512,
            rsa_num_layers=2,
            rsa_num_heads=8,
            head_hidden_size=512,
            **LIVE_MOS,
        ),
    }


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, config in presets().items():
        d = config.to_diff_dict()
        d.pop("transformers_version", None)
        (OUT / f"{name}.json").write_text(json.dumps(d, indent=2, sort_keys=True) + "\n")
        print("wrote", OUT / f"{name}.json")


if __name__ == "__main__":
    main()
