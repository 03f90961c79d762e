"""The paper's whole loop on tiny random models: SAM regions -> MLLM annotations in a store -> training with
``--annotations`` -> ``pipeline(..., annotation_store=STORE)``; and what goes wrong on the way (bad SAM
folders, missing stores and images, stores made for another model)."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import FIXTURE_DIR, random_image, tiny_sam_config, tiny_sam_image_processor
from PIL import Image
from test_train import load_train_module, make_iqa_imagefolder, run_in_process

from modeling_rsfiqa.annotation_store_rsfiqa import (
    AnnotationKey,
    AnnotationLookup,
    AnnotationStore,
    MissingAnnotationError,
    _encode_row,
    select_profile,
)

N_ANNOTATED = 6  # images img000..img005 are annotated; img006 is not (the "missing" image)
SAM_FLAGS = [
    "--partition",
    "sam",
    "--sam-points-per-side",
    "3",
    "--sam-pred-iou-thresh",
    "-1",  # a random SAM's masks pass no real filter; keep them all
    "--sam-stability-score-thresh",
    "-1",
    "--max-regions",
    "6",
]


def save_sam(folder: Path, seed: int = 0, processor: bool = True) -> Path:
    from transformers import SamModel, SamProcessor

    torch.manual_seed(seed)
    SamModel(tiny_sam_config()).save_pretrained(folder)
    if processor:
        SamProcessor(image_processor=tiny_sam_image_processor()).save_pretrained(folder)
    return folder


def annotate_argv(loop: SimpleNamespace, *extra: str) -> list[str]:
    return [
        "annotate",
        "--model",
        str(loop.vlm),
        "--data",
        str(loop.data),
        "--out",
        str(loop.store),
        "--sam-model",
        str(loop.sam),
        *SAM_FLAGS,
        "--annotator-config",
        str(loop.annotator_config),
        "--no-progress",
        *extra,
    ]


def cli(argv: list[str]) -> tuple[int, str]:
    from modeling_rsfiqa.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(argv)
    return code, err.getvalue()


@pytest.fixture(scope="module")
def loop(tmp_path_factory) -> SimpleNamespace:
    """Tiny SAM + tiny VLM folders, 7 generated IQA images, and a store of the first 6 made by an annotation
    run that was interrupted after 3 images and then resumed."""
    from modeling_rsfiqa.annotation_rsfiqa import build_random_vlm

    root = tmp_path_factory.mktemp("loop")
    ns = SimpleNamespace(root=root, sam=save_sam(root / "sam"), vlm=root / "vlm", store=root / "store")
    model, processor = build_random_vlm("tiny", seed=0)
    model.save_pretrained(ns.vlm)
    processor.save_pretrained(ns.vlm)
    ns.data = make_iqa_imagefolder(root / "data", n=N_ANNOTATED + 1, size=64)
    ns.annotator_config = root / "annotator.json"
    ns.annotator_config.write_text(json.dumps({"region_mode": "box", "max_new_tokens": 4}))
    code, _ = cli(annotate_argv(ns, "--limit", "3"))  # "interrupted" after three images
    assert code == 0 and len(AnnotationStore.open(ns.store)) == 3
    code, ns.resume_log = cli(annotate_argv(ns, "--limit", str(N_ANNOTATED)))
    assert code == 0
    return ns


def train_argv(loop: SimpleNamespace, out: Path, *extra: str, steps: int = 6) -> list[str]:
    return [
        "--model_name_or_path",
        "rsfiqa-tiny",
        "--train_dir",
        str(loop.data),
        "--validation_split_percentage",
        "30",
        "--annotations",
        str(loop.store),
        "--output_dir",
        str(out),
        "--max_steps",
        str(steps),
        "--per_device_train_batch_size",
        "3",
        "--per_device_eval_batch_size",
        "3",
        "--eval_strategy",
        "steps",
        "--eval_steps",
        str(steps),
        "--save_strategy",
        "steps",
        "--save_steps",
        str(steps),
        "--learning_rate",
        "3e-3",
        "--logging_steps",
        "2",
        "--dataloader_pin_memory",
        "False",
        "--use_cpu",
        "True",
        *extra,
    ]


@pytest.fixture(scope="module")
def trained(loop) -> SimpleNamespace:
    """`examples/train.py --annotations STORE --sam_model SAM` on the tiny preset (img006 is not in the store)."""
    out = loop.root / "model"
    argv = train_argv(loop, out, "--sam_model", str(loop.sam), "--allow_missing_annotations")
    results = run_in_process(argv)
    return SimpleNamespace(out=out, results=results)


# --------------------------------------------------------------------------------------------------------
# annotation with SAM regions
# --------------------------------------------------------------------------------------------------------
def test_sam_store_resumed_and_keyed_by_the_sam_model(loop):
    from modeling_rsfiqa.configuration_rsfiqa import RSFIQAConfig
    from modeling_rsfiqa.partition import load_sam_model, sam_fingerprint
    from modeling_rsfiqa.processing_rsfiqa import RSFIQAProcessor

    assert "3 computed, 3 cached" in loop.resume_log  # the resumed run skipped what was stored
    store = AnnotationStore.open(loop.store)
    (profile,) = store.profiles()
    sam, sam_ip = load_sam_model(str(loop.sam))
    settings = profile.partition_settings
    assert profile.count == N_ANNOTATED and settings["partition_method"] == "sam"
    assert settings["sam_model"] == sam_fingerprint(sam) and settings["sam_points_per_side"] == 3
    # the stored regions are exactly what the scoring model's processor computes with these settings
    config = RSFIQAConfig(
        partition_method="sam",
        sam_config=sam.config,
        max_regions=6,
        sam_points_per_side=3,
        sam_pred_iou_thresh=-1.0,
        sam_stability_score_thresh=-1.0,
    )
    processor = RSFIQAProcessor.from_model_config(config)
    processor.sam_image_processor = sam_ip
    image = loop.data / "img001.png"
    stored = AnnotationLookup(store).get(AnnotationLookup.image_hash(str(image)))
    assert stored.num_regions == int(stored.label_map.max()) + 1 >= 2
    assert np.array_equal(stored.label_map, processor.partition(str(image), sam_model=sam))


def test_sam_weights_and_settings_change_the_cache_key(loop, tmp_path):
    from modeling_rsfiqa.cli_annotate import build_parser, make_partition_fn
    from modeling_rsfiqa.partition import load_sam_model

    sam = load_sam_model(str(loop.sam))
    other = load_sam_model(str(save_sam(tmp_path / "sam2", seed=1)))
    parse = build_parser().parse_args
    base = ["--model", "m", "--data", "d", "--out", "o", *SAM_FLAGS]
    _, a = make_partition_fn(parse(base), sam)
    _, again = make_partition_fn(parse(base), load_sam_model(str(loop.sam)))
    _, other_weights = make_partition_fn(parse(base), other)
    _, other_points = make_partition_fn(parse([*base, "--sam-points-per-side", "4"]), sam)
    assert a == again  # same folder, loaded twice: same key
    assert a["sam_model"] != other_weights["sam_model"]
    assert a != other_points


@pytest.mark.parametrize("case", ["missing", "not_sam", "no_processor"])
def test_bad_sam_folder_is_a_clear_error(loop, tmp_path, case):
    folder = {
        "missing": tmp_path / "nope",
        "not_sam": loop.vlm,
        "no_processor": tmp_path / "sam_only",
    }[case]
    if case == "no_processor":
        save_sam(folder, processor=False)
    argv = ["annotate", "--model", str(loop.vlm), "--data", str(loop.data), "--out", str(tmp_path / "s")]
    with pytest.raises(
        SystemExit,
        match={
            "missing": "does not exist",
            "not_sam": "'qwen2_vl' model, not SAM",
            "no_processor": "no SAM image processor",
        }[case],
    ):
        cli([*argv, "--partition", "sam", "--sam-model", str(folder)])
    with pytest.raises(SystemExit, match="needs --sam-model"):
        cli([*argv, "--partition", "sam"])


# --------------------------------------------------------------------------------------------------------
# the whole loop
# --------------------------------------------------------------------------------------------------------
def test_whole_loop(loop, trained):
    """annotate (SAM + VLM) -> train with --annotations -> the pipeline uses the store: stored regions,
    descriptions and levels, and a score that differs from the score without annotations."""
    from transformers import pipeline

    import modeling_rsfiqa  # noqa: F401
    from modeling_rsfiqa.partition import sam_fingerprint

    config = json.loads((trained.out / "config.json").read_text())
    (profile,) = AnnotationStore.open(loop.store).profiles()
    assert config["use_region_descriptions"] and config["semantic_head"]
    assert config["description_embed_dim"] == 64  # the tiny VLM's hidden size, from the store
    assert (config["annotation_model"], config["annotation_prompt"]) == (profile.model, profile.prompt)
    assert config["annotation_partition"]["key"] == profile.partition
    assert config["partition_method"] == "sam" and config["max_regions"] == 6
    card = (trained.out / "README.md").read_text()
    assert profile.model in card and profile.prompt in card and "annotation_store=" in card
    missing = json.loads((trained.out / "missing_annotations.json").read_text())["missing"]
    assert sum(missing.values(), []) == [f"img{N_ANNOTATED:03d}.png"]
    assert np.isfinite(trained.results["eval"]["eval_loss"])

    iqa = pipeline("image-quality", model=str(trained.out))
    assert sam_fingerprint(iqa.model.segmenter) == profile.partition_settings["sam_model"]
    image = str(loop.data / "img002.png")
    stored = AnnotationLookup(loop.store).get(AnnotationLookup.image_hash(image))
    own_partition = iqa.processor.partition
    iqa.processor.partition = None  # a store hit takes the stored regions: the (SAM) partition must not run
    try:
        with_store = iqa(image, annotation_store=str(loop.store), return_region_map=True)
    finally:
        iqa.processor.partition = own_partition
    without = iqa(image, return_region_map=True)
    assert with_store["annotated"] is True and "annotated" not in without
    assert np.array_equal(with_store["region_map"], stored.label_map)  # the stored regions are used
    # ... which the model's own SAM reproduces: the regions match with and without the store
    assert np.array_equal(without["region_map"], stored.label_map)
    assert [r["description"] for r in with_store["regions"]] == stored.descriptions
    for region in with_store["regions"]:
        levels = region["distortion_levels"]
        assert list(levels) == list(stored.dimensions) and all(1.0 <= v <= 5.0 for v in levels.values())
        np.testing.assert_allclose(
            list(levels.values()), stored.distortion_levels[region["label"]], rtol=1e-6
        )
    assert "description" not in without["regions"][0]
    # the annotations change the score (beyond float round-off: the same call twice is bit-identical)
    assert iqa(image)["score"] == without["score"]
    assert abs(with_store["score"] - without["score"]) > 1e-3


def test_pipeline_missing_image_and_store(loop, trained):
    from transformers import pipeline

    import modeling_rsfiqa  # noqa: F401

    iqa = pipeline("image-quality", model=str(trained.out))
    unannotated = str(loop.data / f"img{N_ANNOTATED:03d}.png")
    with pytest.raises(MissingAnnotationError, match=f"img{N_ANNOTATED:03d}.png"):
        iqa(unannotated, annotation_store=str(loop.store))
    out = iqa([unannotated], annotation_store=str(loop.store), skip_errors=True)[0]
    assert out["score"] is None and "not in the annotation store" in out["error"]
    allowed = iqa(unannotated, annotation_store=str(loop.store), allow_missing_annotations=True)
    assert allowed["annotated"] is False and allowed["score"] == pytest.approx(iqa(unannotated)["score"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        iqa(unannotated, annotation_store=str(loop.root / "no-store"))


def test_store_made_for_another_model(loop, trained, tmp_path, caplog):
    from transformers import pipeline

    import modeling_rsfiqa  # noqa: F401

    image = str(loop.data / "img000.png")
    # the test fixture's semantic layers take 16-d embeddings: the store's 64-d ones cannot be used
    with pytest.raises(ValueError, match="description_embed_dim=16"):
        pipeline("image-quality", model=str(FIXTURE_DIR))(image, annotation_store=str(loop.store))
    # a model trained with another annotator: usable, but the mismatch is named
    other = tmp_path / "other"
    shutil.copytree(trained.out, other, ignore=shutil.ignore_patterns("checkpoint-*"))
    config = json.loads((other / "config.json").read_text())
    config["annotation_model"] = "Qwen/Qwen2.5-VL-7B-Instruct@0123456789abcdef"
    (other / "config.json").write_text(json.dumps(config))
    with caplog.at_level(logging.WARNING, logger="modeling_rsfiqa.pipeline_rsfiqa"):
        out = pipeline("image-quality", model=str(other))(image, annotation_store=str(loop.store))
    assert out["annotated"] is True
    assert "annotator model" in caplog.text and "Qwen/Qwen2.5-VL-7B-Instruct@0123456789abcdef" in caplog.text


# --------------------------------------------------------------------------------------------------------
# training: bad input stops before any step, naming the problem
# --------------------------------------------------------------------------------------------------------
def test_training_reports_missing_images(loop, tmp_path):
    with pytest.raises(
        ValueError, match=rf"not in the annotation store.*img{N_ANNOTATED:03d}\.png.*--allow_missing"
    ):
        run_in_process(train_argv(loop, tmp_path / "out", "--sam_model", str(loop.sam)))
    listed = json.loads((tmp_path / "out" / "missing_annotations.json").read_text())
    assert sum(listed["missing"].values(), []) == [f"img{N_ANNOTATED:03d}.png"]


def test_training_rejects_a_missing_store_and_the_wrong_sam(loop, tmp_path):
    argv = train_argv(loop, tmp_path / "a", "--allow_missing_annotations")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run_in_process([*argv, "--annotations", str(tmp_path / "no-store")])
    with pytest.raises(ValueError, match="pass --sam_model"):  # SAM regions, but the model would have no SAM
        run_in_process(argv)
    other = save_sam(tmp_path / "sam2", seed=1)
    with pytest.raises(ValueError, match="pass the SAM folder the store was annotated with"):
        run_in_process([*argv, "--sam_model", str(other)])


def test_profile_selection(tmp_path):
    """A store with two annotators: the model's recorded one wins; otherwise the choice is asked for."""
    from modeling_rsfiqa.annotation_rsfiqa import ImageAnnotations

    store = AnnotationStore(tmp_path / "store")
    for model in ("vlm-a@1", "vlm-b@2"):
        ann = ImageAnnotations(
            text_embeds=np.zeros((1, 4)),
            distortion_levels=np.full((1, 6), 3.0),
            level_probs=np.full((1, 6, 5), 0.2),
            descriptions=["sky"],
            raw_texts=["description: sky"],
            parse_ok=[True],
            label_map=np.zeros((4, 4), np.int32),
        )
        key = AnnotationKey("h0", "settings:abc", model, "rsfiqa-region-v2:x")
        store._pending[key.digest()] = _encode_row(key, ann)
        store.flush()
    profiles = AnnotationStore.open(tmp_path / "store").profiles()
    assert [p.model for p in profiles] == ["vlm-a@1", "vlm-b@2"]
    with pytest.raises(ValueError, match="several annotators(.|\n)*vlm-a@1(.|\n)*vlm-b@2"):
        select_profile(profiles)
    assert select_profile(profiles, model="vlm-b@2") == (profiles[1], [])
    assert select_profile(profiles, select="vlm-a")[0] is profiles[0]
    only, mismatches = select_profile(profiles[:1], model="vlm-b@2")
    assert only is profiles[0] and "annotator model" in mismatches[0]
    with pytest.raises(ValueError, match="no annotations .* match 'vlm-c'"):
        select_profile(profiles, select="vlm-c")
    with pytest.raises(ValueError, match="not an annotation store"):
        (tmp_path / "empty").mkdir()
        AnnotationStore.open(tmp_path / "empty")


def test_transform_mixes_stored_and_missing_images(loop):
    """Training rows: stored images take the stored regions + annotations; a missing one gets its own regions
    and an all-False annotation mask (the learned "no annotation" embedding)."""
    from modeling_rsfiqa.configuration_rsfiqa import RSFIQAConfig
    from modeling_rsfiqa.processing_rsfiqa import RSFIQAProcessor
    from modeling_rsfiqa.training_rsfiqa import RegionLabelCache, RSFIQADataCollator, RSFIQATransform

    lookup = AnnotationLookup(loop.store)
    processor = RSFIQAProcessor.from_model_config(RSFIQAConfig(image_size=[64, 64], max_regions=6))
    transform = RSFIQATransform(processor, RegionLabelCache(processor), annotations=lookup, label_column=None)
    stored, missing = loop.data / "img003.png", loop.data / f"img{N_ANNOTATED:03d}.png"
    rows = transform({"image": [Image.open(stored), Image.open(missing)]})
    batch = RSFIQADataCollator()([{k: v[i] for k, v in rows.items()} for i in range(2)])
    ann = lookup.get(AnnotationLookup.image_hash(str(stored)))
    r = ann.num_regions
    assert batch["region_text_embeds"].shape == (2, 6, 64)
    assert batch["region_annotation_mask"][0, :r].all() and not batch["region_annotation_mask"][1].any()
    torch.testing.assert_close(batch["region_text_embeds"][0, :r], torch.from_numpy(ann.text_embeds))
    expected = (np.clip(ann.distortion_levels, 1, 5) - 1) / 4
    torch.testing.assert_close(batch["region_distortion_levels"][0, :r], torch.from_numpy(expected))
    assert int(batch["region_labels"][0].max()) + 1 <= r
    # rows of only missing images still carry the annotation tensors (zeros), so batches always collate
    alone = transform({"image": [random_image(40, 50)]})
    assert alone["region_text_embeds"][0].shape == (6, 64) and not alone["region_annotation_mask"][0].any()


def test_readme_loop_commands_match_the_command_lines():
    """The README's paper-scale commands parse with the real argument parsers (nothing is run)."""
    import re
    import shlex

    from conftest import ROOT

    from modeling_rsfiqa.cli_annotate import build_parser

    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## The paper's loop") :]
    block = section[section.index("```bash") + 7 : section.index("```", section.index("```bash") + 7)]
    commands = [shlex.split(c, comments=True) for c in re.sub(r"\\\n", " ", block).splitlines() if c.strip()]
    commands = [c for c in commands if c]
    scripts = [c[c.index(next(a for a in c if a.endswith(".py")))] for c in commands]
    assert scripts == ["processing/annotate.py", "examples/train.py"]
    annotate = build_parser().parse_args(commands[0][commands[0].index(scripts[0]) + 1 :])
    assert annotate.partition == "sam" and annotate.sam_model and annotate.regions_from == "rsfiqa-paper"
    train = load_train_module()
    argv = commands[1][commands[1].index(scripts[1]) + 1 :]
    if not torch.cuda.is_available():  # --bf16 is for the GPU machine; here only the parsing is checked
        argv += ["--use_cpu", "True"]
    model_args, data_args, _, _ = train.parse_args(argv)
    assert data_args.annotations == annotate.out and model_args.sam_model == annotate.sam_model


def test_store_settings_become_the_config_and_mismatches_are_named(loop):
    """What `--annotations` changes in a config, and what it refuses for an already trained model."""
    from conftest import tiny_config

    from modeling_rsfiqa.training_rsfiqa import annotation_config_overrides

    (profile,) = AnnotationStore.open(loop.store).profiles()
    overrides, warnings = annotation_config_overrides(profile, tiny_config(), trained=False)
    assert warnings == []
    assert overrides["description_embed_dim"] == 64 and overrides["use_region_descriptions"]
    assert overrides["partition_method"] == "sam" and overrides["sam_points_per_side"] == 3
    assert overrides["sam_longest_edge"] == 64 and overrides["annotation_model"] == profile.model
    assert overrides["prompt_version"] == profile.prompt_version == "rsfiqa-region-v2"
    # a trained model whose semantic layers take 16-d embeddings cannot learn from 64-d ones
    with pytest.raises(ValueError, match="description_embed_dim=16"):
        annotation_config_overrides(profile, tiny_config(), trained=True)
    # one trained with another prompt and partition: usable, each difference named
    recorded = tiny_config(
        description_embed_dim=64,
        annotation_prompt="rsfiqa-region-v1:0000",
        annotation_partition={"key": "settings:0000", "settings": {"partition_method": "superpixel"}},
    )
    _, warnings = annotation_config_overrides(profile, recorded, trained=True)
    assert any("prompt 'rsfiqa-region-v2:" in w and "rsfiqa-region-v1:0000" in w for w in warnings)
    assert any("partition" in w and "settings:0000" in w for w in warnings)
