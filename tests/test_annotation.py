"""Region annotation engine: prompt, parser, level probabilities, fast path == naive path."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from modeling_rsfiqa.annotation_rsfiqa import (
    DEFAULT_DIMENSIONS,
    DEFAULT_LEVEL_WORDS,
    AnnotatorConfig,
    ImageAnnotations,
    RegionAnnotator,
    build_random_vlm,
    check_label_map,
    expected_level,
    format_answer,
    grid_label_map,
    level_probs_from_logits,
    level_token_ids,
    parse_answer,
    region_question,
    render_region_image,
)

DIMS = DEFAULT_DIMENSIONS
WORDS = DEFAULT_LEVEL_WORDS


@pytest.fixture(scope="module")
def vlm():
    return build_random_vlm("tiny", seed=0)


def _image(h=84, w=112, seed=0):
    rng = np.random.RandomState(seed)
    ramp = np.linspace(0, 255, w)[None, :, None] * np.ones((h, 1, 3))
    return Image.fromarray(np.clip(ramp + rng.normal(0, 30, (h, w, 3)), 0, 255).astype(np.uint8))


def _irregular_label_map(h, w):
    """Three non-rectangular regions: a disc, a diagonal half and the rest."""
    yy, xx = np.mgrid[:h, :w]
    lm = np.zeros((h, w), np.int32)
    lm[yy > xx * h / w] = 1
    lm[(yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (min(h, w) / 4) ** 2] = 2
    return lm


# ---------------------------------------------------------------------------------------------- prompt / parser
def test_question_lists_every_dimension_and_level_word():
    q = region_question(DIMS, WORDS)
    for d in DIMS:
        assert f"\n{d}: <one word>" in q
    assert "excellent, good, fair, poor, bad" in q


def test_parse_canonical_answer_roundtrip():
    levels = ["good", "fair", "bad", "excellent", "poor", "fair"]
    parsed = parse_answer(format_answer("a red car on a street", levels, DIMS), DIMS, WORDS)
    assert parsed.ok and parsed.errors == []
    assert parsed.description == "a red car on a street"
    assert parsed.levels == levels


@pytest.mark.parametrize(
    "text, levels, description, ok",
    [
        # markdown, bullets, odd case, spelling variants, trailing punctuation
        (
            "**Description**: A dog on grass.\n- **Blur**: Good\n* noise = FAIR\n3. Compression artefacts - poor.\n"
            "colour: excellent\nExposure: bad!\nOverall: good",
            ["good", "fair", "poor", "excellent", "bad", "good"],
            "A dog on grass.",
            True,
        ),
        # inline, first word of a multi-word dimension, numeric level
        (
            "description: sky\nblur: good, noise: fair, compression: 2/5\ncolor: 5\nexposure: good\noverall: fair",
            ["good", "fair", "poor", "excellent", "good", "fair"],
            "sky",
            True,
        ),
        # truncated mid-answer
        (
            "description: a tree\nblur: poor\nnoise: go",
            ["poor", None, None, None, None, None],
            "a tree",
            False,
        ),
        # off-vocabulary and ambiguous levels
        (
            "description: face\nblur: blurry\nnoise: good or bad\ncompression artifacts: good\ncolor: good\n"
            "exposure: good\noverall: good",
            [None, None, "good", "good", "good", "good"],
            "face",
            False,
        ),
        # conflicting duplicate keeps the first
        (
            "description: x\nblur: good\nblur: bad\nnoise: good\ncompression artifacts: good\ncolor: good\n"
            "exposure: good\noverall: good",
            ["good", "good", "good", "good", "good", "good"],
            "x",
            False,
        ),
        # no structure at all
        ("I cannot see any region here.", [None] * 6, "I cannot see any region here.", False),
        ("", [None] * 6, "", False),
        ("\x00\ufffd::::\n:\n= =", [None] * 6, None, False),
    ],
)
def test_parse_adversarial_answers(text, levels, description, ok):
    parsed = parse_answer(text, DIMS, WORDS)
    assert parsed.levels == levels
    if description is not None:
        assert parsed.description == description
    assert parsed.ok is ok
    assert bool(parsed.errors) is (not ok)
    for dim, level in zip(DIMS, levels):  # every unreadable dimension is named in the errors
        if level is None:
            assert any(dim in e for e in parsed.errors)


# ---------------------------------------------------------------------------------------------- numbers
def test_level_probs_match_hand_computation():
    vocab = 10
    ids = [7, 2, 5, 0, 9]  # bad, poor, fair, good, excellent
    logits = torch.full((vocab,), 3.0)
    values = [0.5, -1.0, 2.0, 1.0, 0.0]
    for i, v in zip(ids, values):
        logits[i] = v
    probs = level_probs_from_logits(logits, ids)
    z = sum(math.exp(v) for v in values)
    hand = [math.exp(v) / z for v in values]
    assert probs.dtype == np.float32 and probs.shape == (5,)
    assert np.allclose(probs, hand, atol=1e-7)
    assert probs.sum() == pytest.approx(1.0, abs=1e-6)
    assert float(expected_level(probs)) == pytest.approx(
        sum((i + 1) * p for i, p in enumerate(hand)), abs=1e-6
    )
    # batched: (R, n_dims, vocab) -> (R, n_dims, 5), each row sums to one
    batch = torch.randn(3, 6, vocab) * 5
    pb = level_probs_from_logits(batch, ids)
    assert pb.shape == (3, 6, 5) and np.allclose(pb.sum(-1), 1.0, atol=1e-6)
    assert np.all((expected_level(pb) >= 1) & (expected_level(pb) <= 5))


def test_level_token_ids_distinct_and_collisions_rejected(vlm):
    _, processor = vlm
    ids = level_token_ids(processor.tokenizer, WORDS)
    assert len(set(ids)) == 5

    class Clash:
        def encode(self, text, add_special_tokens=False):
            return [1, len(text)]

    with pytest.raises(ValueError, match="distinct"):
        level_token_ids(Clash(), WORDS)


# ---------------------------------------------------------------------------------------------- regions
def test_label_map_contract_enforced():
    assert check_label_map(grid_label_map(4, 6, 2, 3)).dtype == np.int32
    with pytest.raises(ValueError):
        check_label_map(np.array([[0, 2], [2, 0]]))  # label 1 missing
    with pytest.raises(ValueError):
        check_label_map(np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError):
        check_label_map(np.zeros((2, 2), np.int32), size=(3, 2))


def test_region_rendering_modes():
    img = _image()
    mask = _irregular_label_map(84, 112) == 2
    assert render_region_image(img, mask, AnnotatorConfig(region_mode="box")) is None
    crop = render_region_image(img, mask, AnnotatorConfig(region_mode="crop", region_min_side=56))
    assert min(crop.size) >= 56 and max(crop.size) <= 448
    thin = np.zeros((84, 112), bool)
    thin[40, :] = True  # a 1-pixel strip still gives a valid (padded) picture
    strip = render_region_image(img, thin, AnnotatorConfig(region_mode="crop"))
    assert max(strip.size) / min(strip.size) <= 8.01


# ---------------------------------------------------------------------------------------------- engine
def _check_contract(ann: ImageAnnotations, r: int, d: int):
    assert ann.text_embeds.dtype == np.float32 and ann.text_embeds.shape == (r, d)
    assert ann.level_probs.shape == (r, len(DIMS), 5) and ann.distortion_levels.shape == (r, len(DIMS))
    assert np.allclose(ann.level_probs.sum(-1), 1.0, atol=1e-5)
    assert np.allclose(ann.distortion_levels, expected_level(ann.level_probs), atol=1e-6)
    assert len(ann.descriptions) == len(ann.raw_texts) == len(ann.parse_ok) == r
    assert np.isfinite(ann.text_embeds).all()


@pytest.mark.parametrize("mode", ["crop", "box"])
def test_fast_path_equals_naive_token_for_token(vlm, mode):
    model, processor = vlm
    # 16 new tokens: with the question in the shared prefix, the tiny random model needs a few more steps
    # before its regions' greedy texts diverge (needed below to make rows stop at different steps)
    annotator = RegionAnnotator(
        model, processor, AnnotatorConfig(max_new_tokens=16, region_mode=mode, max_batch_regions=2)
    )
    image = _image()
    label_map = _irregular_label_map(84, 112) if mode == "crop" else grid_label_map(84, 112, 2, 2)
    naive = annotator.annotate(image, label_map, method="naive")
    # make rows finish at different steps: declare a token generated mid-answer an end-of-sequence token
    prefix, suffixes = annotator.build_inputs(image, label_map)
    gen = annotator._generate_naive(prefix, suffixes)

    def first_stop(t):  # tokens each row would generate if t ended generation (the stop token included)
        return [g.index(t) + 1 if t in g else len(g) for g in gen]

    candidates = [t for t in {t for g in gen for t in g} if len(set(first_stop(t))) > 1]
    assert candidates, "regions generated identical texts"
    annotator.eos_ids = sorted(set(annotator.eos_ids) | {min(candidates)})
    naive = annotator.annotate(image, label_map, method="naive")
    calls = dict(annotator.calls)
    fast = annotator.annotate(image, label_map, method="fast")
    assert annotator.calls["generate"] == calls["generate"]  # the fast path never calls generate
    assert annotator.calls["prefix_forward"] == calls["prefix_forward"] + 1  # one prefix pass per image
    assert fast.meta["generated_tokens"] == naive.meta["generated_tokens"]
    assert len(set(fast.meta["generated_tokens"])) > 1  # rows really finished at different steps
    assert fast.raw_texts == naive.raw_texts
    assert fast.parsed_levels == naive.parsed_levels and fast.parse_ok == naive.parse_ok
    assert np.allclose(fast.level_probs, naive.level_probs, atol=1e-5)
    assert np.allclose(fast.text_embeds, naive.text_embeds, atol=1e-4)
    _check_contract(fast, int(label_map.max()) + 1, model.config.text_config.hidden_size)


def test_scoring_pass_matches_direct_forward(vlm):
    """Level probabilities = softmax over the level words' logits where each level word is due in the
    canonical answer, computed here by one plain forward over the whole sequence."""
    model, processor = vlm
    tok = processor.tokenizer
    annotator = RegionAnnotator(model, processor, AnnotatorConfig(max_new_tokens=4, region_mode="box"))
    image, label_map = _image(), grid_label_map(84, 112, 1, 2)
    ann = annotator.annotate(image, label_map, method="fast")
    prefix, suffixes = annotator.build_inputs(image, label_map)
    level_ids = [tok.encode(" " + w, add_special_tokens=False)[0] for w in WORDS]
    for k in range(2):
        filled = iter(ann.meta["filled_levels"][k])
        words = [w if w is not None else next(filled) for w in ann.parsed_levels[k]]
        answer = format_answer(ann.descriptions[k], words, DIMS)
        ans_ids = tok.encode(answer, add_special_tokens=False)
        ids = torch.cat([prefix.ids, suffixes[k].ids, torch.tensor(ans_ids)])[None]
        mm_parts = [prefix.tokens["mm_token_type_ids"], suffixes[k].tokens["mm_token_type_ids"]]
        mm = torch.cat(mm_parts + [torch.zeros(len(ans_ids), dtype=mm_parts[0].dtype)])[None]
        with torch.no_grad():
            logits = model(
                input_ids=ids, mm_token_type_ids=mm, attention_mask=torch.ones_like(ids), **prefix.vision
            ).logits[0]
        base = len(prefix) + len(suffixes[k])
        # index of each level word = number of tokens of the answer text up to "<dim>:"
        cut = [answer.index(f"\n{d}:") + len(d) + 2 for d in DIMS]
        positions = [base + len(tok.encode(answer[:c], add_special_tokens=False)) - 1 for c in cut]
        assert [ans_ids[p - base + 1] for p in positions] == [level_ids[WORDS.index(w)] for w in words]
        direct = torch.softmax(logits[positions][:, level_ids].double(), -1).numpy()
        assert np.allclose(ann.level_probs[k], direct, atol=1e-5)


def test_malformed_answers_recorded_not_dropped(vlm):
    model, processor = vlm
    annotator = RegionAnnotator(model, processor, AnnotatorConfig(max_new_tokens=6, region_mode="box"))
    ann = annotator.annotate(_image(), grid_label_map(84, 112, 2, 2))
    # a random model answers gibberish: every region is kept, flagged, with raw text and numbers
    assert ann.num_regions == 4
    assert not any(ann.parse_ok)
    assert all(errs for errs in ann.parse_errors)
    assert all(isinstance(t, str) and t for t in ann.raw_texts)
    assert all(
        len(f) == sum(w is None for w in lv) for f, lv in zip(ann.meta["filled_levels"], ann.parsed_levels)
    )
    _check_contract(ann, 4, model.config.text_config.hidden_size)
    back = ImageAnnotations.from_dict(ann.to_dict())
    assert back.equals(ann) and np.array_equal(back.label_map, ann.label_map)


def test_grounded_embedding_option(vlm):
    model, processor = vlm
    a = RegionAnnotator(
        model, processor, AnnotatorConfig(max_new_tokens=4, region_mode="box", embedding="grounded")
    )
    b = RegionAnnotator(model, processor, AnnotatorConfig(max_new_tokens=4, region_mode="box"))
    img, lm = _image(), grid_label_map(84, 112, 1, 2)
    ga, gb = a.annotate(img, lm), b.annotate(img, lm)
    assert ga.raw_texts == gb.raw_texts
    assert ga.text_embeds.shape == gb.text_embeds.shape and not np.allclose(ga.text_embeds, gb.text_embeds)
    assert a.config.fingerprint() != b.config.fingerprint()  # a different cache key
    # the default embedding is a function of the description text alone
    assert np.allclose(b.embed_texts(gb.descriptions[:1]), gb.text_embeds[:1], atol=1e-5)
