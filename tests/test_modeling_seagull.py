"""SEAGULL models on tiny random configs: the generative model (MFE + any causal LLM) and the ROI model."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import random_image, run_remote_script
from model_tester_mixin import ModelTesterMixin
from seagull_testing import tiny_region_config

from modeling_rsfiqa.factory import create_model, preset_config
from modeling_rsfiqa.modeling_seagull import SeagullForConditionalGeneration, SeagullForRegionQuality

H, W = 40, 56


def _rois(seed: int, n: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    rois = []
    for _ in range(n):
        x0, y0 = int(rng.integers(0, W - 12)), int(rng.integers(0, H - 12))
        rois.append([x0, y0, int(rng.integers(x0 + 4, W)), int(rng.integers(y0 + 4, H))])
    return rois


def _layout(n: int) -> list[int]:
    """ROIs per image for ``n`` ROIs in total: two per image (the MFE's self-attention needs siblings)."""
    return [2] * (n // 2) + [1] * (n % 2)


@pytest.fixture(scope="module")
def tiny():
    return create_model("seagull-tiny")


class TestSeagullForConditionalGeneration(ModelTesterMixin):
    model_class = SeagullForConditionalGeneration
    output_keys = ("logits",)
    _processor = None

    @property
    def processor(self):
        if TestSeagullForConditionalGeneration._processor is None:
            TestSeagullForConditionalGeneration._processor = create_model("seagull-tiny")[1]
        return TestSeagullForConditionalGeneration._processor

    def make_config(self):
        _, processor = create_model("seagull-tiny")
        config = preset_config("seagull-tiny")
        for name in ("image", "global", "local"):
            setattr(config, f"{name}_token_id", processor.tokenizer.convert_tokens_to_ids(f"<{name}>"))
        return config

    def _inputs(self, batch_size: int, answers: bool) -> dict:
        layout = _layout(batch_size)
        images = [random_image(H, W, seed=i) for i in range(len(layout))]
        rois = [_rois(i, n) for i, n in enumerate(layout)]
        ans = None
        if answers:
            words = self.processor.quality_level_words
            ans = [f"The quality of this region is {words[i % 5]}." for i in range(batch_size)]
        out = self.processor(images, rois, questions="quality", answers=ans)
        keys = list(self.processor.model_input_names) + (["labels"] if answers else [])
        return {k: out[k] for k in keys}

    def make_inputs(self, config, batch_size: int = 3) -> dict:
        return self._inputs(batch_size, answers=False)

    def training_inputs(self, config, batch_size: int = 4) -> dict:
        return self._inputs(batch_size, answers=True)

    def single_inputs(self, inputs: dict, i: int) -> dict:
        """Sequence ``i`` with its image and ALL of that image's ROIs (they attend to each other)."""
        image = int(inputs["sequence_image_index"][i])
        rois = (inputs["roi_image_index"] == image).nonzero().flatten()
        remap = {int(r): j for j, r in enumerate(rois)}
        return {
            "input_ids": inputs["input_ids"][i : i + 1],
            "attention_mask": inputs["attention_mask"][i : i + 1],
            "pixel_values": inputs["pixel_values"][image : image + 1],
            "roi_masks": inputs["roi_masks"][rois],
            "roi_pixel_values": inputs["roi_pixel_values"][rois],
            "roi_image_index": torch.zeros(len(rois), dtype=torch.long),
            "sequence_image_index": torch.zeros(1, dtype=torch.long),
            "sequence_roi_index": torch.tensor([[remap[int(r)] for r in inputs["sequence_roi_index"][i]]]),
        }

    def test_vision_tower_is_frozen_and_encodes_each_image_once(self):
        model = self.make_model()
        assert not any(p.requires_grad for p in model.vision_tower.parameters())
        calls = []
        model.vision_tower.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
        inputs = self.make_inputs(model.config, batch_size=4)  # 2 images, 4 ROIs, 4 sequences
        with torch.no_grad():
            model(**inputs)
        assert calls == [2]
        model.train()
        assert not model.vision_tower.training

    def test_region_tokens_are_spliced_in(self):
        model = self.make_model()
        inputs = self.make_inputs(model.config, batch_size=2)
        embeds, g, loc = model.embed_inputs(**{k: v for k, v in inputs.items() if k != "attention_mask"})
        ids = inputs["input_ids"]
        for b in range(2):
            roi = int(inputs["sequence_roi_index"][b, 0])
            torch.testing.assert_close(embeds[b][ids[b] == model.config.global_token_id][0], g[roi])
            torch.testing.assert_close(embeds[b][ids[b] == model.config.local_token_id][0], loc[roi])
        # the image tokens are the projected res4 features of the sequence's image
        feats = model.encode_images(inputs["pixel_values"])
        tokens = model.multi_modal_projector(feats[model.config.projector_feature_level])
        torch.testing.assert_close(embeds[1][ids[1] == model.config.image_token_id], tokens[0])

    def test_rois_of_one_image_interact_but_not_across_images(self):
        model = self.make_model()
        inputs = self.make_inputs(model.config, batch_size=4)
        with torch.no_grad():
            base = model(**inputs).global_tokens
            moved = dict(inputs)
            moved["roi_masks"] = inputs["roi_masks"].clone()
            moved["roi_masks"][1] = torch.roll(inputs["roi_masks"][1], 3, dims=-1)  # image 0's second ROI
            after = model(**moved).global_tokens
        assert not torch.allclose(after[0], base[0])  # its sibling changed
        torch.testing.assert_close(after[2:], base[2:])  # the other image's ROIs did not

    def test_generate_and_level_scores(self):
        model = self.make_model()
        processor = self.processor
        images = [random_image(H, W, seed=0)]
        batch = processor(images, [_rois(0, 3)], questions="quality")
        inputs = {k: batch[k] for k in processor.model_input_names}
        out = model.generate(**inputs, max_new_tokens=5, do_sample=False, num_beams=1)
        assert (
            out.shape == (3, inputs["input_ids"].shape[1] + 5)
            or out.shape[1] <= inputs["input_ids"].shape[1] + 5
        )
        # greedy generate == argmax of a full forward at the answer position
        with torch.no_grad():
            first = model(**inputs).logits[:, -1].argmax(-1)
        assert torch.equal(out[:, inputs["input_ids"].shape[1]], first)
        # beams: the image/ROI tensors are shared through the index tensors and must not be expanded
        beams = model.generate(**inputs, max_new_tokens=2, do_sample=False, num_beams=2)
        assert beams.shape[0] == 3
        scores = model.score_regions(inputs, processor, "quality")
        assert scores["probs"].shape == (3, 5)
        torch.testing.assert_close(scores["probs"].sum(-1), torch.ones(3))
        assert ((scores["score"] >= 0) & (scores["score"] <= 100)).all()
        # the scoring pass reads exactly the logits a forward over prompt + answer prefix gives
        prefix = processor.tokenizer(" " + processor.answer_prefix("quality"), add_special_tokens=False)[
            "input_ids"
        ]
        ids = torch.cat([inputs["input_ids"], torch.tensor(prefix).expand(3, -1)], 1)
        with torch.no_grad():
            logits = model(**{**inputs, "input_ids": ids, "attention_mask": torch.ones_like(ids)}).logits[
                :, -1
            ]
        level_ids = processor.level_token_ids("quality")
        torch.testing.assert_close(
            scores["probs"], torch.softmax(logits[:, level_ids], -1), atol=1e-5, rtol=0
        )

    def test_parameter_counts_of_the_paper_preset(self):
        config = preset_config("seagull-7b")
        with torch.device("meta"):
            model = SeagullForConditionalGeneration(config)
        count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        assert 6.7e9 < count(model.language_model) < 6.8e9  # Llama-2-7B
        assert 195e6 < count(model.vision_tower) < 200e6  # ConvNeXt-L trunk
        # MFE, as in the reference's layer.py (its unused mask_linear and 1-token attention q/k excluded)
        assert count(model.mask_extractor) == _reference_mfe_count() - _reference_unused_count()
        assert count(model.multi_modal_projector) == 768 * 4096 + 4096 + 4096 * 4096 + 4096


def _reference_mfe_count() -> int:
    lin = lambda i, o: i * o + o  # noqa: E731
    e, d = 1024, 4096
    n = lin(1024, 1024) * 3 + lin(1024, 1024)  # self-attn q/k/v/out (1024 -> 1024)
    n += lin(1024, 512) * 3 + lin(512, 1024)  # cross-attn, downsample 2
    n += 2 * 2 * 1024 + lin(1024, 2048) + lin(2048, 1024)  # two norms + MLP
    n += lin(e, d) * 2 + lin(2 * d, d)  # feat_linear, cross_feat_linear, final_mlp
    n += lin(12544, 1024) + lin(1024, 1024) + lin(1024, d)  # mask_linear (unused by the reference)
    n += sum(lin(c, 1024) for c in (192, 384, 768, 1536)) + sum(
        lin(s, 1024) for s in (16384, 4096, 1024, 256)
    )
    n += (3 * 5 + 5) + (5 + 1)  # global_vit convs
    n += lin(1024, 1024) * 4  # sa (q, k, v, out)
    n += lin(1024, 512) + lin(512, 512) + lin(512, d)  # mlp
    return n


def _reference_unused_count() -> int:
    return (12544 * 1024 + 1024) + (1024 * 1024 + 1024) + (1024 * 4096 + 4096) + 2 * (1024 * 1024 + 1024)


class TestSeagullForRegionQuality(ModelTesterMixin):
    model_class = SeagullForRegionQuality
    output_keys = ("quality", "importance", "severity")

    @staticmethod
    def _config():
        return tiny_region_config(vision_out_indices=[1, 2, 3, 4])

    def make_config(self):
        return self._config()

    def _inputs(self, config, layout: list[int]) -> dict:
        from modeling_rsfiqa.processing_seagull import SeagullProcessor

        processor = SeagullProcessor.from_model_config(config)
        images = [random_image(H, W, seed=i) for i in range(len(layout))]
        out = processor(images, [_rois(i, n) for i, n in enumerate(layout)])
        return {k: out[k] for k in processor.model_input_names}

    def make_inputs(self, config, batch_size: int = 3) -> dict:
        return self._inputs(config, [1] * batch_size)  # one ROI per image: ROI i alone == ROI i in the batch

    def single_inputs(self, inputs: dict, i: int) -> dict:
        single = super().single_inputs(inputs, i)
        single["roi_image_index"] = torch.zeros(1, dtype=torch.long)
        return single

    def training_inputs(self, config, batch_size: int = 4) -> dict:
        inputs = self._inputs(config, _layout(batch_size))
        n_types = len(config.distortion_types)
        labels = torch.rand(
            inputs["roi_masks"].shape[0], 2 + n_types, generator=torch.Generator().manual_seed(0)
        )
        labels[0, 3] = float("nan")  # unknown targets are ignored
        return {**inputs, "labels": labels}

    def test_output_ranges(self):
        model = self.make_model()
        with torch.no_grad():
            out = model(**self.training_inputs(model.config))
        n = 4
        assert out.quality.shape == (n,) and out.importance.shape == (n,)
        assert out.severity.shape == (n, len(model.config.distortion_types))
        for t in (out.quality, out.importance, out.severity):
            assert float(t.min()) >= 0 and float(t.max()) <= 1
        assert torch.isfinite(out.loss)

    def test_loss_terms(self):
        """The type term is cross-entropy over clean + types on the severity logits (arg-max severity = type);
        the severity term is per-type binary cross-entropy; NaN targets drop out of both."""
        model = self.make_model()
        n_types = len(model.config.distortion_types)
        logits = torch.randn(4, 2 + n_types, generator=torch.Generator().manual_seed(1))
        target = torch.zeros(4, 2 + n_types)
        target[:, :2] = 0.5
        target[1, 2 + 3] = 0.8  # ROI 1: type 3; ROI 2: type 0; ROIs 0 and 3 clean
        target[2, 2 + 0] = 0.4
        model.config.loss_weights = {"type": 1.0}
        expected = F.cross_entropy(
            torch.cat([torch.zeros(4, 1), logits[:, 2:]], 1), torch.tensor([0, 4, 1, 0])
        )
        torch.testing.assert_close(model._loss(logits, target), expected)
        model.config.loss_weights = {"severity": 1.0}
        torch.testing.assert_close(
            model._loss(logits, target), F.binary_cross_entropy_with_logits(logits[:, 2:], target[:, 2:])
        )
        target[0, 2] = float("nan")  # unknown: left out of the severity term, and ROI 0 out of the type term
        m = torch.isfinite(target[:, 2:])
        torch.testing.assert_close(
            model._loss(logits, target),
            F.binary_cross_entropy_with_logits(logits[:, 2:][m], target[:, 2:][m]),
        )
        model.config.loss_weights = {"type": 1.0}
        torch.testing.assert_close(
            model._loss(logits, target),
            F.cross_entropy(torch.cat([torch.zeros(3, 1), logits[1:, 2:]], 1), torch.tensor([4, 1, 0])),
        )


def test_auto_classes(tmp_path, tiny):
    from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor

    import modeling_rsfiqa  # noqa: F401  (registers the Auto classes)

    model, processor = tiny
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    assert type(AutoConfig.from_pretrained(tmp_path)).__name__ == "SeagullConfig"
    assert isinstance(AutoModel.from_pretrained(tmp_path), SeagullForConditionalGeneration)
    assert isinstance(AutoModelForImageTextToText.from_pretrained(tmp_path), SeagullForConditionalGeneration)
    assert type(AutoProcessor.from_pretrained(tmp_path)).__name__ == "SeagullProcessor"
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_seagull.SeagullForConditionalGeneration"


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
    import numpy as np, torch
    from transformers import AutoModel, AutoProcessor
    results = {}
    for folder in sys.argv[1:]:
        model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
        image = np.load(folder + "/image.npy")
        kw = {"questions": "quality"} if type(model).__name__.endswith("Generation") else {}
        batch = processor(image, [[0, 0, 20, 20], [10, 5, 50, 30]], **kw)
        with torch.no_grad():
            out = model(**{k: batch[k] for k in processor.model_input_names})
        main = out.logits[:, -1] if hasattr(out, "logits") and out.logits is not None else out.quality
        results[folder] = {"model": type(model).__module__ + "." + type(model).__name__,
                           "processor": type(processor).__name__, "out": main.flatten().tolist()}
    print(json.dumps(results))
    """
)


@pytest.mark.slow
def test_remote_code_without_the_package(tmp_path, tiny):
    """Saved folders of both SEAGULL models load where the package cannot be imported, with the same outputs."""
    region = SeagullForRegionQuality(TestSeagullForRegionQuality._config()).eval()
    from modeling_rsfiqa.processing_seagull import SeagullProcessor

    folders = {}
    image = random_image(H, W)
    for name, (model, processor) in {
        "gen": tiny,
        "region": (region, SeagullProcessor.from_model_config(region.config)),
    }.items():
        folder = tmp_path / name
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
        np.save(folder / "image.npy", image)
        kw = {"questions": "quality"} if name == "gen" else {}
        batch = processor(image, [[0, 0, 20, 20], [10, 5, 50, 30]], **kw)
        with torch.no_grad():
            out = model.eval()(**{k: batch[k] for k in processor.model_input_names})
        folders[str(folder)] = (out.logits[:, -1] if name == "gen" else out.quality).flatten()
    results = run_remote_script(REMOTE_SCRIPT, tmp_path, *folders, timeout=600)
    for folder, expected in folders.items():
        got = results[folder]
        assert got["model"].startswith("transformers_modules.")
        assert got["processor"] in ("SeagullProcessor", "SeagullRegionProcessor")
        np.testing.assert_allclose(got["out"], expected.numpy(), atol=1e-4)
