"""Train the small shipped Q-CLIP video model (``qclip-mobile``) on synthetic + CLIVE clips, on a CPU.

    python datasets_scripts/video_clips.py synthetic --out ../cache/clips/syn --max-side 160 --fps 8 \\
        --duration 1.0 --preset veryfast --limit 60 --no-stutter
    python datasets_scripts/video_clips.py clive --out ../cache/clips/clive --max-side 160 --fps 8 \\
        --duration 1.0 --preset veryfast --limit 200
    python examples/train_qclip_mobile.py --synthetic ../cache/clips/syn --clive ../cache/clips/clive \\
        --out outputs/qclip-mobile --threads 1 --epochs 8 --time-budget 1200 --holdout-photos 5 \\
        --photos-per-batch 2 --group-rank-weight 1.0 --val-limit 20 --adapted-stage 4 \\
        --extra-rank-type white_noise --extra-rank-weight 2.0 --select-by min

(the shipped ``modeling_rsfiqa/default_qclip``; its card lists what each option changed.)

Vision: the frozen ImageNet MobileNetV2; text: a frozen RANDOM CLIP text tower (no pretrained text weights
offline); only Q-CLIP's adapters, context vectors and w train (PLCC + 0.3 rank, AdamW, warm-up + cosine).
The frozen, unadapted stem + first stages are run once per frame and cached (``TimmCNNTower.prefix``).
Training clips use ``--train-frames`` frames, validation the model's own 8. Validation: the held-out kodak24
synthetic clips (severity order per type, SRCC / PLCC) and the CLIVE validation clips. Writes the model,
processor and ``eval_results.json`` into ``--out``.

Overfitting control and the severity order (the issue's target, >= 0.85 per type):

* ``--holdout-photos N`` keeps N training photos per source set (seeded) out of training as a SELECTION split:
  the weights of the epoch with the best mean severity order on it are the ones saved (kodak24 stays a pure
  test set: it is reported every epoch but never used to choose);
* ``--photos-per-batch K`` builds each synthetic batch from all clips of K photos (CLIVE clips in their own
  random batches), and ``--group-rank-weight`` adds a rank loss over the pairs of one photo x one type
  (pristine as level 0) ordered by the synthesis level (``losses.rank_loss`` with a ``pair_mask``);
* ``--extra-rank-type T --extra-rank-weight W`` adds W x the same rank loss over type T's pairs only (white
  noise, the type whose level order generalised worst to new photos);
* ``--select-by min`` selects on the worst type's severity order of the selection split instead of the mean;
* ``--adapted-stage`` / ``--image-size`` override the preset (E-SCMA's MobileNetV2 stage, the frame size);
* ``--pixel-cache DIR`` stores the decoded, resized frames (float16) so that re-runs skip decoding.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasets_scripts.video_clips import load_clip_dataset  # noqa: E402
from modeling_rsfiqa.factory import create_qclip_model, qclip_preset_config  # noqa: E402
from modeling_rsfiqa.losses import rank_loss  # noqa: E402
from modeling_rsfiqa.quality_metrics import compute_iqa_metrics, severity_order_accuracy  # noqa: E402

SEVERITY_TYPES = ("h264", "gaussian_blur", "white_noise")


def _cached(cache_dir: str | None, kind: str, key: str, make) -> torch.Tensor:
    """``make()``, stored in / read back from ``cache_dir/<kind>-<hash of key>.pt`` when a folder is given."""
    if not cache_dir:
        return make()
    file = Path(cache_dir) / f"{kind}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"
    if file.is_file():
        return torch.load(file, weights_only=True)
    value = make()
    file.parent.mkdir(parents=True, exist_ok=True)
    torch.save(value, file.with_suffix(".tmp"))
    file.with_suffix(".tmp").rename(file)
    return value


def clip_prefix(
    model, processor, rows, num_frames: int | None = None, cache_dir: str | None = None
) -> torch.Tensor:
    """Each clip's sampled frames through the frozen prefix, ``(N, T, C, h, w)`` float16.

    With ``cache_dir``, the decoded frames (float16) and the prefix output are cached there (keyed by the
    video processor's settings, the videos and the vision tower's config)."""
    video_processor = copy.deepcopy(processor.video_processor)
    video_processor.num_frames = num_frames or video_processor.num_frames
    key = json.dumps([video_processor.to_dict(), [r["video"] for r in rows]], sort_keys=True, default=str)

    def pixels() -> torch.Tensor:
        return torch.stack(
            [video_processor(r["video"], return_tensors="pt")["pixel_values_videos"][0].half() for r in rows]
        )

    vision = json.dumps(model.config.vlm_config.to_dict(), sort_keys=True, default=str)
    return _cached(
        cache_dir,
        "prefix",
        key + vision,
        lambda: encode_prefix(model, _cached(cache_dir, "pixels", key, pixels)),
    )


@torch.no_grad()
def encode_prefix(model, pixels: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """Run the frozen prefix of the vision tower once per frame: ``(N, T, C, h, w)`` float16."""
    tower = model.vlm.vision_model
    n, t = pixels.shape[:2]
    flat = pixels.flatten(0, 1)
    out = torch.cat([tower.prefix(flat[i : i + chunk].float()).half() for i in range(0, len(flat), chunk)])
    return out.unflatten(0, (n, t))


@torch.no_grad()
def predict(model, feats: torch.Tensor, batch: int = 32) -> np.ndarray:
    model.eval()
    out = [model(feats[i : i + batch].float()).logits for i in range(0, len(feats), batch)]
    return torch.cat(out).numpy()


def severity_pair_mask(rows) -> torch.Tensor:
    """``(N, N)``: True for two synthetic clips of one photo that share a type or where one is the pristine clip."""
    synthetic = torch.tensor([r["distortion_type"] not in ("authentic", None) for r in rows])
    refs = {name: i for i, name in enumerate(sorted({str(r["reference"]) for r in rows}))}
    types = {name: i for i, name in enumerate(sorted({str(r["distortion_type"]) for r in rows}))}
    ref = torch.tensor([refs[str(r["reference"])] for r in rows])
    typ = torch.tensor([types[str(r["distortion_type"])] for r in rows])
    pristine = typ == types.get("pristine", -1)
    same_type = (typ[:, None] == typ[None, :]) | pristine[:, None] | pristine[None, :]
    mask = (ref[:, None] == ref[None, :]) & same_type & synthetic[:, None] & synthetic[None, :]
    mask.fill_diagonal_(False)
    return mask


def type_pair_mask(rows, distortion_type: str) -> torch.Tensor:
    """:func:`severity_pair_mask` restricted to one type's pairs (its levels and the photo's pristine clip)."""
    in_type = torch.tensor([r["distortion_type"] in (distortion_type, "pristine") for r in rows])
    return severity_pair_mask(rows) & in_type[:, None] & in_type[None, :]


def photo_batches(
    rows, photos_per_batch: int, batch_size: int, generator: torch.Generator
) -> list[list[int]]:
    """Synthetic batches = all clips of ``photos_per_batch`` photos; other clips in random batches of ``batch_size``."""
    by_photo: dict[str, list[int]] = {}
    other = []
    for i, r in enumerate(rows):
        if r["distortion_type"] in ("authentic", None) or not r.get("reference"):
            other.append(i)
        else:
            by_photo.setdefault(r["reference"], []).append(i)
    photos = list(by_photo)
    order = torch.randperm(len(photos), generator=generator).tolist()
    batches = [
        [i for k in order[j : j + photos_per_batch] for i in by_photo[photos[k]]]
        for j in range(0, len(order), photos_per_batch)
    ]
    perm = [other[k] for k in torch.randperm(len(other), generator=generator).tolist()]
    batches += [perm[j : j + batch_size] for j in range(0, len(perm), batch_size)]
    return [batches[k] for k in torch.randperm(len(batches), generator=generator).tolist()]


def split_holdout(rows, per_set: int, seed: int) -> tuple[list, list]:
    """Hold ``per_set`` photos of every synthetic source set out of training (seeded): (train, selection)."""
    if per_set <= 0:
        return rows, []
    refs: dict[str, list[str]] = {}
    for r in rows:
        if r["distortion_type"] not in ("authentic", None) and r.get("reference"):
            refs.setdefault(r["source_set"], [])
            if r["reference"] not in refs[r["source_set"]]:
                refs[r["source_set"]].append(r["reference"])
    rng = np.random.RandomState(seed)
    held = {ref for names in refs.values() for ref in rng.permutation(sorted(names))[:per_set]}
    return [r for r in rows if r.get("reference") not in held], [
        r for r in rows if r.get("reference") in held
    ]


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
    p.add_argument(
        "--adapted-stage", type=int, default=None, help="MobileNetV2 stage with E-SCMA (preset: 5)"
    )
    p.add_argument("--image-size", type=int, default=None, help="frame size (square; preset: 160)")
    p.add_argument("--holdout-photos", type=int, default=0, help="training photos per set held out to select")
    p.add_argument(
        "--photos-per-batch", type=int, default=0, help="synthetic batches of whole photos (0: off)"
    )
    p.add_argument("--group-rank-weight", type=float, default=0.0, help="rank loss within photo x type")
    p.add_argument("--group-rank-margin", type=float, default=0.1, help="its margin, on batch z-scores")
    p.add_argument(
        "--extra-rank-type",
        default=None,
        choices=SEVERITY_TYPES,
        help="one type's pairs get an extra rank loss",
    )
    p.add_argument("--extra-rank-weight", type=float, default=0.0, help="weight of that extra rank loss")
    p.add_argument(
        "--select-by",
        default="mean",
        choices=("mean", "min"),
        help="selection criterion: mean or worst type's severity order on the selection split",
    )
    p.add_argument("--save-epochs", action="store_true", help="keep every epoch's trained weights in --out")
    p.add_argument("--val-limit", type=int, default=None, help="first N validation photos only (sorted)")
    p.add_argument("--pixel-cache", default=None, help="folder caching the decoded frames (float16)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    overrides = {}
    if args.adapted_stage is not None:
        overrides["vlm_config"] = qclip_preset_config(args.preset).vlm_config
        overrides["vlm_config"].adapted_stage = args.adapted_stage
    if args.image_size is not None:
        overrides["image_size"] = [args.image_size, args.image_size]
    model, processor = create_qclip_model(args.preset, pretrained_vlm=args.weights or True, **overrides)
    print(model.trainable_parameter_report(), flush=True)

    syn, _, _ = load_clip_dataset(args.synthetic)
    train_rows, sel_rows = split_holdout(list(syn["train"]), args.holdout_photos, args.seed)
    test_rows = list(syn["validation"])
    if args.val_limit:
        keep = sorted({r["reference"] for r in test_rows})[: args.val_limit]
        test_rows = [r for r in test_rows if r["reference"] in keep]
    val_rows = test_rows
    clive_val = []
    if args.clive:
        clive, _, _ = load_clip_dataset(args.clive)
        train_rows += list(clive["train"])
        clive_val = list(clive["validation"])
    t0 = time.time()
    feats = {
        "train": clip_prefix(model, processor, train_rows, args.train_frames, args.pixel_cache),
        "val": clip_prefix(model, processor, val_rows, None, args.pixel_cache),
    }
    if sel_rows:
        feats["sel"] = clip_prefix(model, processor, sel_rows, None, args.pixel_cache)
    if clive_val:
        feats["cval"] = clip_prefix(model, processor, clive_val, None, args.pixel_cache)
    x_train, x_val = feats["train"], feats["val"]
    x_sel, x_cval = feats.get("sel"), feats.get("cval")
    y_train = torch.tensor([float(r["mos"]) for r in train_rows])
    pair_mask = severity_pair_mask(train_rows) if args.group_rank_weight else None
    extra_mask = None
    if args.extra_rank_type and args.extra_rank_weight:
        extra_mask = type_pair_mask(train_rows, args.extra_rank_type)
    level = torch.tensor([float(r["distortion_level"] or 0) for r in train_rows])
    print(
        f"decoded + prefix of {sum(len(v) for v in feats.values())} clips in {time.time() - t0:.0f}s; "
        f"train {len(train_rows)}, selection {len(sel_rows)}, test {len(val_rows)}",
        flush=True,
    )

    params = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(args.seed)

    def epoch_batches() -> list[list[int]]:
        if args.photos_per_batch:
            return photo_batches(train_rows, args.photos_per_batch, args.batch_size, gen)
        perm = torch.randperm(len(x_train), generator=gen).tolist()
        return [perm[i : i + args.batch_size] for i in range(0, len(perm), args.batch_size)]

    steps_per_epoch = len(epoch_batches())
    total = args.epochs * steps_per_epoch
    warmup = max(1, total // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total)))
    )
    t0, step = time.time(), 0
    history, best = [], (-1.0, None, -1)
    for epoch in range(args.epochs):
        model.train()
        losses = []
        for b in epoch_batches():
            if len(b) < 2:
                continue
            b = torch.tensor(b)
            out = model(x_train[b].float(), labels=y_train[b])
            loss = out.loss
            if pair_mask is not None:
                z = (out.logits - out.logits.mean()) / (out.logits.std() + 1e-8)
                loss = loss + args.group_rank_weight * rank_loss(
                    z, -level[b], margin=args.group_rank_margin, pair_mask=pair_mask[b][:, b]
                )
            if extra_mask is not None:
                z = (out.logits - out.logits.mean()) / (out.logits.std() + 1e-8)
                loss = loss + args.extra_rank_weight * rank_loss(
                    z, -level[b], margin=args.group_rank_margin, pair_mask=extra_mask[b][:, b]
                )
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            losses.append(loss.item())
        sev = severity_report(val_rows, predict(model, x_val))
        entry = {"epoch": epoch, "loss": float(np.mean(losses)), "test": sev}
        line = f"epoch {epoch} loss {np.mean(losses):.4f} test " + " ".join(
            f"{k[15:]} {v:.3f}" for k, v in sev.items() if k.startswith("severity_order")
        )
        if x_sel is not None:
            sel = severity_report(sel_rows, predict(model, x_sel))
            entry["selection"] = sel
            per_type = [sel[f"severity_order_{t}"] for t in SEVERITY_TYPES]
            crit = float(np.mean(per_type) if args.select_by == "mean" else np.min(per_type))
            line += " | selection " + " ".join(f"{v:.3f}" for v in per_type) + f" {args.select_by} {crit:.3f}"
            if crit > best[0]:
                trainable = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}
                best = (crit, trainable, epoch)
        history.append(entry)
        if args.save_epochs:
            trained = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}
            Path(args.out, "epochs").mkdir(parents=True, exist_ok=True)
            torch.save(trained, Path(args.out, "epochs", f"epoch{epoch}.pt"))
        print(line + f" {time.time() - t0:.0f}s", flush=True)
        if time.time() - t0 > args.time_budget:
            print("time budget reached", flush=True)
            break

    if best[1] is not None:
        model.load_state_dict(best[1], strict=False)
        print(
            f"selected epoch {best[2]} (selection {args.select_by} severity order {best[0]:.3f})", flush=True
        )
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
        "selected_epoch": best[2] if best[1] is not None else epoch,
        "selection": (
            {"photos_per_set": args.holdout_photos, "clips": len(sel_rows), **history[best[2]]["selection"]}
            if best[1] is not None
            else None
        ),
        "history": history,
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
