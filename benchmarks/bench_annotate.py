"""Naive vs optimised region annotation on CPU with a mid-size random Qwen2-VL (nothing downloaded).

    .venv/bin/python benchmarks/bench_annotate.py [--regions 8] [--max-new-tokens 32] [--repeats 2]

naive: ``model.generate`` for one region at a time (full prompt each time) and per-region scoring passes.
optimised: shared prefix (system + full image) run once, its KV cache reused by all regions; batched
greedy decoding and batched scoring. The last line is ``speedup=<x> identical=<True|False>``, where
identical means the same generated tokens and texts for every region (numbers agree to float round-off).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from PIL import Image


def main() -> None:
    from modeling_rsfiqa.annotation_rsfiqa import (
        AnnotatorConfig,
        RegionAnnotator,
        build_random_vlm,
        grid_label_map,
    )

    ap = argparse.ArgumentParser()
    ap.add_argument("--regions", type=int, default=8, help="grid regions (2 rows)")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--size", default="mid", choices=["tiny", "mid"])
    ap.add_argument("--image-size", type=int, default=336)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--region-mode", default="crop", choices=["crop", "box", "overlay"])
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model, processor = build_random_vlm(args.size, seed=0)
    n_params = sum(p.numel() for p in model.parameters())
    cfg = AnnotatorConfig(max_new_tokens=args.max_new_tokens, region_mode=args.region_mode)
    annotator = RegionAnnotator(model, processor, cfg)
    rng = np.random.RandomState(0)
    s = args.image_size
    base = np.linspace(0, 255, s)[None, :, None] * np.ones((s, 1, 3))
    image = Image.fromarray(np.clip(base + rng.normal(0, 25, (s, s, 3)), 0, 255).astype(np.uint8))
    cols = max(1, args.regions // 2)
    label_map = grid_label_map(s, s, 2 if args.regions > 1 else 1, cols)
    prefix, suffixes = annotator.build_inputs(image, label_map)
    print(
        f"model: Qwen2-VL random '{args.size}' ({n_params / 1e6:.1f}M params), threads={torch.get_num_threads()}, "
        f"regions={len(suffixes)}, prefix tokens={len(prefix)}, suffix tokens={[len(x) for x in suffixes]}, "
        f"max_new_tokens={args.max_new_tokens}, region_mode={args.region_mode}"
    )

    annotator.annotate(image, label_map, method="fast")  # warm-up (allocator, lazy inits)
    results, times = {}, {"naive": [], "fast": []}
    for _ in range(args.repeats):
        for method in ("naive", "fast"):
            t0 = time.perf_counter()
            results[method] = annotator.annotate(image, label_map, method=method)
            times[method].append(time.perf_counter() - t0)
    naive, fast = results["naive"], results["fast"]
    identical = (
        naive.raw_texts == fast.raw_texts and naive.meta["generated_tokens"] == fast.meta["generated_tokens"]
    )
    t_naive, t_fast = min(times["naive"]), min(times["fast"])
    print(f"generated tokens per region: {fast.meta['generated_tokens']}")
    d_probs = np.abs(naive.level_probs - fast.level_probs).max()
    d_embeds = np.abs(naive.text_embeds - fast.text_embeds).max()
    print(f"max |level_probs naive - fast| = {d_probs:.2e}, max |text_embeds naive - fast| = {d_embeds:.2e}")
    print(f"naive: {t_naive:.2f} s/image (runs: {', '.join(f'{t:.2f}' for t in times['naive'])})")
    print(f"optimised: {t_fast:.2f} s/image (runs: {', '.join(f'{t:.2f}' for t in times['fast'])})")
    print(f"speedup={t_naive / t_fast:.2f} identical={identical}")


if __name__ == "__main__":
    main()
