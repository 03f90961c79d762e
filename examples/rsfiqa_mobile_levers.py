"""Measure a change to the rsfiqa-mobile recipe over several validation splits (the accuracy table of the card).

    python examples/rsfiqa_mobile_levers.py run NAME [--seeds 0,1,2,3,4] -- [train_rsfiqa_mobile.py options]
    python examples/rsfiqa_mobile_levers.py table

``run`` trains ``examples/train_rsfiqa_mobile.py`` once per split seed (``--split_seed``; the caches under
``outputs/cache`` are shared, so only the first run of a setting pays for features), without the pipeline
pass, and appends one JSON line per seed to ``outputs/levers/results.jsonl``: SRCC / PLCC of the last epoch
(no choice made on the validation split), of the best epoch (chosen on it: optimistic), with flip averaging
at test time, and the model's CPU time per 500 px image (1 thread, pipeline with the allocator tuned, median
over 12 CLIVE images; flip averaging would add one backbone pass). Runs already in the file are skipped, so
an interrupted job resumes. ``table`` prints mean +- sd per lever as a Markdown table, with the mean +- sd
of the per-split difference to the baseline on the same splits (paired: the split-to-split spread, larger
than most levers' effect, cancels out).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "outputs" / "levers"
RESULTS = OUT / "results.jsonl"


def load_recipe():
    spec = importlib.util.spec_from_file_location(
        "train_rsfiqa_mobile", ROOT / "examples" / "train_rsfiqa_mobile.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cpu_ms_per_image(model_dir: Path, images: list[Path]) -> float:
    import torch
    from transformers import pipeline

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pipe = pipeline("image-quality", model=str(model_dir), tune_allocator=True)
        pipe(str(images[0]))
        times = []
        for path in images:
            t = time.process_time()
            pipe(str(path))
            times.append(time.process_time() - t)
        return statistics.median(times) * 1000
    finally:
        torch.set_num_threads(threads)


def done_runs() -> set[tuple[str, int]]:
    if not RESULTS.exists():
        return set()
    return {(r["lever"], r["split_seed"]) for r in map(json.loads, RESULTS.read_text().splitlines()) if r}


def run(name: str, seeds: list[int], recipe_args: list[str]) -> None:
    recipe = load_recipe()
    OUT.mkdir(parents=True, exist_ok=True)
    clive = sorted((ROOT.parent / "shared" / "data" / "clive-train" / "images").glob("*.jpg"))[:12]
    for seed in seeds:
        if (name, seed) in done_runs():
            print(f"{name} seed {seed}: already measured")
            continue
        out = OUT / name / f"seed{seed}"
        argv = [
            "--output_dir",
            str(out),
            "--cache_dir",
            str(ROOT / "outputs" / "cache"),
            "--split_seed",
            str(seed),
            "--skip_pipeline_validation",
            *recipe_args,
        ]
        t0 = time.time()
        recipe.main(argv)
        summary = json.loads((out / "final" / "training_summary.json").read_text())
        m = summary["metrics"]
        row = {
            "lever": name,
            "split_seed": seed,
            "args": recipe_args,
            "last_srcc": m.get("last_epoch_srcc"),
            "last_plcc": m.get("last_epoch_plcc"),
            "best_srcc": m["srcc"],
            "best_plcc": m["plcc"],
            "flip_srcc": m.get("flip_tta_srcc"),
            "flip_plcc": m.get("flip_tta_plcc"),
            "synthetic_order_acc": m.get("synthetic_order_acc"),
            "minutes": (time.time() - t0) / 60,
            "cpu_ms_per_image": cpu_ms_per_image(out / "final", clive) if clive else None,
        }
        with open(RESULTS, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row))


def paired_differences(rows: list[dict], lever: str, key: str, baseline: str = "baseline") -> list[float]:
    """``key`` of ``lever`` minus that of ``baseline`` on each split seed both were measured on."""
    base = {r["split_seed"]: r.get(key) for r in rows if r["lever"] == baseline}
    return [
        r[key] - base[r["split_seed"]]
        for r in rows
        if r["lever"] == lever and r.get(key) is not None and base.get(r["split_seed"]) is not None
    ]


def table(results: Path = RESULTS) -> str:
    """Mean +- sd over split seeds per lever (Markdown), the paired difference of the last-epoch figures to
    the baseline on the same seeds, and the recipe options that define each lever."""
    rows = [json.loads(line) for line in Path(results).read_text().splitlines() if line]
    levers = list(dict.fromkeys(r["lever"] for r in rows))

    def cell(values: list[float], sign: str = "") -> str:
        values = [v for v in values if v is not None]
        if not values:
            return "-"
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):{sign}.3f} ± {sd:.3f}"

    lines = [
        "| lever | seeds | SRCC last | PLCC last | SRCC best | PLCC best | SRCC flip-TTA | PLCC flip-TTA "
        "| Δ SRCC last vs baseline (paired) | Δ PLCC last vs baseline (paired) "
        "| ms/image (1 thread CPU) | recipe options |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for lever in levers:
        rs = sorted((r for r in rows if r["lever"] == lever), key=lambda r: r["split_seed"])
        ms = [r["cpu_ms_per_image"] for r in rs if r.get("cpu_ms_per_image")]
        metrics = " | ".join(
            cell([r.get(k) for r in rs])
            for k in ("last_srcc", "last_plcc", "best_srcc", "best_plcc", "flip_srcc", "flip_plcc")
        )
        paired = " | ".join(
            "-" if lever == "baseline" else cell(paired_differences(rows, lever, k), "+")
            for k in ("last_srcc", "last_plcc")
        )
        speed = f"{statistics.median(ms):.0f}" if ms else "-"
        seeds = ",".join(str(r["split_seed"]) for r in rs)
        options = " ".join(rs[0]["args"]) or "(the shipped recipe)"
        lines.append(f"| {lever} | {seeds} | {metrics} | {paired} | {speed} | `{options}` |")
    return "\n".join(lines)


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    recipe_args = []
    if "--" in argv:
        i = argv.index("--")
        argv, recipe_args = argv[:i], argv[i + 1 :]
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("name")
    r.add_argument("--seeds", default="0,1,2,3,4")
    t = sub.add_parser("table")
    t.add_argument("--results", default=str(RESULTS), help="a results.jsonl (default: outputs/levers)")
    args = parser.parse_args(argv)
    if args.cmd == "run":
        run(args.name, [int(s) for s in args.seeds.split(",")], recipe_args)
    else:
        print(table(Path(args.results)))


if __name__ == "__main__":
    main()
