"""Synthetic clips and odd video files (modeling_rsfiqa/video_synthesis.py): tiny clips, real encodes."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

av = pytest.importorskip("av")

from skimage.metrics import peak_signal_noise_ratio  # noqa: E402

from modeling_rsfiqa import distortions  # noqa: E402
from modeling_rsfiqa import video_synthesis as vs  # noqa: E402

SIZE = (64, 48)


@pytest.fixture(scope="module")
def photo():
    return vs.test_pattern(160, 120, seed=1)


def _spec(**kw):
    base = dict(size=SIZE, fps=12, duration=1.0, crf=23, preset="veryfast", camera=vs.CameraPath.pan_across())
    base.update(kw)
    return vs.ClipSpec(**base)


def _frames(path):
    return list(vs.iter_video_frames(path))


# ---------------------------------------------------------------------------- clips


def test_clip_has_requested_frames_fps_size_and_gop(tmp_path, photo):
    info = vs.make_clip(tmp_path / "a.mp4", photo, _spec(duration=2.0, gop=6, bframes=2))
    probe = vs.probe_video(info.path)
    assert info.num_frames == probe.num_frames == probe.declared_frames == 24
    assert (probe.width, probe.height, probe.codec) == (64, 48, "h264")
    assert probe.average_fps == pytest.approx(12.0)
    np.testing.assert_allclose(probe.frame_durations, 1 / 12, atol=1e-3)
    assert probe.keyframes == [0, 6, 12, 18] and not probe.is_vfr
    frames = _frames(info.path)
    assert len(frames) == 24 and frames[0].shape == (48, 64, 3)
    default_gop = vs.probe_video(vs.make_clip(tmp_path / "b.mp4", photo, _spec(duration=2.0)).path)
    assert default_gop.keyframes == [0, 12]  # one keyframe per second by default


def test_fractional_fps_and_durations(tmp_path, photo):
    info = vs.make_clip(tmp_path / "ntsc.mp4", photo, _spec(fps=30000 / 1001, duration=0.5))
    probe = vs.probe_video(info.path)
    assert probe.num_frames == 15 and probe.average_fps == pytest.approx(29.97, abs=0.01)


def test_crf_orders_size_and_fidelity(tmp_path, photo):
    sizes, psnrs = [], []
    for crf in (10, 28, 45):
        clean: list[np.ndarray] = []
        info = vs.make_clip(
            tmp_path / f"c{crf}.mp4", photo, _spec(crf=crf), on_frame=lambda i, c, f, k=clean: k.append(c)
        )
        decoded = _frames(info.path)
        sizes.append(info.bytes)
        psnrs.append(np.mean([peak_signal_noise_ratio(a, b) for a, b in zip(clean, decoded)]))
    assert sizes[0] > sizes[1] > sizes[2]
    assert psnrs[0] > psnrs[1] > psnrs[2]


def test_other_codecs_and_containers(tmp_path, photo):
    have = vs.available_encoders(["mpeg4", "libvpx-vp9", "gif"])
    if "mpeg4" in have:
        good = vs.make_clip(tmp_path / "q2.avi", photo, _spec(qscale=2))
        bad = vs.make_clip(tmp_path / "q25.avi", photo, _spec(qscale=25))
        assert vs.probe_video(good.path).codec == "mpeg4" and good.bytes > bad.bytes
    if "libvpx-vp9" in have:
        info = vs.make_clip(tmp_path / "v.webm", photo, _spec(crf=40))
        probe = vs.probe_video(info.path)
        assert probe.codec == "vp9" and probe.num_frames == 12 and probe.declared_frames == 0
    if "gif" in have:
        info = vs.make_clip(tmp_path / "g.gif", photo, _spec(duration=0.5))
        assert vs.probe_video(info.path).codec == "gif" and len(_frames(info.path)) == 6
    info = vs.make_clip(tmp_path / "m.mkv", photo, _spec())
    assert vs.probe_video(info.path).format == "matroska,webm" and len(_frames(info.path)) == 12
    with pytest.raises(ValueError, match="no CRF"):
        vs.VideoWriter(tmp_path / "x.avi", 64, 48, codec="mpeg4", crf=20)
    with pytest.raises(ValueError, match="CRF of libx264 must be in 0..51"):
        vs.VideoWriter(tmp_path / "x.mp4", 64, 48, crf=60)
    with pytest.raises(ValueError, match="unknown container suffix"):
        vs.VideoWriter(tmp_path / "x.xyz", 64, 48)
    with pytest.raises(ValueError, match="x.mp4: yuv420p needs an even frame size"):
        vs.VideoWriter(tmp_path / "x.mp4", 63, 48)
    assert not list(tmp_path.glob(".*part"))  # failed writers leave no temporary files


def test_writer_is_atomic(tmp_path):
    target = tmp_path / "clip.mp4"
    with pytest.raises(RuntimeError, match="boom"):
        with vs.VideoWriter(target, 32, 32, 10, crf=23) as writer:
            writer.write(np.zeros((32, 32, 3), np.uint8))
            raise RuntimeError("boom")
    assert not target.exists() and not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match=r"frame 0 must be a 32x32x3 uint8"):
        with vs.VideoWriter(target, 32, 32, 10) as writer:
            writer.write(np.zeros((16, 32, 3), np.uint8))
    assert not list(tmp_path.iterdir())


def test_per_frame_distortions(tmp_path, photo):
    captured: dict[str, list] = {"blur": [], "noise": []}
    blur = vs.make_clip(
        tmp_path / "blur.mp4",
        photo,
        _spec(distortion="gaussian_blur", level=4, crf=12, seed=3),
        on_frame=lambda i, c, f: captured["blur"].append((c, f)),
    )
    for clean, frame in captured["blur"]:  # the library distortion, frame by frame
        np.testing.assert_array_equal(frame, distortions.DISTORTIONS["gaussian_blur"](clean, 4, None))
    decoded = _frames(blur.path)
    clean0, blurred0 = captured["blur"][0]
    assert peak_signal_noise_ratio(blurred0, decoded[0]) > peak_signal_noise_ratio(clean0, decoded[0]) + 3

    vs.make_clip(
        tmp_path / "noise.mp4",
        photo,
        _spec(distortion="white_noise", level=5, seed=3, camera=vs.CameraPath.still()),
        on_frame=lambda i, c, f: captured["noise"].append((c, f)),
    )
    (c0, n0), (c1, n1) = captured["noise"][:2]
    np.testing.assert_array_equal(c0, c1)  # a still camera: same clean frame ...
    assert not np.array_equal(n0, n1)  # ... but fresh noise in every frame
    assert np.abs(n0.astype(int) - c0).mean() > 3
    extra = vs.make_clip(tmp_path / "fn.mp4", photo, _spec(crf=0), frame_fn=lambda f, i: 255 - f)
    assert np.mean(_frames(extra.path)[0]) > 0
    with pytest.raises(ValueError, match="Unknown distortion"):
        _spec(distortion="blurr", level=1)
    with pytest.raises(ValueError, match="level must be in 1..5"):
        _spec(distortion="gaussian_blur", level=6)


def test_stutter_repeats_frames_and_drops_leave_gaps(tmp_path, photo):
    spec = _spec(crf=0, stutter=((3, 2),), camera=vs.CameraPath.pan_across(amount=1.0))
    plan = vs.frame_plan(spec)
    assert [c for _, c in plan][3:7] == pytest.approx([3 / 12, 3 / 12, 3 / 12, 6 / 12])
    frames = _frames(vs.make_clip(tmp_path / "st.mp4", photo, spec).path)
    assert len(frames) == 12  # the frame count is unchanged
    identical = [np.array_equal(frames[i], frames[i + 1]) for i in range(11)]
    assert identical == [i in (3, 4) for i in range(11)]  # frame 3 shown three times, nothing else repeats

    drops = vs.probe_video(vs.make_clip(tmp_path / "dr.mp4", photo, _spec(drops=(4, 5))).path)
    assert drops.num_frames == 10 and drops.is_vfr
    assert max(drops.frame_durations) == pytest.approx(3 / 12, abs=2e-3)
    assert vs.stutter_events(24, hold=2, every=8) == ((4, 2), (12, 2), (20, 2))
    with pytest.raises(ValueError, match="every frame is dropped"):
        vs.frame_plan(_spec(duration=2 / 12, drops=(0, 1)))


def test_camera_path_stays_inside_and_moves_smoothly(photo):
    path = vs.CameraPath(zoom=(1.0, 2.0), pan=((-1, -1), (1, 1)), shake=3.0, seed=2)
    renderer = vs._Renderer(photo, SIZE, path)
    centres = []
    for i in range(25):
        cx, cy, s = renderer.view(i / 24, i / 12)
        half_w, half_h = s * SIZE[0] / 2, s * SIZE[1] / 2
        assert half_w - 1e-6 <= cx <= renderer.work_w - half_w + 1e-6
        assert half_h - 1e-6 <= cy <= renderer.work_h - half_h + 1e-6
        centres.append((cx, cy, s))
    scales = [s for _, _, s in centres]
    assert scales[0] == pytest.approx(2 * scales[-1]) and all(np.diff(scales) < 0)  # zooming in
    assert max(scales) <= 1.0 + 1e-9  # the pre-scaled photo is only ever magnified
    step = np.abs(np.diff(np.array(centres)[:, :2], axis=0)).max()
    assert step < 0.25 * renderer.work_w  # no jumps
    assert vs.CameraPath.from_dict(path.to_dict()) == path
    rng = np.random.default_rng(0)
    for _ in range(20):  # random paths are valid and render
        vs._Renderer(photo, SIZE, vs.CameraPath.random(rng)).render(0.5, 1.0)
    with pytest.raises(ValueError, match="zoom"):
        vs.CameraPath(zoom=(0.5, 1.0))


# ---------------------------------------------------------------------------- odd files


def test_odd_files_are_what_they_claim(tmp_path):
    files = vs.write_odd_files(tmp_path)
    assert set(files) == set(vs.ODD_FILE_WRITERS)
    assert files["empty"].stat().st_size == 0

    truncated = vs.probe_video(files["truncated"])
    full = vs._pattern_clip(tmp_path / "full.mp4", (160, 96), 24, 12.0, crf=23)  # the same clip, complete
    # half of a complete encode; two x264 encodes of the same clip can differ by a few bytes (seen: 24 of 15.9k)
    assert files["truncated"].stat().st_size == pytest.approx(full.bytes / 2, rel=0.02)
    assert truncated.declared_frames == 24 and 0 < truncated.num_frames < 24
    with pytest.raises(av.error.InvalidDataError):
        vs.probe_video(files["truncated_no_index"])

    audio = vs.probe_video(files["audio_only"])
    assert audio.num_video_streams == 0 and audio.num_audio_streams == 1

    assert len(_frames(files["one_frame"])) == 1
    thin = _frames(files["one_by_n"])
    assert thin[0].shape == (64, 1, 3) and len(thin) == 12

    vfr = vs.probe_video(files["vfr"])
    assert vfr.is_vfr and vfr.num_frames == len(vs.DEFAULT_VFR_DURATIONS)
    np.testing.assert_allclose(vfr.frame_durations, vs.DEFAULT_VFR_DURATIONS[:-1], atol=1e-3)

    corrupt = vs.probe_video(files["corrupt_packet"])
    assert corrupt.num_frames == 36 and corrupt.keyframes == [0, 12, 24]  # the container is intact
    errors, decoded = 0, 0
    with av.open(str(files["corrupt_packet"])) as container:
        for packet in container.demux(video=0):
            try:
                decoded += len(packet.decode())
            except av.error.InvalidDataError:
                errors += 1
    assert errors >= 1 and 30 <= decoded < 36  # garbage mid-stream; the other frames decode

    with pytest.raises(ValueError, match="unknown odd file"):
        vs.write_odd_files(tmp_path, ["nope"])


def test_vfr_writer_custom_durations(tmp_path):
    durations = [0.1, 0.02, 0.3, 0.05]
    probe = vs.probe_video(vs.write_vfr_video(tmp_path / "v.mp4", durations, time_base=Fraction(1, 1000)))
    np.testing.assert_allclose(probe.frame_durations, durations[:-1], atol=1e-3)
    with pytest.raises(ValueError, match="positive"):
        vs.write_vfr_video(tmp_path / "w.mp4", [0.1, 0.0])
