"""``rsfiqa annotate``: MLLM region annotations of a whole image folder or dataset, cached and resumable.

    rsfiqa annotate --model DIR --data DIR --out DIR [--adapter DIR] [--partition superpixel|grid]
    accelerate launch processing/annotate.py --model DIR --data DIR --out DIR     # sharded over processes

Every finished image is written at once to the append-only store in ``--out`` (see
``annotation_store_rsfiqa``), so a rerun after an interruption (even ``kill -9``) only computes what is
missing. Under ``accelerate launch`` process ``r`` of ``n`` takes items ``r, r+n, ...``; the main process
compacts the store at the end, which then holds exactly what one process would have written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

__all__ = ["register", "build_parser", "run", "main", "make_partition_fn"]


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="folder of an image-text-to-text model (+ its processor)")
    p.add_argument("--data", required=True, help="image folder (recursive) or a datasets save_to_disk folder")
    p.add_argument("--out", required=True, help="annotation store folder (created; reused to resume)")
    p.add_argument("--adapter", default=None, help="standalone LoRA adapter folder (peft format)")
    p.add_argument("--annotator-config", default=None, help="JSON file with AnnotatorConfig fields")
    p.add_argument("--region-mode", choices=["crop", "box", "overlay"], default=None)
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--max-batch-regions", type=int, default=None)
    p.add_argument("--method", choices=["fast", "naive"], default="fast")
    p.add_argument("--partition", choices=["superpixel", "grid"], default="superpixel")
    p.add_argument("--max-regions", type=int, default=16)
    p.add_argument("--n-segments", type=int, default=24)
    p.add_argument("--min-region-area", type=float, default=0.005)
    p.add_argument("--grid", default="2x2", help="ROWSxCOLS for --partition grid")
    p.add_argument("--dtype", default="auto", help="model dtype: auto, float32, bfloat16, float16")
    p.add_argument("--limit", type=int, default=None, help="only the first N items (smoke runs)")
    p.add_argument(
        "--flush-every", type=int, default=1, help="images per written shard (1 = nothing is lost)"
    )
    p.add_argument("--no-compact", action="store_true", help="leave the shards as written")
    p.add_argument("--no-progress", action="store_true")


def register(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("annotate", help="MLLM region annotations of an image folder or dataset")
    _add_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="annotate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    _add_arguments(parser)
    return parser


def make_partition_fn(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """(image -> label map, settings dict for the cache key)."""
    if args.partition == "grid":
        from .annotation_rsfiqa import grid_label_map

        rows, cols = (int(x) for x in args.grid.lower().split("x"))
        settings = {"method": "grid", "rows": rows, "cols": cols}
        return (lambda img: grid_label_map(img.height, img.width, rows, cols)), settings
    from .partition import superpixel_partition  # lazy: scikit-image only when needed

    settings = {
        "method": "superpixel",
        "n_segments": args.n_segments,
        "max_regions": args.max_regions,
        "min_region_area": args.min_region_area,
    }

    def fn(img: Any) -> Any:
        return superpixel_partition(
            img,
            n_segments=args.n_segments,
            max_regions=args.max_regions,
            min_region_area=args.min_region_area,
        )

    return fn, settings


def _annotator_config(args: argparse.Namespace) -> Any:
    from .annotation_rsfiqa import AnnotatorConfig

    data: dict[str, Any] = {}
    if args.annotator_config:
        with open(args.annotator_config, encoding="utf-8") as f:
            data = json.load(f)
    for field, value in (
        ("region_mode", args.region_mode),
        ("max_new_tokens", args.max_new_tokens),
        ("max_batch_regions", args.max_batch_regions),
    ):
        if value is not None:
            data[field] = value
    return AnnotatorConfig.from_dict(data)


def run(args: argparse.Namespace, annotator: Any = None) -> int:
    """Run the job; ``annotator`` may be given (tests), else it is loaded from ``--model``."""
    from accelerate import PartialState

    from .annotation_rsfiqa import RegionAnnotator
    from .annotation_store_rsfiqa import AnnotationStore, annotate_items, list_image_items

    state = PartialState()
    if annotator is None:
        dtype = None if args.dtype == "auto" else args.dtype
        annotator = RegionAnnotator.from_pretrained(
            args.model,
            adapter=args.adapter,
            config=_annotator_config(args),
            dtype=dtype,
            device_map=str(state.device),
        )
    partition_fn, settings = make_partition_fn(args)
    items = list_image_items(args.data)
    if args.limit is not None:
        items = items[: args.limit]
    store = AnnotationStore(args.out, flush_every=args.flush_every, writer_id=f"r{state.process_index}")
    stats = annotate_items(
        items,
        annotator,
        store,
        partition_fn,
        settings,
        rank=state.process_index,
        world_size=state.num_processes,
        progress=not args.no_progress,
        method=args.method,
    )
    if stats["errors"]:
        with open(
            os.path.join(args.out, f"errors-rank{state.process_index}.jsonl"), "a", encoding="utf-8"
        ) as f:
            for err in stats["errors"]:
                f.write(json.dumps(err) + "\n")
    state.wait_for_everyone()
    if state.is_main_process:
        store.refresh()
        total = len(store) if args.no_compact else store.compact()
        info = {
            "model": annotator.model_fingerprint,
            "annotator_config": annotator.config.to_dict(),
            "prompt": annotator.config.fingerprint(),
            "partition": settings,
        }
        with open(os.path.join(args.out, "annotator.json"), "w", encoding="utf-8") as f:
            json.dump(info, f, indent=2)
        print(
            f"annotate: {stats['computed']} computed, {stats['cached']} cached, {len(stats['errors'])} unreadable "
            f"(this process); store {args.out} holds {total} images",
            file=sys.stderr,
        )
    return 1 if stats["errors"] and not (stats["computed"] or stats["cached"]) else 0


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))
