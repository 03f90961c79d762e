"""The web app (issue 11): ``rsfiqa serve`` on a free loopback port, through gradio_client and a real browser.

One server per module: the shipped image model, and a tiny random Q-CLIP and a tiny random SEAGULL ROI model
saved in the test for the Video and Regions tabs (the real pipelines run on them). Covered here: the named endpoints with the same
numbers as the library, readable errors for bad and oversized files, 20 concurrent API requests, the page in
Chromium (no console errors, a score appears, a corrupt file gives a message, the batch table sorts and
exports CSV, a region and a video round trip), the Space's ``app.py`` and ROI validation. A tab whose model
is missing says why (tested without a server).
"""

from __future__ import annotations

import csv
import json
import os
import platform
import re
import runpy
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from app_server import CHROMIUM_FLAGS, chromium_or_skip, listening_addresses, serve
from conftest import ROOT

gr = pytest.importorskip("gradio", reason="the web app needs the 'app' extra (gradio)")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from modeling_rsfiqa.app import (  # noqa: E402
    REGION_TASK,
    VIDEO_TASK,
    InputError,
    ServeLimits,
    _task_default,
    parse_rois,
)

SCREENSHOT_DIR = os.environ.get("RSFIQA_SCREENSHOT_DIR")  # `make screenshots` sets it to docs/screenshots


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    """Small real photos (scikit-image, CC0) as files: clean, blurred, a truncated JPEG, a fake PNG."""
    import skimage.data
    from PIL import Image, ImageFilter

    folder = tmp_path_factory.mktemp("photos")
    cat = Image.fromarray(skimage.data.chelsea())
    coffee = Image.fromarray(skimage.data.coffee()).resize((300, 200))
    files = {
        "cat": folder / "cat.jpg",
        "coffee": folder / "coffee.png",
        "blurred": folder / "cat-blurred.jpg",
    }
    cat.save(files["cat"], quality=90)
    coffee.save(files["coffee"])
    cat.filter(ImageFilter.GaussianBlur(4)).save(files["blurred"], quality=90)
    files["corrupt"] = folder / "corrupt.jpg"
    files["corrupt"].write_bytes(files["cat"].read_bytes()[:1500])  # truncated: header fine, data missing
    files["text"] = folder / "notes.png"
    files["text"].write_text("this is not an image\n")
    return files


@pytest.fixture(scope="module")
def video_model(tmp_path_factory) -> Path:
    """A tiny random Q-CLIP folder (built from its preset, as the Q-CLIP tests do)."""
    from modeling_rsfiqa.factory import create_model

    model, processor = create_model("qclip-tiny")
    folder = tmp_path_factory.mktemp("qclip") / "qclip-tiny"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    """A 2 s clip panning over a photo (sharp, then blurring), and a file that is not a video."""
    import skimage.data
    from PIL import Image, ImageFilter
    from qclip_testing import write_video

    folder = tmp_path_factory.mktemp("clips")
    photo = Image.fromarray(skimage.data.astronaut()).resize((256, 256))
    frames = []
    for i in range(48):
        crop = photo.crop((2 * i, 40, 2 * i + 160, 160)).filter(ImageFilter.GaussianBlur(i / 12))
        frames.append(np.asarray(crop))
    clip = write_video(folder / "pan.mp4", num_frames=48, width=160, height=120, fps=24, frames=frames)
    bad = folder / "broken.mp4"
    bad.write_bytes(clip.read_bytes()[:600])  # the header and nothing else
    return {"pan": clip, "broken": bad}


@pytest.fixture(scope="module")
def region_model(tmp_path_factory) -> Path:
    """A tiny random SEAGULL ROI model folder (the shipped model's architecture on timm's test backbone)."""
    from seagull_testing import save_tiny_region_model

    return save_tiny_region_model(tmp_path_factory.mktemp("seagull") / "seagull-region-tiny")


@pytest.fixture(scope="module")
def server(tmp_path_factory, video_model, region_model):
    with serve(
        tmp_path_factory.mktemp("server"),
        "--video-model",
        str(video_model),
        "--region-model",
        str(region_model),
    ) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    return Client(server.url, verbose=False)


@pytest.fixture(scope="module")
def space():
    """The Space's app.py, imported as a Space would (builds the app, loads the models, does not launch)."""
    namespace = runpy.run_path(str(ROOT / "app.py"), run_name="rsfiqa_space")
    return namespace


# ------------------------------------------------------------------------------------------------ no server


def test_serve_command_defaults_to_localhost():
    from modeling_rsfiqa.cli import build_parser

    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port) == ("127.0.0.1", 7860)
    assert (args.max_image_mb, args.max_video_mb, args.concurrency) == (50.0, 1024.0, 1)
    with pytest.raises(ValueError):
        ServeLimits(concurrency=0)


def test_parse_rois_accepts_the_pipeline_forms_and_names_bad_regions():
    size = (200, 100)  # width, height
    assert parse_rois("[[10, 20, 50, 60]]", size) == [[10, 20, 50, 60]]
    assert parse_rois([[50, 60, 10, 20], [-5, -5, 500, 500]], size) == [[10, 20, 50, 60], [0, 0, 200, 100]]
    assert parse_rois([1, 2, 30, 40], size) == [[1, 2, 30, 40]]  # a single box
    assert parse_rois({"points": [[5, 6]]}, size) == [{"points": [[5.0, 6.0]]}]
    mask = np.zeros((100, 200), bool)
    mask[10:20, 30:40] = True
    assert parse_rois([mask], size)[0].sum() == 100
    rle = {"size": [100, 200], "counts": "abc"}
    assert parse_rois([rle], size) == [rle]
    bad = {
        "[[1, 2, 3]]": "region 1: a box is four numbers",
        "[[0, 0, 10, 10], [300, 0, 400, 50]]": "region 2: the box [300, 0, 400, 50] has no area",
        '[{"points": [[250, 5]]}]': "region 1: a point lies outside the 200x100 image",
        '[{"size": [10, 10], "counts": "x"}]': "region 1: the RLE mask is for size [10, 10]",
        "[[0, 0, 10": "not valid JSON",
        "[]": "non-empty JSON list",
        '["box"]': "region 1: expected a box",
    }
    for text, message in bad.items():
        with pytest.raises(InputError, match=re.escape(message)):
            parse_rois(text, size)
    with pytest.raises(InputError, match="region 1: the mask is 200x100, the image 100x50"):
        parse_rois([mask], (100, 50))
    with pytest.raises(InputError, match="up to 2 per image"):
        parse_rois([[0, 0, 5, 5]] * 3, size, max_rois=2)


def test_space_app_builds_the_same_app(space):
    demo, pipelines = space["demo"], space["pipelines"]
    assert isinstance(demo, gr.Blocks)
    api_names = {fn.api_name for fn in demo.fns.values() if fn.api_name}
    assert {"score_image", "score_regions", "score_video"} <= api_names
    assert pipelines.image is not None
    if platform.libc_ver()[0] == "glibc" and os.environ.get("RSFIQA_MALLOC_TUNING") != "0":
        from modeling_rsfiqa import runtime

        assert runtime.tune_cpu_allocator() is True  # the app turned it on (idempotent: reports the state)
    if not _task_default(VIDEO_TASK):  # as long as no video model ships, the tab says how to give one
        assert pipelines.video is None
        assert "--video-model DIR" in pipelines.unavailable[VIDEO_TASK]
    else:
        assert pipelines.video is not None
    if not _task_default(REGION_TASK):
        assert pipelines.regions is None
        assert "--region-model DIR" in pipelines.unavailable[REGION_TASK]
    else:
        assert pipelines.regions is not None


# ------------------------------------------------------------------------------------------------ the API


def test_server_binds_to_loopback_only(server):
    addresses = listening_addresses(server.port)
    if not addresses:
        pytest.skip("cannot read /proc/net/tcp on this system")
    loopback = {"0100007F", "00000000000000000000000001000000"}  # 127.0.0.1, ::1
    assert addresses <= loopback, f"listening on {addresses}"


def test_score_image_endpoint_matches_the_library(client, photos, space):
    result = client.predict(handle_file(str(photos["cat"])), api_name="/score_image")
    assert result["source"] == "cat.jpg"
    assert result["size"] == [451, 300]
    assert result["score_range"] == [0.0, 100.0] and result["higher_is_better"] is True
    assert result["model"] == "rsfiqa-mobile"
    expected = space["pipelines"].image(str(photos["cat"]))
    assert result["score"] == pytest.approx(expected["score"], abs=1e-3)
    assert len(result["regions"]) == len(expected["regions"]) > 1
    for got, want in zip(result["regions"], expected["regions"]):
        assert got["box"] == want["box"]
        assert got["score"] == pytest.approx(want["score"], abs=1e-3)
        assert got["importance"] == pytest.approx(want["importance"], abs=1e-4)
    assert result["worst_region"]["score"] == min(r["score"] for r in result["regions"])
    attention = np.asarray(result["attention_map"])
    assert attention.shape == expected["attention_map"].shape
    np.testing.assert_allclose(attention, expected["attention_map"], atol=1e-4)
    blurred = client.predict(handle_file(str(photos["blurred"])), api_name="/score_image")
    assert blurred["score"] < result["score"] - 10  # a heavy blur is clearly worse


def test_score_image_endpoint_errors_name_the_file(client, photos):
    with pytest.raises(AppError, match=r"corrupt\.jpg could not be read as an image"):
        client.predict(handle_file(str(photos["corrupt"])), api_name="/score_image")
    with pytest.raises(AppError, match=r"notes\.png could not be read as an image"):
        client.predict(handle_file(str(photos["text"])), api_name="/score_image")


def test_upload_limits(client, space, tmp_path):
    huge = tmp_path / "huge.png"
    with open(huge, "wb") as f:
        f.truncate(51 * 2**20)
    # this server takes videos, so Gradio's cap is 1 GB and the image limit speaks for itself ...
    assert client.config["max_file_size"] == 1024 * 2**20
    with pytest.raises(AppError, match=r"huge\.png is 51\.0 MB: image files up to 50 MB are accepted"):
        client.predict(handle_file(str(huge)), api_name="/score_image")
    # ... and a server without videos caps every upload at the image limit (Gradio refuses larger ones)
    if space["pipelines"].video is None:
        assert space["demo"].rsfiqa_upload_cap_mb == 50
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(AppError, match=r"empty\.jpg is empty"):
        client.predict(handle_file(str(empty)), api_name="/score_image")


def test_region_service_says_why_when_no_region_model_is_loaded(space):
    from modeling_rsfiqa.app import AppPipelines, QualityService, _notice

    pipelines = AppPipelines(image=space["pipelines"].image, unavailable={REGION_TASK: "no model given"})
    service = QualityService(pipelines)
    assert "Region quality (SEAGULL) is not available on this server:** no model given" in _notice(
        REGION_TASK, pipelines
    )
    with pytest.raises(InputError, match="Region quality is not available on this server: no model given"):
        service.score_regions_json(str(ROOT / "app.py"), [[0, 0, 10, 10]])


def test_score_regions_endpoint_matches_the_library(client, photos, region_model):
    from PIL import Image
    from transformers import pipeline

    boxes = [[20, 30, 200, 180], [150, 100, 400, 290], [0, 0, 451, 300]]
    result = client.predict(handle_file(str(photos["cat"])), json.dumps(boxes), api_name="/score_regions")
    expected = pipeline("region-quality", model=str(region_model))(
        Image.open(photos["cat"]).convert("RGB"), regions=boxes
    )
    assert result["source"] == "cat.jpg" and len(result["regions"]) == len(boxes)
    for got, want, box in zip(result["regions"], expected, boxes, strict=True):
        assert got["quality"] == pytest.approx(want["quality"], abs=2e-3)
        assert got["importance"] == pytest.approx(want["importance"], abs=2e-3)
        assert set(got["distortions"]) == set(want["distortions"])
        assert all(
            got["distortions"][k] == pytest.approx(v, abs=2e-4) for k, v in want["distortions"].items()
        )
        assert got["box"] == pytest.approx(box, abs=0.6)
    # a bad ROI is named by its (1-based) index; the page shows the message, not a stack trace
    with pytest.raises(AppError, match=r"region 2: a box is four numbers"):
        client.predict(
            handle_file(str(photos["cat"])),
            json.dumps([[20, 30, 200, 180], [1, 2, 3]]),
            api_name="/score_regions",
        )
    with pytest.raises(AppError, match="notes.png"):
        client.predict(handle_file(str(photos["text"])), json.dumps(boxes[:1]), api_name="/score_regions")


def test_score_video_endpoint_matches_the_library(client, clips, video_model, photos):
    from transformers import pipeline

    result = client.predict(handle_file(str(clips["pan"])), api_name="/score_video")
    expected = pipeline("video-quality", model=str(video_model))(str(clips["pan"]))
    assert result["source"] == "pan.mp4" and result["model"] == "qclip-tiny"
    assert result["score"] == pytest.approx(expected["score"], abs=1e-3)
    assert result["frame_scores"] == pytest.approx(expected["frame_scores"], abs=1e-3)
    assert result["frame_times"] == pytest.approx(expected["frame_times"], abs=1e-3)
    assert len(result["frame_times"]) > 1 and result["frame_times"][-1] < 2.0
    with pytest.raises(AppError, match=r"broken\.mp4 could not be read as a video"):
        client.predict(handle_file(str(clips["broken"])), api_name="/score_video")
    with pytest.raises(AppError, match="Invalid file type"):  # Gradio checks the kind of file first
        client.predict(handle_file(str(photos["cat"])), api_name="/score_video")


def test_twenty_concurrent_requests_are_all_answered(server, client, photos):
    expected = {
        name: client.predict(handle_file(str(photos[name])), api_name="/score_image")["score"]
        for name in ("cat", "coffee")
    }
    names = ["cat", "coffee"] * 10

    def one(name):
        start = time.monotonic()
        result = Client(server.url, verbose=False).predict(
            handle_file(str(photos[name])), api_name="/score_image"
        )
        return name, result, time.monotonic() - start

    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(one, names))
    assert len(answers) == 20
    for name, result, _ in answers:
        assert result["source"] == photos[name].name
        assert result["score"] == pytest.approx(expected[name], abs=1e-3)
    assert server.alive()
    after = client.predict(handle_file(str(photos["cat"])), api_name="/score_image")
    assert after["score"] == pytest.approx(expected["cat"], abs=1e-3)
    slowest = max(seconds for *_, seconds in answers)
    print(f"20 concurrent /score_image requests: slowest answered in {slowest:.1f} s")


# ------------------------------------------------------------------------------------------------ the browser


@pytest.fixture(scope="module")
def browser():
    executable = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        try:
            yield chromium
        finally:
            chromium.close()


def _shoot(page, name: str, tmp_path: Path) -> Path:
    """Screenshot into tmp (always, to check it works) and, for `make screenshots`, into the docs folder."""
    from PIL import Image

    page.evaluate("document.querySelectorAll('.toast-close').forEach(b => b.click())")
    page.locator(".toast-body").first.wait_for(state="detached", timeout=10_000)
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert Image.open(path).size[0] >= 800
    if SCREENSHOT_DIR:
        out = Path(SCREENSHOT_DIR) / f"{name}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        shot = Image.open(path).convert("RGB")
        shot.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    return path


def _open_page(browser, server):
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    problems: list[str] = []
    page.on(
        "console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None
    )
    page.on("pageerror", lambda err: problems.append(f"page error: {err}"))
    page.goto(server.url, wait_until="load")
    page.locator("#image-input").wait_for(timeout=60_000)
    return page, problems


def test_browser_image_tab(browser, server, client, photos, tmp_path):
    from playwright.sync_api import expect

    page, problems = _open_page(browser, server)
    try:
        upload = page.locator("#image-input input[type=file]")
        summary = page.locator("#image-summary")

        # one photo: the score appears, the same as the API's, with both overlays and the worst regions
        upload.set_input_files(str(photos["cat"]))
        summary.get_by_text(re.compile(r"Score \d+\.\d")).wait_for(timeout=60_000)
        shown = float(re.search(r"Score (\d+\.\d)", summary.inner_text()).group(1))
        api = client.predict(handle_file(str(photos["cat"])), api_name="/score_image")
        assert shown == pytest.approx(api["score"], abs=0.051)
        for view in ("#image-quality img", "#image-attention img"):
            page.locator(view).first.wait_for(timeout=30_000)
        worst = page.locator("#image-worst")
        worst.wait_for()
        assert ", ".join(str(v) for v in api["worst_region"]["box"]) in worst.inner_text()
        _shoot(page, "image-tab", tmp_path)

        # several photos and a corrupt one: a table that sorts, a CSV, and the bad file named
        page.locator("#image-input button[aria-label='Clear']").first.click()
        summary.get_by_text(re.compile(r"Score")).wait_for(state="detached", timeout=30_000)
        upload.set_input_files([str(photos[k]) for k in ("cat", "blurred", "coffee", "corrupt")])
        summary.get_by_text("3 images scored").wait_for(timeout=90_000)
        assert "corrupt.jpg could not be read as an image" in summary.inner_text()
        table = page.locator("#image-table")
        rows = table.locator("[role=row]")
        assert rows.count() == 5  # header + 4 files
        table.locator("[data-testid=header-1]").click()
        table.locator("[data-testid=header-1] button[aria-label='Open cell menu']").click()
        page.get_by_text("Sort descending").click()
        scores = [
            float(m.group(1)) for m in re.finditer(r"\n(\d+\.\d+)\n", "\n".join(rows.all_inner_texts()))
        ]
        ordered = [s for s in scores if s > 0][:3]
        assert ordered == sorted(ordered, reverse=True), rows.all_inner_texts()
        # another image of the batch shown on demand (no new scoring)
        page.locator("#image-pick input").click()
        page.get_by_role("option", name="2. cat-blurred.jpg").click()
        blurred_api = client.predict(handle_file(str(photos["blurred"])), api_name="/score_image")
        blurred_box = ", ".join(str(v) for v in blurred_api["worst_region"]["box"])
        expect(page.locator("#image-worst")).to_contain_text(blurred_box, timeout=30_000)
        with page.expect_download() as download:
            page.locator("#image-csv [data-testid=download-link]").click()
        with open(download.value.path(), newline="") as f:
            table_rows = list(csv.DictReader(f))
        assert [r["file"] for r in table_rows] == ["cat.jpg", "cat-blurred.jpg", "coffee.png", "corrupt.jpg"]
        assert float(table_rows[0]["score"]) == pytest.approx(api["score"], abs=0.01)
        assert "could not be read" in table_rows[3]["error"]
        _shoot(page, "image-tab-batch", tmp_path)

        # a corrupt file alone: a readable message in the page, no stack trace
        page.locator("#image-input button[aria-label='Clear']").first.click()
        upload.set_input_files(str(photos["corrupt"]))
        summary.get_by_text("Could not score").wait_for(timeout=60_000)
        text = summary.inner_text()
        assert "corrupt.jpg could not be read as an image" in text
        assert "Traceback" not in page.content()
        assert problems == [], problems
    finally:
        page.close()


def test_browser_video_tab(browser, server, client, clips, tmp_path):
    from playwright.sync_api import expect

    page, problems = _open_page(browser, server)
    try:
        page.get_by_role("tab", name="Video").click()
        page.locator("#video-input input[type=file]").set_input_files(str(clips["pan"]))
        summary = page.locator("#video-summary")
        summary.get_by_text(re.compile(r"Score \d+\.\d")).wait_for(timeout=90_000)
        api = client.predict(handle_file(str(clips["pan"])), api_name="/score_video")
        assert float(re.search(r"Score (\d+\.\d)", summary.inner_text()).group(1)) == pytest.approx(
            api["score"], abs=0.051
        )
        page.locator("#video-plot canvas, #video-plot svg").first.wait_for(timeout=30_000)
        expect(page.locator("#video-frames img")).to_have_count(len(api["frame_times"]), timeout=30_000)
        expect(page.locator("#video-frames")).to_contain_text(f"{api['frame_times'][1]:.2f} s")
        _shoot(page, "video-tab", tmp_path)

        page.locator("#video-input button[aria-label='Clear']").first.click()
        page.locator("#video-input input[type=file]").set_input_files(str(clips["broken"]))
        summary.get_by_text("Could not score").wait_for(timeout=60_000)
        assert "broken.mp4 could not be read as a video" in summary.inner_text()
        assert "Traceback" not in page.content()
        assert problems == [], problems
    finally:
        page.close()


def test_browser_regions_tab(browser, server, client, photos, tmp_path):
    from playwright.sync_api import expect

    page, problems = _open_page(browser, server)
    try:
        page.get_by_role("tab", name="Regions").click()
        page.locator("#roi-input input[type=file]").set_input_files(str(photos["cat"]))
        canvas = page.locator("#roi-canvas img")
        canvas.wait_for(timeout=60_000)
        # Box mode: two clicks on the picture make one box; the JSON list follows
        roi_json = page.locator("#roi-json textarea")
        expect(roi_json).to_have_value("[]", timeout=30_000)
        canvas.click(position={"x": 40, "y": 40})
        canvas.click(position={"x": 200, "y": 150})
        expect(roi_json).not_to_have_value("[]", timeout=30_000)
        clicked = json.loads(roi_json.input_value())
        assert len(clicked) == 1 and len(clicked[0]) == 4
        x0, y0, x1, y1 = clicked[0]
        assert 0 <= x0 < x1 <= 451 and 0 <= y0 < y1 <= 300
        # a second ROI typed into the list, then score both
        boxes = [clicked[0], [150, 100, 400, 290]]
        roi_json.fill(json.dumps(boxes))
        page.locator("#roi-score").click()
        cards = page.locator("#roi-cards")
        cards.get_by_text("Region 2").wait_for(timeout=90_000)
        api = client.predict(handle_file(str(photos["cat"])), json.dumps(boxes), api_name="/score_regions")
        text = cards.inner_text()
        for i, region in enumerate(api["regions"], 1):
            shown = float(re.search(rf"Region {i}: quality (\d+\.\d)", text).group(1))
            assert shown == pytest.approx(region["quality"], abs=0.051)
        expect(cards.locator(".rsfiqa-bar")).to_have_count(2 * 6, timeout=10_000)  # six severity bars per ROI
        expect(page.locator("#roi-table")).to_contain_text("importance")
        _shoot(page, "regions-tab", tmp_path)
        assert problems == [], problems
    finally:
        page.close()
