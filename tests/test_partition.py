"""The region-partition contract: non-overlapping, full coverage, <= K regions, deterministic, any size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import random_image, tiny_sam_config, tiny_sam_image_processor
from PIL import Image

from modeling_rsfiqa.partition import (
    SamRegionPartitioner,
    check_label_map,
    masks_to_label_map,
    merge_small_regions,
    region_summaries,
    resize_label_map,
    superpixel_partition,
)

ODD_SIZES = [(1, 37), (37, 1), (7, 13), (13, 7), (2, 2), (1, 1), (300, 400)]


def assert_contract(labels: np.ndarray, shape: tuple[int, int], k: int) -> None:
    assert labels.shape == shape and labels.dtype == np.int32
    check_label_map(labels, k)  # values exactly 0..R-1: every pixel in one region, R <= K


@pytest.mark.parametrize("shape", ODD_SIZES)
def test_superpixel_contract_on_odd_sizes(shape):
    image = Image.fromarray(random_image(*shape))
    labels = superpixel_partition(image, n_segments=20, max_regions=8, min_region_area=0.01)
    assert_contract(labels, shape, 8)


def test_superpixel_large_photo_downscaled_and_deterministic():
    image = Image.fromarray(random_image(60, 80)).resize((4000, 3000), Image.BILINEAR)
    a = superpixel_partition(image, max_regions=12, output_size=(300, 400))
    b = superpixel_partition(image, max_regions=12, output_size=(300, 400))
    assert_contract(a, (300, 400), 12)
    assert np.array_equal(a, b)
    full = superpixel_partition(image, max_regions=12)
    assert_contract(full, (3000, 4000), 12)
    assert a.max() >= 2, "a structured photo should give several regions"


def test_superpixel_pure_noise_still_splits():
    noise = np.random.RandomState(0).randint(0, 255, (120, 160, 3), dtype=np.uint8)
    labels = superpixel_partition(noise, max_regions=8)
    assert_contract(labels, (120, 160), 8)
    assert labels.max() >= 1


def test_min_area_respected_by_merging():
    labels = np.zeros((20, 20), dtype=np.int32)
    labels[0, 0] = 1  # a one-pixel region
    labels[10:, :] = 2
    merged = merge_small_regions(labels, None, max_regions=8, min_area_px=4)
    check_label_map(merged)
    assert merged.max() == 1
    assert merged[0, 0] == merged[0, 1]


def test_masks_to_label_map_paints_best_first_and_skips_duplicates():
    masks = np.zeros((4, 20, 20), dtype=bool)
    masks[0, :10] = True  # best
    masks[1, :11] = True  # near-duplicate of 0: claims only one new row (< half its area) -> skipped
    masks[2, 14:, 14:] = True
    masks[3, :, :] = True  # whole image, worst score: becomes the remaining region
    labels = masks_to_label_map(masks, np.array([0.9, 0.8, 0.7, 0.1]), max_regions=8, min_region_area=0.01)
    check_label_map(labels, 8)
    assert labels.max() == 2  # top half, corner, rest
    assert len({labels[0, 0], labels[19, 19], labels[12, 0]}) == 3
    assert labels[10, 5] == labels[12, 0]  # the duplicate's extra row went to the rest


def test_masks_to_label_map_respects_k_and_background():
    rng = np.random.RandomState(0)
    masks = np.zeros((30, 32, 32), dtype=bool)
    for i in range(30):
        y, x = rng.randint(0, 28, 2)
        masks[i, y : y + 4, x : x + 4] = True
    labels = masks_to_label_map(masks, rng.rand(30), max_regions=5, min_region_area=0.0)
    check_label_map(labels, 5)
    empty = masks_to_label_map(np.zeros((0, 8, 8), bool), np.zeros(0), max_regions=5, min_region_area=0.1)
    assert np.array_equal(empty, np.zeros((8, 8), np.int32))


def test_mask_order_does_not_matter():
    rng = np.random.RandomState(1)
    masks = rng.rand(6, 24, 24) > 0.6
    scores = rng.rand(6)
    perm = rng.permutation(6)
    a = masks_to_label_map(masks, scores, 6, 0.01)
    b = masks_to_label_map(masks[perm], scores[perm], 6, 0.01)
    assert np.array_equal(a, b)


def test_resize_label_map_and_summaries():
    labels = np.zeros((4, 6), dtype=np.int32)
    labels[:, 3:] = 1
    big = resize_label_map(labels, (8, 12))
    assert np.array_equal(np.unique(big), [0, 1]) and big[:, :6].max() == 0
    summaries = region_summaries(labels)
    assert summaries[1]["box"] == [3, 0, 6, 4]
    assert summaries[0]["area"] == pytest.approx(0.5)


@pytest.mark.parametrize("shape", [(1, 1), (1, 37), (37, 1), (7, 13), (120, 90)])
def test_region_summaries_match_a_per_region_scan(shape):
    rng = np.random.default_rng(sum(shape))
    labels = rng.integers(-1, 9, shape).astype(np.int32)
    labels[labels == 4] = 5  # a missing label must be skipped, not reported empty
    summaries = region_summaries(labels)
    present = [k for k in range(int(labels.max()) + 1) if (labels == k).any()]
    assert [s["label"] for s in summaries] == present
    for s in summaries:
        ys, xs = np.nonzero(labels == s["label"])
        assert s["box"] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        assert s["area"] == pytest.approx(len(ys) / labels.size)
        assert s["centroid"] == pytest.approx([xs.mean(), ys.mean()])
    assert region_summaries(np.full((3, 4), -1)) == []


@pytest.mark.parametrize(
    "shape,size", [((48, 64), (3024, 4032)), ((7, 13), (40, 56)), ((64, 48), (61, 45)), ((1, 5), (3, 17))]
)
def test_region_summaries_of_a_work_map_equal_those_of_the_upsampled_map(shape, size):
    """Boxes of a 12 MP photo from its 64 px working map: the figures the full-size map would give, exactly."""
    rng = np.random.default_rng(shape[0])
    labels = rng.integers(-1, 6, shape).astype(np.int32)
    direct = region_summaries(labels, image_size=size)
    assert direct == region_summaries(resize_label_map(labels, size))
    assert all(0 <= s["box"][0] < s["box"][2] <= size[1] for s in direct)


class CountingSam(torch.nn.Module):
    """Wraps a SamModel and counts encoder and decoder calls."""

    def __init__(self, sam):
        super().__init__()
        self.sam = sam
        self.encode_calls = 0
        self.decode_calls = 0

    def get_image_embeddings(self, pixel_values):
        self.encode_calls += 1
        return self.sam.get_image_embeddings(pixel_values)

    def forward(self, **kwargs):
        self.decode_calls += 1
        return self.sam(**kwargs)


@pytest.fixture(scope="module")
def tiny_sam():
    from transformers import SamModel

    torch.manual_seed(0)
    return SamModel(tiny_sam_config()).eval()


@pytest.mark.parametrize("shape", [(1, 37), (7, 13), (13, 7), (48, 64)])
def test_sam_partition_contract_encodes_once(tiny_sam, shape):
    sam = CountingSam(tiny_sam)
    part = SamRegionPartitioner(
        sam,
        tiny_sam_image_processor(),
        points_per_side=4,
        points_per_batch=6,
        pred_iou_thresh=-1.0,
        stability_score_thresh=-1.0,
        max_regions=6,
        min_region_area=0.02,
    )
    image = Image.fromarray(random_image(*shape))
    labels = part(image)
    assert_contract(labels, shape, 6)
    assert sam.encode_calls == 1, "the image must be encoded once"
    assert sam.decode_calls == 3, "16 points in batches of 6 -> 3 decoder calls"
    assert np.array_equal(labels, part(image)), "deterministic"


def test_sam_partition_large_image(tiny_sam):
    part = SamRegionPartitioner(
        tiny_sam,
        tiny_sam_image_processor(),
        points_per_side=3,
        pred_iou_thresh=-1.0,
        stability_score_thresh=-1.0,
        max_regions=6,
        work_size=128,
    )
    image = Image.fromarray(random_image(60, 80)).resize((4000, 3000))
    labels = part(image, output_size=(300, 400))
    assert_contract(labels, (300, 400), 6)
