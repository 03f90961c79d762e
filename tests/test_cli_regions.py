"""``rsfiqa regions``: table, overlay PNG, JSON, bad ROIs (exit 2 / --skip-errors), points without SAM."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import random_image
from PIL import Image
from seagull_testing import save_tiny_region_model

from modeling_rsfiqa.cli import build_parser, main
from modeling_rsfiqa.cli_regions import NoDefaultModelError, load_region_pipeline

TYPES = {"blur", "colorfulness", "compression", "contrast", "exposure", "noise"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = save_tiny_region_model(tmp_path_factory.mktemp("seagull-region"))
    return str(folder)


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(random_image(40, 56)).save(path)
    return path


def test_parser_lists_regions():
    assert "regions" in build_parser().format_help()


def test_table_overlay_and_json(model_dir, photo, tmp_path, capsys):
    mask = np.zeros((40, 56), np.uint8)
    mask[5:25, 30:50] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    out_png, out_json = tmp_path / "overlay.png", tmp_path / "out.json"
    argv = ["regions", str(photo), "--box", "0,0,20,20", "--mask", str(tmp_path / "m.png")]
    argv += ["--box", "10,10,40,30", "--model", model_dir, "--out", str(out_png), "--json", str(out_json)]
    assert main(argv) == 0
    table = capsys.readouterr().out.splitlines()
    assert "quality" in table[0] and "import." in table[0] and "top distortions" in table[0]
    rows = [line.split() for line in table[1:4]]
    assert [r[:2] for r in rows] == [["0", "box"], ["1", "mask"], ["2", "box"]]  # command-line order kept
    with Image.open(out_png) as im:
        assert im.size == (56, 40)
        drawn = np.asarray(im.convert("RGB"))
    original = np.asarray(Image.open(photo).convert("RGB"))
    assert (drawn[5:25, 30:50] != original[5:25, 30:50]).any()  # the mask ROI is tinted
    payload = json.loads(out_json.read_text())
    assert payload["image"] == str(photo) and len(payload["regions"]) == 3
    first, second = payload["regions"][0], payload["regions"][1]
    assert first["kind"] == "box" and first["input"] == [0, 0, 20, 20] and first["box"] == [0, 0, 20, 20]
    assert second["kind"] == "mask" and second["box"] == [30, 5, 50, 25]
    assert second["area"] == pytest.approx((mask > 0).mean())
    for row in payload["regions"]:
        assert 0 <= row["quality"] <= 100 and 0 <= row["importance"] <= 100
        assert set(row["distortions"]) == TYPES
        assert f"{row['quality']:.1f}" in table[1 + row["index"]]


def test_bad_box_is_a_clean_error(model_dir, photo, tmp_path, capsys):
    out_png = tmp_path / "o.png"
    argv = ["regions", str(photo), "--box", "0,0,20,20", "--box", "0,0,500,5", "--model", model_dir]
    assert main(argv + ["--out", str(out_png)]) == 2
    err = capsys.readouterr().err
    assert "error: " in err and "photo.png: ROI 1 (box)" in err and "outside" in err
    assert "Traceback" not in err and not out_png.exists()
    assert (
        main(["regions", str(photo), "--box", "30,0,20,20", "--model", model_dir, "--out", str(out_png)]) == 2
    )
    assert "x1 <= x0" in capsys.readouterr().err


def test_skip_errors_lists_the_bad_roi_in_the_table(model_dir, photo, tmp_path, capsys):
    out_json = tmp_path / "o.json"
    argv = ["regions", str(photo), "--box", "0,0,20,20", "--box", "0,0,500,5", "--box", "5,5,30,30"]
    argv += ["--model", model_dir, "--skip-errors", "--out", str(tmp_path / "o.png"), "--json", str(out_json)]
    assert main(argv) == 1  # scored, but one ROI failed
    lines = capsys.readouterr().out.splitlines()
    assert "error:" in lines[2] and "ROI 1 (box)" in lines[2] and "outside" in lines[2]
    assert "error" not in lines[1] and "error" not in lines[3]
    regions = json.loads(out_json.read_text())["regions"]
    assert ["error" in r for r in regions] == [False, True, False]
    assert (tmp_path / "o.png").is_file()


def test_points_without_sam_is_a_clear_error(model_dir, photo, capsys):
    assert main(["regions", str(photo), "--points", "10,10;12,14", "--model", model_dir]) == 2
    err = capsys.readouterr().err
    assert "--sam-model" in err and "Traceback" not in err


def test_malformed_box_is_rejected_by_the_parser(photo, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["regions", str(photo), "--box", "1,2,3"])
    assert exc.value.code == 2 and "x0,y0,x1,y1" in capsys.readouterr().err


def test_no_model_and_no_default_says_pass_model(monkeypatch, photo, capsys):
    from transformers.pipelines import PIPELINE_REGISTRY

    _, info, _ = PIPELINE_REGISTRY.check_task("region-quality")
    monkeypatch.setitem(info, "default", {"model": ("/nonexistent/default_seagull", None)})
    with pytest.raises(NoDefaultModelError, match="pass --model"):
        load_region_pipeline(None)
    monkeypatch.delitem(info, "default")
    assert main(["regions", str(photo), "--box", "0,0,5,5"]) == 2
    assert "pass --model" in capsys.readouterr().err


def test_points_go_through_sam(model_dir, photo, tmp_path, capsys):
    from conftest import tiny_sam_config, tiny_sam_image_processor
    from transformers import SamModel, SamProcessor

    sam_dir = tmp_path / "sam"
    SamModel(tiny_sam_config()).save_pretrained(sam_dir)
    SamProcessor(image_processor=tiny_sam_image_processor()).save_pretrained(sam_dir)
    out_json = tmp_path / "o.json"
    argv = ["regions", str(photo), "--points", "20,20", "--box", "0,0,10,10", "--model", model_dir]
    argv += ["--sam-model", str(sam_dir), "--skip-errors", "--out", str(tmp_path / "o.png")]
    code = main(argv + ["--json", str(out_json)])
    regions = json.loads(out_json.read_text())["regions"]
    assert regions[0]["kind"] == "points" and regions[0]["input"] == {"points": [[20.0, 20.0]]}
    # a random SAM may return an empty mask: then that ROI (only) is reported as an error
    assert ("error" in regions[0]) == (code == 1)
    if "error" in regions[0]:
        assert "ROI 0 (points)" in regions[0]["error"]
    else:
        assert 0 <= regions[0]["quality"] <= 100
    assert "error" not in regions[1]


def test_without_model_the_registered_default_is_used(monkeypatch, model_dir, photo, tmp_path, capsys):
    from transformers.pipelines import PIPELINE_REGISTRY

    _, info, _ = PIPELINE_REGISTRY.check_task("region-quality")
    monkeypatch.setitem(info, "default", {"model": (model_dir, None)})
    assert load_region_pipeline(None).model.name_or_path == model_dir
    assert main(["regions", str(photo), "--box", "0,0,20,20", "--out", str(tmp_path / "o.png")]) == 0
    assert "0  box" in capsys.readouterr().out
