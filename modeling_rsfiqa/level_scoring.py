"""Level-word scoring: numbers from the words a language model answers with (shared by every family).

Q-Align (Wu et al., 2023) turned an LLM's rating into a number: at the position where the level word is due,
take a softmax over the logits of the level words only and weight each word's level value by its
probability. RSFIQA's region annotations (``annotation_rsfiqa``) and SEAGULL's region quality and importance
(``modeling_seagull``, Chen et al., arXiv 2411.10161) both do exactly this; this module is the one
implementation they share:

* :func:`level_token_ids`: the token id of each level word as it appears *in an answer* (the first
  sub-token, after a space), for any tokenizer (byte-level BPE and SentencePiece alike);
* :func:`level_probs` (torch, differentiable) / :func:`level_probs_from_logits` (numpy): the softmax over
  the level-word logits; :func:`expected_level` / :func:`rescale_level` / :func:`expected_score`: the
  expected level and its rescaling to 0..100 or 0..1;
* parsing free text robustly: :func:`find_level_word` (one level word in a phrase), :func:`parse_answer` /
  :func:`answer_segments` (the structured ``key: level`` answer RSFIQA asks for), :func:`parse_distortions`
  (distortion types with severity words, SEAGULL's distortion answers).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = [
    "DEFAULT_LEVEL_WORDS",
    "DESCRIPTION_KEY",
    "ParsedAnswer",
    "first_token_id",
    "level_token_ids",
    "level_probs",
    "level_probs_from_logits",
    "expected_level",
    "rescale_level",
    "expected_score",
    "find_level_word",
    "answer_segments",
    "format_answer",
    "parse_answer",
    "DISTORTION_ALIASES",
    "parse_distortions",
    "severity_value",
]

#: Q-Align's five level words, worst to best (level 1..5).
DEFAULT_LEVEL_WORDS = ["bad", "poor", "fair", "good", "excellent"]
DESCRIPTION_KEY = "description"


# ----------------------------------------------------------------------------------------------------------
# token ids
# ----------------------------------------------------------------------------------------------------------
def _encode(tokenizer: Any, text: str) -> list[int]:
    return [int(t) for t in tokenizer.encode(text, add_special_tokens=False)]


def _is_blank_piece(tokenizer: Any, token_id: int) -> bool:
    """A token that is only whitespace (SentencePiece's lone ``"▁"``, a byte-level ``"Ġ"``)."""
    decode = getattr(tokenizer, "decode", None)
    if decode is None:
        return False
    try:
        return not decode([token_id]).strip()
    except Exception:  # pragma: no cover - exotic tokenizers
        return False


def first_token_id(tokenizer: Any, word: str, context: str | None = None) -> int:
    """The id of the first sub-token of ``word`` as it follows a space in running text.

    With ``context`` (the answer text before the word, e.g. ``"The quality of this region is"``) the word is
    tokenised in place: ``encode(context + " " + word)`` minus ``encode(context)``, which is exact for
    tokenizers whose pieces depend on what precedes them (SentencePiece adds a dummy prefix; a lone space
    becomes its own piece). Without it (or if the context's tokens are not a prefix of the joined text's),
    the first non-blank token of ``" " + word``.
    """
    word = str(word).strip()
    if not word:
        raise ValueError("empty level word")
    if context:
        base = _encode(tokenizer, context)
        full = _encode(tokenizer, f"{context} {word}")
        if len(full) > len(base) and full[: len(base)] == base:
            token = full[len(base)]
            if not _is_blank_piece(tokenizer, token):
                return token
            if len(full) > len(base) + 1:
                return full[len(base) + 1]
    toks = _encode(tokenizer, " " + word)
    for token in toks:
        if not _is_blank_piece(tokenizer, token):
            return token
    if toks:
        return toks[0]
    raise ValueError(f"level word {word!r} encodes to no token")


def level_token_ids(tokenizer: Any, level_words: Sequence[str], context: str | None = None) -> list[int]:
    """First-sub-token ids of the level words (see :func:`first_token_id`); they must be distinct."""
    ids = [first_token_id(tokenizer, w, context) for w in level_words]
    if len(set(ids)) != len(ids):
        raise ValueError(f"level words {list(level_words)} do not start with distinct tokens: {ids}")
    return ids


# ----------------------------------------------------------------------------------------------------------
# probabilities and expected levels
# ----------------------------------------------------------------------------------------------------------
def level_probs(logits: torch.Tensor, token_ids: Sequence[int]) -> torch.Tensor:
    """Softmax over the level-word logits (Q-Align): ``(..., vocab) -> (..., n_levels)``, differentiable.

    Computed in float32 at least (bf16/fp16 logits are upcast); rows sum to one.
    """
    logits = torch.as_tensor(logits)
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    index = torch.as_tensor(list(token_ids), dtype=torch.long, device=logits.device)
    return torch.softmax(logits.index_select(-1, index).to(dtype), dim=-1)


def level_probs_from_logits(logits: torch.Tensor | np.ndarray, token_ids: Sequence[int]) -> np.ndarray:
    """:func:`level_probs` as float32 numpy (computed in float64): ``(..., vocab) -> (..., n_levels)``."""
    return level_probs(torch.as_tensor(logits).detach().cpu().double(), token_ids).float().numpy()


def _values(n: int, values: Sequence[float] | None, like: Any) -> Any:
    if values is None:
        values = np.arange(1, n + 1, dtype=np.float64)
    if len(values) != n:
        raise ValueError(f"{len(values)} level values for {n} level probabilities")
    if isinstance(like, torch.Tensor):
        return torch.as_tensor(values, dtype=like.dtype, device=like.device)
    return np.asarray(values, dtype=np.float64)


def expected_level(probs: Any, values: Sequence[float] | None = None) -> Any:
    """Expected level ``sum_i p_i * v_i`` over the last axis; default values ``1..n`` (bad=1 ... excellent=5).

    numpy in -> float32 numpy out; torch in -> torch out (differentiable).
    """
    if isinstance(probs, torch.Tensor):
        return (probs * _values(probs.shape[-1], values, probs)).sum(-1)
    probs = np.asarray(probs, dtype=np.float64)
    return (probs * _values(probs.shape[-1], values, probs)).sum(-1).astype(np.float32)


def rescale_level(level: Any, low: float, high: float, out_low: float = 0.0, out_high: float = 100.0) -> Any:
    """Map levels on ``[low, high]`` linearly onto ``[out_low, out_high]`` (e.g. 1..5 -> 0..100)."""
    if high == low:
        raise ValueError("empty level range")
    return out_low + (level - low) * (out_high - out_low) / (high - low)


def expected_score(
    probs: Any, values: Sequence[float] | None = None, out_range: tuple[float, float] = (0.0, 100.0)
) -> Any:
    """Expected level rescaled from the value range onto ``out_range`` (worst word -> ``out_range[0]``)."""
    n = probs.shape[-1]
    vals = list(values) if values is not None else list(range(1, n + 1))
    return rescale_level(expected_level(probs, vals), min(vals), max(vals), *out_range)


# ----------------------------------------------------------------------------------------------------------
# reading level words from text
# ----------------------------------------------------------------------------------------------------------
_NUMERIC = re.compile(r"^\s*([1-9])(?:\s*/\s*\d+)?\b")


def _word_pattern(word: str) -> re.Pattern:
    return re.compile(rf"(?<![a-z]){re.escape(word.lower())}(?![a-z])")


def find_level_word(value: str, level_words: Sequence[str]) -> tuple[str | None, str | None]:
    """The one level word in ``value`` -> ``(word, None)``, else ``(None, error)``.

    Case-insensitive whole-word match (multi-word levels such as ``"very high"`` work; the longest match
    wins where words overlap); a bare ``k`` or ``k/n`` number (1-based, worst first) also counts. Two
    different level words are ambiguous and give an error naming both.
    """
    clean = str(value).strip().strip("*_`\"'.,;!").lower()
    if not clean:
        return None, "empty level"
    words = [str(w).lower() for w in level_words]
    spans: list[tuple[int, int, int]] = []  # (start, end, word index)
    for i, w in enumerate(words):
        spans += [(m.start(), m.end(), i) for m in _word_pattern(w).finditer(clean)]
    # drop matches contained in a longer one ("high" inside "very high")
    spans = [s for s in spans if not any(o != s and o[0] <= s[0] and s[1] <= o[1] for o in spans)]
    found = sorted({i for _, _, i in spans})
    if len(found) == 1:
        return level_words[found[0]], None
    if len(found) > 1:
        first = words[min(spans)[2]]
        names = ", ".join(sorted(words[i] for i in found))
        return None, f"ambiguous level {value.strip()!r} ({names}; first: {first})"
    num = _NUMERIC.match(clean)
    if num and 1 <= int(num.group(1)) <= len(level_words):
        return level_words[int(num.group(1)) - 1], None
    return None, f"unknown level {value.strip()[:40]!r}"


# ----------------------------------------------------------------------------------------------------------
# the structured "key: level" answer (RSFIQA's region answers)
# ----------------------------------------------------------------------------------------------------------
@dataclass
class ParsedAnswer:
    """Result of :func:`parse_answer`. ``levels[i]`` is a level word or ``None`` (missing / unreadable)."""

    description: str
    levels: list[str | None]
    ok: bool
    errors: list[str]


def answer_segments(
    description: str, levels: Sequence[str], dimensions: Sequence[str]
) -> list[tuple[str, str]]:
    """Canonical answer as ``(kind, text)`` pieces: kinds ``text``, ``desc`` and ``level``."""
    segs: list[tuple[str, str]] = [("text", f"{DESCRIPTION_KEY}:")]
    if description:
        segs.append(("desc", " " + description))
    for dim, word in zip(dimensions, levels):
        segs.append(("text", f"\n{dim}:"))
        segs.append(("level", " " + word))
    return segs


def format_answer(description: str, levels: Sequence[str], dimensions: Sequence[str]) -> str:
    """The canonical answer text (what a well-behaved or LoRA-taught model answers)."""
    return "".join(t for _, t in answer_segments(description, levels, dimensions))


def _norm_key(text: str) -> str:
    text = text.lower().replace("artefact", "artifact")
    return re.sub(r"[^a-z]", "", text)


_KEY_LINE = re.compile(r"^[\s>*_#`\-•\d.)]*([A-Za-z][A-Za-z _/-]{0,40}?)[\s*_`]*(?::|=|\s[-–—]\s)\s*(.*)$")
_DESC_KEYS = {"description", "desc", "content", "caption", "regiondescription", "contentdescription"}


def _dimension_aliases(dimensions: Sequence[str]) -> dict[str, int]:
    aliases: dict[str, int] = {}
    first_words: dict[str, list[int]] = {}
    for i, dim in enumerate(dimensions):
        key = _norm_key(dim)
        aliases[key] = i
        aliases.setdefault(key.rstrip("s"), i)
        first = _norm_key(dim.split()[0]) if dim.split() else key
        first_words.setdefault(first, []).append(i)
    for word, idx in first_words.items():
        if len(idx) == 1:
            aliases.setdefault(word, idx[0])
    aliases.setdefault("colour", aliases.get("color", -1))
    return {k: v for k, v in aliases.items() if v >= 0}


def parse_answer(text: str, dimensions: Sequence[str], level_words: Sequence[str]) -> ParsedAnswer:
    """Parse a ``description: ... / <dimension>: <level>`` answer leniently; never raises.

    Accepts markdown (``**Blur**: Good``), bullets, numbering, ``=`` or `` - `` separators, any case,
    ``artefacts``/``colour`` spellings, the first word of a multi-word dimension (``compression: poor``),
    numeric ``1..5`` levels and inline ``blur: good, noise: fair`` answers. Missing, unknown,
    ambiguous or conflicting levels become ``None`` with an error; ``ok`` is ``True`` only for a clean answer.
    """
    text = "" if text is None else str(text)
    aliases = _dimension_aliases(dimensions)
    levels: list[str | None] = [None] * len(dimensions)
    seen: list[bool] = [False] * len(dimensions)
    errors: list[str] = []
    description: str | None = None
    stray: list[str] = []
    for raw_line in re.split(r"[\n;]+", text):
        line = raw_line.strip()
        if not line:
            continue
        m = _KEY_LINE.match(line)
        key = _norm_key(m.group(1)) if m else ""
        if m and key in _DESC_KEYS:
            if description is None:
                description = m.group(2).strip().strip("*_`\"' ")
            continue
        if m and key in aliases:
            idx = aliases[key]
            value = m.group(2)
            # inline continuation: "blur: good, noise: fair"
            parts = re.split(r",\s*(?=[A-Za-z][A-Za-z _-]{0,40}\s*[:=])", value)
            pieces = [(idx, parts[0])]
            for part in parts[1:]:
                sub = _KEY_LINE.match(part)
                if sub and _norm_key(sub.group(1)) in aliases:
                    pieces.append((aliases[_norm_key(sub.group(1))], sub.group(2)))
            for j, val in pieces:
                word, err = find_level_word(val, level_words)
                if seen[j]:
                    if word != levels[j]:
                        errors.append(f"conflicting duplicate for {dimensions[j]!r}: {val.strip()[:40]!r}")
                    continue
                seen[j] = True
                levels[j] = word
                if err:
                    errors.append(f"{dimensions[j]}: {err}")
            continue
        stray.append(line)
    if description is None:
        if stray:
            description = stray[0].strip("*_`\"' ")
            errors.append("description without its key")
        else:
            description = ""
            errors.append("missing description")
    elif not description:
        errors.append("empty description")
    for j, dim in enumerate(dimensions):
        if not seen[j]:
            errors.append(f"missing {dim}")
    description = re.sub(r"\s+", " ", description).strip()[:300]
    return ParsedAnswer(description=description, levels=levels, ok=not errors, errors=errors)


# ----------------------------------------------------------------------------------------------------------
# distortion types and severity words in free text (SEAGULL's distortion answers)
# ----------------------------------------------------------------------------------------------------------
#: Words that name each of SEAGULL's six distortion types in free text (regex fragments, lower case).
DISTORTION_ALIASES: dict[str, tuple[str, ...]] = {
    "blur": (r"blur\w*", r"out[- ]of[- ]focus", r"defocus\w*", r"unsharp", r"soft focus"),
    "colorfulness": (r"colou?rful\w*", r"colou?r(?:s|ation)?", r"saturat\w*", r"desaturat\w*", r"chroma\w*"),
    "compression": (r"compress\w*", r"jpe?g\w*", r"block(?:y|iness|ing)", r"artifacts?", r"artefacts?"),
    "contrast": (r"contrast\w*",),
    "exposure": (
        r"expos\w*",
        r"over-?exposed",
        r"under-?exposed",
        r"brightness",
        r"too (?:bright|dark)",
        r"illumination",
    ),
    "noise": (r"nois\w*", r"grain\w*", r"speckle\w*"),
}
_NEGATION = re.compile(r"\b(?:no|not|without|free of|none|nor|lacks?)\b[^,.;:]*$")
_CLAUSE_BREAK = re.compile(r"[.;\n]|,\s*(?:and|but)\b|\bbut\b")


def parse_distortions(
    text: str,
    types: Sequence[str],
    severity_words: Sequence[str] = (),
    aliases: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, str | None]:
    """Distortion types named in ``text`` -> their severity word (``None`` where none is given).

    Robust to phrasing: ``"blur (severe), noise (slight)"``, ``"severe blur and slight noise"``,
    ``"The region is blurry and noisy."``, ``"Distortions: compression: moderate"``. A type is found by its
    name or an alias (:data:`DISTORTION_ALIASES`: ``blurry``, ``JPEG``, ``over-exposed``, ...); a mention
    under negation in its clause (``"no noise"``, ``"not blurry"``, ``"free of compression artifacts"``)
    does not count. Each severity word goes to the nearest mention in its clause (the one before it on a
    tie), and a type takes the nearest of its words. Types come back in the order of ``types``.
    """
    text = "" if text is None else str(text)
    low = text.lower()
    aliases = aliases if aliases is not None else DISTORTION_ALIASES
    sev_spans = []
    for i, w in enumerate(severity_words):
        sev_spans += [(m.start(), m.end(), i) for m in _word_pattern(w).finditer(low)]
    sev_spans = [s for s in sev_spans if not any(o != s and o[0] <= s[0] and s[1] <= o[1] for o in sev_spans)]
    mentions: list[tuple[int, int, str]] = []
    for t in types:
        pats = [re.escape(t.lower())] + [p for p in aliases.get(t, ())]
        for p in pats:
            for m in re.finditer(rf"(?<![a-z])(?:{p})(?![a-z])", low):
                mentions.append((m.start(), m.end(), t))
    # a span claimed by two types (e.g. "colour" vs a longer alias) goes to the longer match
    mentions.sort(key=lambda s: (s[0], -(s[1] - s[0])))
    kept: list[tuple[int, int, str]] = []
    for s in mentions:
        if not any(k[0] <= s[0] < k[1] for k in kept):
            kept.append(s)
    breaks = [0] + [m.end() for m in _CLAUSE_BREAK.finditer(low)] + [len(low) + 1]

    def clause(pos: int) -> tuple[int, int]:
        start = max(b for b in breaks if b <= pos)
        end = min(b for b in breaks if b > pos)
        return start, end

    live = [k for k in kept if not _NEGATION.search(low[clause(k[0])[0] : k[0]])]
    # each severity word belongs to the nearest live mention in its clause (the one before it on a tie)
    owned: dict[int, list[tuple[int, int]]] = {}
    for s0, s1, i in sev_spans:
        c0, c1 = clause(s0)
        near = [k for k in live if c0 <= k[0] < c1]
        if not near:
            continue
        gap = [(k[0] - s1 if k[0] >= s1 else s0 - k[1], k[0] > s0) for k in near]
        owner = near[min(range(len(near)), key=gap.__getitem__)]
        owned.setdefault(owner[0], []).append((min(gap)[0], i))
    found: dict[str, str | None] = {}
    for start, _, t in live:
        word = severity_words[min(owned[start])[1]] if start in owned else None
        if t not in found or (found[t] is None and word is not None):
            found[t] = word
    return {t: found[t] for t in types if t in found}


def severity_value(word: str | None, severity_words: Sequence[str], default: float = 0.5) -> float:
    """A severity word on ``0..1``: word ``i`` of ``n`` (mildest first) -> ``(i + 1) / n``; ``None`` -> default."""
    if word is None:
        return float(default)
    lowered = [w.lower() for w in severity_words]
    return (lowered.index(word.lower()) + 1) / len(lowered)
