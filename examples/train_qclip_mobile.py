"""Train the small shipped Q-CLIP video model (``qclip-mobile``) on synthetic + CLIVE clips, on a CPU.

    python datasets_scripts/video_clips.py synthetic --out ../cache/clips/syn --max-side 160 --fps 8 \\
        --duration 1.0 --preset veryfast --limit 20 --no-stutter
    python datasets_scripts/video_clips.py clive --out ../cache/clips/clive --max-side 160 --fps 8 \\
        --duration 1.0 --preset veryfast --limit 200
    python examples/train_qclip_mobile.py --synthetic ../cache/clips/syn --clive ../cache/clips/clive \\
        --out modeling_rsfiqa/default_qclip

Vision: the frozen ImageNet MobileNetV2; text: a frozen RANDOM CLIP text tower (no pretrained text weights
offline); only Q-CLIP's adapters, context vectors and w train (PLCC + 0.3 rank, AdamW, warm-up + cosine).
The frozen, unadapted stem + first stages are run once per frame and cached (``TimmCNNTower.prefix``).
Training clips use ``--train-frames`` frames, validation the model's own 8. Validation: the held-out kodak24 synthetic clips (severity order per type, SRCC / PLCC) and the CLIVE
validation clips. Writes the model, processor and ``eval_results.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasets_scripts.video_clips import load_clip_dataset  # noqa: E402
from modeling_rsfiqa.factory import create_qclip_model  # noqa: E402
from modeling_rsfiqa.quality_metrics import compute_iqa_metrics, severity_order_accuracy  # noqa: E402

SEVERITY_TYPES = ("h264", "gaussian_blur", "white_noise")


def encode_prefix(model, processor, rows, num_frames: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode each clip's sampled frames and run the frozen prefix once: ``(N, T, C, h, w)`` float16, labels."""
    tower = model.vlm.vision_model
    video_processor = copy.deepcopy(processor.video_processor)
    video_processor.num_frames = num_frames or video_processor.num_frames
    feats = []
    for r in rows:
        pixels = video_processor(r["video"], return_tensors="pt")["pixel_values_videos"][0]
        feats.append(tower.prefix(pixels).half())
    return torch.stack(feats), torch.tensor([float(r["mos"]) for r in rows])


@torch.no_grad()
def predict(model, feats: torch.Tensor, batch: int = 32) -> np.ndarray:
    model.eval()
    out = [model(feats[i : i + batch].float()).logits for i in range(0, len(feats), batch)]
    return torch.cat(out).numpy()


def severity_report(rows, scores) -> dict[str, float]:
    """Per type: pairs within (photo, type) incl. the photo's pristine clip as level 0."""
    report = {}
    for t in SEVERITY_TYPES:
        idx = [i for i, r in enumerate(rows) if r["distortion_type"] in (t, "pristine")]
        res = severity_order_accuracy(
            [scores[i] for i in idx],
            [rows[i]["reference"] for i in idx],
            [rows[i]["distortion_level"] for i in idx],
        )
        report[f"severity_order_{t}"] = res["accuracy"]
        report[f"severity_pairs_{t}"] = res["pairs"]
    return report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--synthetic", required=True)
    p.add_argument("--clive", default=None)
    p.add_argument("--out", required=True)
    p.add_argument("--preset", default="qclip-mobile")
    p.add_argument("--weights", default=None, help="MobileNetV2 ImageNet weights (default: the preset's)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--train-frames", type=int, default=4, help="frames per training clip (speed)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--time-budget", type=float, default=600.0, help="seconds of training at most")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model, processor = create_qclip_model(args.preset, pretrained_vlm=args.weights or True)
    print(model.trainable_parameter_report(), flush=True)

    syn, _, _ = load_clip_dataset(args.synthetic)
    train_rows, val_rows = list(syn["train"]), list(syn["validation"])
    clive_val = []
    if args.clive:
        clive, _, _ = load_clip_dataset(args.clive)
        train_rows += list(clive["train"])
        clive_val = list(clive["validation"])
    t0 = time.time()
    x_train, y_train = encode_prefix(model, processor, train_rows, args.train_frames)
    x_val, _ = encode_prefix(model, processor, val_rows)
    x_cval, _ = encode_prefix(model, processor, clive_val) if clive_val else (None, None)
    print(f"decoded + prefix of {len(x_train) + len(x_val)} clips in {time.time() - t0:.0f}s", flush=True)

    params = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-4)
    steps_per_epoch = math.ceil(len(x_train) / args.batch_size)
    total = args.epochs * steps_per_epoch
    warmup = max(1, total // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total)))
    )
    t0, step = time.time(), 0
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(x_train))
        losses = []
        for i in range(0, len(perm), args.batch_size):
            b = perm[i : i + args.batch_size]
            if len(b) < 2:
                continue
            out = model(x_train[b].float(), labels=y_train[b])
            opt.zero_grad()
            out.loss.backward()
            opt.step()
            sched.step()
            step += 1
            losses.append(out.loss.item())
        val_scores = predict(model, x_val)
        sev = severity_report(val_rows, val_scores)
        print(
            f"epoch {epoch} loss {np.mean(losses):.4f} "
            + " ".join(f"{k[15:]} {v:.3f}" for k, v in sev.items() if k.startswith("severity_order"))
            + f" {time.time() - t0:.0f}s",
            flush=True,
        )
        if time.time() - t0 > args.time_budget:
            print("time budget reached", flush=True)
            break

    # calibration: the training set's z-scored linear map of logits onto the MOS scale
    train_logits = predict(model, x_train)
    cfg = model.config
    cfg.logit_mean, cfg.logit_std = float(train_logits.mean()), float(train_logits.std() + 1e-8)
    cfg.label_mean, cfg.label_std = float(y_train.mean()), float(y_train.std())
    val_scores = predict(model, x_val)
    results = {
        "synthetic_validation": {
            **severity_report(val_rows, val_scores),
            **compute_iqa_metrics(val_scores, [r["mos"] for r in val_rows]),
            "clips": len(val_rows),
        },
        "train_clips": len(x_train),
        "epochs_run": epoch + 1,
        "train_seconds": round(time.time() - t0, 1),
        "trainable_parameters": model.trainable_parameter_report(),
        "command": "python " + " ".join(sys.argv),
    }
    if x_cval is not None:
        results["clive_validation"] = {
            **compute_iqa_metrics(predict(model, x_cval), [r["mos"] for r in clive_val]),
            "clips": len(clive_val),
        }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg.vlm_name_or_path = None
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / "eval_results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
