"""Speed of the shipped model vs its bare backbone and BRISQUE, per image, decode -> score, 500x500, CPU.

    make bench                       # builds .venv-bench (the package + brisque, numpy<2.4) and runs this
    .venv-bench/bin/python benchmarks/bench_default.py [--images N] [--threads 2] [--model DIR]

Measured in one run on the same JPEG files (CLIVE images from ../shared if present, else bundled
scikit-image photos resized to 500x500):
* model: the image-quality pipeline end to end (decode, resize/normalise, superpixel partition, backbone,
  RSA, head, region summaries);
* backbone: decode + resize/normalise + the bare timm backbone forward, run exactly as the model runs it
  (channels-last, batch norms folded: ``model.inference_backbone()``), the floor any model on it pays;
* brisque: decode + BRISQUE (PyPI ``brisque``; only installed in the benchmark's environment).
Prints per-image medians, the partition / RSA+head split, and the ratios the targets are stated in:
``brisque/model`` (target >= 2) and ``overhead = (model - backbone) / backbone`` (target <= 0.5).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


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


def timed(fn, paths: list[Path], repeats: int) -> list[float]:
    fn(paths[0])  # warm-up
    times = []
    for _ in range(repeats):
        for p in paths:
            t = time.perf_counter()
            fn(p)
            times.append(time.perf_counter() - t)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from transformers import pipeline

    import modeling_rsfiqa
    from modeling_rsfiqa.image_io import load_image_rgb
    from modeling_rsfiqa.runtime import tune_cpu_allocator

    model_dir = args.model or str(modeling_rsfiqa.DEFAULT_MODEL_DIR)
    pipe = pipeline("image-quality", model=model_dir)
    model, processor = pipe.model.eval(), pipe.processor

    def run_model(path):
        return pipe(str(path))["score"]

    @torch.inference_mode()
    def run_backbone(path):
        pixel_values = processor.image_processor(load_image_rgb(path), return_tensors="pt")["pixel_values"]
        # exactly what the model runs: channels-last input through the batch-norm-folded backbone copy
        return model.inference_backbone()(pixel_values.contiguous(memory_format=torch.channels_last))

    def run_partition(path):
        return processor.partition(load_image_rgb(path), output_size=processor.label_size)

    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = sample_images(args.images, Path(tmp))
        results["model"] = timed(run_model, paths, args.repeats)
        results["backbone"] = timed(run_backbone, paths, args.repeats)
        results["partition"] = timed(run_partition, paths, args.repeats)
        try:
            from brisque import BRISQUE

            scorer = BRISQUE(url=False)
            results["brisque"] = timed(
                lambda p: scorer.score(np.asarray(load_image_rgb(p))), paths, args.repeats
            )
        except ImportError:
            print(
                "brisque is not installed here (run `make bench`, which builds .venv-bench): skipped",
                file=sys.stderr,
            )

    med = {k: statistics.median(v) * 1000 for k, v in results.items()}
    print(f"images={len(paths)} x{args.repeats} size=500x500 threads={args.threads} model={model_dir}")
    print(
        f"glibc malloc thresholds raised by the pipeline: {tune_cpu_allocator()} (RSFIQA_MALLOC_TUNING=0 to compare)"
    )
    for key in ("model", "backbone", "partition", "brisque"):
        if key in med:
            print(f"{key:>10}: {med[key]:8.1f} ms/image (median)")
    overhead = (med["model"] - med["backbone"]) / med["backbone"]
    print(f"  partition share of model time: {med['partition'] / med['model']:.2f}")
    print(f"overhead=(model-backbone)/backbone={overhead:.2f} (target <= 0.50)")
    if "brisque" in med:
        print(f"speedup_vs_brisque=brisque/model={med['brisque'] / med['model']:.2f} (target >= 2)")


if __name__ == "__main__":
    main()
