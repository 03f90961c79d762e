"""Shared model-test mixins in the style of transformers' ``ModelTesterMixin`` (tiny models, CPU).

:class:`ModelTesterMixin` holds the checks every family's model passes (save/load round trip, batched equals
single, gradients reach every trainable parameter, identical input gives the same output). A family's test
class sets ``model_class`` and ``output_keys`` and defines ``make_config()`` and ``make_inputs(config,
batch_size)``; it overrides ``single_inputs`` when its inputs are not all batch-first tensors, and
``training_inputs`` / ``config_for_gradients`` to switch every loss term on.
"""

from __future__ import annotations

import tempfile
from typing import Any

import torch


class ModelTesterMixin:
    """Subclasses define ``model_class``, ``make_config()`` and ``make_inputs(config, batch_size)``."""

    model_class = None
    #: output fields compared by the round-trip and batched-vs-single tests (the first one is the main output)
    output_keys: tuple[str, ...] = ("score",)
    atol = 1e-5
    batch_atol = 1e-4

    def make_config(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def make_inputs(self, config, batch_size: int = 3) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def make_model(self, config=None):
        torch.manual_seed(0)
        return self.model_class(config or self.make_config()).eval()

    def single_inputs(self, inputs: dict, i: int) -> dict:
        """The inputs of sample ``i`` alone (default: slice every batch-first tensor)."""
        return {k: v[i : i + 1] if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}

    def config_for_gradients(self, config):
        """The config the gradient test uses (e.g. with every loss term switched on)."""
        return config

    def training_inputs(self, config, batch_size: int = 4) -> dict[str, Any]:
        """Inputs with targets for the gradient test (default: ``make_inputs`` + asymmetric float ``labels``)."""
        inputs = self.make_inputs(config, batch_size=batch_size)
        # asymmetric targets: an L1 bias gradient does not cancel exactly
        inputs["labels"] = torch.tensor([12.0, 37.0, 55.0, 91.0, 23.0, 70.0][:batch_size])
        return inputs

    def test_save_load_round_trip(self):
        model = self.make_model()
        inputs = self.make_inputs(model.config)
        with torch.no_grad():
            before = model(**inputs)
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp)
            loaded = self.model_class.from_pretrained(tmp).eval()
        with torch.no_grad():
            after = loaded(**inputs)
        for key in self.output_keys:
            torch.testing.assert_close(before[key], after[key], atol=self.atol, rtol=0)

    def test_batched_equals_single(self):
        model = self.make_model()
        inputs = self.make_inputs(model.config, batch_size=3)
        with torch.no_grad():
            batched = model(**inputs)
            for i in range(3):
                single = model(**self.single_inputs(inputs, i))
                for key in self.output_keys:
                    torch.testing.assert_close(
                        batched[key][i : i + 1], single[key], atol=self.batch_atol, rtol=self.batch_atol
                    )

    def test_gradients_reach_every_trainable_parameter(self):
        config = self.config_for_gradients(self.make_config())
        model = self.make_model(config)
        model.train()
        out = model(**self.training_inputs(model.config, batch_size=4))
        assert out.loss is not None and torch.isfinite(out.loss)
        out.loss.backward()
        missing = [
            n
            for n, p in model.named_parameters()
            if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)
        ]
        assert not missing, f"no gradient reaches: {missing[:10]}"

    def test_identical_input_same_output(self):
        model = self.make_model()
        inputs = self.make_inputs(model.config, batch_size=1)
        with torch.no_grad():
            a, b = model(**inputs), model(**inputs)
        torch.testing.assert_close(a[self.output_keys[0]], b[self.output_keys[0]], atol=0, rtol=0)


class QualityModelTesterMixin(ModelTesterMixin):
    """RSFIQA image-quality models: scores, region scores and the RSA attention map."""

    output_keys = ("score", "region_scores", "attention_map")

    def config_for_gradients(self, config):
        # every loss term on; MSE (not L1, whose bias gradient can cancel exactly) reaches the head bias
        config.loss_weights = {"mse": 1.0, "plcc": 1.0, "rank": 1.0}
        return config

    def test_output_shapes_and_ranges(self):
        model = self.make_model()
        config = model.config
        inputs = self.make_inputs(config, batch_size=2)
        with torch.no_grad():
            out = model(**inputs)
        k = config.max_regions
        assert out.score.shape == (2,)
        assert out.region_scores.shape == (2, k) and out.region_importance.shape == (2, k)
        assert out.attention_map.shape == (2, *inputs["region_labels"].shape[-2:])
        assert float(out.attention_map.min()) >= 0.0 and float(out.attention_map.max()) <= 1.0
        assert bool((out.region_importance[~out.region_mask] == 0).all())
        assert out.loss is None
