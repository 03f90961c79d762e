"""The per-ROI fast paths give what the plain definitions give: ROI grid over the box, mask pooling by matmul."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modeling_rsfiqa.modeling_seagull import SeagullMaskFeatureExtractor
from modeling_rsfiqa.processing_seagull import _any_reduce, mask_box, mask_to_grid


def test_grid_over_the_box_equals_the_whole_image_reduction():
    rng = np.random.RandomState(0)
    for _ in range(500):
        h, w = rng.randint(1, 200, 2)
        gh, gw = rng.randint(1, 70, 2)
        y0, x0 = rng.randint(0, h), rng.randint(0, w)
        y1, x1 = rng.randint(y0 + 1, h + 1), rng.randint(x0 + 1, w + 1)
        mask = np.zeros((h, w), bool)
        mask[y0:y1, x0:x1] = rng.rand(y1 - y0, x1 - x0) < rng.choice([0.01, 0.5, 1.0])
        full = _any_reduce(_any_reduce(mask, gh, 0), gw, 1)  # the definition, over every pixel
        np.testing.assert_array_equal(mask_to_grid(mask, gh, gw), full)
        if mask.any():
            np.testing.assert_array_equal(mask_to_grid(mask, gh, gw, mask_box(mask)), full)


def test_area_grid_is_the_fraction_of_each_cell_inside_the_roi():
    rng = np.random.RandomState(1)
    for _ in range(200):
        h, w = rng.randint(8, 120, 2)
        gh, gw = rng.randint(1, 8), rng.randint(1, 8)
        y0, x0 = rng.randint(0, h), rng.randint(0, w)
        y1, x1 = rng.randint(y0 + 1, h + 1), rng.randint(x0 + 1, w + 1)
        mask = np.zeros((h, w), bool)
        mask[y0:y1, x0:x1] = rng.rand(y1 - y0, x1 - x0) < rng.choice([0.05, 0.5, 1.0])
        if not mask.any():
            continue
        rows, cols = -(-np.arange(gh + 1) * h // gh), -(-np.arange(gw + 1) * w // gw)
        expected = np.array(
            [
                [mask[rows[r] : rows[r + 1], cols[c] : cols[c + 1]].mean() for c in range(gw)]
                for r in range(gh)
            ]
        )
        area = mask_to_grid(mask, gh, gw, mode="area")
        np.testing.assert_allclose(area, expected, rtol=1e-6)
        np.testing.assert_array_equal(area > 0, mask_to_grid(mask, gh, gw))  # same support as "any"
    with pytest.raises(ValueError, match="'any' or 'area'"):
        mask_to_grid(mask, 4, 4, mode="soft")


@pytest.mark.parametrize("n_images", [1, 3])
def test_mask_pool_is_the_masked_mean_of_each_rois_own_image(n_images):
    torch.manual_seed(0)
    features = torch.randn(n_images, 24, 16, 16, requires_grad=True)
    masks = (torch.rand(7, 16, 16) > 0.6).float()
    index = torch.randint(0, n_images, (7,))
    pooled = SeagullMaskFeatureExtractor.mask_pool(features, masks, index)
    for r in range(7):
        on = masks[r] > 0
        expected = features[index[r]][:, on].mean(1)
        torch.testing.assert_close(pooled[r], expected, rtol=1e-5, atol=1e-6)
    pooled.sum().backward()  # differentiable (training uses it)
    assert features.grad is not None and features.grad.abs().sum() > 0
