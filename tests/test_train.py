"""examples/train.py and modeling_rsfiqa/training_rsfiqa.py: Trainer fine-tuning of RSFIQA.

Fast tests cover the pieces (param groups, LoRA, freezing, split, recipe, transform); one in-process run
trains the tiny fixture with plain python; the slow test trains it with two gloo processes through
``accelerate launch`` and resumes from its checkpoint.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FIXTURE_DIR, ROOT, random_image
from PIL import Image

TRAIN_SCRIPT = ROOT / "examples" / "train.py"
ACCELERATE_CPU2 = ROOT / "configuration" / "accelerate" / "cpu-2proc.yaml"
DISTORTIONS = ["gaussian_blur", "white_noise", "jpeg", "darken"]


def make_iqa_imagefolder(folder: Path, n: int = 16, size: int = 64) -> Path:
    """``n`` distorted ``size`` x ``size`` images + metadata.csv; MOS falls with the distortion level."""
    from modeling_rsfiqa.distortions import distort

    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        level = 1 + i % 5
        image = distort(
            Image.fromarray(random_image(size, size, seed=i % 4)), DISTORTIONS[i % 4], level, seed=i
        )
        image = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
        name = f"img{i:03d}.png"
        image.save(folder / name)
        rows.append((name, 100.0 - 18.0 * level + (i % 3)))
    with open(folder / "metadata.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file_name", "mos"])
        writer.writerows(rows)
    return folder


def load_train_module():
    if "rsfiqa_train_script" in sys.modules:
        return sys.modules["rsfiqa_train_script"]
    spec = importlib.util.spec_from_file_location("rsfiqa_train_script", TRAIN_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["rsfiqa_train_script"] = module  # dataclasses need the module registered
    spec.loader.exec_module(module)
    return module


def run_in_process(argv: list[str]) -> dict:
    import transformers

    train = load_train_module()
    try:
        return train.main(argv)
    finally:
        transformers.utils.logging.set_verbosity_warning()


def common_args(data: Path, out: Path, cache: Path, max_steps: int, batch: int) -> list[str]:
    return [
        "--model_name_or_path",
        str(FIXTURE_DIR),
        "--label_normalization",
        "data",
        "--train_dir",
        str(data),
        "--validation_split_percentage",
        "30",
        "--cache_dir",
        str(cache),
        "--output_dir",
        str(out),
        "--max_steps",
        str(max_steps),
        "--per_device_train_batch_size",
        str(batch),
        "--per_device_eval_batch_size",
        "2",
        "--eval_strategy",
        "steps",
        "--eval_steps",
        "2",
        "--save_strategy",
        "steps",
        "--save_steps",
        "2",
        "--logging_steps",
        "1",
        "--backbone_learning_rate",
        "1e-4",
        "--learning_rate",
        "1e-3",
        "--loss_weights",
        "l1=1,plcc=1,rank=0.3",
        "--dataloader_pin_memory",
        "False",
    ]


def predict_validation(model_dir: Path, data: Path) -> tuple[np.ndarray, np.ndarray]:
    """Scores of the validation images (names from data_split.json) by one process, and their MOS."""
    from modeling_rsfiqa.modeling_rsfiqa import RSFIQAForQualityScoring
    from modeling_rsfiqa.processing_rsfiqa import RSFIQAProcessor

    out = model_dir if (model_dir / "data_split.json").exists() else model_dir.parent
    names = json.loads((out / "data_split.json").read_text())["validation_names"]
    mos = {r["file_name"]: float(r["mos"]) for r in csv.DictReader(open(data / "metadata.csv"))}
    model = RSFIQAForQualityScoring.from_pretrained(model_dir).eval()
    processor = RSFIQAProcessor.from_pretrained(model_dir)
    with torch.no_grad():
        scores = model(**processor([str(data / n) for n in names])).score.numpy()
    return scores, np.array([mos[n] for n in names])


@pytest.fixture(scope="module")
def iqa_folder(tmp_path_factory) -> Path:
    return make_iqa_imagefolder(tmp_path_factory.mktemp("iqa") / "data16")


# --------------------------------------------------------------------------------------------------------
# pieces
# --------------------------------------------------------------------------------------------------------
def test_param_groups_have_the_two_learning_rates(tmp_path):
    from transformers import TrainingArguments

    from modeling_rsfiqa.modeling_rsfiqa import RSFIQAForQualityScoring
    from modeling_rsfiqa.training_rsfiqa import RSFIQATrainer

    model = RSFIQAForQualityScoring.from_pretrained(FIXTURE_DIR)
    args = TrainingArguments(
        output_dir=str(tmp_path),
        learning_rate=1e-3,
        weight_decay=0.01,
        use_cpu=True,
        report_to="none",
        lr_scheduler_type="cosine",
        warmup_steps=0,
    )
    trainer = RSFIQATrainer(model=model, args=args, backbone_learning_rate=2e-5)
    optimizer = trainer.create_optimizer()
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    wd_of = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(lr_of)  # no parameter twice
    for name, p in model.named_parameters():
        assert id(p) in lr_of, name
        assert lr_of[id(p)] == (2e-5 if name.startswith("backbone.") else 1e-3), name
    assert wd_of[id(model.head[1].weight)] == 0.01 and wd_of[id(model.head[1].bias)] == 0.0
    assert {g["group_name"] for g in optimizer.param_groups} >= {"backbone", "new", "new_no_decay"}
    # the schedule scales both groups, keeping their ratio
    scheduler = trainer.create_scheduler(num_training_steps=10, optimizer=optimizer)
    for _ in range(3):
        optimizer.step()
        scheduler.step()
    lrs = {g["group_name"]: g["lr"] for g in optimizer.param_groups}
    assert lrs["backbone"] < 2e-5 and math.isclose(lrs["new"] / lrs["backbone"], 1e-3 / 2e-5, rel_tol=1e-6)


def test_lora_trains_only_lora_rsa_and_head_and_merges_exactly():
    from modeling_rsfiqa.modeling_rsfiqa import RSFIQAForQualityScoring
    from modeling_rsfiqa.training_rsfiqa import add_backbone_lora, build_param_groups, merge_lora

    torch.manual_seed(0)
    model = RSFIQAForQualityScoring.from_pretrained(FIXTURE_DIR).eval()
    plain_keys = set(model.state_dict())
    x = torch.randn(2, 3, 64, 64)
    before = model(x).score
    add_backbone_lora(model, r=4, alpha=8)
    lora = [n for n, _ in model.named_parameters() if "lora_" in n]
    assert lora and all(n.startswith("backbone.") for n in lora)
    for name, p in model.named_parameters():
        expected = "lora_" in name or not name.startswith("backbone.")
        assert p.requires_grad == expected, name
    assert any(p.requires_grad for n, p in model.named_parameters() if n.startswith("rsa."))
    assert all(p.requires_grad for n, p in model.named_parameters() if n.startswith("head."))
    torch.testing.assert_close(model(x).score, before)  # B = 0: a no-op at the start
    groups = build_param_groups(model, 1e-3, 1e-5)
    assert {g["group_name"].removesuffix("_no_decay") for g in groups} == {
        "lora",
        "new",
    }  # base weights frozen
    with torch.no_grad():  # pretend training moved the adapters
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    adapted = model(x).score
    assert not torch.allclose(adapted, before)
    assert merge_lora(model) == len([n for n in lora if "lora_A" in n])
    assert set(model.state_dict()) == plain_keys
    torch.testing.assert_close(model(x).score, adapted, rtol=1e-4, atol=1e-4)


def test_freeze_backbone_stages_freezes_the_prefix_only():
    from modeling_rsfiqa.modeling_rsfiqa import RSFIQAForQualityScoring
    from modeling_rsfiqa.training_rsfiqa import freeze_backbone, freeze_backbone_stages

    model = RSFIQAForQualityScoring.from_pretrained(FIXTURE_DIR)
    first = [i["module"] for i in model.backbone.feature_info.info[:2]]
    frozen = freeze_backbone_stages(model, 2)
    assert frozen
    for name, p in model.backbone.named_parameters():
        in_prefix = name.startswith(("conv_stem", "bn1")) or any(name.startswith(m + ".") for m in first)
        assert p.requires_grad == (not in_prefix), name
    assert all(p.requires_grad for p in model.head.parameters())
    freeze_backbone(model)
    assert not any(p.requires_grad for p in model.backbone.parameters()) and model.config.backbone_freeze_bn


def test_seeded_split_is_reproducible():
    from modeling_rsfiqa.training_rsfiqa import seeded_split

    train, val = seeded_split(16, 30, seed=42)
    assert (train, val) == seeded_split(16, 30, seed=42)
    assert len(val) == 5 and sorted(train + val) == list(range(16))
    assert seeded_split(16, 30, seed=1)[1] != val


def test_recipe_sets_defaults_and_command_line_wins(tmp_path):
    train = load_train_module()
    recipe = tmp_path / "recipe.json"
    recipe.write_text(
        json.dumps(
            {
                "_comment": "notes are ignored",
                "learning_rate": 5e-4,
                "backbone_learning_rate": 5e-5,
                "num_train_epochs": 3,
                "loss_weights": {"l1": 1, "plcc": 1, "rank": 0.3},
                "label_column_name": "score",
                "freeze_backbone_stages": 2,
                "metric_for_best_model": "plcc",
            }
        )
    )
    model_args, data_args, training_args, info = train.parse_args(
        ["--recipe", str(recipe), "--output_dir", str(tmp_path / "o"), "--num_train_epochs", "5", "--use_cpu"]
    )
    assert training_args.learning_rate == 5e-4 and training_args.num_train_epochs == 5
    assert training_args.metric_for_best_model == "plcc" and training_args.load_best_model_at_end
    assert training_args.remove_unused_columns is False
    assert model_args.backbone_learning_rate == 5e-5 and model_args.freeze_backbone_stages == 2
    assert json.loads(model_args.loss_weights) == {"l1": 1, "plcc": 1, "rank": 0.3}
    assert data_args.label_column_name == "score" and info["recipe"] == str(recipe)
    no_eval = train.parse_args(["--eval_strategy", "no", "--output_dir", str(tmp_path / "o"), "--use_cpu"])[2]
    assert no_eval.load_best_model_at_end is False  # nothing to select the best checkpoint by
    recipe.write_text(json.dumps({"learning_rte": 1e-3}))
    with pytest.raises(ValueError, match="learning_rte"):
        train.parse_args(["--recipe", str(recipe), "--use_cpu"])


def test_transform_caches_regions_and_augments_consistently(tmp_path):
    from modeling_rsfiqa.processing_rsfiqa import RSFIQAProcessor
    from modeling_rsfiqa.training_rsfiqa import RegionLabelCache, RSFIQADataCollator, RSFIQATransform

    processor = RSFIQAProcessor.from_pretrained(FIXTURE_DIR)
    images = [Image.fromarray(random_image(48, 64, seed=s)) for s in range(3)]
    cache = RegionLabelCache(processor, tmp_path / "regions")
    batch = {"image": images, "mos": [10.0, 50.0, 90.0]}
    evaluation = RSFIQATransform(processor, cache, train=False)(batch)
    assert cache.misses == 3 and len(list((tmp_path / "regions").rglob("*.npy"))) == 3
    torch.manual_seed(0)
    augmented = RSFIQATransform(processor, cache, train=True, random_crop_scale=0.6)(batch)
    assert cache.misses == 3 and cache.hits == 3  # computed once per image content
    again = RegionLabelCache(processor, tmp_path / "regions")  # a new process reads the disk cache
    np.testing.assert_array_equal(again.get(images[0]), cache.get(images[0]))
    assert again.misses == 0
    collated = RSFIQADataCollator()([{k: v[i] for k, v in augmented.items()} for i in range(3)])
    h, w = processor.label_size
    assert collated["pixel_values"].shape == (3, 3, 64, 64)
    assert collated["region_labels"].shape == (3, h, w) and collated["region_labels"].dtype == torch.long
    assert collated["labels"].tolist() == [10.0, 50.0, 90.0] and collated["labels"].dtype == torch.float32
    # no augmentation at evaluation: the flip of an un-augmented map is never produced there
    flip = RSFIQATransform(processor, cache, train=True, hflip=True)
    flip_batch = {"image": [images[0]] * 16, "mos": [1.0] * 16}
    maps = flip(flip_batch)["region_labels"]
    base = evaluation["region_labels"][0]
    assert any(torch.equal(m, base.flip(-1)) for m in maps) and any(torch.equal(m, base) for m in maps)


# --------------------------------------------------------------------------------------------------------
# end-to-end runs
# --------------------------------------------------------------------------------------------------------
def _assert_finite_metrics(metrics: dict, prefix: str = "eval_") -> None:
    for name in ("srcc", "plcc", "plcc_logistic", "krcc", "rmse"):
        assert math.isfinite(metrics[prefix + name]), (name, metrics)


def test_plain_python_training_run(iqa_folder, tmp_path):
    from transformers import AutoModel, pipeline

    out = tmp_path / "plain"
    argv = common_args(iqa_folder, out, tmp_path / "cache", max_steps=2, batch=4) + [
        "--use_cpu",
        "--use_lora",
        "--lora_r",
        "4",
        "--random_crop_scale",
        "0.8",
        "--region_cache_dir",
        str(tmp_path / "regions"),
        "--precompute_regions",
    ]
    results = run_in_process(argv)
    _assert_finite_metrics(results["eval"])
    eval_results = json.loads((out / "eval_results.json").read_text())
    _assert_finite_metrics(eval_results)
    assert eval_results["eval_samples"] == 5
    model = AutoModel.from_pretrained(out)  # LoRA merged: an ordinary RSFIQA model
    assert not any("lora" in k for k in model.state_dict())
    assert model.config.loss_weights == {"l1": 1.0, "plcc": 1.0, "rank": 0.3}
    labels = [float(r["mos"]) for r in csv.DictReader(open(iqa_folder / "metadata.csv"))]
    split = json.loads((out / "data_split.json").read_text())
    train_labels = [v for i, v in enumerate(labels) if i not in split["validation_indices"]]
    assert math.isclose(model.config.label_mean, float(np.mean(train_labels)), rel_tol=1e-6)
    scores, mos = predict_validation(out, iqa_folder)  # the saved model gives the reported metrics
    from modeling_rsfiqa.quality_metrics import compute_iqa_metrics

    assert math.isclose(compute_iqa_metrics(scores, mos)["plcc"], eval_results["eval_plcc"], abs_tol=1e-5)
    result = pipeline("image-quality", model=str(out))(str(iqa_folder / "img000.png"))
    assert math.isfinite(result["score"])
    card = (out / "README.md").read_text()
    assert "| SRCC (Spearman) |" in card and "## Limitations" in card and "## Intended use" in card
    assert "LoRA" in card and "seeded 30% hold-out" in card


@pytest.mark.slow
def test_accelerate_two_processes_then_resume(iqa_folder, tmp_path):
    from transformers import AutoModel

    from modeling_rsfiqa.quality_metrics import compute_iqa_metrics

    out = tmp_path / "acc"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONWARNINGS": "ignore",
    }
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [
        str(accelerate),
        "launch",
        "--config_file",
        str(ACCELERATE_CPU2),
        "--main_process_port",
        "0",
        str(TRAIN_SCRIPT),
        *common_args(iqa_folder, out, tmp_path / "cache", max_steps=4, batch=2),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=ROOT)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "process 0/2" in log and "split identical on all 2 processes" in log
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    eval_results = json.loads((out / "eval_results.json").read_text())
    _assert_finite_metrics(eval_results)
    assert eval_results["eval_samples"] == 5
    checkpoint = out / "checkpoint-4"
    assert AutoModel.from_pretrained(checkpoint).config.model_type == "rsfiqa"
    # predictions gathered from the two processes == one process scoring the same images with that model
    for step, ckpt in ((4, checkpoint), (None, out)):
        scores, mos = predict_validation(ckpt, iqa_folder)
        single = compute_iqa_metrics(scores, mos)
        reported = (
            eval_results
            if step is None
            else next(r for r in state["log_history"] if r.get("step") == step and "eval_plcc" in r)
        )
        for name in ("srcc", "plcc", "krcc"):
            assert math.isclose(single[name], reported[f"eval_{name}"], abs_tol=1e-5), (ckpt, name)

    # resume the 2-process checkpoint with plain python: the step count continues
    resumed = common_args(iqa_folder, out, tmp_path / "cache", max_steps=6, batch=4) + [
        "--use_cpu",
        "--resume_from_checkpoint",
        "last",
        "--save_total_limit",
        "5",
    ]
    results = run_in_process(resumed)
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    steps = [r["step"] for r in state["log_history"] if "loss" in r]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert (out / "checkpoint-6").is_dir()
    _assert_finite_metrics(results["eval"])


def test_cpu_launch_pitfall_is_reported(monkeypatch):
    train = load_train_module()
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    assert "single process" in train.configure_cpu_distributed()
    monkeypatch.delenv("MASTER_ADDR")
    assert train.configure_cpu_distributed() is None
