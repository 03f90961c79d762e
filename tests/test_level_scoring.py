"""The one level-word scoring implementation (Q-Align style) that RSFIQA's annotations and SEAGULL share."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from modeling_rsfiqa.level_scoring import (
    DEFAULT_LEVEL_WORDS,
    expected_level,
    expected_score,
    find_level_word,
    first_token_id,
    level_probs,
    level_probs_from_logits,
    level_token_ids,
    parse_distortions,
    rescale_level,
    severity_value,
)

PACKAGE = Path(__file__).resolve().parents[1] / "modeling_rsfiqa"
TYPES = ["blur", "colorfulness", "compression", "contrast", "exposure", "noise"]
SEVERITY = ["slight", "moderate", "obvious", "serious", "severe"]


def _tokenizer(kind: str):
    """A tiny trained tokenizer: byte-level BPE (GPT/Qwen style) or Metaspace BPE (SentencePiece/Llama style)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [f"The quality of this region is {w}. It is {w}, {w} and {w}" for w in DEFAULT_LEVEL_WORDS] * 20
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    if kind == "bytelevel":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
        alphabet = []
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<unk>"], initial_alphabet=alphabet, show_progress=False
    )
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")


# ---------------------------------------------------------------------------------------------- numbers
def test_level_probs_and_expected_level_match_hand_computation():
    ids = [7, 2, 5, 0, 9]
    values = [0.5, -1.0, 2.0, 1.0, 0.0]
    logits = torch.full((10,), 3.0)
    for i, v in zip(ids, values):
        logits[i] = v
    z = sum(math.exp(v) for v in values)
    hand = [math.exp(v) / z for v in values]
    np.testing.assert_allclose(level_probs_from_logits(logits, ids), hand, atol=1e-7)
    probs = level_probs(logits, ids)
    assert probs.dtype == torch.float32 and probs.shape == (5,)
    assert float(expected_level(probs)) == pytest.approx(
        sum((i + 1) * p for i, p in enumerate(hand)), abs=1e-6
    )
    # own level values, and the 0..100 / 0..1 rescaling: worst word -> 0, best -> top of the range
    assert float(expected_level(probs, values=[0, 0, 0, 0, 10])) == pytest.approx(10 * hand[4], abs=1e-5)
    assert float(expected_score(torch.tensor([1.0, 0, 0, 0, 0]))) == 0.0
    assert float(expected_score(torch.tensor([0, 0, 0, 0, 1.0]), out_range=(0, 1))) == 1.0
    assert float(expected_score(torch.tensor([0, 0, 1.0, 0, 0]))) == pytest.approx(50.0)
    assert rescale_level(np.float32(4.0), 1, 5) == pytest.approx(75.0)
    # half precision logits are scored in float32; batched shapes keep their leading axes
    batch = (torch.randn(3, 4, 10) * 5).half()
    pb = level_probs(batch, ids)
    assert pb.dtype == torch.float32 and pb.shape == (3, 4, 5)
    torch.testing.assert_close(pb.sum(-1), torch.ones(3, 4))


def test_level_probs_are_differentiable():
    logits = torch.randn(2, 10, requires_grad=True)
    expected_score(level_probs(logits, [1, 2, 3, 4, 5])).sum().backward()
    assert logits.grad is not None and logits.grad[:, 1:6].abs().sum() > 0
    assert logits.grad[:, [0, 6, 7, 8, 9]].abs().sum() == 0  # only the level words' logits matter


@pytest.mark.parametrize("kind", ["bytelevel", "metaspace"])
def test_level_token_ids_are_the_tokens_that_follow_in_an_answer(kind):
    tok = _tokenizer(kind)
    context = "The quality of this region is"
    ids = level_token_ids(tok, DEFAULT_LEVEL_WORDS, context=context)
    assert len(set(ids)) == 5
    for word, i in zip(DEFAULT_LEVEL_WORDS, ids):
        answer = tok.encode(f"{context} {word}", add_special_tokens=False)
        prompt = tok.encode(context, add_special_tokens=False)
        assert answer[len(prompt)] == i  # exactly the token the model must predict after the prompt
        assert tok.decode([i]).strip() and word.startswith(tok.decode([i]).strip())
    # without context: the first non-blank piece of " word" (a lone SentencePiece "▁" is skipped)
    for word in DEFAULT_LEVEL_WORDS:
        assert tok.decode([first_token_id(tok, word)]).strip()


def test_level_token_collisions_rejected():
    class Clash:
        def encode(self, text, add_special_tokens=False):
            return [1, len(text)]

    with pytest.raises(ValueError, match="distinct"):
        level_token_ids(Clash(), DEFAULT_LEVEL_WORDS)


# ---------------------------------------------------------------------------------------------- parsing
@pytest.mark.parametrize(
    "text, word",
    [
        ("good", "good"),
        ("**Good**.", "good"),
        ("The quality of this region is poor.", "poor"),
        ("3/5", "fair"),
        ("excellent!", "excellent"),
        ("goodness", None),  # whole words only
        ("good or bad", None),  # ambiguous
        ("", None),
    ],
)
def test_find_level_word(text, word):
    found, err = find_level_word(text, DEFAULT_LEVEL_WORDS)
    assert found == word
    assert (err is None) is (word is not None)


def test_find_level_word_prefers_the_longer_multiword_level():
    words = ["very low", "low", "medium", "high", "very high"]
    assert find_level_word("Its importance is very high.", words) == ("very high", None)
    assert find_level_word("low", words) == ("low", None)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("blur (severe), noise (slight).", {"blur": "severe", "noise": "slight"}),
        ("Severe blur and slight noise.", {"blur": "severe", "noise": "slight"}),
        ("The region is blurry and noisy.", {"blur": None, "noise": None}),
        ("Distortions: compression: moderate", {"compression": "moderate"}),
        ("blur (severe) and noise", {"blur": "severe", "noise": None}),
        ("There is no noise, but the region is blurry (obvious).", {"blur": "obvious"}),
        ("No obvious distortion in this region.", {}),
        ("Over-exposed (serious) with JPEG artifacts", {"compression": None, "exposure": "serious"}),
        ("The colour saturation is low (moderate).", {"colorfulness": "moderate"}),
        ("Not blurry; contrast: slight; NOISE: severe", {"contrast": "slight", "noise": "severe"}),
    ],
)
def test_parse_distortions(text, expected):
    assert parse_distortions(text, TYPES, SEVERITY) == expected


def test_severity_value():
    assert severity_value("slight", SEVERITY) == pytest.approx(0.2)
    assert severity_value("Severe", SEVERITY) == 1.0
    assert severity_value(None, SEVERITY, default=0.5) == 0.5


# ---------------------------------------------------------------------------------------------- import graph
def _runtime_imports(path: Path, modules: set[str]) -> set[str]:
    """Sibling modules imported by ``path`` at run time (function-level imports count; TYPE_CHECKING does not)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for child in node.body for n in ast.walk(child)}
    deps = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom) or id(node) in skip:
            continue
        if node.level == 1 and node.module:
            deps.add(node.module.split(".")[0])
        elif node.level == 1:
            deps |= {a.name for a in node.names}
        elif node.module and node.module.startswith("modeling_rsfiqa."):
            deps.add(node.module.split(".")[1])
    return (deps & modules) - {path.stem}


def test_package_import_graph_has_no_cycles():
    files = {p.stem: p for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    graph = {name: _runtime_imports(path, set(files)) for name, path in files.items()}
    assert "level_scoring" in graph["annotation_rsfiqa"] and "level_scoring" in graph["lora_rsfiqa"]
    assert "annotation_rsfiqa" not in graph["lora_rsfiqa"]
    state: dict[str, int] = {}
    cycles = []

    def visit(node, stack):
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep) :] + [dep])
            elif dep not in state:
                visit(dep, stack)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    assert not cycles, f"import cycles: {cycles}"
