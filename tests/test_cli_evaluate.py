"""``rsfiqa evaluate``: metrics table, per-image CSV, scatter plot; bad images reported and skipped."""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
from conftest import FIXTURE_DIR, random_image
from PIL import Image

from modeling_rsfiqa.cli import main as rsfiqa_main


def make_folder(folder: Path, n: int = 6) -> tuple[Path, dict[str, float]]:
    folder.mkdir(parents=True, exist_ok=True)
    mos = {}
    for i in range(n):
        name = f"im{i}.png"
        Image.fromarray(random_image(48, 56, seed=i)).save(folder / name)
        mos[name] = 10.0 + 15.0 * i
    (folder / "broken.png").write_bytes(b"this is not a png")  # corrupt file
    rows = [*mos.items(), ("broken.png", 50.0), ("missing.png", 40.0)]
    with open(folder / "metadata.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file_name", "mos"])
        writer.writerows(rows)
    return folder, mos


def test_evaluate_imagefolder_writes_csv_png_table_and_skips_bad_images(tmp_path, capsys):
    data, mos = make_folder(tmp_path / "data")
    out = tmp_path / "out"
    code = rsfiqa_main(
        [
            "evaluate",
            "--model",
            str(FIXTURE_DIR),
            "--data",
            str(data),
            "--out",
            str(out),
            "--batch-size",
            "4",
            "--no-progress",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0
    for word in ("SRCC", "PLCC", "KRCC", "RMSE", "images skipped"):
        assert word in captured.out
    assert "broken.png" in captured.err and "missing.png" in captured.err

    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["file"] for r in rows] == list(mos)  # all good images, in order, none lost to the bad ones
    assert all(float(r["mos"]) == mos[r["file"]] and math.isfinite(float(r["prediction"])) for r in rows)
    with open(out / "skipped.csv", newline="") as f:
        skipped = {r["file"]: r["reason"] for r in csv.DictReader(f)}
    assert set(skipped) == {"broken.png", "missing.png"} and "does not exist" in skipped["missing.png"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_scored"] == 6 and metrics["num_skipped"] == 2
    assert all(math.isfinite(metrics[k]) for k in ("srcc", "plcc", "krcc", "rmse"))
    assert (out / "scatter.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # batched predictions equal the model's own output for one image
    from modeling_rsfiqa.modeling_rsfiqa import RSFIQAForQualityScoring
    from modeling_rsfiqa.processing_rsfiqa import RSFIQAProcessor

    model = RSFIQAForQualityScoring.from_pretrained(FIXTURE_DIR).eval()
    processor = RSFIQAProcessor.from_pretrained(FIXTURE_DIR)
    with torch.no_grad():
        expected = float(model(**processor(str(data / "im2.png"))).score[0])
    assert math.isclose(float(rows[2]["prediction"]), expected, rel_tol=1e-5, abs_tol=1e-4)


def test_evaluate_save_to_disk_dataset_defaults_to_test_split(tmp_path, capsys):
    import datasets

    def split(seeds):
        return datasets.Dataset.from_dict(
            {
                "image": [Image.fromarray(random_image(40, 40, seed=s)) for s in seeds],
                "mos": [float(s) for s in seeds],
                "name": [f"s{s}.png" for s in seeds],
            },
            features=datasets.Features(
                {
                    "image": datasets.Image(),
                    "mos": datasets.Value("float32"),
                    "name": datasets.Value("string"),
                }
            ),
        )

    datasets.DatasetDict({"train": split([0, 1]), "test": split([2, 3, 4])}).save_to_disk(
        str(tmp_path / "dd")
    )
    out = tmp_path / "out"
    code = rsfiqa_main(
        [
            "evaluate",
            "--model",
            str(FIXTURE_DIR),
            "--data",
            str(tmp_path / "dd"),
            "--out",
            str(out),
            "--no-plot",
            "--no-progress",
        ]
    )
    assert code == 0
    assert "[test]" in capsys.readouterr().out
    with open(out / "predictions.csv", newline="") as f:
        assert [r["file"] for r in csv.DictReader(f)] == ["s2.png", "s3.png", "s4.png"]
    assert not (out / "scatter.png").exists() and not (out / "skipped.csv").exists()


def test_evaluate_without_matplotlib_fails_clearly_before_inference(tmp_path, capsys, monkeypatch):
    data, _ = make_folder(tmp_path / "data", n=2)
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    code = rsfiqa_main(
        ["evaluate", "--model", str(FIXTURE_DIR), "--data", str(data), "--out", str(tmp_path / "o")]
    )
    assert code == 2
    assert "rsfiqa[plot]" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_evaluate_rejects_unknown_data_layout(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert rsfiqa_main(["evaluate", "--model", str(FIXTURE_DIR), "--data", str(tmp_path / "empty")]) == 2
    assert "metadata.csv" in capsys.readouterr().err


def test_truncated_image_is_skipped_and_odd_formats_are_scored(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    # a grayscale 16-bit and an RGBA image are fine; only the truncated file is skipped
    Image.fromarray(np.arange(48 * 48, dtype=np.uint16).reshape(48, 48) * 20).save(folder / "g16.png")
    Image.fromarray(random_image(48, 48, seed=1)).convert("RGBA").save(folder / "rgba.png")
    good = folder / "good.jpg"
    Image.fromarray(random_image(48, 48, seed=2)).save(good)
    (folder / "trunc.jpg").write_bytes(good.read_bytes()[: len(good.read_bytes()) // 3])
    with open(folder / "metadata.csv", "w", newline="") as f:
        csv.writer(f).writerows(
            [["file_name", "mos"], ["trunc.jpg", 1], ["g16.png", 2], ["rgba.png", 3], ["good.jpg", 4]]
        )
    out = tmp_path / "o"
    assert (
        rsfiqa_main(
            [
                "evaluate",
                "--model",
                str(FIXTURE_DIR),
                "--data",
                str(folder),
                "--out",
                str(out),
                "--batch-size",
                "2",
                "--no-plot",
                "--no-progress",
            ]
        )
        == 0
    )
    with open(out / "predictions.csv", newline="") as f:
        assert [r["file"] for r in csv.DictReader(f)] == ["g16.png", "rgba.png", "good.jpg"]
    with open(out / "skipped.csv", newline="") as f:
        assert [r["file"] for r in csv.DictReader(f)] == ["trunc.jpg"]
