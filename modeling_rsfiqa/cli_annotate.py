"""``rsfiqa annotate``: MLLM region annotations of a whole image folder or dataset, cached and resumable.

    rsfiqa annotate --model DIR --data DIR --out DIR [--adapter DIR] [--partition superpixel|sam|grid]
    rsfiqa annotate --model DIR --data DIR --out DIR --partition sam --sam-model SAM_DIR
    accelerate launch processing/annotate.py --model DIR --data DIR --out DIR     # sharded over processes

Regions (``superpixel`` and ``sam``) come from the same code as the scoring model's processor
(``RSFIQAProcessor.partition``); the store's keys hold the partition settings, and for SAM the SAM model's
content fingerprint and input size, so a store is never reused for other regions. ``--regions-from`` takes
the region settings, distortion dimensions, level words and prompt version from an RSFIQA preset, config
JSON or model folder (flags given explicitly still win), so that the store matches what that model expects.

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
    p.add_argument(
        "--partition",
        choices=["superpixel", "sam", "grid"],
        default=None,
        help="region partition (default: superpixel, or the --regions-from model's method)",
    )
    p.add_argument(
        "--sam-model",
        default=None,
        help="folder saved from transformers SamModel + SamProcessor (needed by --partition sam)",
    )
    p.add_argument(
        "--regions-from",
        default=None,
        help="RSFIQA preset name, config JSON or model folder whose region settings, distortion dimensions, "
        "level words and prompt version to use",
    )
    p.add_argument("--max-regions", type=int, default=None, help="default 16")
    p.add_argument("--n-segments", type=int, default=None, help="superpixel segments before merging (24)")
    p.add_argument("--min-region-area", type=float, default=None, help="fraction of the image (0.005)")
    p.add_argument("--sam-points-per-side", type=int, default=None, help="SAM prompt grid side (16)")
    p.add_argument("--sam-points-per-batch", type=int, default=None, help="SAM prompts decoded at once (64)")
    p.add_argument("--sam-pred-iou-thresh", type=float, default=None, help="SAM mask IoU filter (0.86)")
    p.add_argument(
        "--sam-stability-score-thresh", type=float, default=None, help="SAM stability filter (0.92)"
    )
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


_REGION_FLAGS = {  # command-line flag -> RSFIQAConfig field
    "max_regions": "max_regions",
    "n_segments": "superpixel_segments",
    "min_region_area": "min_region_area",
    "sam_points_per_side": "sam_points_per_side",
    "sam_points_per_batch": "sam_points_per_batch",
    "sam_pred_iou_thresh": "sam_pred_iou_thresh",
    "sam_stability_score_thresh": "sam_stability_score_thresh",
}


def region_config(args: argparse.Namespace, sam_model: Any = None) -> Any:
    """The ``RSFIQAConfig`` whose region settings the job uses: ``--regions-from`` (or the defaults), with the
    flags given on the command line applied on top."""
    from .configuration_rsfiqa import RSFIQAConfig
    from .factory import preset_config

    overrides: dict[str, Any] = {
        field: getattr(args, flag)
        for flag, field in _REGION_FLAGS.items()
        if getattr(args, flag, None) is not None
    }
    method = getattr(args, "partition", None)
    if method in ("superpixel", "sam"):
        overrides["partition_method"] = method
    if sam_model is not None:
        overrides["sam_config"] = sam_model.config
    source = getattr(args, "regions_from", None)
    if source:
        config = preset_config(source)
        config.mllm_config = None  # not needed here (and a big nested config)
        for key, value in overrides.items():
            setattr(config, key, value)
        config.validate_rsfiqa()
        return config
    if overrides.get("partition_method") == "sam" and sam_model is None:
        overrides["sam_config"] = {}  # placeholder: the SAM model itself comes from --sam-model
    return RSFIQAConfig(**overrides)


def make_partition_fn(
    args: argparse.Namespace, sam: tuple[Any, Any] | None = None
) -> tuple[Any, dict[str, Any]]:
    """(image -> label map, settings dict for the cache key). ``sam``: ``(SamModel, SamImageProcessor)``.

    Superpixel and SAM regions go through :meth:`RSFIQAProcessor.partition` (the scoring model's own code) and
    are keyed by :meth:`RSFIQAProcessor.partition_key` (the SAM fingerprint included)."""
    if args.partition == "grid":
        from .partition import grid_label_map

        rows, cols = (int(x) for x in args.grid.lower().split("x"))
        settings = {"method": "grid", "rows": rows, "cols": cols}
        return (lambda img: grid_label_map(img.height, img.width, rows, cols)), settings
    from .processing_rsfiqa import RSFIQAProcessor

    sam_model, sam_image_processor = sam if sam is not None else (None, None)
    config = region_config(args, sam_model)
    if config.partition_method == "sam" and sam_model is None:
        raise ValueError(
            "--partition sam needs --sam-model DIR (a folder saved from SamModel + SamProcessor)"
        )
    processor = RSFIQAProcessor.from_model_config(config)
    if sam_image_processor is not None:
        processor.sam_image_processor = sam_image_processor
    settings = processor.partition_key(sam_model)
    return (lambda img: processor.partition(img, sam_model=sam_model)), settings


def _annotator_config(args: argparse.Namespace) -> Any:
    from .annotation_rsfiqa import AnnotatorConfig

    data: dict[str, Any] = {}
    if getattr(args, "regions_from", None):
        from .factory import preset_config

        config = preset_config(args.regions_from)
        data.update(
            dimensions=list(config.distortion_dimensions),
            level_words=list(config.level_words),
            prompt_version=config.prompt_version,
        )
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
    # regions first: a bad --sam-model fails before the (large) MLLM is loaded
    if args.partition is None:
        args.partition = "superpixel"
        if args.regions_from:
            from .factory import preset_config

            args.partition = preset_config(args.regions_from).partition_method
    sam = None
    if args.partition == "sam":
        if not args.sam_model:
            raise SystemExit(
                "rsfiqa annotate: --partition sam needs --sam-model DIR (SamModel + SamProcessor)"
            )
        from .partition import load_sam_model

        try:
            sam = load_sam_model(args.sam_model, device=state.device)
        except (OSError, ValueError) as err:
            raise SystemExit(f"rsfiqa annotate: --sam-model: {err}") from err
    elif args.sam_model:
        raise SystemExit(
            f"rsfiqa annotate: --sam-model is only used with --partition sam (got {args.partition})"
        )
    partition_fn, settings = make_partition_fn(args, sam)
    if annotator is None:
        dtype = None if args.dtype == "auto" else args.dtype
        annotator = RegionAnnotator.from_pretrained(
            args.model,
            adapter=args.adapter,
            config=_annotator_config(args),
            dtype=dtype,
            device_map=str(state.device),
        )
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
