"""Speed of ``pipeline("region-quality")`` with the small ROI model on CPU (issue 9, Targets "Speed").

    .venv/bin/python benchmarks/bench_regions.py [--threads 2] [--repeats 15] [--size 500]

Prints, on ``--threads`` torch CPU threads (2 by default), medians over ``--repeats`` calls after warm-up:

(a) one call with 8 ROIs on one image vs one call with 1 ROI, as a ratio (target <= 2x: the image is
    encoded once; per ROI only its mask, crop and the MFE/head rows are added); the two kinds of call
    alternate, so load changes on a shared machine affect both alike;
(b) ms for a ``--size`` x ``--size`` image (500 by default) with one ROI (target <= 100 ms), end to end
    (in-memory image -> processor -> model -> result dicts).

A breakdown (processor vs model forward, 1 and 8 ROIs) shows where the time goes. Model: the shipped default
(``modeling_rsfiqa/default_seagull``) if present, else the ``seagull-region-mobile`` preset (the same
architecture) with the ../shared MobileNetV2 weights if present, else randomly initialised; the first line
says which. Timings do not depend on the weights' values.

On a machine shared with other jobs, OpenMP's spin-waiting threads inflate 2-thread wall times several-fold;
``OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_regions.py`` measures without it (the policy in
effect is printed).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def _timed_calls(fn: Callable[[], object], repeats: int, warmup: int = 3) -> tuple[list[float], list[float]]:
    """Wall-clock and process-CPU ms of ``repeats`` calls of ``fn`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    walls, cpus = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(1000.0 * (time.perf_counter() - t))
        cpus.append(1000.0 * (time.process_time() - c))
    return walls, cpus


def _median_ms(fn: Callable[[], object], repeats: int, warmup: int = 3) -> float:
    return statistics.median(_timed_calls(fn, repeats, warmup)[0])


def _build_pipeline(tmp: str):
    from transformers import pipeline

    import modeling_rsfiqa  # noqa: F401  (registers the task)
    from modeling_rsfiqa.factory import create_model

    default = ROOT / "modeling_rsfiqa" / "default_seagull"
    if (default / "config.json").is_file():
        return pipeline("region-quality", model=str(default)), f"shipped default ({default})"
    weights = ROOT.parent / "shared" / "weights" / "mobilenetv2_100.tf2ptq_in1k.safetensors"
    if weights.is_file():
        model, processor = create_model("seagull-region-mobile", pretrained_backbone=str(weights))
        which = f"seagull-region-mobile preset + MobileNetV2 weights ({weights})"
    else:
        model, processor = create_model("seagull-region-mobile")
        which = "seagull-region-mobile preset, random init (no default_seagull, no ../shared weights)"
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    return pipeline("region-quality", model=tmp), which


def _rois(size: int, n: int, rng: np.random.RandomState) -> list:
    """``n`` ROIs of varied kinds and sizes: boxes and elliptic masks."""
    out = []
    for i in range(n):
        w, h = rng.randint(size // 8, size // 2, 2)
        x0, y0 = rng.randint(0, size - w), rng.randint(0, size - h)
        if i % 2 == 0:
            out.append([int(x0), int(y0), int(x0 + w), int(y0 + h)])
        else:
            yy, xx = np.mgrid[:size, :size]
            cy, cx = y0 + h / 2, x0 + w / 2
            out.append(((yy - cy) / (h / 2)) ** 2 + ((xx - cx) / (w / 2)) ** 2 <= 1.0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--size", type=int, default=500, help="image side for (b), also used for (a)")
    ap.add_argument("--rois", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    rng = np.random.RandomState(0)
    s = args.size
    base = np.linspace(0, 255, s)[None, :, None] * np.ones((s, 1, 3))
    image = Image.fromarray(np.clip(base + rng.normal(0, 25, (s, s, 3)), 0, 255).astype(np.uint8))
    rois = _rois(s, args.rois, rng)

    with tempfile.TemporaryDirectory() as tmp:
        rq, which = _build_pipeline(tmp)
        proc, model = rq.processor, rq.model
        n_params = sum(p.numel() for p in model.parameters())
        print(
            f"model: {which}; {type(model).__name__}, {n_params / 1e6:.2f}M params, "
            f"image_size={model.config.image_size}, local_crop={model.config.local_crop_size}; "
            f"threads={torch.get_num_threads()} (OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}), "
            f"image {s}x{s}, repeats={args.repeats} (median after warm-up)"
        )
        # 1-ROI and n-ROI calls alternate, so load changes on a shared machine hit both alike
        state = {"k": 0}

        def alternate() -> None:
            n = 1 if state["k"] % 2 == 0 else len(rois)
            state["k"] += 1
            rq(image, regions=rois[:n])

        walls, cpus = _timed_calls(alternate, 2 * args.repeats, warmup=4)
        one_ms, many_ms = statistics.median(walls[0::2]), statistics.median(walls[1::2])
        cpu = [statistics.median(cpus[0::2]), statistics.median(cpus[1::2])]

        # breakdown: where the time goes
        names = proc.model_input_names
        rows = []
        for n in (1, len(rois)):
            batch = proc(image, rois[:n])
            inputs = {k: batch[k] for k in names if k in batch}

            def forward(inputs=inputs):
                with torch.inference_mode():
                    model(**inputs)

            proc_ms = _median_ms(lambda n=n: proc(image, rois[:n]), args.repeats)
            fwd_ms = _median_ms(forward, args.repeats)
            rows.append((n, proc_ms, fwd_ms))
    for n, proc_ms, fwd_ms in rows:
        print(f"  breakdown, {n} ROI(s): processor {proc_ms:.1f} ms, model forward {fwd_ms:.1f} ms")
    ratio = many_ms / one_ms
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"  process CPU time per call: 1 ROI {cpu[0]:.1f} ms, {len(rois)} ROIs {cpu[1]:.1f} ms; "
        f"load average {load:.1f} on {os.cpu_count()} CPUs (wall times grow when other jobs share them)"
    )
    print(
        f"(a) {len(rois)} ROIs in one call: {many_ms:.1f} ms vs 1 ROI: {one_ms:.1f} ms -> "
        f"ratio {ratio:.2f}x (target <= 2x) {'OK' if ratio <= 2 else 'OVER'}"
    )
    print(f"(b) {s}x{s} image, 1 ROI: {one_ms:.1f} ms (target <= 100 ms) {'OK' if one_ms <= 100 else 'OVER'}")


if __name__ == "__main__":
    main()
