"""Video decoding that reads only what it needs: PyAV, packet index, seek-by-timestamp, typed errors.

Why PyAV (and not torchcodec, decord or OpenCV): it installs from pip alone on every platform with its own
FFmpeg build inside the wheel (no system FFmpeg, no CUDA/torch version coupling as with torchcodec), exposes
the demuxer and the decoder separately (so a video can be *indexed* from its packets without decoding a
single frame: exact presentation timestamps, keyframe positions and compressed frame sizes, which also makes
variable-frame-rate files exact), and seeks by timestamp to the preceding keyframe. Decoding is lazy:
:class:`VideoReader` decodes forward from that keyframe to each requested frame and converts only the
requested frames to RGB, so a long video is never held in memory.

Anything that cannot be read raises :class:`VideoLoadError` naming the file: a missing or empty file, a
file FFmpeg cannot parse (e.g. a truncated mp4 whose index is gone), a file without a video stream (audio
only), or a stream without one decodable frame. Everything that can be scored is scored: a one-frame video,
1xN pixel videos, variable frame rate, a corrupt packet in mid-stream (skipped; the decoder resynchronises
and the nearest decodable frame stands in), a truncated tail (the frames that are there).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

__all__ = [
    "VideoLoadError",
    "VideoReader",
    "VideoIndex",
    "VIDEO_EXTENSIONS",
    "FRAME_EXTENSIONS",
    "is_video_file",
    "list_frame_files",
]

VIDEO_EXTENSIONS = (
    ".mp4",
    ".m4v",
    ".mov",
    ".mkv",
    ".webm",
    ".avi",
    ".gif",
    ".mpg",
    ".mpeg",
    ".ts",
    ".mts",
    ".wmv",
    ".flv",
    ".3gp",
    ".ogv",
    ".yuv",
)
#: image files that make up a "frame folder" video (e.g. LIVE-Qualcomm extracted to PNG)
FRAME_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class VideoLoadError(ValueError):
    """A video could not be read. ``source`` names the file (or the object), ``reason`` says why."""

    def __init__(self, source: str, reason: str):
        self.source = source
        self.reason = reason
        super().__init__(f"Cannot load video {source!r}: {reason}")


def is_video_file(path: str | os.PathLike) -> bool:
    return os.path.splitext(os.fspath(path))[1].lower() in VIDEO_EXTENSIONS


def _natural_key(name: str) -> list:
    import re

    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def list_frame_files(folder: str | os.PathLike) -> list[str]:
    """Image files of a frame folder in natural order (``frame2.png`` before ``frame10.png``)."""
    names = [n for n in os.listdir(folder) if os.path.splitext(n)[1].lower() in FRAME_EXTENSIONS]
    return [os.path.join(folder, n) for n in sorted(names, key=_natural_key)]


def _av():
    try:
        import av
    except ImportError as err:  # pragma: no cover - av is a core dependency
        raise ImportError("Video decoding needs PyAV: pip install av") from err
    return av


def _av_errors() -> tuple[type[BaseException], ...]:
    av = _av()
    errors: list[type[BaseException]] = [OSError, EOFError, ValueError, RuntimeError, IndexError]
    for name in ("FFmpegError", "AVError"):
        cls = getattr(av, name, None) or getattr(getattr(av, "error", None), name, None)
        if isinstance(cls, type):
            errors.append(cls)
    return tuple(errors)


@dataclass
class VideoIndex:
    """Per-frame facts read from the demuxer (no decoding), in presentation order.

    Attributes:
        pts: presentation timestamps in ``time_base`` units (int64, sorted).
        times: seconds from the first frame (float64).
        keyframe: whether the frame's packet is a keyframe (a seek lands on one of these).
        sizes: compressed size of each frame's packet in bytes (a free measure of how much the encoder had
            to spend on the frame: for inter-coded frames, mostly temporal change).
        time_base: seconds per pts unit.
        seekable: False when the stream has no usable timestamps (frames are then read in one sequential
            pass that keeps only the requested frames).
    """

    pts: np.ndarray
    times: np.ndarray
    keyframe: np.ndarray
    sizes: np.ndarray
    time_base: Fraction
    seekable: bool = True

    @property
    def num_frames(self) -> int:
        return int(self.pts.size)

    @property
    def intra_only(self) -> bool:
        return bool(self.keyframe.all())

    @property
    def duration(self) -> float:
        """Seconds from the first frame to the end of the last one (last frame lasts a median interval)."""
        if self.times.size == 0:
            return 0.0
        step = float(np.median(np.diff(self.times))) if self.times.size > 1 else 0.0
        return float(self.times[-1] + step)

    def keyframe_before(self, i: int) -> int:
        """Index of the last keyframe at or before frame ``i`` (0 if none)."""
        keys = np.flatnonzero(self.keyframe[: i + 1])
        return int(keys[-1]) if keys.size else 0


@dataclass
class DecodeStats:
    """What decoding a set of frames cost: how many frames the decoder produced, seeks, skipped packets."""

    frames_decoded: int = 0
    seeks: int = 0
    packet_errors: int = 0
    sequential_fallback: bool = False
    substituted: list[int] = field(
        default_factory=list
    )  # requested frames replaced by their nearest neighbour


class VideoReader:
    """Random access to the frames of one video file, decoding only what is asked for.

    ::

        with VideoReader("clip.mp4") as video:
            video.num_frames, video.fps, video.times[:3]
            frames = video.get_frames([0, 40, 80])  # list of (H, W, 3) uint8 RGB arrays
            video.stats.frames_decoded                # decoder output frames so far

    Opening builds a :class:`VideoIndex` from the packets (demuxing only). ``get_frames`` seeks to the keyframe
    before each requested frame (or keeps decoding forward when that is cheaper), decodes up to the frame's
    timestamp and converts just that frame to RGB (display rotation applied).
    """

    def __init__(self, path: str | os.PathLike, stream_index: int | None = None):
        self.path = os.fspath(path)
        self.source = self.path
        if not os.path.exists(self.path):
            raise VideoLoadError(self.source, "file does not exist")
        if os.path.isdir(self.path):
            raise VideoLoadError(self.source, "is a directory (use a frame folder input for image sequences)")
        if os.path.getsize(self.path) == 0:
            raise VideoLoadError(self.source, "file is empty (0 bytes)")
        av = _av()
        self._errors = _av_errors()
        try:
            self.container = av.open(self.path, mode="r")
        except self._errors as err:
            raise VideoLoadError(self.source, f"{type(err).__name__}: {err}") from err
        try:
            streams = list(self.container.streams.video)
            if not streams:
                kinds = sorted({s.type for s in self.container.streams})
                raise VideoLoadError(
                    self.source, f"no video stream (streams: {', '.join(kinds) or 'none'}; audio-only file?)"
                )
            self.stream = streams[stream_index or 0]
            self.stream.thread_type = "AUTO"
            self.index = self._build_index()
        except BaseException:
            self.container.close()
            raise
        if self.index.num_frames == 0:
            self.container.close()
            raise VideoLoadError(self.source, "the video stream has no frames")
        self.stats = DecodeStats()

    # ------------------------------------------------------------------------------------------------------
    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.container.close()
        except self._errors:
            pass

    @property
    def num_frames(self) -> int:
        return self.index.num_frames

    @property
    def times(self) -> np.ndarray:
        return self.index.times

    @property
    def fps(self) -> float | None:
        """Average frame rate from the timestamps (exact for VFR files), else the container's rate."""
        if self.index.num_frames > 1 and self.index.duration > 0:
            return float(self.index.num_frames / self.index.duration)
        rate = self.stream.average_rate or self.stream.guessed_rate
        return float(rate) if rate else None

    @property
    def width(self) -> int:
        return int(self.stream.codec_context.width or 0)

    @property
    def height(self) -> int:
        return int(self.stream.codec_context.height or 0)

    @property
    def codec(self) -> str:
        return str(self.stream.codec_context.name)

    # ------------------------------------------------------------------------------------------------------
    def _build_index(self) -> VideoIndex:
        pts, keys, sizes = [], [], []
        missing_ts = False
        try:
            for packet in self.container.demux(self.stream):
                if packet.size == 0:  # flush packet
                    continue
                ts = packet.pts if packet.pts is not None else packet.dts
                if ts is None:
                    missing_ts = True
                    ts = len(pts)
                pts.append(int(ts))
                keys.append(bool(packet.is_keyframe))
                sizes.append(int(packet.size))
        except self._errors:
            pass  # a truncated / damaged tail: index what was readable
        time_base = self.stream.time_base or Fraction(1, 1)
        if missing_ts:
            rate = self.stream.average_rate or self.stream.guessed_rate or 25
            time_base = Fraction(1, 1) / Fraction(rate)
            pts = list(range(len(pts)))
        order = np.argsort(np.asarray(pts, dtype=np.int64), kind="stable")
        pts_arr = np.asarray(pts, dtype=np.int64)[order]
        seekable = not missing_ts and (pts_arr.size < 2 or bool(np.all(np.diff(pts_arr) > 0)))
        if not seekable and pts_arr.size:
            # duplicate or missing timestamps: keep demux order, time from the nominal rate
            order = np.arange(len(pts))
            rate = self.stream.average_rate or self.stream.guessed_rate or 25
            time_base = Fraction(1, 1) / Fraction(rate)
            pts_arr = np.arange(len(pts), dtype=np.int64)
        times = (pts_arr - (pts_arr[0] if pts_arr.size else 0)).astype(np.float64) * float(time_base)
        return VideoIndex(
            pts=pts_arr,
            times=times,
            keyframe=np.asarray(keys, dtype=bool)[order] if keys else np.zeros(0, bool),
            sizes=np.asarray(sizes, dtype=np.int64)[order] if sizes else np.zeros(0, np.int64),
            time_base=Fraction(time_base),
            seekable=seekable,
        )

    # ------------------------------------------------------------------------------------------------------
    def _to_rgb(self, frame: Any, size: tuple[int, int] | None = None, gray: bool = False) -> np.ndarray:
        fmt = "gray" if gray else "rgb24"
        if size is not None:
            frame = frame.reformat(width=size[0], height=size[1], format=fmt)
        array = frame.to_ndarray(format=fmt)
        rotation = int(getattr(frame, "rotation", 0) or 0) % 360
        if rotation:  # display matrix (phone videos): counter-clockwise degrees
            array = np.ascontiguousarray(np.rot90(array, k=rotation // 90))
        return array

    def _decode_packets(self):
        """Frames from the current demux position; corrupt packets are counted and skipped."""
        try:
            for packet in self.container.demux(self.stream):
                try:
                    frames = packet.decode()
                except self._errors:
                    self.stats.packet_errors += 1
                    continue
                yield from frames
        except self._errors:
            self.stats.packet_errors += 1  # demuxer gave up (truncated file): flush what is buffered
        try:
            yield from self.stream.codec_context.decode(None)
        except self._errors:
            pass

    def get_frames(
        self, indices: Sequence[int], size: tuple[int, int] | None = None, gray: bool = False
    ) -> list[np.ndarray]:
        """RGB (or gray) arrays of the frames ``indices`` (presentation order; repeats allowed).

        ``size=(width, height)`` lets swscale resize while converting (cheap thumbnails); None keeps the
        stored resolution. A requested frame that cannot be decoded (corrupt data) is replaced by the nearest
        decoded frame before it (or after, at the start) and listed in ``stats.substituted``.
        """
        n = self.num_frames
        wanted = sorted({int(i) for i in indices})
        if not wanted:
            return []
        if wanted[0] < 0 or wanted[-1] >= n:
            raise IndexError(f"frame indices must lie in [0, {n - 1}], got {wanted[0]}..{wanted[-1]}")
        decoded: dict[int, np.ndarray] = {}
        if self.index.seekable:
            try:
                self._seek_decode(wanted, decoded, size, gray)
            except _SeekFailed:
                self.stats.sequential_fallback = True
        missing = [i for i in wanted if i not in decoded]
        if missing:
            self._sequential_decode(missing, decoded, size, gray)
        if not decoded:
            raise VideoLoadError(self.source, "no frame of the video stream could be decoded")
        have = np.asarray(sorted(decoded))
        out = []
        for i in (int(j) for j in indices):
            if i not in decoded:
                pos = np.searchsorted(have, i, side="right") - 1
                stand_in = int(have[max(pos, 0)])
                self.stats.substituted.append(i)
                decoded[i] = decoded[stand_in]
            out.append(decoded[i])
        return out

    def _seek_decode(self, wanted: list[int], decoded: dict, size, gray) -> None:
        index = self.index
        pts = index.pts
        position = -1  # index of the last frame the decoder produced, -1 = needs a seek
        iterator = None
        for target in wanted:
            key = index.keyframe_before(target)
            # keep decoding forward when the target is reachable without passing a fresh keyframe cost
            if iterator is None or position < 0 or target <= position or (target - position) > (target - key):
                self._seek(int(pts[key]))
                iterator = self._decode_packets()
                position = -1
            previous = None
            for frame in iterator:
                self.stats.frames_decoded += 1
                if frame.pts is None:
                    raise _SeekFailed
                if position < 0 and int(frame.pts) > int(pts[target]):
                    # the seek landed after the target (no keyframe where the index says): give up seeking
                    raise _SeekFailed
                position = int(np.searchsorted(pts, int(frame.pts)))
                if int(frame.pts) >= int(pts[target]):
                    exact = int(frame.pts) == int(pts[target])
                    # the exact frame missing (corrupt packet): the frame shown just before it stands in
                    decoded[target] = self._to_rgb(
                        frame if exact or previous is None else previous, size, gray
                    )
                    break
                previous = frame
            else:
                break  # stream ended before the target (truncated): the rest is left to the fallbacks

    def _seek(self, pts: int) -> None:
        try:
            self.container.seek(pts, backward=True, any_frame=False, stream=self.stream)
        except self._errors as err:
            raise _SeekFailed from err
        self.stats.seeks += 1

    def _sequential_decode(self, wanted: list[int], decoded: dict, size, gray) -> None:
        """One pass from the start, converting only the wanted frames (streams that cannot seek)."""
        try:
            self.container.seek(0, backward=True, any_frame=False, stream=self.stream)
        except self._errors:
            self.close()
            self.container = _av().open(self.path, mode="r")
            self.stream = self.container.streams.video[self.stream.index]
        targets = set(wanted)
        last = max(wanted)
        count = 0
        pts_lookup = {int(p): i for i, p in enumerate(self.index.pts)} if self.index.seekable else None
        for frame in self._decode_packets():
            self.stats.frames_decoded += 1
            if pts_lookup is not None and frame.pts is not None:
                position = pts_lookup.get(int(frame.pts), count)
            else:
                position = count
            count += 1
            if position in targets and position not in decoded:
                decoded[position] = self._to_rgb(frame, size, gray)
            if position >= last:
                break

    # ------------------------------------------------------------------------------------------------------
    def thumbnails(self, indices: Sequence[int], max_side: int = 64) -> list[np.ndarray]:
        """Small gray copies (longest side ``max_side``) of the frames ``indices``: for change estimates."""
        w, h = max(self.width, 1), max(self.height, 1)
        scale = min(1.0, max_side / max(w, h))
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        return self.get_frames(indices, size=size, gray=True)


class _SeekFailed(Exception):
    pass
