"""pipeline("image-quality"): schema, lists, bad inputs, the fixture, and Hub remote code."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch
from conftest import FIXTURE_DIR, ROOT, random_image, run_remote_script
from PIL import Image
from transformers import AutoModel, pipeline

import modeling_rsfiqa  # noqa: F401  (registers the Auto classes and the pipeline)
from modeling_rsfiqa import ImageLoadError, ImageQualityPipeline, RSFIQAForQualityScoring


@pytest.fixture(scope="module")
def iqa():
    return pipeline("image-quality", model=str(FIXTURE_DIR))


def test_fixture_loads_with_auto_classes():
    model = AutoModel.from_pretrained(FIXTURE_DIR)
    assert isinstance(model, RSFIQAForQualityScoring)


def test_output_schema(iqa, tmp_path):
    assert isinstance(iqa, ImageQualityPipeline)
    path = tmp_path / "photo.png"
    Image.fromarray(random_image(40, 56)).save(path)
    out = iqa(str(path))
    assert isinstance(out["score"], float)
    assert out["source"] == str(path) and out["size"] == (56, 40)
    assert isinstance(out["attention_map"], np.ndarray) and out["attention_map"].ndim == 2
    assert 1 <= len(out["regions"]) <= iqa.model.config.max_regions
    for region in out["regions"]:
        assert set(region) >= {"box", "area", "score", "importance", "label"}
        x0, y0, x1, y1 = region["box"]
        assert 0 <= x0 < x1 <= 56 and 0 <= y0 < y1 <= 40
    assert sum(r["area"] for r in out["regions"]) == pytest.approx(1.0)


def test_inputs_of_every_kind_agree(iqa, tmp_path):
    array = random_image(40, 56)
    path = tmp_path / "a.png"
    Image.fromarray(array).save(path)
    scores = [iqa(x)["score"] for x in (array, Image.fromarray(array), str(path))]
    assert max(scores) - min(scores) < 1e-5
    gray = iqa(Image.fromarray(array[..., 0]))
    assert np.isfinite(gray["score"])


def test_list_input_and_skip_errors(iqa, tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(random_image(40, 56)).save(good)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    results = iqa([str(good), str(broken), str(good)], skip_errors=True)
    assert [r["score"] is None for r in results] == [False, True, False]
    assert str(broken) in results[1]["error"]
    assert results[0]["score"] == results[2]["score"]
    with pytest.raises(ImageLoadError, match="broken.jpg"):
        iqa([str(good), str(broken)])


def test_region_map_option(iqa):
    out = iqa(random_image(40, 56), return_region_map=True)
    assert out["region_map"].shape == (40, 56)
    assert out["region_map"].max() + 1 == len(out["regions"])


def test_pipeline_scores_equal_model_forward(iqa):
    image = random_image(40, 56)
    inputs = iqa.processor(image)
    with torch.no_grad():
        direct = iqa.model(**inputs).score.item()
    assert iqa(image)["score"] == pytest.approx(direct, abs=1e-5)


REMOTE_SCRIPT = textwrap.dedent(
    """
    import importlib.abc, json, sys
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("modeling_rsfiqa", "rsfiqa"):
                raise ImportError("this environment does not have rsfiqa: " + name)
    sys.meta_path.insert(0, Block())
    try:
        import modeling_rsfiqa  # noqa
        raise SystemExit("the package should not be importable here")
    except ImportError:
        pass
    import numpy as np
    from PIL import Image
    from transformers import AutoModel, AutoProcessor, pipeline
    folder, image_path = sys.argv[1], sys.argv[2]
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    pipe = pipeline(model=folder, trust_remote_code=True)
    import torch
    with torch.no_grad():
        direct = model(**processor(Image.open(image_path))).score.item()
    print(json.dumps({"model_module": type(model).__module__, "pipeline": type(pipe).__name__,
                      "score": pipe(image_path)["score"], "direct": direct}))
    """
)


@pytest.mark.slow
def test_remote_code_without_the_package(iqa, tmp_path):
    """A saved folder loads where the package cannot be imported, and gives the same scores."""
    folder = tmp_path / "hub-folder"
    iqa.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_rsfiqa.RSFIQAForQualityScoring"
    assert "default" not in config["custom_pipelines"]["image-quality"]
    image_path = tmp_path / "img.png"
    Image.fromarray(random_image(40, 56)).save(image_path)
    expected = iqa(str(image_path))["score"]
    result = run_remote_script(REMOTE_SCRIPT, tmp_path, str(folder), str(image_path))
    assert result["model_module"].startswith("transformers_modules.")
    assert result["pipeline"] == "ImageQualityPipeline"
    assert result["score"] == pytest.approx(expected, abs=1e-5)
    assert result["direct"] == pytest.approx(expected, abs=1e-5)
    assert ROOT.name  # the subprocess ran outside the repository (cwd=tmp_path)


def test_cpu_allocator_tuning_respects_the_environment(monkeypatch):
    import platform

    from modeling_rsfiqa import runtime

    for var in ("RSFIQA_MALLOC_TUNING", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(runtime, "_state", {})
    monkeypatch.setenv("RSFIQA_MALLOC_TUNING", "0")
    assert runtime.tune_cpu_allocator() is False
    monkeypatch.setattr(runtime, "_state", {})
    monkeypatch.delenv("RSFIQA_MALLOC_TUNING")
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1000000")  # the user's own choice wins
    assert runtime.tune_cpu_allocator() is False
    monkeypatch.setattr(runtime, "_state", {})
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_")
    expected = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert runtime.tune_cpu_allocator() is expected
    assert runtime.tune_cpu_allocator() is expected  # idempotent


def test_batched_results_equal_single_results(iqa, tmp_path):
    """pipeline(list, batch_size=...) gives what one call per image gives (sizes differ inside a batch)."""
    paths = []
    for i, (h, w) in enumerate([(40, 56), (64, 64), (33, 90), (80, 48), (40, 56)]):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(random_image(h, w, seed=i)).save(paths[-1])
    single = [iqa(str(p)) for p in paths]
    for batch_size in (2, 8):
        batched = iqa([str(p) for p in paths], batch_size=batch_size)
        for a, b in zip(single, batched, strict=True):
            assert b["score"] == pytest.approx(a["score"], abs=1e-4)
            assert b["size"] == a["size"] and b["source"] == a["source"]
            assert [r["box"] for r in b["regions"]] == [r["box"] for r in a["regions"]]
            np.testing.assert_allclose(b["attention_map"], a["attention_map"], atol=1e-5)
            for ra, rb in zip(a["regions"], b["regions"], strict=True):
                assert rb["score"] == pytest.approx(ra["score"], abs=1e-4)


def test_bad_files_in_a_batch_are_reported_not_fatal(iqa, tmp_path):
    from test_image_inputs import _header_only_png

    good = tmp_path / "good.png"
    Image.fromarray(random_image(40, 56)).save(good)
    bomb = tmp_path / "bomb.png"
    _header_only_png(bomb, 30000, 30000)
    inputs = [str(good), str(tmp_path / "missing.jpg"), str(bomb), str(good)]
    expected = iqa(str(good))["score"]
    for batch_size in (1, 2, 4):
        results = iqa(inputs, batch_size=batch_size, skip_errors=True)
        assert [r["score"] is None for r in results] == [False, True, True, False]
        assert "missing.jpg" in results[1]["error"] and "bomb.png" in results[2]["error"]
        assert "MAX_IMAGE_PIXELS" in results[2]["error"]
        assert results[0]["score"] == pytest.approx(expected, abs=1e-4)
        assert results[3]["score"] == pytest.approx(expected, abs=1e-4)
    assert iqa([str(bomb)] * 2, batch_size=2, skip_errors=True)[1]["source"] == str(bomb)
    with pytest.raises(ImageLoadError, match="bomb.png"):
        iqa(inputs[2:], batch_size=2)


def test_regions_of_the_work_map_are_reported_in_image_pixels(iqa):
    """Regions come from the partition's working map; boxes/areas equal those of the full-size map."""
    from modeling_rsfiqa.partition import region_summaries

    iqa.processor.superpixel_work_size, saved = 32, iqa.processor.superpixel_work_size
    try:
        out = iqa(random_image(90, 120), return_region_map=True)
    finally:
        iqa.processor.superpixel_work_size = saved
    assert out["region_map"].shape == (90, 120)
    expected = region_summaries(out["region_map"])
    assert [r["box"] for r in out["regions"]] == [s["box"] for s in expected]
    assert [r["area"] for r in out["regions"]] == pytest.approx([s["area"] for s in expected])


def test_creating_a_pipeline_leaves_the_allocator_alone_unless_asked(monkeypatch):
    """No process-wide side effect by default: malloc is tuned only on request (argument or environment)."""
    from modeling_rsfiqa import pipeline_rsfiqa

    calls = []
    monkeypatch.setattr(pipeline_rsfiqa, "tune_cpu_allocator", lambda: calls.append(1) or True)
    monkeypatch.delenv("RSFIQA_MALLOC_TUNING", raising=False)
    pipeline("image-quality", model=str(FIXTURE_DIR))
    assert calls == []
    pipeline("image-quality", model=str(FIXTURE_DIR), tune_allocator=True)
    assert calls == [1]
    monkeypatch.setenv("RSFIQA_MALLOC_TUNING", "1")
    pipeline("image-quality", model=str(FIXTURE_DIR))
    assert calls == [1, 1]
    pipeline("image-quality", model=str(FIXTURE_DIR), tune_allocator=False)
    assert calls == [1, 1]


def test_command_line_pipeline_tunes_the_allocator(monkeypatch):
    from modeling_rsfiqa import cli_score, pipeline_rsfiqa

    calls = []
    monkeypatch.setattr(pipeline_rsfiqa, "tune_cpu_allocator", lambda: calls.append(1) or True)
    monkeypatch.delenv("RSFIQA_MALLOC_TUNING", raising=False)
    cli_score.load_pipeline(str(FIXTURE_DIR))
    assert calls == [1]
