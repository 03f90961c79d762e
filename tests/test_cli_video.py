"""``rsfiqa score`` with videos next to images: Q-CLIP scores, the per-frame plot and the sampled frames."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from conftest import FIXTURE_DIR, random_image
from PIL import Image
from qclip_testing import write_video

from modeling_rsfiqa.cli import main
from modeling_rsfiqa.cli_score import is_video_input
from modeling_rsfiqa.factory import create_model
from modeling_rsfiqa.report import filmstrip, frame_score_plot_svg

pytest.importorskip("av")


@pytest.fixture(scope="module")
def video_model(tmp_path_factory):
    """A tiny random Q-CLIP saved like a real one."""
    model, processor = create_model("qclip-tiny")
    path = tmp_path_factory.mktemp("qclip") / "model"
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture
def mixed_folder(tmp_path):
    folder = tmp_path / "inputs"
    folder.mkdir()
    Image.fromarray(random_image(40, 56, seed=0)).save(folder / "photo.png")
    write_video(folder / "clip.mp4", num_frames=45, width=64, height=48)
    frames = [Image.fromarray(np.full((24, 32, 3), 40 * i, np.uint8)) for i in range(4)]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    frames[0].save(folder / "still.gif")
    return folder


def test_videos_are_told_apart_by_extension_and_gif_frames(mixed_folder):
    assert is_video_input(mixed_folder / "clip.mp4") and is_video_input("x.webm") and is_video_input("x.MKV")
    assert is_video_input(mixed_folder / "anim.gif")
    assert not is_video_input(mixed_folder / "still.gif") and not is_video_input(mixed_folder / "photo.png")


def test_score_images_and_videos_together(mixed_folder, video_model, tmp_path, capsys):
    out_json, report = tmp_path / "scores.json", tmp_path / "report"
    code = main(
        [
            "score",
            str(mixed_folder),
            "--model",
            str(FIXTURE_DIR),
            "--video-model",
            str(video_model),
            "--json",
            str(out_json),
            "--report",
            str(report),
        ]
    )
    stdout = capsys.readouterr().out
    assert code == 0
    results = {r["source"].rsplit("/", 1)[-1]: r for r in json.loads(out_json.read_text())}
    assert {k: r["kind"] for k, r in results.items()} == {
        "anim.gif": "video",
        "clip.mp4": "video",
        "photo.png": "image",
        "still.gif": "image",
    }
    clip = results["clip.mp4"]
    assert 0 <= clip["score"] <= 100 and len(clip["frame_scores"]) == 8
    assert clip["frame_times"] == pytest.approx(np.linspace(0, 44, 8).round() / 30, abs=1e-6)
    assert len(results["anim.gif"]["frame_scores"]) == 8  # 4 frames, sampled with repeats
    assert "clip.mp4" in stdout and "worst frame" in stdout
    html = (report / "index.html").read_text()
    # 2 image tiles + one filmstrip per video; one SVG plot per video with a point per sampled frame
    assert html.count("data:image/png;base64") == 4
    plots = re.findall(r"<svg.*?</svg>", html, flags=re.S)
    assert len(plots) == 2 and all(p.count("<circle") == 8 for p in plots)
    # each sampled frame's time and score are on the plot's tooltips
    for t, q in zip(clip["frame_times"], clip["frame_scores"]):
        assert f"<title>{t:.3f} s: {q:.2f}</title>" in html
    assert "the sampled frames" in html


def test_filmstrip_shows_the_sampled_frames_in_order(video_model, tmp_path):
    """The thumbnails are the frames at the reported times (flat gray levels encode the frame number)."""
    from qclip_testing import level

    video = write_video(tmp_path / "clip.mp4", num_frames=40, width=64, height=48)
    from modeling_rsfiqa.cli_score import _nearest_frames

    times = [0.0, 10 / 30, 39 / 30]
    frames = _nearest_frames(times, str(video), height=24)
    assert [f.shape for f in frames] == [(24, 32, 3)] * 3
    assert [float(f.mean()) for f in frames] == pytest.approx([level(0), level(10), level(39)], abs=4)
    strip = filmstrip(frames, ["0.00 s", "0.33 s", "1.30 s"], height=24)
    assert strip.height == 24 + 16 + 8 and strip.width >= 3 * 72


def test_frame_score_plot_without_times_uses_frame_numbers():
    svg = frame_score_plot_svg([None, None, None], [10.0, 50.0, 90.0], (0, 100), video_score=50.0)
    assert svg.startswith("<svg") and svg.count("<circle") == 3 and "sampled frame" in svg
    assert "stroke-dasharray" in svg  # the pooled video score
    with pytest.raises(ValueError):
        frame_score_plot_svg([], [], (0, 100))


def test_videos_without_a_video_model_say_so_and_images_still_score(
    mixed_folder, tmp_path, capsys, monkeypatch
):
    import modeling_rsfiqa.cli_score as cli_score

    monkeypatch.setattr(cli_score, "default_video_model", lambda: None)  # an installation with no video model
    out_json = tmp_path / "scores.json"
    code = main(["score", str(mixed_folder), "--model", str(FIXTURE_DIR), "--json", str(out_json)])
    captured = capsys.readouterr()
    assert code == 1
    assert "--video-model" in captured.err
    results = json.loads(out_json.read_text())
    images = [r for r in results if r["kind"] == "image"]
    videos = [r for r in results if r["kind"] == "video"]
    assert len(images) == 2 and all(r["score"] is not None for r in images)
    assert len(videos) == 2 and all(r["score"] is None and "--video-model" in r["error"] for r in videos)


def test_unreadable_video_is_reported_and_the_rest_scored(video_model, tmp_path, capsys):
    good = write_video(tmp_path / "good.mp4", num_frames=12)
    bad = tmp_path / "bad.mkv"
    bad.write_bytes(b"not a video")
    code = main(
        ["score", str(bad), str(good), "--video-model", str(video_model), "--report", str(tmp_path / "r")]
    )
    captured = capsys.readouterr()
    assert code == 1 and "bad.mkv" in captured.err
    html = (tmp_path / "r" / "index.html").read_text()
    assert html.count("<svg") == 1 and "good.mp4" in html and "Images" not in html
