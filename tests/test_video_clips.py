"""Clip dataset builders (datasets_scripts/video_clips.py) on tiny fabricated photo folders."""

from __future__ import annotations

import csv
import importlib.util
import json

import numpy as np
import pytest
from conftest import ROOT, SHARED

pytest.importorskip("av")
pytest.importorskip("piq")

from datasets_scripts import video_clips as vc  # noqa: E402
from modeling_rsfiqa import video_synthesis as vs  # noqa: E402

TINY = dict(max_side=64, fps=6.0, duration=1.0, preset="veryfast", progress=False)


def _photos(folder, names, size=(96, 72)):
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        vs.test_pattern(*size, seed=i + len(str(folder))).save(folder / name)


@pytest.fixture()
def pristine(tmp_path):
    root = tmp_path / "pristine"
    _photos(root / "kodak24", ["kodim01.png"])
    _photos(root / "cbsd68", ["1.png", "2.png"], size=(72, 96))  # portrait photos give portrait clips
    return root


def _rows(dd):
    return {r["name"]: r for split in dd.values() for r in split}


def test_synthetic_clips_labels_splits_and_schema(pristine, tmp_path):
    out = tmp_path / "syn"
    dd = vc.build_synthetic_clips(
        pristine, out, sets=["kodak24", "cbsd68"], types=["h264", "gaussian_blur"], levels=[1, 3, 5], **TINY
    )
    assert {k: v.num_rows for k, v in dd.items()} == {"train": 14, "validation": 7, "stutter": 3}
    rows = _rows(dd)
    for ref in ("kodak24/kodim01.png", "cbsd68/1.png", "cbsd68/2.png"):
        for dtype in ("h264", "gaussian_blur"):  # a stronger level gives a lower label, photo by photo
            labels = [
                r["mos"]
                for r in sorted(rows.values(), key=lambda r: r["distortion_level"])
                if r["reference"] == ref and r["distortion_type"] == dtype
            ]
            assert len(labels) == 3 and labels[0] > labels[1] > labels[2]
        pristine_row = next(
            r for r in rows.values() if r["reference"] == ref and r["distortion_type"] == "pristine"
        )
        assert pristine_row["mos"] > 90 and pristine_row["distortion_level"] == 0
    crfs = {r["distortion_level"]: r["crf"] for r in rows.values() if r["distortion_type"] == "h264"}
    assert crfs == {lv: vc.VIDEO_DISTORTIONS["h264"].levels[lv - 1] for lv in (1, 3, 5)}
    assert all(r["mos"] is None and r["split"] == "stutter" for r in dd["stutter"])
    assert {r["source_set"] for r in dd["validation"]} == {"kodak24"}
    assert set(dd["train"]["reference"]).isdisjoint(dd["validation"]["reference"])

    portrait = next(r for r in rows.values() if r["reference"] == "cbsd68/1.png")
    probe = vs.probe_video(out / portrait["video"])
    assert (
        (probe.width, probe.height, probe.num_frames)
        == (36, 64, 6)
        == (
            portrait["width"],
            portrait["height"],
            portrait["num_frames"],
        )
    )
    stutter = next(r for r in dd["stutter"] if r["distortion_level"] == 3)
    frames = list(vs.iter_video_frames(out / stutter["video"]))
    assert len(frames) == 6 and vs.CameraPath.from_dict(json.loads(stutter["camera"]))

    loaded, meta, sidecar = vc.load_clip_dataset(out)  # schema round trip
    assert meta.mos_range == (0.0, 100.0) and meta.higher_is_better and meta.split_groups == "reference"
    assert sidecar["num_rows"] == {"train": 14, "validation": 7, "stutter": 3}
    for split in dd:
        assert loaded[split].features == vc.clip_features() == dd[split].features
        for a, b in zip(loaded[split], dd[split]):
            assert a["video"] == str((out / b["video"]).resolve())
            assert {k: v for k, v in a.items() if k != "video"} == {
                k: v for k, v in b.items() if k != "video"
            }
    stats = sidecar["label_statistics"]
    assert stats["h264"]["srcc_level_vs_mos"] < -0.5 and stats["h264"]["photos_strictly_monotone"] == 1.0
    assert "stutter" not in stats and stats["pristine"]["count"] == 3
    with pytest.raises(ValueError, match="Unknown video distortion"):
        vc.build_synthetic_clips(pristine, out, types=["jpeg"], **TINY)
    with pytest.raises(FileNotFoundError, match="sun-hays80"):
        vc.build_synthetic_clips(pristine, out, **TINY)


def test_synthetic_build_resumes_after_interruption(pristine, tmp_path):
    kwargs = dict(sets=["kodak24"], types=["white_noise"], levels=[2, 4], stutter=False, **TINY)
    fresh = vc.build_synthetic_clips(pristine, tmp_path / "fresh", **kwargs)

    out = tmp_path / "resumed"
    made: list[str] = []

    def interrupt(name):
        made.append(name)
        if len(made) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        vc.build_synthetic_clips(pristine, out, on_clip=interrupt, **kwargs)
    assert len((out / "progress.jsonl").read_text().splitlines()) == 2 and not (out / "data").exists()
    stamps = {n: (out / "videos" / f"{n}.mp4").stat().st_mtime_ns for n in made}
    with open(out / "progress.jsonl", "a") as log:  # a line cut by the kill is ignored
        log.write('{"name": "kodak24-kodim01__whi')
    again: list[str] = []
    resumed = vc.build_synthetic_clips(pristine, out, on_clip=again.append, **kwargs)
    assert len(again) == 1 and not set(again) & set(made)  # only the missing clip was made
    assert all((out / "videos" / f"{n}.mp4").stat().st_mtime_ns == stamps[n] for n in made)
    a, b = _rows(fresh), _rows(resumed)
    assert a.keys() == b.keys()
    for name in a:  # seeded: the same clips and labels as an uninterrupted build
        assert {k: v for k, v in a[name].items() if k not in ("mos", "haarpsi", "psnr", "ssim", "bytes")} == {
            k: v for k, v in b[name].items() if k not in ("mos", "haarpsi", "psnr", "ssim", "bytes")
        }
        # x264 was seen to differ in a few bytes between runs on noisy input; the labels barely move
        assert a[name]["mos"] == pytest.approx(b[name]["mos"], abs=1.0)
    assert not list((out / "videos").glob(".*"))  # no temporary files left


def test_snapshot_writes_the_finished_photos_only(pristine, tmp_path):
    out = tmp_path / "snap"
    kwargs = dict(sets=["kodak24", "cbsd68"], types=["h264"], levels=[1, 5], stutter=False, **TINY)
    made: list[str] = []

    def interrupt(name):
        made.append(name)
        if len(made) == 4:  # the kodak photo (3 clips) and one clip of the next
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        vc.build_synthetic_clips(pristine, out, on_clip=interrupt, **kwargs)
    dd = vc.build_synthetic_clips(pristine, out, snapshot=True, on_clip=made.append, **kwargs)
    assert len(made) == 4 and {k: v.num_rows for k, v in dd.items()} == {"validation": 3}
    _, _, sidecar = vc.load_clip_dataset(out)
    assert sidecar["build"]["snapshot"] and sidecar["build"]["photos"] == 1
    with pytest.raises(ValueError, match="no finished photo"):
        vc.build_synthetic_clips(pristine, tmp_path / "empty", snapshot=True, **kwargs)


def _clive_tree(root, n=10):
    _photos(root / "images", [f"{i}.jpg" for i in range(n)], size=(80, 80))
    with open(root / "metadata.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file_name", "mos", "mos_std"])
        for i in range(n):
            writer.writerow([f"images/{i}.jpg", 10.0 + 8 * i, 12.5])
    (root / "LIVE_COPYRIGHT.txt").write_text("notice")
    return root


def _recipe_split(n):
    spec = importlib.util.spec_from_file_location(
        "train_rsfiqa_mobile", ROOT / "examples" / "train_rsfiqa_mobile.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.split_indices(n, 0.2)


def test_clive_clips_carry_mos_and_rsfiqa_split(tmp_path):
    src = _clive_tree(tmp_path / "clive")
    out = tmp_path / "clips"
    vc.main(
        ["clive", "--src", str(src), "--out", str(out), "--max-side", "64", "--fps", "6", "--duration", "1"]
    )
    dd, meta, sidecar = vc.load_clip_dataset(out)
    assert {k: v.num_rows for k, v in dd.items()} == {"train": 8, "validation": 2}
    names = sorted(f"images/{i}.jpg" for i in range(10))
    train_idx, val_idx = _recipe_split(10)
    assert sorted(dd["validation"]["reference"]) == [names[i] for i in val_idx]
    assert sorted(dd["train"]["reference"]) == [names[i] for i in train_idx]
    for row in dd["train"]:
        i = int(row["reference"].split("/")[1].split(".")[0])
        assert row["mos"] == pytest.approx(10.0 + 8 * i) and row["mos_std"] == pytest.approx(12.5)
        assert row["distortion_type"] == "authentic" and row["haarpsi"] > 0.9  # a near-transparent encode
        assert (row["width"], row["height"], row["num_frames"]) == (64, 64, 6)
    assert (out / "LIVE_COPYRIGHT.txt").read_text() == "notice" and meta.dataset == "clive-clips"
    (src / "images" / "3.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="images/3.jpg"):
        vc.build_clive_clips(src, tmp_path / "again", **TINY)


@pytest.mark.skipif(
    not (SHARED / "data" / "clive-train" / "metadata.csv").exists(), reason="../shared absent"
)
def test_real_clive_split_matches_the_rsfiqa_recipe():
    with open(SHARED / "data" / "clive-train" / "metadata.csv") as f:
        names = sorted(r["file_name"] for r in csv.DictReader(f))
    split = vc.clive_split(names)
    train_idx, val_idx = _recipe_split(len(names))
    assert [split[names[i]] for i in val_idx] == ["validation"] * len(val_idx)
    assert sum(s == "train" for s in split.values()) == len(train_idx) == 650


def test_clip_size_and_fidelity():
    assert vc.clip_size((500, 500), 384, "video") == (384, 216)
    assert vc.clip_size((321, 481), 384, "video") == (216, 384)
    assert vc.clip_size((640, 960), 384, "source") == (256, 384)
    with pytest.raises(ValueError, match="aspect"):
        vc.clip_size((10, 10), 64, "square")
    frame = np.asarray(vs.test_pattern(64, 48))
    same = vc.clip_fidelity([frame] * 2, [frame] * 2)
    assert same["haarpsi"] == pytest.approx(1.0, abs=1e-4) and same["psnr"] == 100.0
    noisy = np.clip(frame + np.random.default_rng(0).normal(0, 20, frame.shape), 0, 255).astype(np.uint8)
    worse = vc.clip_fidelity([noisy] * 2, [frame] * 2)
    assert worse["haarpsi"] < 0.95 and worse["ssim"] < same["ssim"]
    with pytest.raises(ValueError, match="2 decoded frames for 1 reference"):
        vc.clip_fidelity([frame] * 2, [frame])
