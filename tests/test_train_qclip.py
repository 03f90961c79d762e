"""Smoke run of examples/train_qclip.py on tiny videos made in the test (Trainer, calibration, card, reload)."""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest
from conftest import ROOT
from qclip_testing import write_video


def load_script():
    spec = importlib.util.spec_from_file_location("train_qclip", ROOT / "examples" / "train_qclip.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses with postponed annotations look their module up
    spec.loader.exec_module(module)
    return module


def test_train_qclip_end_to_end(tmp_path):
    data = tmp_path / "videos"
    data.mkdir()
    rng = np.random.default_rng(0)
    lines = ["file_name,mos"]
    for i in range(10):
        noise = 12 * i
        frames = [
            np.clip(
                np.full((32, 32, 3), 120, np.float64) + rng.normal(0, noise + 1, (32, 32, 3)), 0, 255
            ).astype(np.uint8)
            for _ in range(6)
        ]
        write_video(data / f"v{i}.mp4", num_frames=6, width=32, height=32, frames=frames)
        lines.append(f"v{i}.mp4,{90 - 8 * i}")
    (data / "metadata.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    script = load_script()
    results = script.main(
        [
            "--model_name_or_path", "qclip-tiny",
            "--train_dir", str(data),
            "--output_dir", str(out),
            "--num_train_epochs", "2",
            "--per_device_train_batch_size", "4",
            "--use_cpu", "--seed", "0",
            "--config_overrides", "num_frames=4",
        ]
    )  # fmt: skip
    assert np.isfinite(results["eval"]["eval_srcc"]) or np.isnan(results["eval"]["eval_srcc"])
    assert "eval_ref_srcc" in results["eval"] and "eval_ref_rmse" in results["eval"]
    card = (out / "README.md").read_text()
    assert "Q-CLIP" in card and "trainable parameters" in card and "video-quality" in card
    split = json.loads((out / "data_split.json").read_text())
    assert split["num_rows"] == {"train": 8, "validation": 2} and split["split_seed"] == 42
    config = json.loads((out / "config.json").read_text())
    assert config["num_frames"] == 4 and config["logit_std"] != 1.0  # calibrated after training
    from transformers import pipeline

    import modeling_rsfiqa  # noqa: F401

    vq = pipeline("video-quality", model=str(out))
    scored = vq(str(data / "v0.mp4"))
    assert 0.0 <= scored["score"] <= 100.0 and len(scored["frame_scores"]) == 4


@pytest.mark.slow
def test_split_protocol_runs_each_seed_and_summarises(tmp_path):
    data = tmp_path / "videos"
    data.mkdir()
    lines = ["file_name,mos"]
    for i in range(6):
        write_video(data / f"v{i}.mp4", num_frames=3, width=32, height=32)
        lines.append(f"v{i}.mp4,{10 * i}")
    (data / "metadata.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "protocol"
    summary = load_script().main(
        [
            "--model_name_or_path", "qclip-tiny", "--train_dir", str(data), "--output_dir", str(out),
            "--num_splits", "2", "--num_train_epochs", "1", "--use_cpu", "--save_strategy", "no",
            "--load_best_model_at_end", "false", "--config_overrides", "num_frames=2",
        ]
    )  # fmt: skip
    assert summary["seeds"] == [42, 43] and len(summary["per_split"]) == 2
    assert (out / "split-42" / "README.md").is_file() and (out / "split-43" / "config.json").is_file()
    saved = json.loads((out / "protocol_results.json").read_text())
    assert saved["summary"]["ref_srcc"]["splits"] <= 2 and "mean" in saved["summary"]["srcc"]
