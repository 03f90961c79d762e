"""Q-CLIP configuration.

Q-CLIP (Mi et al., "Q-CLIP: Unleashing the Power of Vision-Language Models for Video Quality Assessment
through Unified Cross-Modal Adaptation", arXiv 2508.06092): a frozen contrastive vision-language model (VLM)
scores video quality through a Shared Cross-Modal Adapter (SCMA) and five learnable quality-level prompts.

Which setting trains how many parameters (PE-Core-L14-336: both towers 24 blocks of width 1024, embedding
1024; counted by :meth:`QCLIPForVideoQualityScoring.trainable_parameter_report`):

==================================================  ================================  ===========
setting                                             what                              trainable
==================================================  ================================  ===========
``adapter_dim=128, adapter_layers=6``, P-SCMA on,   the released code's model         1.908 M
``share_layer_adapters=True`` (the paper preset)    (its 18 unused per-layer adapters
                                                    are not built here: +4.78 M there)
``adapter_dim=8, adapter_layers=6``, P-SCMA on,     closest to the paper's reported   0.137 M
``share_layer_adapters=True``                       0.14 M (the paper does not say how
                                                    it got there: our fit; width 8
                                                    without P-SCMA gives 0.120 M)
``adapter_dim=128``, P-SCMA off                     E-SCMA + prompts + w only         1.628 M
``adapter_dim=16``, P-SCMA on                                                          0.253 M
``share_layer_adapters=False``                      separate Down/Up/LN per tower     3.500 M
==================================================  ================================  ===========

In every setting only the adapters, the 3 context vectors, the 4 scales (alpha, beta per tower) and the
5-vector w train; the VLM is frozen.
"""

from __future__ import annotations

from dataclasses import field
from typing import Literal

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .configuration_timm_clip import TimmCLIPConfig  # noqa: F401  (registers the qclip-mobile VLM config)

__all__ = ["QCLIPConfig", "PECoreCLIPConfig", "DEFAULT_LEVEL_WORDS", "DEFAULT_PROMPT_TEMPLATE"]

#: the five quality levels, worst to best (the order of the five prompts)
DEFAULT_LEVEL_WORDS = ["bad", "poor", "fair", "good", "excellent"]
#: ``{context}`` is replaced by ``num_context_tokens`` copies of ``context_token`` ("X X X a video of bad quality")
DEFAULT_PROMPT_TEMPLATE = "{context} a video of {level} quality"


class PECoreCLIPConfig(PreTrainedConfig):
    r"""Perception Encoder (PE-Core) CLIP as a two-tower model: a timm PE vision tower + a CLIP text tower.

    transformers has no PE-Core contrastive model, timm has its vision tower (``vit_pe_core_*``, attention
    pooling and projection included) and PE's text tower is a CLIP text transformer (causal, pre-LN, EOT
    pooling, a bias-free projection). :func:`~.modeling_qclip.load_pe_core_checkpoint` reads Meta's
    ``PE-Core-*.pt`` into this layout.

    Args:
        vision_model_name: timm architecture (e.g. ``vit_pe_core_large_patch14_336``).
        vision_kwargs: extra ``timm.create_model`` arguments (e.g. ``img_size``, or a tiny ``depth`` in tests).
        text_config: `CLIPTextConfig` of the text tower.
        projection_dim: the shared embedding size (the vision head's output and the text projection's).
    """

    model_type = "qclip_pe_core"
    sub_configs_defaults = {
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="clip_text_model")
    }

    vision_model_name: str = "vit_pe_core_large_patch14_336"
    vision_kwargs: dict = field(default_factory=dict)
    text_config: dict | PreTrainedConfig | None = None
    projection_dim: int = 1024
    initializer_range: float = 0.02


class QCLIPConfig(PreTrainedConfig):
    r"""Configuration of [`QCLIPForVideoQualityScoring`].

    Vision-language model:
        vlm_config: config of the frozen contrastive VLM (`CLIPConfig`, `SiglipConfig`, `MetaClip2Config`, or
            [`PECoreCLIPConfig`]); any model with a vision and a text tower whose blocks are a ``ModuleList``.
        vlm_name_or_path: where :meth:`QCLIPForVideoQualityScoring.load_pretrained_vlm` reads the pretrained
            towers from (a transformers folder / Hub id, or a PE-Core ``.pt`` file); never read in ``__init__``.
        tokenizer_name_or_path: the text tower's tokenizer (folder / Hub id), or ``"prompt-vocabulary"`` for a
            word-level tokenizer over the prompt words built in code (towers without a pretrained vocabulary).
    E-SCMA (encoder-level Shared Cross-Modal Adapter), in the last ``adapter_layers`` blocks of BOTH towers:
        ``x <- x + alpha * LN_i(Up_i(core(Down_i(x))))`` after block i, with ONE two-layer core
        (Linear-GELU-Linear, ``adapter_dim`` wide) shared by every adapted block of both towers.
        adapter_dim: the core's width (128 in the reference).
        adapter_layers: how many of the last blocks of each tower are adapted (6 in the reference: blocks
            18-23 of 24); an explicit list of block positions counted from the end (0 = last) also works.
        share_layer_adapters: Down_i/Up_i/LN_i shared by the two towers at the same depth (the reference does
            this, which needs equal tower widths); None = share when the widths are equal.
        adapter_scale_init: alpha's initial value (0.1); one alpha per tower.
    P-SCMA (projection-level adapter): ``f = W_proj p + beta * MLP(p)`` on each tower's pooled feature p;
        the MLP (Linear, Linear, GELU, Linear through ``adapter_dim``) is shared by the towers when shapes agree.
        use_projection_adapter: P-SCMA on/off. projection_adapter_scale_init: beta's initial value (0.1).
    Prompts:
        level_words / prompt_template / context_token / num_context_tokens: the five prompts
            "X X X a video of {bad, poor, fair, good, excellent} quality"; the embeddings of the
            ``num_context_tokens`` context tokens are replaced by learnable vectors shared by the five prompts
            (initialised from the embeddings of "X").
        prompt_input_ids / prompt_attention_mask / prompt_context_positions: the tokenised prompts and where
            the context tokens sit (filled by `QCLIPProcessor.prompt_inputs`, so the model needs no tokenizer).
    Video:
        num_frames, frame_sampling, image_size (H, W), image_mean, image_std: the video processor's settings.
    Scores:
        The model's raw output (``logits``) is ``cos(video, prompts) . w``, trained with scale-free losses
        (PLCC + 0.3 rank). ``score = (logits - logit_mean) / logit_std * label_std + label_mean`` maps it to the
        label scale ``score_range`` (higher_is_better as stated); the four statistics are fitted on the training
        set after training (the reference's z-scored linear rescale, frozen).
        loss_weights: weights of the shared losses (``plcc``, ``rank``, ``l1``, ``mse``) on the raw logits. The
            shared ``plcc_loss`` is (1 - PLCC) / 2 and ``rank_loss`` the mean pairwise hinge over pairs with
            different labels; the reference's versions differ only in normalisation (its PLCC term averages
            (1 - PLCC) / 2 and (1 - PLCC^2) / 4, its rank term divides by n(n-1) (1 + max hinge)): same optimum.
    """

    model_type = "qclip"
    sub_configs_defaults = {"vlm_config": SubConfigSpec(config_class=AutoConfig, model_type="clip")}

    vlm_config: dict | PreTrainedConfig | None = None
    vlm_name_or_path: str | None = None
    tokenizer_name_or_path: str | None = None
    # E-SCMA
    adapter_dim: int = 128
    adapter_layers: int | list[int] = 6
    share_layer_adapters: bool | None = None
    adapter_scale_init: float = 0.1
    # P-SCMA
    use_projection_adapter: bool = True
    projection_adapter_scale_init: float = 0.1
    # prompts
    level_words: list[str] = field(default_factory=lambda: list(DEFAULT_LEVEL_WORDS))
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE
    context_token: str = "X"
    num_context_tokens: int = 3
    prompt_input_ids: list[list[int]] | None = None
    prompt_attention_mask: list[list[int]] | None = None
    prompt_context_positions: list[int] | None = None
    # video
    num_frames: int = 8
    frame_sampling: Literal["uniform", "framediff"] = "uniform"
    image_size: list[int] = field(default_factory=lambda: [224, 224])
    image_mean: list[float] = field(default_factory=lambda: [0.48145466, 0.4578275, 0.40821073])
    image_std: list[float] = field(default_factory=lambda: [0.26862954, 0.26130258, 0.27577711])
    # scores and loss
    score_range: list[float] = field(default_factory=lambda: [0.0, 100.0])
    higher_is_better: bool = True
    logit_mean: float = 0.0
    logit_std: float = 1.0
    label_mean: float = 50.0
    label_std: float = 20.0
    loss_weights: dict = field(default_factory=lambda: {"plcc": 1.0, "rank": 0.3})
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.image_size = [int(s) for s in self.image_size]
        self.validate_qclip()

    @property
    def prompts(self) -> list[str]:
        """The five prompt texts (before the context embeddings are swapped in)."""
        context = " ".join([self.context_token] * self.num_context_tokens)
        return [self.prompt_template.format(context=context, level=w) for w in self.level_words]

    def adapted_positions(self, depth: int) -> list[int]:
        """Indices of the adapted blocks in a tower of ``depth`` blocks (ascending)."""
        if isinstance(self.adapter_layers, int):
            if not 0 <= self.adapter_layers <= depth:
                raise ValueError(f"adapter_layers={self.adapter_layers} but the tower has {depth} blocks")
            return list(range(depth - self.adapter_layers, depth))
        from_end = sorted({int(k) for k in self.adapter_layers}, reverse=True)
        if any(not 0 <= k < depth for k in from_end):
            raise ValueError(
                f"adapter_layers {self.adapter_layers} (counted from the end) exceed depth {depth}"
            )
        return [depth - 1 - k for k in from_end]

    def validate_qclip(self) -> None:
        """Raise ``ValueError`` for settings that cannot work (checked at construction)."""
        if self.adapter_dim < 1:
            raise ValueError(f"adapter_dim must be >= 1, got {self.adapter_dim}")
        if self.num_context_tokens < 0:
            raise ValueError("num_context_tokens must be >= 0")
        if len(self.level_words) < 2:
            raise ValueError(f"level_words needs at least two levels, got {self.level_words}")
        if "{level}" not in self.prompt_template or "{context}" not in self.prompt_template:
            raise ValueError("prompt_template needs {context} and {level} fields")
        if self.frame_sampling not in ("uniform", "framediff"):
            raise ValueError(f"frame_sampling must be 'uniform' or 'framediff', got {self.frame_sampling!r}")
        if self.num_frames < 1:
            raise ValueError("num_frames must be >= 1")
        if len(self.image_size) != 2 or min(self.image_size) < 1:
            raise ValueError(f"image_size must be [height, width], got {self.image_size}")
        if len(self.score_range) != 2 or self.score_range[0] >= self.score_range[1]:
            raise ValueError(f"score_range must be [low, high], got {self.score_range}")
        if self.logit_std <= 0 or self.label_std <= 0:
            raise ValueError("logit_std and label_std must be > 0")
        if self.prompt_input_ids is not None:
            if len(self.prompt_input_ids) != len(self.level_words):
                raise ValueError("prompt_input_ids needs one row per level word")
            if (
                self.prompt_context_positions is None
                or len(self.prompt_context_positions) != self.num_context_tokens
            ):
                raise ValueError("prompt_context_positions must list num_context_tokens positions")


AutoConfig.register(PECoreCLIPConfig.model_type, PECoreCLIPConfig, exist_ok=True)
