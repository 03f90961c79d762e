"""SEAGULL configuration (Chen et al., "SEAGULL: No-reference Image Quality Assessment for Regions of
Interest via Vision-Language Instruction Tuning", arXiv 2411.10161; reference code chencn2020/SEAGULL).

Two model types share one set of fields:

* ``"seagull"`` -> :class:`SeagullConfig` / ``SeagullForConditionalGeneration``: the paper's model. A frozen
  multi-level vision tower (timm; the paper's CLIP ConvNeXt-L at 512x512), the ``mlp2x_gelu`` projector on
  one level's tokens (res4), the Mask-based Feature Extractor (MFE) giving a ``<global>`` and a ``<local>``
  token per ROI, and any causal LLM (``text_config``; Vicuna-7B lineage Llama in the paper).
* ``"seagull_region"`` -> :class:`SeagullRegionConfig` / ``SeagullForRegionQuality``: the same vision tower
  + MFE with small heads for quality, importance and per-type severity instead of the LLM.
"""

from __future__ import annotations

from dataclasses import field
from typing import Literal

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

__all__ = [
    "SeagullConfig",
    "SeagullRegionConfig",
    "SEAGULL_DISTORTION_TYPES",
    "QUALITY_LEVEL_WORDS",
    "IMPORTANCE_LEVEL_WORDS",
    "SEVERITY_WORDS",
    "DEFAULT_QUESTIONS",
    "DEFAULT_ANSWER_TEMPLATES",
]

#: The six SEAGULL distortion types, in the paper's order.
SEAGULL_DISTORTION_TYPES = ["blur", "colorfulness", "compression", "contrast", "exposure", "noise"]
#: Quality level words, worst to best (Q-Align's; level i+1).
QUALITY_LEVEL_WORDS = ["bad", "poor", "fair", "good", "excellent"]
#: Importance level words, least to most important.
IMPORTANCE_LEVEL_WORDS = ["minimal", "low", "moderate", "high", "critical"]
#: Distortion severity words, mildest to strongest (synthetic levels 1..5).
SEVERITY_WORDS = ["slight", "mild", "noticeable", "severe", "extreme"]
#: The reference demo's three instructions (``demo/seagull_inference.py``).
DEFAULT_QUESTIONS = {
    "quality": "Analyze the quality of this region.",
    "importance": (
        "Consider the impact of this region on the overall image quality. "
        "Analyze its importance to the overall image quality."
    ),
    "distortion": "Provide the distortion type of this region.",
}
#: Answer formats (ours; the reference's training answers are not published). ``{level}`` is a level word;
#: ``{distortions}`` a list like ``"blur (severe) and noise (mild)"``.
DEFAULT_ANSWER_TEMPLATES = {
    "quality": "The quality of this region is {level}.",
    "importance": "The importance of this region to the overall image quality is {level}.",
    "distortion": "The distortions of this region are: {distortions}.",
    "no_distortion": "There is no obvious distortion in this region.",
}
#: The reference's conversation (``seagull_v1`` = Vicuna v1) and region preamble.
DEFAULT_SYSTEM_PROMPT = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
DEFAULT_REGION_PREAMBLE = (
    "{image}\nThis provides an overview of the image.\n Please answer the following questions about the "
    "provided region. Note: Distortions include: blur, colorfulness, compression, contrast exposure and noise.\n"
    " Here is the region {region}. "
)

_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


class SeagullConfig(PreTrainedConfig):
    r"""Configuration of ``SeagullForConditionalGeneration``.

    Vision tower (frozen; timm ``features_only``):
        vision_backbone / vision_backbone_kwargs: timm architecture and extra ``create_model`` kwargs.
        vision_out_indices: the feature levels the MFE reads (res2..res5 of ConvNeXt in the paper).
        vision_feature_channels / vision_feature_strides: channels and strides of those levels (checked
            against timm when the model is built; they fix the MFE's weight shapes).
        vision_pretrained: weights file for ``load_pretrained_vision_tower`` (never read in ``__init__``).
        image_size: the square input side; images are resized to it without keeping the aspect ratio
            (the reference squashes to 512x512). image_mean / image_std: normalisation (CLIP's).
    Projector: projector_type (``"mlp2x_gelu"`` or ``"linear"``) on the tokens of level
        ``projector_feature_level`` (an index into ``vision_out_indices``; res4 in the paper).
    Mask-based Feature Extractor (``seagull/model/layer.py``):
        mfe_hidden_size (1024), mfe_num_heads (8), mfe_mlp_dim (2048, ReLU), mfe_attention_downsample_rate (2)
        of the block shared by all levels; local_crop_size: the ROI's bounding-box crop is resized to this
        square (512); local_channels / local_pool: the local CNN (1x1 conv to 5 channels, GELU, avg-pool,
        1x1 conv to 1 channel, GELU, avg-pool); local_mlp_hidden_size (512); crop_source_max_height: the
        reference crops from the image after resizing it to at most this height (512; None: full size).
        roi_mask_mode: how an ROI becomes weights on a feature grid: ``"any"`` (the reference: a cell counts
        fully if any ROI pixel falls in it) or ``"area"`` (a cell weighs the fraction of it inside the ROI;
        small ROIs are not diluted by the cells around their border).
        region_embed_size: size of the global/local tokens (None: the LLM's hidden size).
    Language model: text_config (any ``AutoModelForCausalLM`` config; Llama in the paper);
        tokenizer_name_or_path: where ``create_model`` finds the tokenizer (None: a small BPE tokenizer is
        trained in code on the SEAGULL prompts, for tests and tiny presets);
        image_token / global_token / local_token and their ids (set from the tokenizer).
    LoRA (``seagull/train/train.py``): lora_r (0 = none; 64 in the reference), lora_alpha (16), lora_dropout
        (0.05) on every linear layer of the LLM except ``lm_head`` (never the projector, vision tower or MFE);
        lora_target: the module regex (None: found from the LLM's linear layers and saved here when injected).
        The adapter is injected after ``post_init`` and is part of the model's weights.
    Words and prompts: distortion_types, quality_level_words, importance_level_words, severity_words,
        system_prompt, region_preamble, questions, answer_templates (see the module constants).
    """

    model_type = "seagull"
    sub_configs_defaults = {
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama", optional=True),
    }

    # vision tower
    vision_backbone: str = "convnext_large"
    vision_backbone_kwargs: dict = field(default_factory=dict)
    vision_out_indices: list[int] = field(default_factory=lambda: [0, 1, 2, 3])
    vision_feature_channels: list[int] = field(default_factory=lambda: [192, 384, 768, 1536])
    vision_feature_strides: list[int] = field(default_factory=lambda: [4, 8, 16, 32])
    vision_pretrained: str | None = None
    image_size: int = 512
    image_mean: list[float] = field(default_factory=lambda: list(_CLIP_MEAN))
    image_std: list[float] = field(default_factory=lambda: list(_CLIP_STD))
    # projector
    projector_type: Literal["mlp2x_gelu", "linear"] = "mlp2x_gelu"
    projector_feature_level: int = 2
    # mask-based feature extractor
    mfe_hidden_size: int = 1024
    mfe_num_heads: int = 8
    mfe_mlp_dim: int = 2048
    mfe_attention_downsample_rate: int = 2
    local_crop_size: int = 512
    local_channels: int = 5
    local_pool: int = 4
    local_mlp_hidden_size: int = 512
    crop_source_max_height: int | None = 512
    roi_mask_mode: str = "any"
    region_embed_size: int | None = None
    # language model and tokens
    text_config: dict | PreTrainedConfig | None = None
    tokenizer_name_or_path: str | None = None
    image_token: str = "<image>"
    global_token: str = "<global>"
    local_token: str = "<local>"
    image_token_id: int | None = None
    global_token_id: int | None = None
    local_token_id: int | None = None
    # LoRA
    lora_r: int = 0
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_target: str | None = None
    # words and prompts
    distortion_types: list[str] = field(default_factory=lambda: list(SEAGULL_DISTORTION_TYPES))
    quality_level_words: list[str] = field(default_factory=lambda: list(QUALITY_LEVEL_WORDS))
    importance_level_words: list[str] = field(default_factory=lambda: list(IMPORTANCE_LEVEL_WORDS))
    severity_words: list[str] = field(default_factory=lambda: list(SEVERITY_WORDS))
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    region_preamble: str = DEFAULT_REGION_PREAMBLE
    questions: dict = field(default_factory=lambda: dict(DEFAULT_QUESTIONS))
    answer_templates: dict = field(default_factory=lambda: dict(DEFAULT_ANSWER_TEMPLATES))
    initializer_range: float = 0.02
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.vision_out_indices = [int(i) for i in self.vision_out_indices]
        self.vision_feature_channels = [int(c) for c in self.vision_feature_channels]
        self.vision_feature_strides = [int(s) for s in self.vision_feature_strides]
        self.image_size = int(self.image_size)
        if self.text_config is not None and getattr(self.text_config, "tie_word_embeddings", False):
            self.tie_word_embeddings = True
        self.validate_seagull()

    # ------------------------------------------------------------------------------------------------
    def validate_seagull(self) -> None:
        """Raise ``ValueError`` for settings that cannot work (checked at construction)."""
        n = len(self.vision_out_indices)
        if n < 1 or len(self.vision_feature_channels) != n or len(self.vision_feature_strides) != n:
            raise ValueError(
                "vision_out_indices, vision_feature_channels and vision_feature_strides need one entry per "
                f"level, got {self.vision_out_indices}, {self.vision_feature_channels}, "
                f"{self.vision_feature_strides}"
            )
        for s in self.vision_feature_strides:
            if s < 1 or self.image_size % s:
                raise ValueError(f"image_size {self.image_size} is not a multiple of feature stride {s}")
        if not 0 <= self.projector_feature_level < n:
            raise ValueError(
                f"projector_feature_level must index vision_out_indices, got {self.projector_feature_level}"
            )
        if self.projector_type not in ("mlp2x_gelu", "linear"):
            raise ValueError(f"projector_type must be 'mlp2x_gelu' or 'linear', got {self.projector_type!r}")
        inner = self.mfe_hidden_size // self.mfe_attention_downsample_rate
        if self.mfe_hidden_size % self.mfe_num_heads or inner % self.mfe_num_heads:
            raise ValueError("mfe_hidden_size (and its downsampled size) must be divisible by mfe_num_heads")
        if self.local_crop_size % (self.local_pool**2):
            raise ValueError(f"local_crop_size must be a multiple of local_pool**2 = {self.local_pool**2}")
        for name in ("quality_level_words", "importance_level_words", "severity_words"):
            words = getattr(self, name)
            if len(words) < 2 or len({w.lower() for w in words}) != len(words):
                raise ValueError(f"{name} must list at least 2 distinct words, got {words}")
        if len(set(self.distortion_types)) != len(self.distortion_types) or not self.distortion_types:
            raise ValueError(f"distortion_types must be distinct and non-empty, got {self.distortion_types}")
        missing = {"quality", "importance", "distortion"} - set(self.questions)
        if missing:
            raise ValueError(f"questions lacks {sorted(missing)}")
        if "{image}" not in self.region_preamble or "{region}" not in self.region_preamble:
            raise ValueError("region_preamble needs the {image} and {region} placeholders")
        if self.region_embed_size is None and self.text_config is None and self.model_type == "seagull":
            raise ValueError("SeagullConfig needs a text_config (the LLM) or a region_embed_size")

    # ------------------------------------------------------------------------------------------------
    @property
    def feature_sizes(self) -> list[int]:
        """Side of each level's (square) feature map: ``image_size / stride``."""
        return [self.image_size // s for s in self.vision_feature_strides]

    @property
    def num_image_tokens(self) -> int:
        """Image tokens the projector emits (the ``<image>`` placeholder is expanded to this many)."""
        side = self.feature_sizes[self.projector_feature_level]
        return side * side

    @property
    def local_grid_size(self) -> int:
        """Side of the local CNN's output map (``local_crop_size / local_pool**2``; 32 in the paper)."""
        return self.local_crop_size // (self.local_pool**2)

    @property
    def token_size(self) -> int:
        """Size of the ``<global>`` / ``<local>`` embeddings."""
        if self.region_embed_size is not None:
            return int(self.region_embed_size)
        return int(self.text_config.hidden_size)


class SeagullRegionConfig(SeagullConfig):
    r"""Configuration of ``SeagullForRegionQuality``: the SEAGULL processor + vision tower + MFE with heads
    (no LLM). The global and local tokens (``region_embed_size``) are concatenated and fed to an MLP
    (``head_hidden_size``, ``head_dropout``; ``head_roi_area``: the log of the ROI's area fraction is added to
    its input through a linear map) with three outputs: quality (0..1, higher is better), importance
    (0..1) and a severity per distortion type (0..1; 0 = absent). Targets: ``labels`` ``(N_roi, 2 + T)``
    on the same scales; ``loss_weights`` weigh the terms: ``quality`` / ``importance`` (MSE), ``severity``
    (per-type binary cross-entropy), ``type`` (cross-entropy over clean + types on the severity logits) and
    ``rank`` (pairwise, quality and importance).
    """

    model_type = "seagull_region"

    vision_backbone: str = "mobilenetv2_100"
    vision_out_indices: list[int] = field(default_factory=lambda: [1, 2, 3, 4])
    vision_feature_channels: list[int] = field(default_factory=lambda: [24, 32, 96, 320])
    vision_feature_strides: list[int] = field(default_factory=lambda: [4, 8, 16, 32])
    image_size: int = 384
    image_mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    image_std: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    mfe_hidden_size: int = 128
    mfe_num_heads: int = 4
    mfe_mlp_dim: int = 256
    local_crop_size: int = 128
    local_mlp_hidden_size: int = 128
    crop_source_max_height: int | None = None
    roi_mask_mode: str = "area"
    region_embed_size: int | None = 128
    vision_frozen: bool = True
    head_hidden_size: int = 128
    head_dropout: float = 0.1
    head_roi_area: bool = True
    loss_weights: dict = field(
        default_factory=lambda: {"quality": 1.0, "importance": 1.0, "severity": 1.0, "type": 0.5, "rank": 0.5}
    )
