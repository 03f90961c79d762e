"""Teach an MLLM the RSFIQA region question with LoRA on synthetic region distortions.

    python examples/train_region_lora.py --model DIR --output_dir runs/region-lora \
        [--pristine ../shared/data/pristine] [--n_images 200] [--max_steps 500]
    python examples/train_region_lora.py --random_tiny --output_dir /tmp/lora-smoke --max_steps 5   # no weights needed
    accelerate launch examples/train_region_lora.py --model DIR --output_dir ...

Clean photos get a distortion (blur / noise / compression / colour / exposure, level 1..5; the
``distortions`` module) pasted into random regions, so each region's answer is known; the language
model of the MLLM gets LoRA (``lora_rsfiqa.add_region_lora``: per-architecture target regex, base frozen)
and is trained with ``transformers.Trainer``. Writes the standalone peft adapter to
``<output_dir>/adapter`` (use it with ``rsfiqa annotate --adapter``) and reports the held-out accuracy of
the level word predicted (argmax of the level-word probabilities) before and after training.
"""

from __future__ import annotations

import argparse
import glob
import json
import os

import numpy as np
import torch
from transformers import Trainer, TrainingArguments

from modeling_rsfiqa.annotation_rsfiqa import AnnotatorConfig, RegionAnnotator, build_random_vlm
from modeling_rsfiqa.lora_rsfiqa import (
    RegionInstructionCollator,
    RegionLoraSettings,
    add_region_lora,
    build_region_instruction_examples,
    save_region_adapter,
)


class _Examples(torch.utils.data.Dataset):
    def __init__(self, examples):
        self.examples = examples

    def __len__(self):
        return len(self.examples)

    def __getitem__(self, i):
        return {k: v for k, v in self.examples[i].items() if k != "target"}


@torch.no_grad()
def level_accuracy(annotator: RegionAnnotator, examples: list[dict]) -> float:
    """Share of (region, dimension) pairs whose most probable level word is the target word (teacher forced)."""
    model, words = annotator.model, annotator.config.level_words
    level_ids = annotator.level_ids
    hits, total = 0, 0
    model.eval()
    for ex in examples:
        target = json.loads(ex["target"])["levels"]
        batch = RegionInstructionCollator(annotator.pad_id)([{k: v for k, v in ex.items() if k != "target"}])
        labels = batch.pop("labels")[0]
        logits = model(**{k: v.to(model.device) for k, v in batch.items()}).logits[0].cpu()
        pos = [i - 1 for i in range(1, labels.numel()) if int(labels[i]) in level_ids]
        for p, word in zip(pos, target):
            pred = words[int(torch.argmax(logits[p, level_ids]))]
            hits += pred == word
            total += 1
    return hits / max(total, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="image-text-to-text model folder (with processor)")
    ap.add_argument("--random_tiny", action="store_true", help="use a tiny random Qwen2-VL (smoke runs)")
    ap.add_argument(
        "--pristine",
        default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "pristine"),
    )
    ap.add_argument("--output_dir", required=True)
    ap.add_argument("--n_images", type=int, default=64)
    ap.add_argument("--n_eval_images", type=int, default=8)
    ap.add_argument("--image_side", type=int, default=448)
    ap.add_argument("--grid", default="2x2")
    ap.add_argument("--lora_r", type=int, default=16)
    ap.add_argument("--lora_alpha", type=int, default=32)
    ap.add_argument("--lora_dropout", type=float, default=0.05)
    ap.add_argument("--learning_rate", type=float, default=2e-4)
    ap.add_argument("--max_steps", type=int, default=200)
    ap.add_argument("--batch_size", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    if args.random_tiny:
        model, processor = build_random_vlm("tiny", seed=args.seed)
        model_id = "random-tiny-qwen2-vl"
    else:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        model = AutoModelForImageTextToText.from_pretrained(args.model, dtype="auto")
        processor = AutoProcessor.from_pretrained(args.model)
        model_id = args.model
    annotator = RegionAnnotator(model, processor, AnnotatorConfig(), model_id=model_id)
    photos = sorted(glob.glob(os.path.join(args.pristine, "**", "*.png"), recursive=True))
    if not photos:
        raise SystemExit(f"no clean photos under {args.pristine}")
    rng = np.random.default_rng(args.seed)
    rng.shuffle(photos)
    n_eval = max(1, min(len(photos) // 5, 12))
    eval_photos, train_photos = photos[:n_eval], photos[n_eval:]  # photo-disjoint split
    grid = tuple(int(x) for x in args.grid.split("x"))
    side = 84 if args.random_tiny else args.image_side
    train = build_region_instruction_examples(
        train_photos, annotator, args.n_images, seed=args.seed, grid=grid, image_side=side
    )
    evals = build_region_instruction_examples(
        eval_photos, annotator, args.n_eval_images, seed=args.seed + 1, grid=grid, image_side=side
    )
    print(
        f"{len(train)} training regions from {len(train_photos)} photos, {len(evals)} held-out regions from {len(eval_photos)}"
    )

    before = level_accuracy(annotator, evals)
    add_region_lora(
        model, RegionLoraSettings(r=args.lora_r, alpha=args.lora_alpha, dropout=args.lora_dropout)
    )
    targs = TrainingArguments(
        output_dir=args.output_dir,
        per_device_train_batch_size=args.batch_size,
        max_steps=args.max_steps,
        learning_rate=args.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, args.max_steps // 20),
        logging_steps=max(1, args.max_steps // 20),
        save_strategy="no",
        report_to=[],
        remove_unused_columns=False,
        seed=args.seed,
    )
    trainer = Trainer(
        model=model,
        args=targs,
        train_dataset=_Examples(train),
        data_collator=RegionInstructionCollator(annotator.pad_id),
    )
    trainer.train()
    if trainer.is_world_process_zero():
        after = level_accuracy(annotator, evals)
        save_region_adapter(model, os.path.join(args.output_dir, "adapter"))
        report = {
            "level_accuracy_before": before,
            "level_accuracy_after": after,
            "train_regions": len(train),
            "eval_regions": len(evals),
        }
        with open(os.path.join(args.output_dir, "region_lora_report.json"), "w") as f:
            json.dump(report, f, indent=2)
        print(json.dumps(report))


if __name__ == "__main__":
    main()
