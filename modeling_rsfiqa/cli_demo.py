"""``rsfiqa demo --out DIR``: the README's main job, offline.

Scores photos bundled with scikit-image (Chelsea and Coffee: CC0; Astronaut (NASA) and Rocket (SpaceX):
public domain), each clean and at increasing levels of three synthetic distortions, with the shipped
model, and writes ``DIR/index.html`` (PNG overlays embedded: per-region quality and RSA attention) plus
``DIR/sheet.png`` and ``DIR/scores.csv``. It checks that the scores rank each photo's levels in order.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

__all__ = ["register", "run_demo", "DEMO_PHOTOS", "DEMO_DISTORTIONS"]

DEMO_PHOTOS = {
    "chelsea": "CC0",
    "coffee": "CC0",
    "astronaut": "public domain (NASA)",
    "rocket": "public domain (SpaceX)",
}
DEMO_DISTORTIONS = ("gaussian_blur", "white_noise", "jpeg")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo", help="score bundled photos at increasing distortion; write an HTML report"
    )
    p.add_argument("--out", default="report", help="output folder (default: report)")
    p.add_argument("--model", default=None, help="model folder (default: the shipped rsfiqa-mobile)")
    p.add_argument("--photos", default=",".join(DEMO_PHOTOS), help="comma-separated skimage.data photo names")
    p.add_argument(
        "--distortions", default=",".join(DEMO_DISTORTIONS), help="distortion names (see distortions)"
    )
    p.add_argument(
        "--levels", default="1,3,5", help="distortion levels to show (1 = mildest .. 5 = strongest)"
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    import numpy as np
    import skimage.data
    from PIL import Image
    from tqdm.auto import tqdm

    from .cli_score import load_pipeline
    from .distortions import distort, list_distortions
    from .report import contact_sheet, render_tile, write_html_report

    photos = [p for p in args.photos.split(",") if p]
    distortions = [d for d in args.distortions.split(",") if d]
    levels = [int(v) for v in args.levels.split(",") if v]
    unknown = [d for d in distortions if d not in list_distortions()]
    if unknown:
        print(f"unknown distortions {unknown}; choose from {list_distortions()}", file=sys.stderr)
        return 2
    pipe = load_pipeline(args.model, args.threads)
    config = pipe.model.config
    sign = 1 if config.higher_is_better else -1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    jobs = []  # (photo, distortion, level, image); the clean photo (distortion None, level 0) once per photo
    for photo in photos:
        clean = Image.fromarray(np.asarray(getattr(skimage.data, photo)())).convert("RGB")
        jobs.append((photo, None, 0, clean))
        for dist in distortions:
            jobs += [(photo, dist, lv, distort(clean, dist, lv, seed=0)) for lv in levels]
    scored = {
        (photo, dist, level): (image, pipe(image, return_region_map=True))
        for photo, dist, level, image in tqdm(jobs, desc="demo", unit="img", file=sys.stderr)
    }
    rows, sections, table, ordered, total = [], [], [], 0, 0
    for photo in photos:
        items = []
        for dist in distortions:
            series = [scored[(photo, None, 0)]] + [scored[(photo, dist, lv)] for lv in levels]
            scores = [r["score"] for _, r in series]
            in_order = all(sign * (a - b) > 0 for a, b in zip(scores, scores[1:]))
            ordered += in_order
            total += 1
            tiles = []
            for lv, (image, result) in zip([0, *levels], series):
                title = f"{photo} clean" if lv == 0 else f"{dist} L{lv}"
                tiles.append(
                    render_tile(image, result, title, config.score_range, config.higher_is_better, 200)
                )
                table.append(
                    {
                        "photo": photo,
                        "distortion": dist if lv else "none",
                        "level": lv,
                        "score": round(result["score"], 3),
                    }
                )
            rows.append(tiles)
            items.append(
                {
                    "image": contact_sheet([tiles]),
                    "caption": f"{dist}: scores {' > '.join(f'{s:.1f}' for s in scores)}"
                    f" ({'in order' if in_order else 'NOT in order'})",
                }
            )
        sections.append({"heading": f"{photo} ({DEMO_PHOTOS.get(photo, 'skimage.data')})", "items": items})

    with open(out / "scores.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["photo", "distortion", "level", "score"])
        writer.writeheader()
        writer.writerows(table)
    contact_sheet(rows).save(out / "sheet.png", optimize=True)
    lo, hi = config.score_range
    intro = (
        f"Model: <code>{config._name_or_path or 'default'}</code> ({config.backbone_name}, {config.partition_method} "
        f"regions). Scores on [{lo:g}, {hi:g}], {'higher' if config.higher_is_better else 'lower'} is better. "
        "Each tile: the image | per-region predicted quality (red = worse, green = better) | RSA attention, "
        f"relative within the image (bright = weighs more). Distortion levels ranked in order: {ordered}/{total}."
    )
    report = write_html_report(out / "index.html", "rsfiqa demo: where quality is lost", intro, sections)
    print(f"{ordered}/{total} distortion series ranked in order of level")
    print(f"report: {report}\nsheet:  {out / 'sheet.png'}\nscores: {out / 'scores.csv'}")
    return 0
