"""The processor and pipeline use MLLM region annotations: looked up in the store before computing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import random_image, tiny_config

from modeling_rsfiqa import ImageQualityPipeline, RSFIQAForQualityScoring, RSFIQAProcessor
from modeling_rsfiqa.annotation_rsfiqa import AnnotatorConfig, RegionAnnotator, build_random_vlm
from modeling_rsfiqa.annotation_store_rsfiqa import AnnotationStore


@pytest.fixture(scope="module")
def annotator():
    model, processor = build_random_vlm("tiny", seed=0)
    return RegionAnnotator(model, processor, AnnotatorConfig(max_new_tokens=6, region_mode="box"))


def test_processor_annotates_once_then_reads_the_store(annotator, tmp_path):
    hidden = annotator.model.config.get_text_config().hidden_size
    config = tiny_config(description_embed_dim=hidden, max_regions=4, superpixel_segments=4)
    processor = RSFIQAProcessor.from_model_config(config)
    store = AnnotationStore(tmp_path / "store")
    image = random_image(48, 64)
    first = processor(image, annotator=annotator, annotation_store=store)
    calls_after_first = annotator.calls["annotate"]
    assert calls_after_first > 0
    second = processor(image, annotator=annotator, annotation_store=store)
    assert annotator.calls["annotate"] == calls_after_first, "a cache hit must not run the MLLM"
    for key in ("region_labels", "region_text_embeds", "region_distortion_levels", "region_annotation_mask"):
        assert torch.equal(first[key], second[key])
    n_regions = int(first["region_labels"].max()) + 1
    assert first["region_annotation_mask"][0, :n_regions].all()
    assert first["region_text_embeds"].shape[-1] == hidden

    torch.manual_seed(0)
    model = RSFIQAForQualityScoring(config).eval()
    pipe = ImageQualityPipeline(model=model, processor=processor)
    out = pipe(image, annotator=annotator, annotation_store=store)
    assert annotator.calls["annotate"] == calls_after_first
    assert all("description" in r and len(r["distortion_levels"]) == 6 for r in out["regions"])
    with torch.no_grad():
        direct = model(**{k: v for k, v in first.items()}).score.item()
    assert out["score"] == pytest.approx(direct, abs=1e-5)
    assert np.isfinite(out["score"])
