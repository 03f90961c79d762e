"""The wheel: under 30 MB, with the presets, the evaluate module and the shipped default model."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest
from conftest import ROOT


@pytest.mark.slow
def test_wheel_contents_and_size(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(ROOT),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("rsfiqa-*.whl")
    size_mb = wheel.stat().st_size / 2**20
    assert size_mb < 30, f"wheel is {size_mb:.1f} MB"
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in (
        "modeling_rsfiqa/presets/rsfiqa-mobile.json",
        "modeling_rsfiqa/presets/rsfiqa-paper.json",
        "modeling_rsfiqa/metrics/iqa_metrics/iqa_metrics.py",
        "modeling_rsfiqa/default_model/config.json",
        "modeling_rsfiqa/default_model/model.safetensors",
        "modeling_rsfiqa/default_model/processor_config.json",
        "modeling_rsfiqa/default_model/README.md",
        "modeling_rsfiqa/default_model/NOTICE.txt",
        "modeling_rsfiqa/default_model/LIVE_COPYRIGHT.txt",
    ):
        assert required in names, f"{required} missing from the wheel"
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "rsfiqa = modeling_rsfiqa.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
