"""The shipped default video model (qclip-mobile): pipeline("video-quality") with no model, offline, on clips
made here with PyAV; a heavily compressed / blurred version scores lower than the clean one."""

from __future__ import annotations

import json

import numpy as np
import pytest
import skimage.data
from transformers import pipeline

import modeling_rsfiqa

pytestmark = pytest.mark.skipif(
    not (modeling_rsfiqa.DEFAULT_QCLIP_DIR / "model.safetensors").is_file(),
    reason="default video model not shipped",
)


def _frames(blur: float = 0.0, n: int = 16) -> list[np.ndarray]:
    """A slow pan over skimage's astronaut (160 x 96), optionally Gaussian-blurred."""
    from scipy.ndimage import gaussian_filter

    image = skimage.data.astronaut()[::2, ::2]  # 256 x 256
    if blur:
        image = np.stack([gaussian_filter(image[..., c], blur) for c in range(3)], -1).astype(np.uint8)
    return [np.ascontiguousarray(image[40 + i : 136 + i, 20 + 2 * i : 180 + 2 * i]) for i in range(n)]


def _clip(path, frames, crf: int) -> str:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path)


@pytest.fixture(scope="module")
def vq():
    return pipeline("video-quality")  # no model argument: the packaged default, offline


def test_default_is_the_packaged_mobile_model(vq):
    assert str(modeling_rsfiqa.DEFAULT_QCLIP_DIR) in str(vq.model.config._name_or_path)
    assert vq.model.config.vlm_config.vision_model_name == "mobilenetv2_100"
    size = (modeling_rsfiqa.DEFAULT_QCLIP_DIR / "model.safetensors").stat().st_size
    assert size <= 15 * 2**20
    card = (modeling_rsfiqa.DEFAULT_QCLIP_DIR / "README.md").read_text()
    assert "frozen random" in card.lower()
    results = json.loads((modeling_rsfiqa.DEFAULT_QCLIP_DIR / "eval_results.json").read_text())
    assert "severity_order_h264" in results["synthetic_validation"]


def test_scores_a_clip(vq, tmp_path):
    clean = _clip(tmp_path / "clean.mp4", _frames(), crf=18)
    out = vq(clean)
    assert 0.0 <= out["score"] <= 100.0
    assert len(out["frame_scores"]) == len(out["frame_times"]) == vq.model.config.num_frames
    assert all(0.0 <= t <= 2.0 for t in out["frame_times"]) and out["frame_times"] == sorted(
        out["frame_times"]
    )
    assert out["source"] == clean


def test_compression_and_blur_lower_the_score(vq, tmp_path):
    clean = vq(_clip(tmp_path / "clean.mp4", _frames(), crf=18))["score"]
    compressed = vq(_clip(tmp_path / "crf50.mp4", _frames(), crf=50))["score"]
    blurred = vq(_clip(tmp_path / "blur.mp4", _frames(blur=4.0), crf=18))["score"]
    assert compressed < clean and blurred < clean, (clean, compressed, blurred)
