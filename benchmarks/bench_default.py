"""Speed of the shipped model vs its bare backbone and BRISQUE, per image, decode -> score, CPU.

    make bench                       # builds .venv-bench (the package + brisque, numpy<2.4) and runs this
    .venv-bench/bin/python benchmarks/bench_default.py [--images N] [--repeats R] [--threads 2] [--model DIR]

Measured in one run on the same JPEG files (CLIVE images from ../shared if present, else bundled
scikit-image photos), resized to 500x500:
* model: the image-quality pipeline end to end, one call per image (decode, resize/normalise, superpixel
  partition, backbone, RSA, head, region summaries);
* backbone: decode + resize/normalise + the bare timm backbone forward, run exactly as the model runs it
  (channels-last, batch norms folded: ``model.inference_backbone()``), the floor any model on it pays;
* partition: the superpixel partition alone; brisque: decode + BRISQUE (PyPI ``brisque``; only installed in
  the benchmark's environment);
* batched: ``pipeline(paths, batch_size=8)``, per image, against one call per image (``batched/single``,
  target <= 1);
* 12 MP: 4032x3024 phone-like JPEGs (the same photos upscaled, with luma grain, quality 92) against the
  500 px JPEGs (``12MP/500px``, target <= 4); ``12 MP full decode`` is the same with ``reduced_decode=False``.

Everything is measured twice in the same process: first as a library user gets it (``pipeline(...)`` leaves
glibc's allocator alone), then after ``tune_cpu_allocator()`` (what the ``rsfiqa`` command line, demo and web
app do). Each column has its own BRISQUE and single-call baselines, measured round-robin with the rest
(every repeat runs each measurement once in turn), so the ratios compare like with like even on a busy
machine. Per-image medians; ratios are what the targets are stated in: ``brisque/model`` (>= 2),
``overhead = (model - backbone) / backbone`` (<= 0.5), ``batched/single`` (<= 1), ``12MP/500px`` (<= 4).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
BIG = (4032, 3024)


def sample_images(n: int, out: Path) -> list[Path]:
    clive = SHARED / "data" / "clive-train" / "images"
    paths = []
    if clive.is_dir():
        sources = sorted(p for p in clive.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))[:n]
        for p in sources:
            image = Image.open(p).convert("RGB").resize((500, 500))
            target = out / p.name
            image.save(target, quality=95)
            paths.append(target)
    else:
        import skimage.data

        for i in range(n):
            name = ["chelsea", "coffee", "astronaut", "rocket"][i % 4]
            image = Image.fromarray(getattr(skimage.data, name)()).convert("RGB").resize((500, 500))
            target = out / f"{name}_{i}.jpg"
            image.save(target, quality=95)
            paths.append(target)
    return paths


def phone_photos(paths: list[Path], out: Path) -> list[Path]:
    """12 MP JPEGs as a phone writes them: the photo upscaled (Lanczos), luma grain at full size, quality 92."""
    rng = np.random.default_rng(0)
    big = []
    for p in paths:
        image = Image.open(p).convert("RGB").resize(BIG, Image.LANCZOS)
        grain = rng.normal(0.0, 2.5, (BIG[1], BIG[0], 1)).astype(np.float32)
        target = out / f"12mp-{p.stem}.jpg"
        Image.fromarray(np.clip(np.asarray(image, np.float32) + grain, 0, 255).astype(np.uint8)).save(
            target, quality=92
        )
        big.append(target)
    return big


def round_robin(jobs: dict[str, tuple[Callable, list]], repeats: int) -> tuple[dict, dict]:
    """Every repeat runs every job once, in turn (shared noise, fair ratios). A job's items are single paths
    or lists (one call on a list: its time is spread over the list). Returns per-image times of each job and
    each job's mean time per image in each repeat."""
    for fn, items in jobs.values():  # warm-up
        fn(items[0])
    per_image: dict[str, list[float]] = {name: [] for name in jobs}
    per_repeat: dict[str, list[float]] = {name: [] for name in jobs}
    for _ in range(repeats):
        for name, (fn, items) in jobs.items():
            total, count = 0.0, 0
            for item in items:
                n = len(item) if isinstance(item, list) else 1
                t = time.perf_counter()
                fn(item)
                elapsed = time.perf_counter() - t
                per_image[name] += [elapsed / n] * n
                total, count = total + elapsed, count + n
            per_repeat[name].append(total / count)
    return per_image, per_repeat


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--big_images", type=int, default=4, help="12 MP photos made from the first N images")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from transformers import pipeline

    import modeling_rsfiqa
    from modeling_rsfiqa.image_io import load_image_rgb
    from modeling_rsfiqa.runtime import tune_cpu_allocator

    model_dir = args.model or str(modeling_rsfiqa.DEFAULT_MODEL_DIR)
    pipe = pipeline("image-quality", model=model_dir)  # the library default: allocator untouched
    model, processor = pipe.model.eval(), pipe.processor

    def run_model(path):
        return pipe(str(path))["score"]

    def run_batched(paths):
        return [r["score"] for r in pipe([str(p) for p in paths], batch_size=args.batch_size)]

    def run_full_decode(path):
        return pipe(str(path), reduced_decode=False)["score"]

    @torch.inference_mode()
    def run_backbone(path):
        pixel_values = processor.image_processor(load_image_rgb(path), return_tensors="pt")["pixel_values"]
        # exactly what the model runs: channels-last input through the batch-norm-folded backbone copy
        return model.inference_backbone()(pixel_values.contiguous(memory_format=torch.channels_last))

    def run_partition(path):
        return processor.partition(load_image_rgb(path), output_size=processor.label_size)

    brisque = None
    try:
        from brisque import BRISQUE

        scorer = BRISQUE(url=False)

        def brisque(path):
            return scorer.score(np.asarray(load_image_rgb(path)))

    except ImportError:
        print(
            "brisque is not installed here (run `make bench`, which builds .venv-bench): skipped",
            file=sys.stderr,
        )

    columns: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = sample_images(args.images, Path(tmp))
        big = phone_photos(paths[: args.big_images], Path(tmp))
        jobs = {
            "model": (run_model, paths),
            "backbone": (run_backbone, paths),
            "partition": (run_partition, paths),
            "batched": (run_batched, [paths]),
            "12 MP": (run_model, big),
            "12 MP full decode": (run_full_decode, big),
        }
        if brisque is not None:
            jobs["brisque"] = (brisque, paths)
        tuned = False
        for column in ("library default", "tuned allocator"):
            if column == "tuned allocator":
                tuned = tune_cpu_allocator()
                if not tuned:
                    print(
                        "tune_cpu_allocator() did nothing here (not glibc, RSFIQA_MALLOC_TUNING=0 or MALLOC_*)"
                    )
            per_image, per_repeat = round_robin(jobs, args.repeats)
            columns[column] = {k: statistics.median(v) * 1000 for k, v in per_image.items()}
            # same images, same repeat: the batched call against the single calls
            columns[column]["batched/single"] = statistics.median(
                b / s for b, s in zip(per_repeat["batched"], per_repeat["model"])
            )

    print(
        f"images={len(paths)} (500x500) + {len(big)} at {BIG[0]}x{BIG[1]}, x{args.repeats} repeats, "
        f"threads={args.threads}, batch_size={args.batch_size}, model={model_dir}"
    )
    names = list(columns)
    print(f"{'ms per image (median)':>28} " + " ".join(f"{n:>16}" for n in names))
    for key in ("model", "backbone", "partition", "brisque", "batched", "12 MP", "12 MP full decode"):
        if key in columns[names[0]]:
            print(f"{key:>28} " + " ".join(f"{columns[n][key]:16.1f}" for n in names))
    print(f"{'ratios':>28}")

    def ratio_row(label: str, fn: Callable[[dict], float]) -> None:
        print(f"{label:>28} " + " ".join(f"{fn(columns[n]):16.2f}" for n in names))

    ratio_row("overhead (<= 0.50)", lambda c: (c["model"] - c["backbone"]) / c["backbone"])
    if brisque is not None:
        ratio_row("brisque/model (>= 2)", lambda c: c["brisque"] / c["model"])
    ratio_row("batched/single (<= 1)", lambda c: c["batched/single"])
    ratio_row("12MP/500px (<= 4)", lambda c: c["12 MP"] / c["model"])
    ratio_row("12MP full decode/500px", lambda c: c["12 MP full decode"] / c["model"])
    print(f"glibc malloc thresholds raised for the second column: {tuned}")


if __name__ == "__main__":
    main()
