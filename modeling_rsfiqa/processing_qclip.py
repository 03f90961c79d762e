"""Q-CLIP processor: the video processor plus the tokenizer of the quality prompts.

The prompts are constant, so they are tokenised once (:meth:`QCLIPProcessor.prompt_inputs`) and stored in
the model config; the model then needs no tokenizer at inference.
"""

from __future__ import annotations

from typing import Any

from transformers import BatchFeature
from transformers.processing_utils import ProcessorMixin

from .configuration_qclip import QCLIPConfig

__all__ = ["QCLIPProcessor", "prompt_vocabulary_tokenizer"]


def prompt_vocabulary_tokenizer(words: list[str], model_max_length: int = 16):
    """A word-level fast tokenizer over ``words`` (+ ``<pad>``, ``<bos>``, ``<eos>``, ``<unk>``) built in code.

    For models whose text tower has no pretrained vocabulary (tests, the small offline model): every prompt
    word is one token, sequences are ``<bos> ... <eos>`` padded to ``model_max_length``.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<bos>", "<eos>", "<unk>"]
    vocab = {tok: i for i, tok in enumerate(specials)}
    for word in words:
        vocab.setdefault(word, len(vocab))
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", vocab["<bos>"]), ("<eos>", vocab["<eos>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=model_max_length,
    )


class QCLIPProcessor(ProcessorMixin):
    r"""Prepare videos (and prompt text) for [`QCLIPForVideoQualityScoring`].

    Args:
        video_processor: [`QCLIPVideoProcessor`] (frame sampling, decoding, squash resize, normalisation).
        tokenizer: the text tower's tokenizer (CLIP BPE for CLIP / PE-Core, SentencePiece for SigLIP, ...).
    """

    def __init__(self, video_processor: Any = None, tokenizer: Any = None, **kwargs: Any):
        super().__init__(video_processor, tokenizer, **kwargs)

    @classmethod
    def from_model_config(cls, config: QCLIPConfig, tokenizer: Any) -> QCLIPProcessor:
        """The processor that matches ``config`` (frames, sampling, input size, normalisation)."""
        from .video_processing_qclip import QCLIPVideoProcessor

        video_processor = QCLIPVideoProcessor(
            size={"height": config.image_size[0], "width": config.image_size[1]},
            image_mean=list(config.image_mean),
            image_std=list(config.image_std),
            num_frames=config.num_frames,
            frame_sampling=config.frame_sampling,
        )
        return cls(video_processor, tokenizer)

    def __call__(self, videos: Any = None, text: Any = None, **kwargs: Any) -> BatchFeature:
        """``videos`` -> the video processor (``pixel_values_videos``, ``frame_timestamps``, ...); ``text`` ->
        the tokenizer. Keyword arguments go to the video processor, ``text_kwargs={...}`` to the tokenizer."""
        if videos is None and text is None:
            raise ValueError("QCLIPProcessor needs `videos` and/or `text`")
        text_kwargs = kwargs.pop("text_kwargs", {})
        data: dict[str, Any] = {}
        if videos is not None:
            data.update(self.video_processor(videos, **kwargs))
        if text is not None:
            data.update(self.tokenizer(text, return_tensors="pt", padding=True, **text_kwargs))
        return BatchFeature(data=data)

    def prompt_inputs(self, config: QCLIPConfig) -> dict[str, list]:
        """Tokenise the config's five prompts and locate the context tokens.

        Returns ``{"prompt_input_ids", "prompt_attention_mask", "prompt_context_positions"}`` (write them into
        the config with :meth:`fill_prompt_fields`). The prompts are padded to the tokenizer's maximum length
        (CLIP / PE: 77 / 32 positions) so that the sequence length matches the text tower's position table.
        """
        tok = self.tokenizer
        encoded = tok(config.prompts, padding="max_length", truncation=True, return_attention_mask=True)
        ids = [list(map(int, row)) for row in encoded["input_ids"]]
        mask = [list(map(int, row)) for row in encoded["attention_mask"]]
        n = config.num_context_tokens
        positions: list[int] = []
        if n:
            context_ids = tok(" ".join([config.context_token] * n), add_special_tokens=False)["input_ids"]
            if len(context_ids) != n:
                raise ValueError(
                    f"the context word {config.context_token!r} is not one token for this tokenizer "
                    f"({n} copies gave {len(context_ids)} tokens)"
                )
            row = ids[0]
            for start in range(len(row) - n + 1):
                if row[start : start + n] == context_ids:
                    positions = list(range(start, start + n))
                    break
            if not positions or any(r[positions[0] : positions[-1] + 1] != context_ids for r in ids):
                raise ValueError(f"cannot find the {n} context tokens at the same place in every prompt")
        return {"prompt_input_ids": ids, "prompt_attention_mask": mask, "prompt_context_positions": positions}

    def fill_prompt_fields(self, config: QCLIPConfig) -> QCLIPConfig:
        """Write :meth:`prompt_inputs` into ``config`` (in place) and return it."""
        for key, value in self.prompt_inputs(config).items():
            setattr(config, key, value)
        config.validate_qclip()
        return config

    @property
    def model_input_names(self) -> list[str]:
        return ["pixel_values_videos", "video_frame_mask"]
