"""``rsfiqa evaluate``: score a labelled image set with a trained model and report IQA metrics.

    rsfiqa evaluate --model DIR_OR_HUB_ID --data DIR [--out DIR] [--split test] [--batch-size 8] [--no-plot]

``--data`` is an imagefolder (``metadata.csv`` with ``file_name`` and a MOS column, plus the images) or a
``datasets`` ``save_to_disk`` folder (e.g. from ``datasets_scripts/convert.py``; ``--split`` picks the split,
default ``test`` > ``validation`` > ``train``). Inference is batched, with a progress bar. Images that cannot
be read (missing, truncated, not an image) are reported and skipped; the others are still scored.

Written to ``--out`` (default ``./rsfiqa-eval-<data folder name>``):
  predictions.csv  file, mos, prediction (one row per scored image)
  skipped.csv      file, reason (images that could not be scored; only when there are any)
  metrics.json     SRCC, PLCC, logistic PLCC, KRCC, RMSE, counts, model and data
  scatter.png      prediction vs MOS with the fitted 4-parameter logistic (needs matplotlib: ``rsfiqa[plot]``)
and the metrics table is printed.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["register", "build_parser", "run", "main", "iter_items", "scatter_plot", "require_matplotlib"]


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="trained model folder (or Hub id) with its processor")
    p.add_argument(
        "--data", required=True, help="imagefolder with metadata.csv, or a datasets save_to_disk folder"
    )
    p.add_argument("--out", default=None, help="output folder (default ./rsfiqa-eval-<data name>)")
    p.add_argument(
        "--split",
        default=None,
        help="split of a save_to_disk DatasetDict (default test > validation > train)",
    )
    p.add_argument("--label-column", default="mos", help="MOS column (default: mos)")
    p.add_argument("--image-column", default="image", help="image column of a save_to_disk dataset")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--limit", type=int, default=None, help="only the first N images (smoke runs)")
    p.add_argument("--no-plot", action="store_true", help="skip the scatter plot (no matplotlib needed)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--trust-remote-code", action="store_true", help="for Hub models without the rsfiqa package"
    )


def register(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "evaluate",
        help="IQA metrics, scatter plot and per-image CSV of a model on a dataset",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rsfiqa evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    _add_arguments(parser)
    return parser


def require_matplotlib() -> Any:
    """``matplotlib.pyplot`` with the Agg backend, or a clear error naming the ``plot`` extra."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError(
            "the scatter plot needs matplotlib, an optional dependency: pip install 'rsfiqa[plot]' "
            "(or pass --no-plot)"
        ) from err
    return plt


# ----------------------------------------------------------------------------------------------------------
# data: (name, image source or error, mos) items
# ----------------------------------------------------------------------------------------------------------
def _float_or_nan(value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return v


def _imagefolder_items(root: Path, label_column: str) -> Iterator[tuple[str, Any, float]]:
    with open(root / "metadata.csv", newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "file_name" not in reader.fieldnames:
            raise ValueError(f"{root / 'metadata.csv'} needs a file_name column (has {reader.fieldnames})")
        has_label = label_column in reader.fieldnames
        for row in reader:
            name = row["file_name"]
            yield name, str(root / name), _float_or_nan(row.get(label_column)) if has_label else float("nan")


def _saved_dataset_items(
    root: Path, split: str | None, image_column: str, label_column: str
) -> tuple[Iterator[tuple[str, Any, float]], str, int]:
    import datasets

    loaded = datasets.load_from_disk(str(root))
    if isinstance(loaded, datasets.DatasetDict):
        if split is None:
            split = next((s for s in ("test", "validation", "train") if s in loaded), next(iter(loaded)))
        if split not in loaded:
            raise ValueError(f"{root} has no split {split!r} (splits: {list(loaded)})")
        ds = loaded[split]
    else:
        ds, split = loaded, split or "(single split)"
    if image_column not in ds.column_names:
        raise ValueError(
            f"{root} has no column {image_column!r} (columns: {ds.column_names}); see --image-column"
        )
    if isinstance(ds.features.get(image_column), datasets.Image):
        ds = ds.cast_column(
            image_column, datasets.Image(decode=False)
        )  # decode ourselves: bad files are reported
    has_label = label_column in ds.column_names
    names = next((ds[c] for c in ("name", "file_name") if c in ds.column_names), None)

    def items() -> Iterator[tuple[str, Any, float]]:
        for i, row in enumerate(ds):
            raw = row[image_column]
            name = names[i] if names is not None else None
            if isinstance(raw, dict):
                name = name or (os.path.basename(raw["path"]) if raw.get("path") else None)
                if raw.get("bytes"):
                    source: Any = ("bytes", raw["bytes"])
                elif raw.get("path"):
                    source = raw["path"]
                else:
                    source = ("error", "row has neither image bytes nor a path")
            else:
                source = raw
            yield (
                str(name if name is not None else i),
                source,
                _float_or_nan(row[label_column]) if has_label else float("nan"),
            )

    return items(), split, len(ds)


def iter_items(
    data: str, split: str | None = None, image_column: str = "image", label_column: str = "mos"
) -> tuple[Iterator[tuple[str, Any, float]], str, int]:
    """``(items, description, count)``: items are ``(name, image source, mos)`` of an imagefolder or saved dataset."""
    root = Path(data)
    if (root / "metadata.csv").is_file():
        rows = list(_imagefolder_items(root, label_column))
        return iter(rows), f"imagefolder {root}", len(rows)
    if (root / "dataset_dict.json").is_file() or (root / "state.json").is_file():
        items, split, total = _saved_dataset_items(root, split, image_column, label_column)
        return items, f"save_to_disk dataset {root} [{split}]", total
    raise FileNotFoundError(
        f"{data}: neither an imagefolder (metadata.csv) nor a datasets save_to_disk folder"
    )


def _decode(source: Any) -> Any:
    from PIL import Image

    from .image_io import ImageLoadError, load_image_rgb

    if isinstance(source, tuple) and source and source[0] == "error":
        raise ImageLoadError("<row>", source[1])
    if isinstance(source, tuple) and source and source[0] == "bytes":
        try:
            opened = Image.open(io.BytesIO(source[1]))
        except Exception as err:  # noqa: BLE001 - PIL raises many types for bad bytes
            raise ImageLoadError("<embedded bytes>", f"{type(err).__name__}: {err}") from err
        return load_image_rgb(opened)
    return load_image_rgb(source)


# ----------------------------------------------------------------------------------------------------------
def load_model(model: str, device: str | None, trust_remote_code: bool = False) -> tuple[Any, Any, Any]:
    import torch
    from transformers import AutoModel, AutoProcessor

    from . import RSFIQAProcessor  # also registers the Auto classes

    net = AutoModel.from_pretrained(model, trust_remote_code=trust_remote_code)
    try:
        processor = AutoProcessor.from_pretrained(model, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError):
        processor = RSFIQAProcessor.from_model_config(net.config)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return net.to(dev).eval(), processor, dev


def _predict(model: Any, processor: Any, device: Any, images: list[Any]) -> list[float]:
    import torch

    inputs = processor(images, sam_model=getattr(model, "segmenter", None))
    inputs = {k: v.to(device) for k, v in inputs.items() if k in processor.model_input_names}
    with torch.inference_mode():
        return [float(s) for s in model(**inputs).score.float().cpu()]


def scatter_plot(
    path: Path, predictions: list[float], mos: list[float], title: str, metrics: dict[str, float]
) -> None:
    """Prediction vs MOS with the fitted VQEG logistic curve."""
    import numpy as np

    from .quality_metrics import MetricWarning, fit_logistic4

    plt = require_matplotlib()
    x, y = np.asarray(predictions, float), np.asarray(mos, float)
    fig, ax = plt.subplots(figsize=(5.5, 5.0), dpi=110)
    ax.scatter(x, y, s=12, alpha=0.6, edgecolors="none", label="images")
    if x.size >= 2 and np.ptp(x) > 0 and np.ptp(y) > 0:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MetricWarning)
            params, mapping = fit_logistic4(x, y)
        grid = np.linspace(x.min(), x.max(), 200)
        label = "4-parameter logistic fit" if np.all(np.isfinite(params)) else "linear fit (too few points)"
        ax.plot(grid, mapping(grid), color="C3", lw=2, label=label)
    ax.set_xlabel("prediction")
    ax.set_ylabel("MOS")
    srcc, plcc = metrics.get("srcc", float("nan")), metrics.get("plcc_logistic", float("nan"))
    ax.set_title(f"{title}\nSRCC {srcc:.3f}  PLCC (logistic) {plcc:.3f}  n={x.size}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def format_table(metrics: dict[str, float], n_scored: int, n_skipped: int) -> str:
    labels = [
        ("srcc", "SRCC"),
        ("plcc", "PLCC"),
        ("plcc_logistic", "PLCC (logistic)"),
        ("krcc", "KRCC"),
        ("rmse", "RMSE (logistic)"),
    ]
    rows = [
        (label, "n/a" if not math.isfinite(metrics.get(key, float("nan"))) else f"{metrics[key]:.4f}")
        for key, label in labels
    ]
    rows += [("images scored", str(n_scored)), ("images skipped", str(n_skipped))]
    width = max(len(r[0]) for r in rows)
    line = "-" * (width + 12)
    return "\n".join([line, *(f"{k:<{width}}  {v:>9}" for k, v in rows), line])


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from .image_io import ImageLoadError
    from .quality_metrics import MetricWarning, compute_iqa_metrics

    if args.batch_size < 1:
        print("error: --batch-size must be >= 1", file=sys.stderr)
        return 2
    if not args.no_plot:
        try:
            require_matplotlib()
        except ImportError as err:  # fail before the (long) inference, not after it
            print(f"error: {err}", file=sys.stderr)
            return 2
    try:
        items, description, total = iter_items(args.data, args.split, args.image_column, args.label_column)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path.cwd() / f"rsfiqa-eval-{Path(args.data).resolve().name}"
    out.mkdir(parents=True, exist_ok=True)
    model, processor, device = load_model(args.model, args.device, args.trust_remote_code)
    if device.type == "cpu":  # this command owns its process: keep activation memory between batches
        from .runtime import tune_cpu_allocator

        tune_cpu_allocator()

    results: list[tuple[str, float, float]] = []
    skipped: list[tuple[str, str]] = []

    def flush(batch: list[tuple[str, Any, float]]) -> None:
        if not batch:
            return
        if len(batch) > 1:
            try:
                scores = _predict(model, processor, device, [b[1] for b in batch])
                results.extend((name, mos, s) for (name, _, mos), s in zip(batch, scores))
                return
            except Exception:  # noqa: BLE001 - retry one by one so that one bad image does not lose the batch
                pass
        for one in batch:
            try:
                results.append((one[0], one[2], _predict(model, processor, device, [one[1]])[0]))
            except Exception as err:  # noqa: BLE001
                skipped.append((one[0], f"{type(err).__name__}: {err}"))
                tqdm.write(f"skipped {one[0]}: {type(err).__name__}: {err}", file=sys.stderr)

    batch: list[tuple[str, Any, float]] = []
    if args.limit is not None:
        total = min(total, args.limit)
    progress = tqdm(total=total, desc="scoring", unit="img", disable=args.no_progress)
    for i, (name, source, mos) in enumerate(items):
        if args.limit is not None and i >= args.limit:
            break
        progress.update(1)
        try:
            image = _decode(source)
        except ImageLoadError as err:
            skipped.append((name, err.reason))
            tqdm.write(f"skipped {name}: {err.reason}", file=sys.stderr)
            continue
        batch.append((name, image, mos))
        if len(batch) >= args.batch_size:
            flush(batch)
            batch = []
    flush(batch)
    progress.close()

    with open(out / "predictions.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "mos", "prediction"])
        for name, mos, pred in results:
            writer.writerow([name, "" if math.isnan(mos) else f"{mos:.6g}", f"{pred:.6f}"])
    if skipped:
        with open(out / "skipped.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["file", "reason"])
            writer.writerows(skipped)
        print(
            f"{len(skipped)} image(s) could not be scored and were skipped (see {out / 'skipped.csv'}):",
            file=sys.stderr,
        )
        for name, reason in skipped:
            print(f"  {name}: {reason}", file=sys.stderr)

    labelled = [(p, m) for _, m, p in results if math.isfinite(m)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MetricWarning)
        metrics = (
            compute_iqa_metrics([p for p, _ in labelled], [m for _, m in labelled])
            if labelled
            else dict.fromkeys(("srcc", "plcc", "plcc_logistic", "krcc", "rmse"), float("nan"))
        )
    notes = [str(w.message) for w in caught if issubclass(w.category, MetricWarning)]
    summary = {
        **{k: (v if math.isfinite(v) else None) for k, v in metrics.items()},
        "num_scored": len(results),
        "num_labelled": len(labelled),
        "num_skipped": len(skipped),
        "model": args.model,
        "data": description,
        "label_column": args.label_column,
        "notes": notes,
    }
    (out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")

    print(f"model: {args.model}\ndata:  {description}")
    print(format_table(metrics, len(results), len(skipped)))
    for note in notes:
        print(f"note: {note}")
    if not args.no_plot and labelled:
        scatter_plot(
            out / "scatter.png",
            [p for p, _ in labelled],
            [m for _, m in labelled],
            f"{Path(args.model).name} on {Path(args.data).name}",
            metrics,
        )
    elif not labelled:
        print(f"note: no {args.label_column!r} labels: predictions only, no metrics or plot")
    print(f"wrote {out}")
    return 0 if results else 1


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
