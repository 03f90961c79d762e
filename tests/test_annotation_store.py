"""Annotation store: cache hits skip the model, crash + resume == uninterrupted run, sharding == one process."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from modeling_rsfiqa.annotation_rsfiqa import (
    AnnotatorConfig,
    RegionAnnotator,
    build_random_vlm,
    grid_label_map,
)
from modeling_rsfiqa.annotation_store_rsfiqa import (
    AnnotationStore,
    _encode_row,
    annotate_items,
    cached_annotate,
    list_image_items,
    make_key,
)

SETTINGS = {"method": "grid", "rows": 1, "cols": 2}


def _grid(img):
    return grid_label_map(img.height, img.width, 1, 2)


@pytest.fixture(scope="module")
def annotator():
    model, processor = build_random_vlm("tiny", seed=0)
    return RegionAnnotator(model, processor, AnnotatorConfig(max_new_tokens=4, region_mode="box"))


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    os.makedirs(root / "sub")
    for i in range(5):
        arr = (np.random.RandomState(i).rand(56 + 4 * i, 70, 3) * 255).astype(np.uint8)
        Image.fromarray(arr).save(root / ("sub" if i == 4 else ".") / f"img{i}.png")
    (root / "broken.jpg").write_bytes(b"not an image")
    return str(root)


def _rows(store: AnnotationStore) -> dict[str, dict]:
    out = {}
    for key in store.keys():
        row = dict(store.get_row(key))
        row.pop("created")
        out[key] = row
    return out


@pytest.fixture(scope="module")
def uninterrupted(annotator, image_dir, tmp_path_factory):
    root = str(tmp_path_factory.mktemp("store_ref"))
    store = AnnotationStore(root)
    stats = annotate_items(list_image_items(image_dir), annotator, store, _grid, SETTINGS, progress=False)
    assert stats["computed"] == 5 and stats["cached"] == 0 and len(stats["errors"]) == 1
    store.compact()
    return _rows(AnnotationStore(root))


def test_cache_hit_does_not_call_the_model(annotator, tmp_path):
    calls = []
    handle = annotator.model.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        img = Image.fromarray((np.random.RandomState(9).rand(60, 80, 3) * 255).astype(np.uint8))
        first = cached_annotate(
            img, annotator, AnnotationStore(str(tmp_path)), partition_fn=_grid, partition_settings=SETTINGS
        )
        n = len(calls)
        assert n > 0
        partition_calls = []
        again = cached_annotate(
            img,
            annotator,
            AnnotationStore(str(tmp_path)),  # a fresh handle: the hit comes from disk
            partition_fn=lambda im: partition_calls.append(1) or _grid(im),
            partition_settings=SETTINGS,
        )
        assert len(calls) == n and partition_calls == []  # neither the MLLM nor the partition ran
        assert again.equals(first) and np.array_equal(again.label_map, first.label_map)
        # a different key (other partition settings) computes again
        cached_annotate(
            img, annotator, AnnotationStore(str(tmp_path)), label_map=grid_label_map(60, 80, 2, 1)
        )
        assert len(calls) > n
    finally:
        handle.remove()


def test_store_roundtrip_is_exact(annotator, tmp_path):
    img = Image.fromarray((np.random.RandomState(3).rand(50, 64, 3) * 255).astype(np.uint8))
    ann = annotator.annotate(img, grid_label_map(50, 64, 2, 2))
    key = make_key("abc", annotator, label_map=ann.label_map)
    with AnnotationStore(str(tmp_path), flush_every=10) as store:
        store.put(key, ann)
        assert store.get(key).equals(ann)  # visible before the flush
    back = AnnotationStore(str(tmp_path)).get(key)
    for name in ("text_embeds", "level_probs", "distortion_levels", "label_map"):
        assert np.array_equal(getattr(back, name), getattr(ann, name))
    assert back.to_dict()["parse_errors"] == ann.parse_errors and back.meta == ann.meta
    ds = AnnotationStore(str(tmp_path)).to_dataset()
    assert ds.num_rows == 1 and ds[0]["key"] == key.digest()


class _Crash(Exception):
    pass


def test_resume_after_crash_gives_the_same_store(annotator, image_dir, uninterrupted, tmp_path):
    root = str(tmp_path / "store")
    items = list_image_items(image_dir)
    done = []

    def crash_after_two(item_id, status):
        done.append(item_id)
        if len(done) == 2:
            raise _Crash

    with pytest.raises(_Crash):
        annotate_items(
            items, annotator, AnnotationStore(root), _grid, SETTINGS, progress=False, on_item=crash_after_two
        )
    # what kill -9 in the middle of a write leaves behind: a torn temporary file
    with open(os.path.join(root, ".tmp-deadbeef.parquet"), "wb") as f:
        f.write(b"PAR1\x00\x01 torn")
    store = AnnotationStore(root)
    assert len(store) == 2  # finished items survived, the torn file is ignored
    stats = annotate_items(items, annotator, store, _grid, SETTINGS, progress=False)
    assert stats["cached"] == 2 and stats["computed"] == 3
    store.compact()
    assert not any(n.startswith(".tmp-") for n in os.listdir(root))
    assert len([n for n in os.listdir(root) if n.endswith(".parquet")]) == 1
    assert _rows(AnnotationStore(root)) == uninterrupted


def test_sharded_processes_give_the_same_store(annotator, image_dir, uninterrupted, tmp_path):
    root = str(tmp_path / "store")
    items = list_image_items(image_dir)
    for rank in range(2):  # what `accelerate launch --num_processes 2` runs, one process after the other
        stats = annotate_items(
            items,
            annotator,
            AnnotationStore(root, writer_id=f"r{rank}"),
            _grid,
            SETTINGS,
            rank=rank,
            world_size=2,
            progress=False,
        )
        assert stats["total"] == (3 if rank == 0 else 3)  # 6 items incl. the broken one
    assert AnnotationStore(root).compact() == 5
    assert _rows(AnnotationStore(root)) == uninterrupted


def test_compaction_drops_duplicates(annotator, tmp_path):
    img = Image.fromarray((np.random.RandomState(5).rand(40, 40, 3) * 255).astype(np.uint8))
    ann = annotator.annotate(img, grid_label_map(40, 40, 1, 2))
    key = make_key("dup", annotator, label_map=ann.label_map)
    for _ in range(2):  # e.g. a crash between writing the compacted shard and deleting the old ones
        s = AnnotationStore(str(tmp_path))
        s._pending[key.digest()] = _encode_row(key, ann)
        s.flush()
    store = AnnotationStore(str(tmp_path))
    assert len(store.shard_paths()) == 2 and len(store) == 1
    assert store.compact() == 1 and len(store.shard_paths()) == 1
    assert store.get(key).equals(ann)


def test_cli_annotate_folder_and_resume(annotator, image_dir, uninterrupted, tmp_path):
    from modeling_rsfiqa.cli import main

    model_dir, out = str(tmp_path / "vlm"), str(tmp_path / "out")
    annotator.model.save_pretrained(model_dir)
    annotator.processor.save_pretrained(model_dir)
    argv = [
        "annotate",
        "--model",
        model_dir,
        "--data",
        image_dir,
        "--out",
        out,
        "--partition",
        "grid",
        "--grid",
        "1x2",
    ]
    argv += ["--region-mode", "box", "--max-new-tokens", "4", "--no-progress"]
    assert main(argv) == 0
    store = AnnotationStore(out)
    assert len(store) == 5 and os.path.exists(os.path.join(out, "errors-rank0.jsonl"))
    shard = store.shard_paths()
    assert main(argv) == 0  # everything cached: the store is unchanged
    assert AnnotationStore(out).shard_paths() == shard
    # same texts as the in-process run (the model id differs: the CLI keys by the model folder)
    by_source = {r["source"]: r for r in _rows(store).values()}
    ref = {r["source"]: r for r in uninterrupted.values()}
    assert sorted(by_source) == sorted(ref)
    for src, row in by_source.items():
        assert row["raw_texts"] == ref[src]["raw_texts"] and row["level_probs"] == ref[src]["level_probs"]


_JOB = """
import sys, numpy as np
from modeling_rsfiqa.annotation_rsfiqa import AnnotatorConfig, RegionAnnotator, build_random_vlm, grid_label_map
from modeling_rsfiqa.annotation_store_rsfiqa import AnnotationStore, annotate_items, list_image_items
model, processor = build_random_vlm("tiny", seed=0)
ann = RegionAnnotator(model, processor, AnnotatorConfig(max_new_tokens=4, region_mode="box"))
def slow_grid(img):
    import time; time.sleep(float(sys.argv[3]))
    return grid_label_map(img.height, img.width, 1, 2)
def report(item, status):
    print(item, status, flush=True)
annotate_items(list_image_items(sys.argv[1]), ann, AnnotationStore(sys.argv[2]), slow_grid,
               {"method": "grid", "rows": 1, "cols": 2}, progress=False, on_item=report)
"""


@pytest.mark.slow
def test_resume_after_kill_9(image_dir, uninterrupted, tmp_path):
    root = str(tmp_path / "store")
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    proc = subprocess.Popen(
        [sys.executable, "-c", _JOB, image_dir, root, "1.0"], stdout=subprocess.PIPE, text=True, env=env
    )
    for _ in range(2):
        proc.stdout.readline()  # two images done
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 2 <= len(AnnotationStore(root)) < 5
    subprocess.run(
        [sys.executable, "-c", _JOB, image_dir, root, "0"], check=True, env=env, capture_output=True
    )
    store = AnnotationStore(root)
    store.compact()
    assert _rows(AnnotationStore(root)) == uninterrupted


@pytest.mark.slow
def test_accelerate_launch_two_processes(annotator, image_dir, tmp_path):
    if shutil.which("accelerate") is None and not os.path.exists(
        os.path.join(os.path.dirname(sys.executable), "accelerate")
    ):
        pytest.skip("accelerate CLI not installed")
    model_dir = str(tmp_path / "vlm")
    annotator.model.save_pretrained(model_dir)
    annotator.processor.save_pretrained(model_dir)
    common = [
        "--model",
        model_dir,
        "--data",
        image_dir,
        "--partition",
        "grid",
        "--grid",
        "1x2",
        "--region-mode",
        "box",
    ]
    common += ["--max-new-tokens", "4", "--no-progress"]
    launcher = os.path.join(os.path.dirname(sys.executable), "accelerate")
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    subprocess.run(
        [
            launcher,
            "launch",
            "--cpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "processing/annotate.py",
            *common,
            "--out",
            str(tmp_path / "two"),
        ],
        check=True,
        env=env,
        capture_output=True,
    )
    subprocess.run(
        [sys.executable, "processing/annotate.py", *common, "--out", str(tmp_path / "one")],
        check=True,
        env=env,
        capture_output=True,
    )
    assert len(AnnotationStore(str(tmp_path / "two")).shard_paths()) == 1
    two, one = _rows(AnnotationStore(str(tmp_path / "two"))), _rows(AnnotationStore(str(tmp_path / "one")))
    assert sorted(two) == sorted(one)
    for key in one:
        # texts, levels and keys identical; the float blobs may differ in the last bits because each launched
        # process runs torch with fewer threads (other reduction order)
        for field in one[key]:
            if field in ("text_embeds", "distortion_levels", "level_probs"):
                a, b = (np.frombuffer(r[key][field], dtype="<f4") for r in (two, one))
                assert np.allclose(a, b, atol=1e-5, rtol=0), field
            else:
                assert two[key][field] == one[key][field], field
