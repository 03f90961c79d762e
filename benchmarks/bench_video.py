"""Video scoring cost against decoding every frame, its peak memory, and a short clip on 2 threads (Q-CLIP).

    make bench-video
    .venv/bin/python benchmarks/bench_video.py [--model DIR] [--seconds 60] [--threads 2] [--repeats 3]

Issue 10's targets, measured in one run on clips made here with PyAV (libx264, preset fast, yuv420p):

* a 60 s 1280x720 30 fps clip with 1 s GOPs (keyframe every 30 frames, B-frames on): ``score/decode`` is
  the time of one ``pipeline("video-quality")`` call on it (open, packet index, seeks, the sampled frames
  decoded and resized, the model) over the time to decode every frame with the same decoder (PyAV,
  ``thread_type="AUTO"`` as ``VideoReader`` uses it, frames not converted to RGB: the cheapest full
  decode). Target <= 0.3. Both are medians of ``--repeats`` runs taken round-robin.
* peak memory growth while scoring that clip: a fresh subprocess loads the pipeline, resets its peak RSS to
  the current RSS (``/proc/self/clear_refs``; ``ru_maxrss``, which cannot be reset and already holds the
  import-time peak, only where that is unavailable), scores the clip once and reads the peak again; the growth
  is peak minus the RSS before. Target <= 1 GiB.
* a 2 s 640x360 30 fps clip scored with ``torch.set_num_threads(2)``, median of ``--repeats`` calls after
  one warm-up call. Target <= 0.5 s.

Model: ``--model DIR`` if given, else the packaged ``default_qclip`` (the shipped video model) when it
exists, else a random ``qclip-tiny`` (32x32 towers: the model costs almost nothing, so the figures are the
decoding path's; the script prints which model it used).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

GIB = 1 << 30
TARGETS = {"score/decode": 0.3, "rss_growth_gib": 1.0, "short_clip_s": 0.5}


def make_clip(path: Path, seconds: float, width: int, height: int, fps: int = 30, gop: int = 30) -> Path:
    """A slow pan over a smooth random texture with a moving bright square (real motion for the encoder)."""
    import av

    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (height // 16 + 2, (width + 4 * int(seconds * fps)) // 16 + 2, 3))
    texture = np.kron(coarse, np.ones((16, 16, 1))).astype(np.uint8)  # blocky, then smoothed by the encoder
    n = int(round(seconds * fps))
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {
            "preset": "fast",
            "g": str(gop),
            "keyint_min": str(gop),
            "sc_threshold": "0",
            "crf": "23",
        }
        for i in range(n):
            x = 2 * i
            image = np.ascontiguousarray(texture[:height, x : x + width])
            s = height // 6
            cx = int((width - s) * (0.5 + 0.45 * np.sin(i / 20)))
            image[height // 2 - s // 2 : height // 2 + s // 2, cx : cx + s] = 235
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def decode_all(path: Path) -> tuple[float, int]:
    """Seconds to decode every frame with PyAV (no colour conversion), and the frame count."""
    import av

    start = time.perf_counter()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        n = sum(1 for _ in container.decode(stream))
    return time.perf_counter() - start, n


def resolve_model(model: str | None, workdir: Path) -> tuple[str, str]:
    """(folder, description) of the model to benchmark."""
    if model:
        return model, f"--model {model}"
    from modeling_rsfiqa import DEFAULT_QCLIP_DIR as shipped

    if (shipped / "config.json").is_file():
        return str(shipped), f"shipped default_qclip ({shipped})"
    from modeling_rsfiqa.factory import create_model

    net, processor = create_model("qclip-tiny")
    folder = workdir / "qclip-tiny"
    net.save_pretrained(folder)
    processor.save_pretrained(folder)
    return str(folder), "qclip-tiny, RANDOM weights (no default_qclip in this installation)"


CHILD = """
import json, resource, sys, time
import torch
torch.set_num_threads(int(sys.argv[3]))
from transformers import pipeline
import modeling_rsfiqa  # noqa: F401


def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))


pipe = pipeline("video-quality", model=sys.argv[1])
try:  # reset the peak (VmHWM) to the current RSS (Linux >= 4.0), so the peak below is the scoring's own
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before, method = status("VmRSS"), "VmHWM reset"
except OSError:
    before, method = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "ru_maxrss delta"
start = time.perf_counter()
out = pipe(sys.argv[2])
seconds = time.perf_counter() - start
after = status("VmHWM") if method == "VmHWM reset" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"before": before, "after": after, "method": method, "seconds": seconds, "score": out["score"]}))
"""


def peak_rss_growth(model: str, clip: Path, threads: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, model, str(clip), str(threads)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="saved Q-CLIP folder (default: see the docstring)")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the long 720p clip")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", default=None, help="where the clips go (default: a temporary folder)")
    args = parser.parse_args(argv)

    import torch
    from transformers import pipeline

    import modeling_rsfiqa  # noqa: F401  (registers the task)

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmp = Path(tmp)
        model, described = resolve_model(args.model, tmp)
        print(f"model: {described}")
        start = time.perf_counter()
        long_clip = make_clip(tmp / "long_720p.mp4", args.seconds, 1280, 720)
        print(
            f"made {long_clip.name}: {args.seconds:g} s 1280x720 30 fps, 1 s GOPs, "
            f"{long_clip.stat().st_size / 1e6:.1f} MB in {time.perf_counter() - start:.1f} s"
        )
        short_clip = make_clip(tmp / "short_360p.mp4", 2.0, 640, 360)
        pipe = pipeline("video-quality", model=model)
        pipe(str(short_clip))  # warm-up (first-call allocations, lazy imports)

        decode_times, score_times = [], []
        frames = 0
        for _ in range(args.repeats):  # round-robin: both feel the same machine load
            seconds, frames = decode_all(long_clip)
            decode_times.append(seconds)
            start = time.perf_counter()
            pipe(str(long_clip))
            score_times.append(time.perf_counter() - start)
        decode_s, score_s = statistics.median(decode_times), statistics.median(score_times)

        short_times = []
        for _ in range(max(args.repeats, 5)):
            start = time.perf_counter()
            pipe(str(short_clip))
            short_times.append(time.perf_counter() - start)
        short_s = statistics.median(short_times)

        memory = peak_rss_growth(model, long_clip, args.threads)
        growth = (memory["after"] - memory["before"]) / GIB

    ratio = score_s / decode_s
    rows = [
        ("decode every frame (PyAV)", f"{decode_s:.2f} s", f"{frames} frames, {frames / decode_s:.0f} fps"),
        ("score (pipeline call)", f"{score_s:.3f} s", ""),
        (
            "score/decode",
            f"{ratio:.3f}",
            f"target <= {TARGETS['score/decode']}: {'OK' if ratio <= 0.3 else 'MISS'}",
        ),
        (
            "peak RSS growth while scoring",
            f"{growth * 1024:.0f} MiB",
            f"{memory['method']}: {memory['before'] / GIB:.2f} -> peak {memory['after'] / GIB:.2f} GiB; "
            f"target <= 1 GiB: {'OK' if growth <= TARGETS['rss_growth_gib'] else 'MISS'}",
        ),
        (
            f"2 s 640x360 clip, {args.threads} threads",
            f"{short_s:.3f} s",
            f"target <= 0.5 s: {'OK' if short_s <= TARGETS['short_clip_s'] else 'MISS'}",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>10}  {note}")
    print("runs (s): decode " + ", ".join(f"{t:.2f}" for t in decode_times))
    print("          score  " + ", ".join(f"{t:.3f}" for t in score_times))
    print("          short  " + ", ".join(f"{t:.3f}" for t in short_times))
    return 0


if __name__ == "__main__":
    sys.exit(main())
