"""A shared model-test mixin in the style of transformers' ``ModelTesterMixin`` (tiny models, CPU)."""

from __future__ import annotations

import tempfile

import torch


class QualityModelTesterMixin:
    """Subclasses define ``model_class`` and ``make_config()`` and ``make_inputs(config, batch_size)``."""

    model_class = None
    atol = 1e-5

    def make_config(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def make_inputs(self, config, batch_size: int = 3) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def make_model(self, config=None):
        torch.manual_seed(0)
        return self.model_class(config or self.make_config()).eval()

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
        for key in ("score", "attention_map", "region_scores"):
            torch.testing.assert_close(before[key], after[key], atol=self.atol, rtol=0)

    def test_batched_equals_single(self):
        model = self.make_model()
        inputs = self.make_inputs(model.config, batch_size=3)
        with torch.no_grad():
            batched = model(**inputs)
            for i in range(3):
                single = model(**{k: v[i : i + 1] for k, v in inputs.items()})
                torch.testing.assert_close(batched.score[i : i + 1], single.score, atol=1e-4, rtol=1e-4)
                torch.testing.assert_close(
                    batched.region_scores[i : i + 1], single.region_scores, atol=1e-4, rtol=1e-4
                )

    def test_gradients_reach_every_trainable_parameter(self):
        config = self.make_config()
        # every loss term on; MSE (not L1, whose bias gradient can cancel exactly) reaches the head bias
        config.loss_weights = {"mse": 1.0, "plcc": 1.0, "rank": 1.0}
        model = self.make_model(config)
        model.train()
        inputs = self.make_inputs(model.config, batch_size=4)
        labels = torch.tensor([12.0, 37.0, 55.0, 91.0])  # asymmetric: L1 bias gradient does not cancel
        out = model(**inputs, labels=labels)
        assert out.loss is not None and torch.isfinite(out.loss)
        out.loss.backward()
        missing = [
            n
            for n, p in model.named_parameters()
            if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)
        ]
        assert not missing, f"no gradient reaches: {missing[:10]}"

    def test_identical_input_same_score(self):
        model = self.make_model()
        inputs = self.make_inputs(model.config, batch_size=1)
        with torch.no_grad():
            a, b = model(**inputs), model(**inputs)
        torch.testing.assert_close(a.score, b.score, atol=0, rtol=0)

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
