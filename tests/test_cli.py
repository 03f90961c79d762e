"""The ``rsfiqa`` console script: score (table, JSON, report, bad files) and demo (the main job)."""

from __future__ import annotations

import csv
import json

from conftest import FIXTURE_DIR, random_image
from PIL import Image

from modeling_rsfiqa.cli import build_parser, main


def test_parser_lists_commands():
    help_text = build_parser().format_help()
    for command in ("score", "demo"):
        assert command in help_text


def test_score_reports_bad_files_and_keeps_the_rest(tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(random_image(40, 56, seed=i)).save(folder / f"ok{i}.png")
    (folder / "broken.jpg").write_bytes(b"garbage")
    out_json = tmp_path / "scores.json"
    code = main(
        [
            "score",
            str(folder),
            "--model",
            str(FIXTURE_DIR),
            "--json",
            str(out_json),
            "--report",
            str(tmp_path / "report"),
        ]
    )
    captured = capsys.readouterr()
    assert code == 1  # one unreadable image -> non-zero exit, but the others are scored
    assert "broken.jpg" in captured.err
    results = json.loads(out_json.read_text())
    assert [r["score"] is None for r in results] == [True, False, False]  # sorted: broken, ok0, ok1
    assert all(len(r["regions"]) >= 1 for r in results[1:])
    assert (tmp_path / "report" / "index.html").read_text().count("data:image/png;base64") == 2


def test_score_missing_input_is_an_error(tmp_path, capsys):
    assert main(["score", str(tmp_path / "nothing.jpg"), "--model", str(FIXTURE_DIR)]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_demo_writes_report_sheet_and_scores(tmp_path, capsys):
    out = tmp_path / "report"
    code = main(
        [
            "demo",
            "--out",
            str(out),
            "--model",
            str(FIXTURE_DIR),
            "--photos",
            "chelsea",
            "--distortions",
            "gaussian_blur,jpeg",
            "--levels",
            "1,5",
        ]
    )
    assert code == 0
    html = (out / "index.html").read_text()
    assert html.count("data:image/png;base64") == 2 and "chelsea" in html
    sheet = Image.open(out / "sheet.png")
    assert sheet.width > 600 and sheet.height > 200
    rows = list(csv.DictReader(open(out / "scores.csv")))
    assert len(rows) == 6 and {r["distortion"] for r in rows} == {"none", "gaussian_blur", "jpeg"}
    assert "distortion series ranked in order" in capsys.readouterr().out


def test_demo_rejects_unknown_distortion(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--model", str(FIXTURE_DIR), "--distortions", "nope"]) == 2
