"""LoRA on the MLLM's language model: no-op at step 0, learns, round-trips exactly."""

from __future__ import annotations

import glob
import os
import re

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from transformers import (
    PreTrainedModel,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Trainer,
    TrainingArguments,
)

from modeling_rsfiqa.annotation_rsfiqa import AnnotatorConfig, RegionAnnotator, build_random_vlm
from modeling_rsfiqa.lora_rsfiqa import (
    RegionInstructionCollator,
    RegionLoraSettings,
    add_region_lora,
    build_region_instruction_examples,
    language_model_target_regex,
    load_region_adapter,
    region_lora_parameters,
    save_region_adapter,
)

SETTINGS = RegionLoraSettings(r=4, alpha=8, dropout=0.0)
PRISTINE = sorted(
    glob.glob(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "pristine", "*", "*.png"))
)


def _photos():
    if PRISTINE:
        return PRISTINE[:3]
    rng = np.random.RandomState(0)  # a fresh clone without ../shared: smooth synthetic "photos"
    return [
        Image.fromarray((np.clip(np.cumsum(rng.randn(80, 96, 3), 1) * 8 + 128, 0, 255)).astype(np.uint8))
        for _ in range(3)
    ]


@pytest.fixture(scope="module")
def data():
    model, processor = build_random_vlm("tiny", seed=0)
    annotator = RegionAnnotator(model, processor, AnnotatorConfig(max_new_tokens=4))
    examples = build_region_instruction_examples(_photos(), annotator, n_images=2, image_side=84, seed=0)
    batch = RegionInstructionCollator(annotator.pad_id)(examples[:3])
    return annotator, examples, batch


def _logits(model, batch):
    model.eval()
    with torch.no_grad():
        return model(**{k: v for k, v in batch.items() if k != "labels"}).logits


def test_targets_are_the_language_model_only():
    model, _ = build_random_vlm("tiny", seed=1)
    regex = language_model_target_regex(model)
    matched = [n for n, _ in model.named_modules() if re.fullmatch(regex, n)]
    assert matched and all(n.startswith("model.language_model.layers.") for n in matched)
    add_region_lora(model, SETTINGS)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and set(trainable) == set(region_lora_parameters(model))
    assert not any("visual" in n or "lm_head" in n or "embed_tokens" in n for n in trainable)
    assert len(trainable) == 2 * len(matched)  # A and B of every decoder projection


def test_examples_carry_known_answers(data):
    annotator, examples, _ = data
    assert len(examples) == 8  # 2 photos x 2x2 regions
    tok = annotator.tokenizer
    for ex in examples:
        supervised = tok.decode([t for t in ex["labels"].tolist() if t != -100])
        import json

        target = json.loads(ex["target"])
        for dim, word in zip(annotator.config.dimensions, target["levels"]):
            assert f"\n{dim}: {word}" in supervised
        assert target["description"] not in supervised  # unlabelled content is not supervised
        assert ex["input_ids"].shape == ex["labels"].shape == ex["mm_token_type_ids"].shape
    levels = [json.loads(e["target"])["levels"] for e in examples]
    assert any(lv[-1] != "excellent" for lv in levels)  # some regions were distorted


def test_lora_is_a_noop_before_training(data):
    annotator, _, batch = data
    model, _ = build_random_vlm("tiny", seed=0)
    before = _logits(model, batch)
    add_region_lora(model, SETTINGS)
    assert torch.equal(before, _logits(model, batch))


def test_lora_training_lowers_the_loss_and_roundtrips(data, tmp_path):
    annotator, examples, batch = data
    model, _ = build_random_vlm("tiny", seed=0)
    add_region_lora(model, SETTINGS)
    base_fp = RegionAnnotator(model, annotator.processor).model_fingerprint
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}

    class DS(torch.utils.data.Dataset):
        def __len__(self):
            return len(examples)

        def __getitem__(self, i):
            return {k: v for k, v in examples[i].items() if k != "target"}

    args = TrainingArguments(
        output_dir=str(tmp_path / "run"), per_device_train_batch_size=4, max_steps=8, learning_rate=1e-2,
        lr_scheduler_type="constant", logging_steps=1, report_to=[], remove_unused_columns=False,
        save_strategy="no", use_cpu=True, disable_tqdm=True, seed=0,
    )  # fmt: skip
    trainer = Trainer(
        model=model, args=args, train_dataset=DS(), data_collator=RegionInstructionCollator(annotator.pad_id)
    )
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 8 and np.mean(losses[-2:]) < np.mean(losses[:2]) - 0.05
    for n, p in model.named_parameters():  # base weights untouched
        if n in frozen:
            assert torch.equal(p, frozen[n])
    trained = _logits(model, batch)
    assert (
        RegionAnnotator(model, annotator.processor).model_fingerprint != base_fp
    )  # cache key follows the adapter

    # standalone peft adapter: exact round trip, and peft itself can load it
    save_region_adapter(model, str(tmp_path / "adapter"))
    fresh, _ = build_random_vlm("tiny", seed=0)
    load_region_adapter(fresh, str(tmp_path / "adapter"))
    assert torch.equal(trained, _logits(fresh, batch))
    from peft import PeftModel

    other, _ = build_random_vlm("tiny", seed=0)
    assert torch.equal(trained, _logits(PeftModel.from_pretrained(other, str(tmp_path / "adapter")), batch))

    # inside a composite model's save_pretrained / from_pretrained (LoRA injected after post_init)
    composite = _Composite(model.config)
    composite.mllm.load_state_dict(model.state_dict())
    composite.save_pretrained(str(tmp_path / "composite"))
    loaded = _Composite.from_pretrained(str(tmp_path / "composite"))
    assert torch.equal(trained, _logits(loaded.mllm, batch))


class _Composite(PreTrainedModel):
    """Stand-in for a scoring model that owns the MLLM (the pattern DESIGN.md section 6 asks for)."""

    config_class = Qwen2VLConfig
    base_model_prefix = "composite"
    _supports_sdpa = True

    def __init__(self, config):
        super().__init__(config)
        self.mllm = Qwen2VLForConditionalGeneration(config)
        self.head = nn.Linear(config.text_config.hidden_size, 1)
        self.post_init()
        add_region_lora(self.mllm, SETTINGS)  # after post_init: not re-initialised, a no-op until trained
