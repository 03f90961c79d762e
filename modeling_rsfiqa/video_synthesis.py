"""Synthetic videos for tests, benchmarks and training, made with PyAV (FFmpeg).

A clip is a virtual camera moving over a still photo: a :class:`CameraPath` (pan, zoom, mild
hand-held shake, eased in and out) is rendered frame by frame with sub-pixel scale-and-shift warps
(Pillow's bicubic resize of a fractional box, from a copy of the photo pre-scaled with Lanczos so
that the warp only ever magnifies: no aliasing shimmer while panning), optionally distorted per frame (any type of
:mod:`modeling_rsfiqa.distortions`, e.g. Gaussian blur, white noise, brighten / darken; noise is
drawn afresh for every frame, like sensor noise), given temporal defects (stutter = repeated
frames, frame drops = missing timestamps) and encoded with a chosen codec, CRF (or quantiser) and
GOP. Everything streams: one frame is rendered, distorted and encoded at a time, so a 60 s 720p
clip costs the memory of a few frames. Files are written atomically (a temporary name, renamed
when complete), so an interrupted job never leaves a half-written clip under the final name.

The second half writes the odd files a video reader must survive (:data:`ODD_FILE_WRITERS`): an
empty file, a truncated mp4, an audio-only file, a one-frame video, a 1xN video, a variable-frame-
rate file and a file with a corrupt packet in mid-stream; :func:`probe_video` tells what a file
holds without decoding it.

PyAV is used rather than torchcodec because it encodes as well as decodes, exposes the codec
options that matter here (CRF, GOP, scene-cut, time base, raw packets) and ships its own FFmpeg.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .distortions import DISTORTION_SPECS, DISTORTIONS, NUM_LEVELS, list_distortions
from .image_io import load_image_rgb

__all__ = [
    "CONTAINER_FORMATS",
    "CRF_RANGES",
    "ODD_FILE_WRITERS",
    "QSCALE_RANGES",
    "CameraPath",
    "ClipInfo",
    "ClipSpec",
    "VideoProbe",
    "VideoSynthesisError",
    "VideoWriter",
    "available_encoders",
    "frame_plan",
    "iter_camera_frames",
    "iter_video_frames",
    "make_clip",
    "probe_video",
    "stutter_events",
    "test_pattern",
    "write_audio_only",
    "write_corrupt_packet_video",
    "write_empty_file",
    "write_odd_files",
    "write_one_frame_video",
    "write_thin_video",
    "write_truncated_video",
    "write_vfr_video",
]

#: file suffix -> FFmpeg muxer name
CONTAINER_FORMATS: dict[str, str] = {
    ".mp4": "mp4",
    ".m4v": "mp4",
    ".m4a": "mp4",
    ".mov": "mov",
    ".mkv": "matroska",
    ".webm": "webm",
    ".avi": "avi",
    ".gif": "gif",
}
_DEFAULT_CODEC = {".webm": "libvpx-vp9", ".avi": "mpeg4", ".gif": "gif"}
_DEFAULT_PIX_FMT = {"gif": "rgb8", "mjpeg": "yuvj420p"}
#: codecs whose quality is set by a constant rate factor, with the valid CRF range
CRF_RANGES: dict[str, tuple[int, int]] = {
    "libx264": (0, 51),
    "libx265": (0, 51),
    "libvpx-vp9": (0, 63),
    "libsvtav1": (0, 63),
    "libaom-av1": (0, 63),
}
#: codecs whose quality is set by a fixed quantiser (FFmpeg's ``-q:v``), with its range
QSCALE_RANGES: dict[str, tuple[int, int]] = {"mpeg4": (1, 31), "mpeg2video": (1, 31), "mjpeg": (1, 31)}


class VideoSynthesisError(RuntimeError):
    """A clip could not be made; the message names the file."""


def _av():
    try:
        import av
    except ImportError as err:  # pragma: no cover - av is a dependency
        raise ImportError("video synthesis needs PyAV: pip install 'av>=12'") from err
    return av


def available_encoders(candidates: Iterable[str] = ("libx264", "mpeg4", "libvpx-vp9", "gif")) -> list[str]:
    """Those of ``candidates`` this PyAV build can encode with (e.g. to skip VP9 where it is missing)."""
    av = _av()
    found = []
    for name in candidates:
        try:
            av.codec.Codec(name, "w")
        except Exception:
            continue
        found.append(name)
    return found


def _fps_fraction(fps: float | Fraction) -> Fraction:
    if isinstance(fps, Fraction):
        return fps
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    return Fraction(fps).limit_denominator(1001)


# ============================================================================ encoding


class VideoWriter:
    """Streaming encoder: each frame goes to the file as it is written; nothing is buffered.

    Args:
        path: output file; the container comes from the suffix (:data:`CONTAINER_FORMATS`) unless
            ``container_format`` is given.
        width, height: frame size in pixels (4:2:0 codecs need even sizes; use ``pix_fmt="yuv444p"``
            for odd ones).
        fps: nominal frame rate; frame ``i`` gets ``pts = i`` in a ``1/fps`` time base unless ``pts``
            is passed to :meth:`write` (then ``time_base`` says its unit, e.g. ``Fraction(1, 1000)``
            for a variable-frame-rate file).
        codec: FFmpeg encoder; default libx264 (libvpx-vp9 for .webm, mpeg4 for .avi, gif for .gif).
        crf: constant rate factor for the codecs of :data:`CRF_RANGES` (lower = better).
        qscale: fixed quantiser for the codecs of :data:`QSCALE_RANGES` (lower = better).
        gop: frames from one keyframe to the next. For libx264 scene-cut detection is switched off,
            so keyframes fall exactly every ``gop`` frames; other encoders treat it as a maximum.
        bframes: maximum consecutive B-frames (encoder default when None).
        preset: libx264 / libx265 speed preset (e.g. "veryfast", "medium").
        threads: encoder threads (0 = FFmpeg's choice).
        faststart: mp4 / mov only: put the index (moov) before the data, as streaming sites do.

    Written to a temporary file next to ``path`` and renamed on :meth:`close`; on an exception inside
    a ``with`` block (or :meth:`abort`) the temporary file is removed and ``path`` is left untouched.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        width: int,
        height: int,
        fps: float | Fraction = 30,
        *,
        codec: str | None = None,
        crf: float | None = None,
        qscale: float | None = None,
        gop: int | None = None,
        bframes: int | None = None,
        preset: str | None = None,
        pix_fmt: str | None = None,
        time_base: Fraction | None = None,
        threads: int | None = None,
        faststart: bool = True,
        container_format: str | None = None,
        options: dict[str, str] | None = None,
    ):
        av = _av()
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        fmt = container_format or CONTAINER_FORMATS.get(suffix)
        if fmt is None:
            raise ValueError(
                f"{self.path}: unknown container suffix {suffix!r}; use one of {sorted(CONTAINER_FORMATS)} "
                "or pass container_format"
            )
        if int(width) < 1 or int(height) < 1:
            raise ValueError(f"{self.path}: frame size must be positive, got {width}x{height}")
        self.width, self.height = int(width), int(height)
        self.fps = _fps_fraction(fps)
        self.codec = codec or _DEFAULT_CODEC.get(suffix, "libx264")
        self.time_base = time_base or 1 / self.fps
        opts = dict(options or {})
        if crf is not None:
            if self.codec not in CRF_RANGES:
                raise ValueError(f"{self.path}: codec {self.codec} has no CRF; use qscale or options")
            lo, hi = CRF_RANGES[self.codec]
            if not lo <= crf <= hi:
                raise ValueError(f"{self.path}: CRF of {self.codec} must be in {lo}..{hi}, got {crf}")
            opts["crf"] = f"{crf:g}"
            if self.codec == "libvpx-vp9":
                opts.setdefault("b", "0")  # constant-quality mode
        if qscale is not None and self.codec not in QSCALE_RANGES:
            raise ValueError(f"{self.path}: codec {self.codec} has no fixed quantiser; use crf or options")
        if preset is not None and self.codec in ("libx264", "libx265"):
            opts["preset"] = preset
        if gop is not None and self.codec in ("libx264", "libx265"):
            opts.setdefault("sc_threshold", "0")  # no scene-cut keyframes: exact GOPs
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=".part", dir=self.path.parent)
        os.close(fd)
        self._tmp = Path(tmp)
        container_options = {"movflags": "+faststart"} if faststart and fmt in ("mp4", "mov") else {}
        try:
            self._container = av.open(str(self._tmp), mode="w", format=fmt, options=container_options)
            stream = self._container.add_stream(self.codec, rate=self.fps, options=opts)
            stream.width, stream.height = self.width, self.height
            stream.pix_fmt = pix_fmt or _DEFAULT_PIX_FMT.get(self.codec, "yuv420p")
            if stream.pix_fmt in ("yuv420p", "yuvj420p", "nv12") and (self.width % 2 or self.height % 2):
                raise ValueError(
                    f"{self.path}: {stream.pix_fmt} needs an even frame size, got {self.width}x{self.height} "
                    "(use pix_fmt='yuv444p' for odd sizes)"
                )
            cc = stream.codec_context
            if time_base is not None:
                stream.time_base = time_base
                cc.time_base = time_base
            if gop is not None:
                if int(gop) < 1:
                    raise ValueError(f"{self.path}: gop must be >= 1, got {gop}")
                cc.gop_size = int(gop)
            if bframes is not None:
                cc.max_b_frames = int(bframes)
            if qscale is not None:
                lo, hi = QSCALE_RANGES[self.codec]
                if not lo <= qscale <= hi:
                    raise ValueError(f"{self.path}: qscale of {self.codec} must be in {lo}..{hi}")
                cc.qmin = cc.qmax = int(round(qscale))
            if threads is not None:
                cc.thread_count = int(threads)
        except Exception:
            self._discard()
            raise
        self._stream = stream
        self.frames_written = 0
        self._closed = False
        self._flushed = False

    # -- writing
    def write(self, frame: np.ndarray | Image.Image, pts: int | None = None) -> None:
        """Encode one RGB frame (HxWx3 uint8 array or PIL image) at ``pts`` (default: the next index)."""
        av = _av()
        arr = np.asarray(frame.convert("RGB")) if isinstance(frame, Image.Image) else np.asarray(frame)
        if arr.dtype != np.uint8 or arr.shape != (self.height, self.width, 3):
            raise ValueError(
                f"{self.path}: frame {self.frames_written} must be a {self.height}x{self.width}x3 uint8 array, "
                f"got {arr.dtype} {arr.shape}"
            )
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")
        vf.pts = self.frames_written if pts is None else int(pts)
        vf.time_base = self.time_base
        try:
            self._mux(self._stream.encode(vf))
        except Exception as err:
            raise VideoSynthesisError(
                f"{self.path}: encoding frame {self.frames_written} failed: {err}"
            ) from err
        self.frames_written += 1

    def _mux(self, packets) -> None:
        for packet in packets:
            self._container.mux(packet)

    def encode_packets(self, frame: np.ndarray, pts: int | None = None) -> list:
        """Encode one frame but return its packets instead of muxing them (see :meth:`mux`)."""
        av = _av()
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        vf.pts = self.frames_written if pts is None else int(pts)
        vf.time_base = self.time_base
        self.frames_written += 1
        return list(self._stream.encode(vf))

    def flush_packets(self) -> list:
        """Drain the encoder and return the remaining packets without muxing them."""
        self._flushed = True
        return list(self._stream.encode())

    def mux(self, packets) -> None:
        """Mux packets obtained from :meth:`encode_packets` / :meth:`flush_packets`."""
        self._mux(packets)

    @property
    def stream(self):
        return self._stream

    # -- closing
    def close(self) -> Path:
        """Flush the encoder, finish the container and move the file to ``path``."""
        if self._closed:
            return self.path
        try:
            if self.frames_written and not self._flushed:
                self._mux(self._stream.encode())
            self._container.close()
        except Exception as err:
            self._discard()
            raise VideoSynthesisError(f"{self.path}: encoding failed: {err}") from err
        os.replace(self._tmp, self.path)
        self._closed = True
        return self.path

    def abort(self) -> None:
        """Stop without producing ``path`` (the temporary file is removed)."""
        if not self._closed:
            try:
                self._container.close()
            except Exception:
                pass
            self._discard()
            self._closed = True

    def _discard(self) -> None:
        try:
            self._tmp.unlink()
        except FileNotFoundError:
            pass

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


# ============================================================================ camera path


def _smoothstep(t: float) -> float:
    return t * t * (3.0 - 2.0 * t)


@dataclass(frozen=True)
class CameraPath:
    """Where a virtual camera looks over a still photo during a clip.

    Attributes:
        zoom: magnification at the start and at the end, relative to the widest view of the output's
            aspect ratio that fits in the photo (1 = widest; 1.25 = a view 80% as wide). Interpolated
            geometrically, so the apparent zoom speed is constant.
        pan: the view centre at the start and at the end, each ``(x, y)`` in ``[-1, 1]`` of the free
            room on that axis (-1 = touching the left / top edge, 0 = centred, 1 = right / bottom).
            At ``zoom = 1`` one axis has no room, so a pan along it needs ``zoom > 1``.
        shake: standard deviation of a smooth hand-held jitter, in output pixels (0 = tripod).
        shake_hz: highest frequency of the jitter (it is a sum of a few sinusoids below it).
        easing: "smooth" (ease in and out, smoothstep) or "linear".
        seed: seeds the jitter.

    The view never leaves the photo: the centre is clamped so the (shaken) view stays inside.
    """

    zoom: tuple[float, float] = (1.0, 1.0)
    pan: tuple[tuple[float, float], tuple[float, float]] = ((0.0, 0.0), (0.0, 0.0))
    shake: float = 0.0
    shake_hz: float = 2.0
    easing: str = "smooth"
    seed: int = 0

    def __post_init__(self):
        if len(self.zoom) != 2 or min(self.zoom) < 1.0:
            raise ValueError(f"zoom must be two values >= 1 (start, end), got {self.zoom}")
        for point in self.pan:
            if len(point) != 2 or any(not -1.0 <= v <= 1.0 for v in point):
                raise ValueError(f"pan points must be (x, y) in [-1, 1], got {self.pan}")
        if self.shake < 0 or self.shake_hz <= 0:
            raise ValueError("shake must be >= 0 and shake_hz > 0")
        if self.easing not in ("smooth", "linear"):
            raise ValueError(f"easing must be 'smooth' or 'linear', got {self.easing!r}")

    @classmethod
    def still(cls) -> CameraPath:
        return cls()

    @classmethod
    def pan_across(
        cls, direction: str = "right", zoom: float = 1.25, amount: float = 1.0, **kw
    ) -> CameraPath:
        """A pan at fixed zoom; ``direction`` in left/right/up/down; ``amount`` = share of the room."""
        a = float(amount)
        ends = {
            "right": ((-a, 0.0), (a, 0.0)),
            "left": ((a, 0.0), (-a, 0.0)),
            "down": ((0.0, -a), (0.0, a)),
            "up": ((0.0, a), (0.0, -a)),
        }
        if direction not in ends:
            raise ValueError(f"direction must be one of {sorted(ends)}, got {direction!r}")
        return cls(zoom=(zoom, zoom), pan=ends[direction], **kw)

    @classmethod
    def zoom_in(cls, start: float = 1.0, end: float = 1.4, **kw) -> CameraPath:
        return cls(zoom=(start, end), **kw)

    @classmethod
    def zoom_out(cls, start: float = 1.4, end: float = 1.0, **kw) -> CameraPath:
        return cls(zoom=(start, end), **kw)

    @classmethod
    def random(
        cls,
        rng: np.random.Generator,
        max_zoom: float = 1.4,
        shake_probability: float = 0.5,
        max_shake: float = 1.5,
    ) -> CameraPath:
        """A random mild move: a pan, a zoom in, a zoom out or a diagonal pan with zoom."""
        kind = rng.choice(["pan", "zoom_in", "zoom_out", "pan_zoom"])
        z = float(rng.uniform(1.15, max_zoom))
        shake = float(rng.uniform(0.3, max_shake)) if rng.random() < shake_probability else 0.0
        seed = int(rng.integers(0, 2**31 - 1))
        start = tuple(float(v) for v in rng.uniform(-0.8, 0.8, 2))
        end = tuple(float(v) for v in rng.uniform(-0.8, 0.8, 2))
        if kind == "pan":
            return cls(zoom=(z, z), pan=(start, end), shake=shake, seed=seed)
        if kind == "zoom_in":
            return cls(zoom=(1.0, z), pan=((0.0, 0.0), end), shake=shake, seed=seed)
        if kind == "zoom_out":
            return cls(zoom=(z, 1.0), pan=(start, (0.0, 0.0)), shake=shake, seed=seed)
        z0 = float(rng.uniform(1.0, z))
        return cls(zoom=(z0, z), pan=(start, end), shake=shake, seed=seed)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CameraPath:
        data = dict(data)
        data["zoom"] = tuple(data["zoom"])
        data["pan"] = tuple(tuple(p) for p in data["pan"])
        return cls(**data)

    # -- evaluation
    def progress(self, t: float) -> float:
        t = min(1.0, max(0.0, float(t)))
        return _smoothstep(t) if self.easing == "smooth" else t

    def zoom_at(self, t: float) -> float:
        z0, z1 = self.zoom
        return float(z0 * (z1 / z0) ** self.progress(t))

    def pan_at(self, t: float) -> tuple[float, float]:
        e = self.progress(t)
        (x0, y0), (x1, y1) = self.pan
        return x0 + (x1 - x0) * e, y0 + (y1 - y0) * e

    def shake_at(self, seconds: float) -> tuple[float, float]:
        """Jitter offset in output pixels at time ``seconds``: a sum of 3 sinusoids per axis with random
        frequencies below ``shake_hz`` and random phases, scaled to standard deviation ``shake``."""
        if self.shake == 0:
            return 0.0, 0.0
        rng = np.random.default_rng([self.seed, 7])
        freqs = rng.uniform(0.25 * self.shake_hz, self.shake_hz, size=(2, 3))
        phases = rng.uniform(0, 2 * np.pi, size=(2, 3))
        amps = rng.uniform(0.5, 1.0, size=(2, 3))
        amps *= self.shake * np.sqrt(2.0) / np.sqrt((amps**2).sum(axis=1, keepdims=True))
        offset = (amps * np.sin(2 * np.pi * freqs * seconds + phases)).sum(axis=1)
        return float(offset[0]), float(offset[1])


class _Renderer:
    """Renders views of one photo along a :class:`CameraPath` (sub-pixel bicubic scale + shift; the photo is
    pre-scaled once with Lanczos so that the views are only ever magnified, never aliased)."""

    PAD = 4

    def __init__(self, image: Image.Image, size: tuple[int, int], path: CameraPath):
        self.out_w, self.out_h = int(size[0]), int(size[1])
        self.path = path
        src_w, src_h = image.size
        aspect = self.out_w / self.out_h
        fit_w, fit_h = (src_h * aspect, src_h) if src_w / src_h > aspect else (src_w, src_w / aspect)
        widest = fit_w / min(path.zoom)
        scale = min(1.0, self.out_w / widest)  # shrink so the widest view maps 1:1 to the output
        if scale < 1.0:
            work = (max(1, round(src_w * scale)), max(1, round(src_h * scale)))
            image = image.resize(work, Image.Resampling.LANCZOS)
            scale_x, scale_y = work[0] / src_w, work[1] / src_h
        else:
            scale_x = scale_y = 1.0
        self.fit_w, self.fit_h = fit_w * scale_x, fit_h * scale_y
        self.work_w, self.work_h = image.size
        arr = np.pad(np.asarray(image), ((self.PAD, self.PAD), (self.PAD, self.PAD), (0, 0)), mode="edge")
        self.work = Image.fromarray(arr, mode="RGB")

    def view(self, t: float, seconds: float) -> tuple[float, float, float]:
        """(centre x, centre y, working pixels per output pixel) at progress ``t``."""
        z = self.path.zoom_at(t)
        view_w, view_h = self.fit_w / z, self.fit_h / z
        s = view_w / self.out_w
        px, py = self.path.pan_at(t)
        room_x, room_y = max(0.0, self.work_w - view_w) / 2, max(0.0, self.work_h - view_h) / 2
        sx, sy = self.path.shake_at(seconds)
        cx = self.work_w / 2 + px * room_x + sx * s
        cy = self.work_h / 2 + py * room_y + sy * s
        cx = min(max(cx, view_w / 2), self.work_w - view_w / 2)
        cy = min(max(cy, view_h / 2), self.work_h - view_h / 2)
        return cx, cy, s

    def render(self, t: float, seconds: float) -> np.ndarray:
        cx, cy, s = self.view(t, seconds)
        # a resize of a sub-pixel box is a scale + translation with a separable bicubic kernel: the same
        # pixels as an affine warp (pixel centres at k + 0.5) at a fraction of its cost
        x0 = cx + self.PAD - s * self.out_w / 2
        y0 = cy + self.PAD - s * self.out_h / 2
        box = (x0, y0, x0 + s * self.out_w, y0 + s * self.out_h)
        out = self.work.resize((self.out_w, self.out_h), Image.Resampling.BICUBIC, box=box)
        return np.asarray(out)


def iter_camera_frames(
    image: Any,
    size: tuple[int, int],
    content_times: Sequence[float],
    duration: float,
    path: CameraPath | None = None,
) -> Iterator[np.ndarray]:
    """Yield one HxWx3 uint8 view of ``image`` per entry of ``content_times`` (seconds, 0..duration)."""
    renderer = _Renderer(load_image_rgb(image), size, path or CameraPath())
    span = max(float(duration), 1e-9)
    for seconds in content_times:
        yield renderer.render(seconds / span, seconds)


# ============================================================================ clips


def stutter_events(
    num_frames: int, hold: int, every: int, first: int | None = None
) -> tuple[tuple[int, int], ...]:
    """Evenly spaced stutter events ``(frame index, repeats)``: every ``every`` frames, from ``first``
    (default ``every // 2``), the frame is shown ``hold`` extra times."""
    if hold < 1 or every < 1:
        raise ValueError("hold and every must be >= 1")
    start = every // 2 if first is None else first
    return tuple((k, hold) for k in range(start, num_frames - 1, every))


@dataclass(frozen=True)
class ClipSpec:
    """Everything that defines a synthetic clip (all of it is stored with each dataset row).

    ``size`` is (width, height). ``gop`` is in frames (None: one keyframe per second). ``distortion``
    / ``level`` name a type of :mod:`modeling_rsfiqa.distortions` applied to every frame (1 mildest ..
    5 strongest). ``stutter`` holds ``(frame index, repeats)`` events: the frame is shown ``repeats``
    more times (the picture freezes), then the motion jumps to where it would have been; the frame
    count is unchanged. ``drops`` lists frame indices missing from the file: their timestamps are
    skipped (the file then has gaps, i.e. a variable frame rate), the other frames keep their times.
    """

    size: tuple[int, int] = (384, 216)
    fps: float = 12.0
    duration: float = 2.0
    gop: int | None = None
    codec: str | None = None
    crf: float | None = 23.0
    qscale: float | None = None
    preset: str | None = "medium"
    bframes: int | None = None
    threads: int | None = None
    camera: CameraPath = field(default_factory=CameraPath)
    distortion: str | None = None
    level: int | None = None
    stutter: tuple[tuple[int, int], ...] = ()
    drops: tuple[int, ...] = ()
    seed: int = 0

    def __post_init__(self):
        if self.distortion is not None:
            if self.distortion not in DISTORTION_SPECS:
                raise ValueError(f"Unknown distortion {self.distortion!r}; available: {list_distortions()}")
            if self.level is None or not 1 <= int(self.level) <= NUM_LEVELS:
                raise ValueError(f"{self.distortion}: level must be in 1..{NUM_LEVELS}, got {self.level}")
        if self.duration <= 0:
            raise ValueError(f"duration must be > 0, got {self.duration}")

    @property
    def num_frames(self) -> int:
        """Frames of the timeline before drops: ``max(1, round(duration * fps))``."""
        return max(1, int(round(self.duration * float(self.fps))))

    @property
    def gop_frames(self) -> int:
        return int(self.gop) if self.gop is not None else max(1, int(round(float(self.fps))))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["camera"] = self.camera.to_dict()
        return data


def frame_plan(spec: ClipSpec) -> list[tuple[int, float]]:
    """``(pts in frame units, content time in seconds)`` of every frame the file will hold."""
    n = spec.num_frames
    fps = float(spec.fps)
    content = [i / fps for i in range(n)]
    for index, repeats in spec.stutter:
        if not 0 <= index < n or repeats < 0:
            raise ValueError(f"stutter event {(index, repeats)} is outside the {n} frames")
        for j in range(index + 1, min(n, index + 1 + repeats)):
            content[j] = content[index]
    drops = set(spec.drops)
    if any(not 0 <= d < n for d in drops):
        raise ValueError(f"drops {sorted(drops)} outside the {n} frames")
    plan = [(i, content[i]) for i in range(n) if i not in drops]
    if not plan:
        raise ValueError("every frame is dropped")
    return plan


def _distortion_fn(spec: ClipSpec) -> Callable[[np.ndarray, int], np.ndarray] | None:
    if spec.distortion is None:
        return None
    dspec = DISTORTION_SPECS[spec.distortion]
    fn = DISTORTIONS[spec.distortion]
    level = int(spec.level)
    fresh = dspec.category == "noise"  # sensor-like noise changes every frame; blur/exposure stay put

    def apply(frame: np.ndarray, index: int) -> np.ndarray:
        key = [spec.seed, dspec.kadid_id, index] if fresh else [spec.seed, dspec.kadid_id]
        return fn(frame, level, np.random.default_rng(key))

    return apply


@dataclass
class ClipInfo:
    """What :func:`make_clip` wrote."""

    path: Path
    width: int
    height: int
    fps: float
    num_frames: int
    duration: float
    codec: str
    crf: float | None
    qscale: float | None
    gop: int
    bytes: int


def make_clip(
    path: str | os.PathLike,
    image: Any,
    spec: ClipSpec | None = None,
    *,
    frame_fn: Callable[[np.ndarray, int], np.ndarray] | None = None,
    clean_frames: Iterable[np.ndarray] | None = None,
    on_frame: Callable[[int, np.ndarray, np.ndarray], None] | None = None,
    progress: bool = False,
    faststart: bool = True,
    **overrides: Any,
) -> ClipInfo:
    """Render ``image`` along ``spec.camera``, distort, encode and write ``path``; frames stream one by one.

    Args:
        image: a photo (path, PIL image or array, see :func:`~modeling_rsfiqa.image_io.load_image_rgb`).
        spec: the clip; keyword ``overrides`` replace its fields (``make_clip(p, img, crf=35)``).
        frame_fn: extra per-frame processing ``f(frame, index) -> frame``, after ``spec.distortion``.
        clean_frames: already rendered clean frames (one per entry of :func:`frame_plan`) to use instead
            of rendering ``image`` again; lets a dataset builder render a camera move once and encode it
            at many settings.
        on_frame: called as ``on_frame(index, clean, encoded_input)`` for every frame written (e.g. to
            keep the clean render as a reference for a full-reference label).
    """
    from dataclasses import replace

    spec = replace(spec or ClipSpec(), **overrides) if overrides else (spec or ClipSpec())
    plan = frame_plan(spec)
    width, height = spec.size
    distort_fn = _distortion_fn(spec)
    if clean_frames is None:
        clean_iter: Iterator[np.ndarray] = iter_camera_frames(
            image, spec.size, [c for _, c in plan], spec.duration, spec.camera
        )
    else:
        clean_iter = iter(clean_frames)
    codec = spec.codec or _DEFAULT_CODEC.get(Path(path).suffix.lower(), "libx264")
    writer = VideoWriter(
        path,
        width,
        height,
        spec.fps,
        codec=codec,
        crf=spec.crf if codec in CRF_RANGES else None,  # the default CRF is ignored by quantiser codecs
        qscale=spec.qscale,
        gop=spec.gop_frames,
        bframes=spec.bframes,
        preset=spec.preset,
        threads=spec.threads,
        faststart=faststart,
    )
    from tqdm.auto import tqdm

    with writer, tqdm(total=len(plan), desc=Path(path).name, unit="frame", disable=not progress) as bar:
        for index, (pts, _) in enumerate(plan):
            try:
                clean = next(clean_iter)
            except StopIteration:
                raise VideoSynthesisError(
                    f"{path}: clean_frames ran out at frame {index} of {len(plan)}"
                ) from None
            frame = clean
            if distort_fn is not None:
                frame = distort_fn(frame, pts)
            if frame_fn is not None:
                frame = frame_fn(frame, pts)
            writer.write(frame, pts=pts)
            if on_frame is not None:
                on_frame(index, clean, frame)
            bar.update(1)
    out = Path(path)
    return ClipInfo(
        out,
        width,
        height,
        float(spec.fps),
        len(plan),
        spec.num_frames / float(spec.fps),
        writer.codec,
        spec.crf if writer.codec in CRF_RANGES else None,
        spec.qscale,
        spec.gop_frames,
        out.stat().st_size,
    )


# ============================================================================ reading back


@dataclass
class VideoProbe:
    """What a file holds, from its container and packets (nothing is decoded).

    ``frame_times`` are the presentation times (seconds, sorted) of the video packets and
    ``keyframes`` the indices (in that order) of the keyframe packets. ``declared_frames`` is the
    count the container header announces (0 when it has none, e.g. Matroska / WebM); a truncated
    file announces more frames than it holds.
    """

    path: Path
    format: str
    num_video_streams: int
    num_audio_streams: int
    codec: str | None = None
    width: int | None = None
    height: int | None = None
    average_fps: float | None = None
    declared_frames: int = 0
    frame_times: list[float] = field(default_factory=list)
    keyframes: list[int] = field(default_factory=list)
    packet_sizes: list[int] = field(default_factory=list)

    @property
    def num_frames(self) -> int:
        return len(self.frame_times)

    @property
    def frame_durations(self) -> list[float]:
        return list(np.diff(self.frame_times)) if len(self.frame_times) > 1 else []

    @property
    def is_vfr(self) -> bool:
        """True when the gaps between frames differ by more than 1 ms (time-base rounding aside)."""
        d = self.frame_durations
        return bool(d) and (max(d) - min(d)) > 1e-3

    @property
    def gop_lengths(self) -> list[int]:
        return list(np.diff(self.keyframes)) if len(self.keyframes) > 1 else []


def probe_video(path: str | os.PathLike) -> VideoProbe:
    """Streams, size, frame times and keyframes of ``path`` by demuxing (fast; no decoding).

    Raises whatever PyAV raises for a file it cannot open (``av.error.InvalidDataError`` ...).
    """
    av = _av()
    path = Path(path)
    with av.open(str(path)) as container:
        video = container.streams.video
        probe = VideoProbe(path, container.format.name, len(video), len(container.streams.audio))
        if not video:
            return probe
        stream = video[0]
        probe.codec = stream.codec_context.name
        probe.width, probe.height = stream.codec_context.width, stream.codec_context.height
        probe.average_fps = float(stream.average_rate) if stream.average_rate else None
        probe.declared_frames = int(stream.frames or 0)
        entries = []
        for packet in container.demux(stream):
            if packet.size == 0 or packet.pts is None:
                continue
            entries.append((float(packet.pts * packet.time_base), bool(packet.is_keyframe), packet.size))
        entries.sort()
        probe.frame_times = [t for t, _, _ in entries]
        probe.keyframes = [i for i, (_, k, _) in enumerate(entries) if k]
        probe.packet_sizes = [s for _, _, s in entries]
    return probe


def iter_video_frames(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """Decode every frame of the first video stream as HxWx3 uint8 RGB, in presentation order.

    A full decode for labels and tests (the Q-CLIP video processor seeks instead).
    """
    av = _av()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            yield frame.to_ndarray(format="rgb24")


# ============================================================================ test pattern


def test_pattern(width: int = 640, height: int = 360, seed: int = 0) -> Image.Image:
    """A deterministic textured picture for tests and benchmarks that need no photo.

    Multi-scale band-limited noise (a rough 1/f spectrum, like natural images) over a colour gradient,
    with sharp-edged discs and boxes and a fine stripe patch, so that blur, noise and compression
    all change it visibly.
    """
    from scipy import ndimage
    from skimage import draw

    rng = np.random.default_rng([seed, 1234])
    h, w = int(height), int(width)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([0.3 + 0.4 * xx, 0.3 + 0.3 * yy, 0.6 - 0.3 * xx], axis=-1)
    texture = np.zeros((h, w, 3))
    for sigma, weight in ((1.0, 0.05), (4.0, 0.12), (16.0, 0.25)):
        layer = ndimage.gaussian_filter(rng.standard_normal((h, w, 3)), sigma=(sigma, sigma, 0))
        texture += weight * layer / (layer.std() + 1e-8)
    img = np.clip(base + texture, 0, 1)
    scale = max(h, w)
    for _ in range(6):
        colour = rng.uniform(0, 1, 3)
        r, c = rng.uniform(0, h), rng.uniform(0, w)
        rr, cc = draw.disk((r, c), rng.uniform(0.03, 0.1) * scale, shape=(h, w))
        img[rr, cc] = colour
    for _ in range(6):
        colour = rng.uniform(0, 1, 3)
        r0, c0 = int(rng.uniform(0, h)), int(rng.uniform(0, w))
        rr, cc = draw.rectangle((r0, c0), extent=(max(1, h // 8), max(1, w // 10)), shape=(h, w))
        img[rr, cc] = colour
    sh, sw = max(1, h // 6), max(1, w // 6)
    stripes = (np.arange(sw)[None, :] // 2 % 2).astype(float) * np.ones((sh, 1))
    img[h // 12 : h // 12 + sh, w // 2 : w // 2 + sw] = stripes[..., None] * 0.9 + 0.05
    return Image.fromarray((img * 255).round().astype(np.uint8), mode="RGB")


# ============================================================================ odd files


def _pattern_clip(
    path: Path, size: tuple[int, int], num_frames: int, fps: float, faststart: bool = True, **spec_kw: Any
) -> ClipInfo:
    spec = ClipSpec(
        size=size,
        fps=fps,
        duration=num_frames / fps,
        camera=CameraPath.pan_across("right", zoom=1.3),
        **spec_kw,
    )
    pattern = test_pattern(max(64, size[0] * 2), max(64, size[1] * 2), seed=3)
    return make_clip(path, pattern, spec, faststart=faststart)


def write_empty_file(path: str | os.PathLike) -> Path:
    """A zero-byte file (named like a video)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def write_truncated_video(
    path: str | os.PathLike,
    fraction: float = 0.5,
    moov_at_end: bool = False,
    size: tuple[int, int] = (160, 96),
    num_frames: int = 24,
    fps: float = 12.0,
) -> Path:
    """An mp4 cut after ``fraction`` of its bytes, as a broken download leaves it.

    By default the index (moov) is at the front (faststart), so the container opens and announces
    all ``num_frames`` frames but only the first part of the data is there. With ``moov_at_end=True``
    the index is lost with the tail and the file cannot be opened at all.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    full = path.with_name(f".{path.stem}.full{path.suffix}")
    try:
        _pattern_clip(full, size, num_frames, fps, faststart=not moov_at_end, crf=23)
        data = full.read_bytes()
    finally:
        full.unlink(missing_ok=True)
    cut = max(1, int(len(data) * fraction))
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_bytes(data[:cut])
    os.replace(tmp, path)
    return path


def write_audio_only(
    path: str | os.PathLike, duration: float = 1.0, sample_rate: int = 16000, codec: str = "aac"
) -> Path:
    """A file with one audio stream (a 440 Hz tone) and no video stream; mp4 by default."""
    av = _av()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = CONTAINER_FORMATS.get(path.suffix.lower(), "mp4")
    tmp = path.with_name(f".{path.name}.part")
    with av.open(str(tmp), mode="w", format=fmt) as container:
        stream = container.add_stream(codec, rate=sample_rate)
        stream.layout = "mono"
        total = int(round(duration * sample_rate))
        chunk = 1024
        for start in range(0, total, chunk):
            n = min(chunk, total - start)
            t = np.arange(start, start + n) / sample_rate
            samples = (0.3 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)[None, :]
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate = sample_rate
            frame.pts = start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(tmp, path)
    return path


def write_one_frame_video(
    path: str | os.PathLike, size: tuple[int, int] = (160, 96), crf: float = 23
) -> Path:
    """A valid video with exactly one frame."""
    path = Path(path)
    _pattern_clip(path, size, 1, 12.0, crf=crf if (path.suffix.lower() not in (".avi", ".gif")) else None)
    return path


def write_thin_video(
    path: str | os.PathLike, width: int = 1, height: int = 64, num_frames: int = 12, fps: float = 12.0
) -> Path:
    """A 1xN (or Nx1) video: libx264 in 4:4:4, which allows odd and one-pixel sizes."""
    path = Path(path)
    pattern = np.asarray(test_pattern(max(64, width * 4), max(64, height * 4), seed=5))
    with VideoWriter(path, width, height, fps, codec="libx264", crf=20, pix_fmt="yuv444p") as writer:
        for i in range(num_frames):
            y0 = (i * 2) % max(1, pattern.shape[0] - height)
            x0 = (i * 2) % max(1, pattern.shape[1] - width)
            writer.write(np.ascontiguousarray(pattern[y0 : y0 + height, x0 : x0 + width]))
    return path


#: frame durations (seconds) of the default variable-frame-rate file: bursts at 30 fps and stalls
DEFAULT_VFR_DURATIONS: tuple[float, ...] = (
    (1 / 30,) * 6 + (0.2,) + (1 / 30,) * 4 + (0.1, 0.05) + (1 / 30,) * 5
)


def write_vfr_video(
    path: str | os.PathLike,
    durations: Sequence[float] = DEFAULT_VFR_DURATIONS,
    size: tuple[int, int] = (160, 96),
    time_base: Fraction = Fraction(1, 1000),
) -> Path:
    """A variable-frame-rate H.264 file: frame ``i`` lasts ``durations[i]`` seconds (millisecond pts)."""
    if not durations or min(durations) <= 0:
        raise ValueError("durations must be positive")
    starts = np.concatenate([[0.0], np.cumsum(durations)[:-1]])
    pts = [int(round(s / time_base)) for s in starts]
    if len(set(pts)) != len(pts):
        raise ValueError("durations shorter than the time base give duplicate timestamps")
    total = float(sum(durations))
    path = Path(path)
    renderer = _Renderer(
        test_pattern(size[0] * 2, size[1] * 2, seed=4), size, CameraPath.pan_across("right", 1.3)
    )
    nominal = len(durations) / total
    with VideoWriter(path, *size, nominal, crf=23, time_base=time_base, gop=len(durations)) as writer:
        for p, s in zip(pts, starts):
            writer.write(renderer.render(s / total, s), pts=p)
    return path


def write_corrupt_packet_video(
    path: str | os.PathLike,
    packet_index: int | None = None,
    size: tuple[int, int] = (160, 96),
    num_frames: int = 36,
    fps: float = 12.0,
    gop: int = 12,
    seed: int = 0,
) -> Path:
    """An H.264 mp4 whose packet ``packet_index`` (decode order; default: the middle one) carries random
    bytes instead of its payload. The container is intact; the decoder meets garbage mid-stream."""
    path = Path(path)
    spec = ClipSpec(
        size=size, fps=fps, duration=num_frames / fps, gop=gop, camera=CameraPath.pan_across("right", 1.3)
    )
    frames = iter_camera_frames(
        test_pattern(size[0] * 2, size[1] * 2, seed=3),
        size,
        [c for _, c in frame_plan(spec)],
        spec.duration,
        spec.camera,
    )
    av = _av()
    rng = np.random.default_rng(seed)
    with VideoWriter(path, *size, fps, crf=23, gop=gop) as writer:
        packets = []
        for frame in frames:
            packets += writer.encode_packets(frame)
        packets += writer.flush_packets()
        target = len(packets) // 2 if packet_index is None else int(packet_index)
        if not 0 <= target < len(packets):
            raise ValueError(f"{path}: packet_index {packet_index} outside 0..{len(packets) - 1}")
        for i, packet in enumerate(packets):
            if i == target:
                packet = _garbled_packet(av, packet, rng)
            writer.mux([packet])
    return path


def _garbled_packet(av, packet, rng: np.random.Generator):
    """A copy of ``packet`` with the same timing whose payload after the first NAL header is random.

    libx264 emits Annex B (start-code) packets that the mp4 muxer rewrites to length-prefixed NAL
    units; a start code and a slice NAL header are kept so the muxer stores the garbage as one NAL
    unit of the original size (fully random bytes would be stored as an empty sample).
    """
    raw = bytes(packet)
    keep = 5 if raw[:4] == b"\x00\x00\x00\x01" else 4 if raw[:3] == b"\x00\x00\x01" else min(5, len(raw))
    noise = rng.integers(0, 256, max(0, len(raw) - keep), dtype=np.uint8)
    noise[noise == 0] = 0xA5  # no accidental start codes inside the garbage
    bad = av.Packet(raw[:keep] + noise.tobytes())
    bad.pts, bad.dts, bad.duration = packet.pts, packet.dts, packet.duration
    bad.time_base, bad.stream = packet.time_base, packet.stream
    return bad


#: name -> writer(path) of every odd file, with the suffix each is written under
ODD_FILE_WRITERS: dict[str, tuple[str, Callable[[Path], Path]]] = {
    "empty": (".mp4", write_empty_file),
    "truncated": (".mp4", write_truncated_video),
    "truncated_no_index": (".mp4", lambda p: write_truncated_video(p, moov_at_end=True)),
    "audio_only": (".mp4", write_audio_only),
    "one_frame": (".mp4", write_one_frame_video),
    "one_by_n": (".mp4", write_thin_video),
    "vfr": (".mp4", write_vfr_video),
    "corrupt_packet": (".mp4", write_corrupt_packet_video),
}


def write_odd_files(folder: str | os.PathLike, names: Iterable[str] | None = None) -> dict[str, Path]:
    """Write the odd files of :data:`ODD_FILE_WRITERS` (all, or ``names``) into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chosen = list(names) if names is not None else list(ODD_FILE_WRITERS)
    unknown = sorted(set(chosen) - set(ODD_FILE_WRITERS))
    if unknown:
        raise ValueError(f"unknown odd file(s) {unknown}; available: {sorted(ODD_FILE_WRITERS)}")
    out = {}
    for name in chosen:
        suffix, writer = ODD_FILE_WRITERS[name]
        out[name] = writer(folder / f"{name}{suffix}")
    return out
