"""Which severity pairs a Q-CLIP video model gets wrong on the synthetic clips: per type, by level pair and photo.

    python examples/qclip_severity_pairs.py --model modeling_rsfiqa/default_qclip --synthetic ../cache/clips/syn \\
        --val-limit 20 [--split selection --holdout-photos 5] [--pixel-cache DIR] [--input-energy white_noise]

The test split is the synthetic dataset's ``validation`` (Kodak24; ``--val-limit`` keeps its first N photos as
``train_qclip_mobile.py`` does); ``--split selection`` scores the training photos that ``train_qclip_mobile.py
--holdout-photos N --seed S`` keeps out to choose the epoch. A pair (pristine as level 0) is wrong when the
more distorted clip does not score lower (ties count as wrong here). Also prints, per type, the spread of the
model's raw output over a photo's levels (median and range over photos): how strongly it reacts at all.
``--input-energy TYPE`` also prints, per photo, the mean |Laplacian| of the model's input frames (after decoding
and resizing) at each level of TYPE over the pristine clip's: whether the distortion survives to the input.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train_qclip_mobile import SEVERITY_TYPES, clip_prefix, predict, split_holdout  # noqa: E402

__all__ = ["input_energy_ratios", "severity_failures"]

_LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)


def input_energy_ratios(pixels: dict[int, torch.Tensor]) -> dict[int, float]:
    """Mean |Laplacian| of each level's frames ``(T, C, H, W)`` over that of level 0 (the pristine clip)."""

    def energy(x: torch.Tensor) -> float:
        c = x.shape[1]
        return (
            torch.nn.functional.conv2d(x.float(), _LAPLACIAN.repeat(c, 1, 1, 1), groups=c).abs().mean().item()
        )

    base = energy(pixels[0])
    return {level: energy(x) / base for level, x in sorted(pixels.items()) if level}


def severity_failures(rows, scores, distortion_type: str) -> dict:
    """Wrong pairs of one type: ``accuracy``, ``pairs``, ``by_pair`` ((level_a, level_b) -> count, a < b),
    ``by_photo`` (reference -> count) and ``spread`` (per photo, max - min score over its levels)."""
    clips: dict[str, dict[int, float]] = {}
    for r, s in zip(rows, scores):
        if r["distortion_type"] in (distortion_type, "pristine"):
            clips.setdefault(r["reference"], {})[int(r["distortion_level"] or 0)] = float(s)
    by_pair, by_photo, spread, total = Counter(), Counter(), {}, 0
    for ref, levels in clips.items():
        spread[ref] = max(levels.values()) - min(levels.values())
        for a, b in itertools.combinations(sorted(levels), 2):
            total += 1
            if levels[b] >= levels[a]:
                by_pair[(a, b)] += 1
                by_photo[ref] += 1
    wrong = sum(by_pair.values())
    return {
        "accuracy": 1.0 - wrong / total if total else float("nan"),
        "pairs": total,
        "by_pair": dict(by_pair),
        "by_photo": dict(by_photo.most_common()),
        "spread": spread,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--synthetic", required=True)
    p.add_argument("--split", default="test", choices=("test", "selection"))
    p.add_argument("--val-limit", type=int, default=None)
    p.add_argument("--holdout-photos", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--pixel-cache", default=None, help="train_qclip_mobile.py's frame / prefix cache")
    p.add_argument(
        "--input-energy", default=None, choices=SEVERITY_TYPES, help="input high-pass energy check"
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from transformers import AutoProcessor

    import modeling_rsfiqa  # noqa: F401  (registers the model classes)
    from datasets_scripts.video_clips import load_clip_dataset
    from modeling_rsfiqa.modeling_qclip import QCLIPForVideoQualityScoring

    model = QCLIPForVideoQualityScoring.from_pretrained(args.model)
    processor = AutoProcessor.from_pretrained(args.model)
    syn, _, _ = load_clip_dataset(args.synthetic)
    if args.split == "selection":
        rows = split_holdout(list(syn["train"]), args.holdout_photos, args.seed)[1]
    else:
        rows = list(syn["validation"])
        if args.val_limit:
            keep = sorted({r["reference"] for r in rows})[: args.val_limit]
            rows = [r for r in rows if r["reference"] in keep]
    if not rows:
        raise ValueError(f"no clips in the {args.split} split of {args.synthetic}")
    scores = predict(model, clip_prefix(model, processor, rows, None, args.pixel_cache))
    for t in SEVERITY_TYPES:
        res = severity_failures(rows, scores, t)
        spread = np.array(list(res["spread"].values()))
        print(f"{t}: {res['accuracy']:.3f} of {res['pairs']} pairs")
        print("  wrong by level pair:", {f"{a}v{b}": n for (a, b), n in sorted(res["by_pair"].items())})
        print("  wrong by photo:", res["by_photo"])
        print(
            f"  raw output spread over a photo's levels: median {np.median(spread):.3f} "
            f"(min {spread.min():.3f}, max {spread.max():.3f})"
        )
    if args.input_energy:
        print(f"input mean |Laplacian| over the pristine clip's, {args.input_energy} levels 1-5:")
        for ref in sorted({r["reference"] for r in rows}):
            clips = {
                int(r["distortion_level"] or 0): r["video"]
                for r in rows
                if r["reference"] == ref and r["distortion_type"] in (args.input_energy, "pristine")
            }
            pixels = {
                level: processor.video_processor(video, return_tensors="pt")["pixel_values_videos"][0]
                for level, video in clips.items()
            }
            ratios = input_energy_ratios(pixels)
            print(f"  {ref}: " + " ".join(f"{v:.2f}" for v in ratios.values()))


if __name__ == "__main__":
    main()
