"""Shared test helpers: tiny configs built in code, synthetic images, the ../shared data location."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(2)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FIXTURE_DIR = ROOT / "tests" / "fixtures" / "tiny-random-rsfiqa"


def tiny_config(**overrides):
    from modeling_rsfiqa.factory import preset_config

    return preset_config("rsfiqa-tiny", **overrides)


def tiny_sam_config():
    """A ~77k-parameter SAM: hidden = output_channels = 2 * num_pos_feats, 64x64 input."""
    from transformers import SamConfig

    return SamConfig(
        vision_config=dict(
            hidden_size=32,
            output_channels=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            mlp_dim=64,
            image_size=64,
            patch_size=8,
            global_attn_indexes=[1],
            num_pos_feats=16,
            window_size=4,
        ),
        prompt_encoder_config=dict(hidden_size=32, image_size=64, patch_size=8, mask_input_channels=4),
        mask_decoder_config=dict(
            hidden_size=32, mlp_dim=64, num_hidden_layers=2, num_attention_heads=2, iou_head_hidden_dim=32
        ),
    )


def tiny_sam_image_processor():
    from transformers import SamImageProcessor

    return SamImageProcessor(
        size={"longest_edge": 64},
        pad_size={"height": 64, "width": 64},
        mask_size={"longest_edge": 16},
        mask_pad_size={"height": 16, "width": 16},
    )


def random_image(height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    """A smooth random RGB image (structure for superpixels, not pure noise)."""
    rng = np.random.RandomState(seed)
    small = rng.randint(0, 255, (max(2, height // 8), max(2, width // 8), 3)).astype(np.uint8)
    from PIL import Image

    return np.asarray(Image.fromarray(small).resize((width, height), Image.BILINEAR))


@pytest.fixture
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared is not present")
    return SHARED


def run_remote_script(script: str, tmp_path: Path, *args: str, timeout: float = 300) -> dict:
    """Run ``script`` with a bare environment (no repository on the path, offline, cwd ``tmp_path``) as
    ``python remote.py *args``; it must exit 0 and print a JSON object on its last line, which is returned.
    The remote-code tests use it to load saved folders where this package is not importable."""
    import json
    import subprocess
    import sys

    path = tmp_path / "remote.py"
    path.write_text(script)
    proc = subprocess.run(
        [sys.executable, str(path), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HF_HOME": str(tmp_path / "hf")},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])
