"""The lever table of examples/rsfiqa_mobile_levers.py: mean +- sd per lever and the paired difference to the
baseline on the split seeds both were measured on."""

from __future__ import annotations

import importlib.util
import json

import pytest
from conftest import ROOT


def load_levers():
    spec = importlib.util.spec_from_file_location(
        "rsfiqa_mobile_levers", ROOT / "examples" / "rsfiqa_mobile_levers.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def row(lever, seed, srcc, plcc):
    return {"lever": lever, "split_seed": seed, "args": ["--x"], "last_srcc": srcc, "last_plcc": plcc}


def test_paired_differences_use_only_shared_seeds():
    levers = load_levers()
    rows = [
        row("baseline", 0, 0.80, 0.84),
        row("baseline", 1, 0.70, 0.74),
        row("more", 1, 0.75, 0.76),
        row("more", 2, 0.99, 0.99),  # no baseline on split 2: left out of the paired difference
    ]
    assert levers.paired_differences(rows, "more", "last_srcc") == pytest.approx([0.05])
    assert levers.paired_differences(rows, "more", "last_plcc") == pytest.approx([0.02])
    assert levers.paired_differences(rows, "baseline", "last_srcc") == pytest.approx([0.0, 0.0])


def test_table_shows_mean_sd_and_paired_difference(tmp_path):
    levers = load_levers()
    rows = [
        row("baseline", 0, 0.80, 0.84),
        row("baseline", 1, 0.70, 0.74),
        row("more", 0, 0.82, 0.85),
        row("more", 1, 0.74, 0.74),
    ]
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    lines = levers.table(path).splitlines()
    baseline = next(line for line in lines if line.startswith("| baseline "))
    more = next(line for line in lines if line.startswith("| more "))
    assert "| 0.750 ± 0.071 | 0.790 ± 0.071 |" in baseline
    # paired SRCC differences +0.02 and +0.04; PLCC +0.01 and 0.00
    assert "| +0.030 ± 0.014 | +0.005 ± 0.007 |" in more
    assert more.count("|") == baseline.count("|") == lines[0].count("|")
