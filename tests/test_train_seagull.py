"""SEAGULL LoRA, instruction data, the training script, and the generative model learning distortion types."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT

from modeling_rsfiqa.factory import create_model
from modeling_rsfiqa.training_seagull import (
    SeagullInstructionCollator,
    roi_instructions,
    synthetic_roi_samples,
)


def _photos():
    from skimage import data

    train = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), data.immunohistochemistry()]
    held_out = [data.hubble_deep_field(), data.retina()[200:1200, 200:1200]]
    return train, held_out


def test_lora_targets_the_llm_linear_layers_only():
    model, processor = create_model("seagull-tiny", lora_r=64, lora_alpha=16, lora_dropout=0.05)
    base, _ = create_model("seagull-tiny")
    lora = model.lora_parameters()
    assert lora and all(".language_model." in f".{n}" for n in lora)
    assert not any("lm_head" in n for n in lora)
    adapted = {n.split(".lora_")[0] for n in lora}
    linear = {
        n for n, m in base.language_model.named_modules() if isinstance(m, torch.nn.Linear) and n != "lm_head"
    }
    assert {
        a.removeprefix("language_model.") for a in adapted
    } == linear  # every LLM linear layer but lm_head
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any(n.startswith("vision_tower.") for n in trainable)
    assert all(p.requires_grad for p in model.mask_extractor.parameters())
    assert all(p.requires_grad for p in model.multi_modal_projector.parameters())
    frozen_llm = [
        n for n, p in model.language_model.named_parameters() if "lora_" not in n and p.requires_grad
    ]
    assert not frozen_llm
    module = dict(model.named_modules())[next(iter(adapted))]
    assert module.r["seagull"] == 64 and module.scaling["seagull"] == 16 / 64
    # B = 0: the freshly injected adapter changes nothing
    shared = {k.replace(".base_layer", ""): v for k, v in model.state_dict().items() if "lora_" not in k}
    assert not base.load_state_dict(shared, strict=True).missing_keys
    batch = processor(np.zeros((32, 32, 3), np.uint8), [[0, 0, 16, 16]], questions="quality")
    inputs = {k: batch[k] for k in processor.model_input_names}
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(**inputs).logits, base.eval()(**inputs).logits)


def test_instruction_samples_and_collator():
    model, processor = create_model("seagull-tiny")
    train, _ = _photos()
    samples = synthetic_roi_samples(train, 3, seed=0, size=64, rois_per_image=2)
    for s in samples:
        assert s.image.shape == (64, 64, 3) and len(s.rois) == 2
        assert len(s.severities[0]) == 1 and s.severities[1] == {}  # one distorted ROI, one clean
        assert s.quality[1] == 4 and s.quality[0] == max(0, 4 - next(iter(s.severities[0].values())))
    answers = roi_instructions(samples[0], processor, ["quality", "distortion"])
    assert (
        answers[1].startswith("The distortions of this region are: ")
        and next(iter(samples[0].severities[0])) in answers[1]
    )
    assert answers[3] == processor.answer_templates["no_distortion"]
    batch = SeagullInstructionCollator(processor, ["quality", "importance", "distortion"])(samples)
    assert batch["pixel_values"].shape[0] == 3 and batch["input_ids"].shape[0] == 3 * 2 * 3
    out = model(**batch)
    assert torch.isfinite(out.loss)


@pytest.mark.slow
def test_training_script_smoke(tmp_path):
    from PIL import Image

    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import train_seagull
    finally:
        sys.path.pop(0)
    photos = tmp_path / "photos"
    photos.mkdir()
    train, held_out = _photos()
    for i, p in enumerate(train[:3] + held_out[:1]):
        Image.fromarray(p).save(photos / f"{i}.png")
    out = tmp_path / "run"
    results = train_seagull.main(
        [
            "--model_name_or_path", "seagull-tiny", "--lora_r", "8", "--lora_alpha", "16",
            "--synthetic_train", "4", "--synthetic_eval", "2", "--photos", str(photos), "--image_size", "64",
            "--output_dir", str(out), "--max_steps", "2", "--per_device_train_batch_size", "2",
            "--use_cpu", "--report_to", "none", "--save_strategy", "no", "--seed", "0",
        ]
    )  # fmt: skip
    assert "train" in results and "eval" in results
    card = (out / "README.md").read_text()
    assert "SEAGULL" in card and "LoRA r=8" in card and "distortion type" in card
    assert json.loads((out / "eval_results.json").read_text())["eval_samples"] == 2
    from modeling_rsfiqa.modeling_seagull import SeagullForConditionalGeneration

    reloaded = SeagullForConditionalGeneration.from_pretrained(out)
    assert reloaded.config.lora_r == 8 and reloaded.lora_parameters()
