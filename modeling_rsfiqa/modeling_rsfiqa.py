"""RSFIQA model: Region-Aware Semantic Attention over any timm backbone.

Song et al., "Segmenting and Understanding: Region-aware Semantic Attention for Fine-grained Image
Quality Assessment with Large Language Models" (arXiv 2508.07818). The abstract fixes the pipeline:
non-overlapping SAM regions -> MLLM region descriptions -> Region-Aware Semantic Attention (RSA) that
aggregates fine-grained region representations into a GLOBAL attention map -> any CNN/ViT backbone.
The equations were not available to us; this is our reconstruction (DESIGN.md section 3):

1. backbone feature maps ``F_s`` (timm ``features_only``) for the stages in ``backbone_out_indices``;
2. soft region masks ``M_k`` = the one-hot region label map area-pooled to each stage's resolution;
3. region token ``r_k`` = LN(W_v [mask-pooled F] + W_g [area, centroid, spread] + semantic part), the
   semantic part being W_t(description embedding) + W_d(distortion levels) from the MLLM, or a learned
   "no description" embedding where a region has no annotation;
4. a small transformer over the region tokens of one image (regions attend to each other; padded
   regions masked) gives each region an importance ``a_k``;
5. the global attention map ``A = sum_k M_k * sigmoid(a_k)`` (each pixel takes its region's weight,
   regions do not overlap) re-weights every stage: ``F'_s = F_s * (1 + A_s)``;
6. the image descriptor is the A-weighted mean (and std) of ``F'`` and a shared MLP head maps it to a
   z-scored quality; the same head applied to each region's own pooled ``F'`` gives per-region scores,
   on the same scale as the image score: the explanation of where quality is lost.
7. optional (``config.semantic_head``, ours): the head also reads the RSA region tokens, the image's
   attention-mass-weighted mean of them and each region its own. Why: the head starts with a LayerNorm,
   which cancels any importance change shared by all regions (``F * (1 + a)`` is a rescaling), so through
   attention alone the MLLM's annotations act only on how regions are weighted AGAINST EACH OTHER; a
   one-region image scores the same whether the MLLM calls it "bad" or "excellent" (tested). With the
   tokens in the head, absolute distortion levels (Q-Align's strongest quality signal) reach the score.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import timm
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_rsfiqa import RSFIQAConfig
from .losses import quality_loss

__all__ = [
    "RSFIQAPreTrainedModel",
    "RSFIQAForQualityScoring",
    "RSFIQAOutput",
    "RegionAwareSemanticAttention",
    "fuse_conv_batchnorm",
]

_EPS = 1e-6


@dataclass
class RSFIQAOutput(ModelOutput):
    """Output of [`RSFIQAForQualityScoring`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*): quality loss on z-scores, when `labels` is given.
        score (`torch.FloatTensor` of shape `(batch,)`): predicted quality on the config's `score_range` scale.
        attention_map (`torch.FloatTensor` of shape `(batch, h, w)`): RSA global attention in [0, 1] at
            region-label resolution (`config.label_size`).
        region_scores (`torch.FloatTensor` of shape `(batch, K)`): predicted quality of each region (same scale
            as `score`); 0 where `region_mask` is False.
        region_importance (`torch.FloatTensor` of shape `(batch, K)`): sigmoid(a_k), each region's attention weight.
        region_mask (`torch.BoolTensor` of shape `(batch, K)`): which of the K region slots exist.
        logits (`torch.FloatTensor` of shape `(batch,)`): the z-scored prediction the loss is computed on.
    """

    loss: torch.FloatTensor | None = None
    score: torch.FloatTensor | None = None
    attention_map: torch.FloatTensor | None = None
    region_scores: torch.FloatTensor | None = None
    region_importance: torch.FloatTensor | None = None
    region_mask: torch.BoolTensor | None = None
    logits: torch.FloatTensor | None = None


def region_masks_from_labels(region_labels: torch.Tensor, num_regions: int) -> torch.Tensor:
    """One-hot ``(B, K, h, w)`` float masks from an integer label map ``(B, h, w)``; -1 marks ignored pixels."""
    if not region_labels.is_meta and (region_labels.min() < -1 or region_labels.max() >= num_regions):
        raise ValueError(
            f"region_labels must lie in [-1, {num_regions - 1}] (max_regions={num_regions}), "
            f"got [{int(region_labels.min())}, {int(region_labels.max())}]"
        )
    one_hot = F.one_hot(region_labels.long().clamp(min=0), num_regions).permute(0, 3, 1, 2).float()
    return one_hot * (region_labels >= 0).unsqueeze(1).float()


def masked_mean_std(features: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted mean and std of ``features (B, C, h, w)`` under ``weights (B, N, h, w)`` -> ``(B, N, C)`` each."""
    denom = weights.sum((-2, -1)).unsqueeze(-1).clamp(min=_EPS)
    mean = torch.einsum("bnhw,bchw->bnc", weights, features) / denom
    sq = torch.einsum("bnhw,bchw->bnc", weights, features * features) / denom
    std = (sq - mean * mean).clamp(min=_EPS).sqrt()
    return mean, std


def region_geometry(masks: torch.Tensor) -> torch.Tensor:
    """Per-region ``[area, cx, cy, sx, sy]`` (fractions of the image) from one-hot masks ``(B, K, h, w)``."""
    b, k, h, w = masks.shape
    ys = (torch.arange(h, device=masks.device, dtype=masks.dtype) + 0.5) / h
    xs = (torch.arange(w, device=masks.device, dtype=masks.dtype) + 0.5) / w
    area = masks.sum((-2, -1))
    denom = area.clamp(min=_EPS)
    my = masks.sum(-1)  # (B, K, h)
    mx = masks.sum(-2)  # (B, K, w)
    cy = (my * ys).sum(-1) / denom
    cx = (mx * xs).sum(-1) / denom
    sy = ((my * ys * ys).sum(-1) / denom - cy * cy).clamp(min=0).sqrt()
    sx = ((mx * xs * xs).sum(-1) / denom - cx * cx).clamp(min=0).sqrt()
    return torch.stack([area / (h * w), cx, cy, sx, sy], -1)


def _sequential_units(backbone: nn.Module) -> tuple[list[tuple[str, nn.Module]] | None, list[str]]:
    """Flatten a sequential timm feature extractor into (name, module) units + the names that emit features.

    Supports timm's EfficientNet/MobileNet family (``conv_stem``, ``bn1``, ``blocks.i``) and
    ``FeatureListNet``/``FeatureDictNet`` (ResNet, ConvNeXt, ...); returns ``(None, names)`` otherwise.
    """
    names = list(backbone.feature_info.module_name())
    if type(backbone).__name__ == "EfficientNetFeatures":
        units = [("conv_stem", backbone.conv_stem), ("bn1", backbone.bn1)]
        units += [(f"blocks.{i}", block) for i, block in enumerate(backbone.blocks)]
        return units, names
    if hasattr(backbone, "return_layers") and hasattr(backbone, "items"):
        return list(backbone.items()), list(backbone.return_layers)
    return None, names


def _tensor_stamp(tensors: list[torch.Tensor]) -> tuple | None:
    """Identity of tensors' storage and contents: changes on ``.to()``, ``load_state_dict`` and optimizer steps."""
    try:
        return tuple((t.data_ptr(), t._version) for t in tensors)
    except RuntimeError:  # inference tensors have no version counter: changes cannot be detected
        return None


@torch.no_grad()
def fuse_conv_batchnorm(
    module: nn.Module, example: torch.Tensor, rtol: float = 1e-4
) -> tuple[nn.Module, int]:
    """An inference copy of ``module`` with each eval-mode batch norm folded into the conv that feeds it.

    Pairs are found by running ``example`` once: a ``BatchNorm2d`` whose input is exactly the output tensor
    of a ``Conv2d`` is folded into it (``torch.nn.utils.fusion.fuse_conv_bn_eval``) and replaced by its own
    activation (timm's ``BatchNormAct2d``) or an identity. No tracing is needed, so dynamic "same" padding
    and feature-extractor wrappers work. The copy is checked against ``module`` on ``example``; if any
    output differs by more than ``rtol`` (relative L2), e.g. because a conv output had another consumer,
    ``(module, 0)`` is returned unchanged. Returns ``(copy, number of folded pairs)``.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    fused = copy.deepcopy(module).eval()
    produced: dict[int, tuple[torch.Tensor, nn.Module]] = {}  # keeps outputs alive so ids stay unique
    pairs: list[tuple[nn.Module, nn.Module]] = []

    def after_conv(conv, args, output):
        produced[id(output)] = (output, conv)

    def before_bn(bn, args):
        hit = produced.get(id(args[0]))
        if hit is not None and bn.running_mean is not None:  # batch norms with running statistics only
            pairs.append((hit[1], bn))

    hooks = [
        m.register_forward_hook(after_conv)
        if isinstance(m, nn.Conv2d)
        else m.register_forward_pre_hook(before_bn)
        for m in fused.modules()
        if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))
    ]
    try:
        fused(example)
    finally:
        for hook in hooks:
            hook.remove()
        produced.clear()
    owner = {child: (parent, name) for parent in fused.modules() for name, child in parent.named_children()}
    for conv, bn in pairs:
        parent, name = owner[conv]
        setattr(parent, name, fuse_conv_bn_eval(conv, bn))
        parent, name = owner[bn]
        tail = [m for m in (getattr(bn, "drop", None), getattr(bn, "act", None)) if m is not None]
        setattr(parent, name, nn.Sequential(*tail) if tail else nn.Identity())

    def flat(out):
        return (
            list(out.values())
            if isinstance(out, dict)
            else list(out)
            if isinstance(out, (list, tuple))
            else [out]
        )

    for ref, new in zip(flat(module(example)), flat(fused(example)), strict=True):
        if (ref - new).float().norm() > rtol * ref.float().norm() + 1e-6:
            return module, 0
    return fused, len(pairs)


class RegionAwareSemanticAttention(nn.Module):
    """Region tokens -> per-region importance logits (the "RSA" of RSFIQA, our reconstruction).

    Inputs are the mask-pooled visual features, the region geometry and (optionally) the MLLM's semantic
    description embedding and distortion-level vector; a transformer encoder lets regions attend to each
    other within an image (the same region can matter more or less depending on its context).
    """

    def __init__(self, config: RSFIQAConfig, visual_dim: int):
        super().__init__()
        d = config.rsa_hidden_size
        self.visual_proj = nn.Linear(visual_dim, d)
        self.geometry_proj = nn.Linear(5, d)
        self.use_descriptions = config.use_region_descriptions
        if self.use_descriptions:
            self.text_proj = nn.Linear(config.description_embed_dim, d)
            self.levels_proj = nn.Linear(len(config.distortion_dimensions), d)
            self.no_description = nn.Parameter(torch.zeros(d))
        self.norm = nn.LayerNorm(d)
        layer = nn.TransformerEncoderLayer(
            d_model=d,
            nhead=config.rsa_num_heads,
            dim_feedforward=2 * d,
            dropout=config.rsa_dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, config.rsa_num_layers, enable_nested_tensor=False)
        self.importance = nn.Linear(d, 1)

    def forward(
        self,
        visual: torch.Tensor,
        geometry: torch.Tensor,
        region_mask: torch.Tensor,
        text_embeds: torch.Tensor | None = None,
        distortion_levels: torch.Tensor | None = None,
        annotation_mask: torch.Tensor | None = None,
        return_tokens: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``visual (B,K,Dv)``, ``geometry (B,K,5)``, ``region_mask (B,K)`` -> importance logits ``(B,K)``
        (and, with ``return_tokens``, the encoded region tokens ``(B,K,d)``, zero for padded regions)."""
        tokens = self.visual_proj(visual) + self.geometry_proj(geometry)
        if self.use_descriptions:
            semantic = self.no_description.expand_as(tokens)
            if text_embeds is not None or distortion_levels is not None:
                described = torch.zeros_like(tokens)
                if text_embeds is not None:
                    described = described + self.text_proj(text_embeds.to(tokens.dtype))
                if distortion_levels is not None:
                    described = described + self.levels_proj(distortion_levels.to(tokens.dtype))
                if annotation_mask is None:
                    annotation_mask = region_mask
                semantic = torch.where(annotation_mask.unsqueeze(-1), described, semantic)
            tokens = tokens + semantic
        tokens = self.encoder(self.norm(tokens), src_key_padding_mask=~region_mask)
        logits = self.importance(tokens).squeeze(-1).masked_fill(~region_mask, float("-inf"))
        if return_tokens:
            return logits, tokens.masked_fill(~region_mask.unsqueeze(-1), 0.0)
        return logits


class RSFIQAPreTrainedModel(PreTrainedModel):
    config_class = RSFIQAConfig
    base_model_prefix = "rsfiqa"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = False
    _no_split_modules: list[str] = []
    # Trainer: the loss is a batch statistic (PLCC, rank) -- do not rescale it by token counts.
    accepts_loss_kwargs = False

    def _init_weights(self, module: nn.Module) -> None:
        # timm initialises its own backbone and SAM its own weights; only our layers are set here.
        if id(module) in getattr(self, "_foreign_module_ids", ()):
            return
        super()._init_weights(module)
        if isinstance(module, RegionAwareSemanticAttention) and module.use_descriptions:
            nn.init.normal_(module.no_description, std=self.config.initializer_range)


class RSFIQAForQualityScoring(RSFIQAPreTrainedModel):
    """RSFIQA: SAM/superpixel regions + (MLLM descriptions) + RSA + timm backbone -> quality score."""

    def __init__(self, config: RSFIQAConfig):
        super().__init__(config)
        # Built from config only; pretrained ImageNet weights are loaded AFTER construction
        # (`load_pretrained_backbone`), as from_pretrained builds models on the meta device.
        self.backbone = timm.create_model(
            config.backbone_name,
            pretrained=False,
            features_only=True,
            out_indices=tuple(config.backbone_out_indices),
            **(config.backbone_kwargs or {}),
        )
        self.stage_channels = list(self.backbone.feature_info.channels())
        self.backbone_head = None
        if getattr(config, "backbone_conv_head", False):
            classifier = timm.create_model(
                config.backbone_name, pretrained=False, **(config.backbone_kwargs or {})
            )
            conv_head = getattr(classifier, "conv_head", None)
            if not isinstance(conv_head, nn.Conv2d) or conv_head.in_channels != self.stage_channels[-1]:
                raise ValueError(
                    f"backbone_conv_head: {config.backbone_name} has no 1x1 conv_head fed by its last feature stage "
                    f"({self.stage_channels[-1]} channels; is the last of backbone_out_indices the final stage?)"
                )
            self.backbone_head = nn.Sequential(conv_head, classifier.bn2)
            self.stage_channels.append(conv_head.out_channels)
        self._units, self._feature_units = _sequential_units(self.backbone)
        pool_factor = 2 if config.region_pooling == "mean_std" else 1
        visual_dim = pool_factor * sum(self.stage_channels)
        self.rsa = RegionAwareSemanticAttention(config, visual_dim)
        head_dim = visual_dim + (config.rsa_hidden_size if getattr(config, "semantic_head", False) else 0)
        self.head = nn.Sequential(
            nn.LayerNorm(head_dim),
            nn.Linear(head_dim, config.head_hidden_size),
            nn.GELU(),
            nn.Dropout(config.head_dropout),
            nn.Linear(config.head_hidden_size, 1),
        )
        self.segmenter = None
        if config.partition_method == "sam":
            from transformers import SamModel

            self.segmenter = SamModel(config.sam_config)
            self.segmenter.requires_grad_(False)
        foreign = list(self.backbone.modules())
        if self.backbone_head is not None:
            foreign += list(self.backbone_head.modules())
        if self.segmenter is not None:
            foreign += list(self.segmenter.modules())
        self._foreign_module_ids = {id(m) for m in foreign}
        self.post_init()
        if config.backbone_freeze_prefix:
            for module in self._prefix_modules():
                module.requires_grad_(False)

    # ----------------------------------------------------------------------------------------------
    def load_pretrained_backbone(self, source: str | None = None) -> None:
        """Load ImageNet weights into the backbone after construction.

        ``source``: a local ``.safetensors``/``.pth`` file, ``"timm"`` (timm's own pretrained tag, needs the
        Hub), or None to use ``config.backbone_pretrained``. The file's mean/std should match the config's.
        """
        source = source or self.config.backbone_pretrained
        if not source:
            raise ValueError("No backbone weights given (argument or config.backbone_pretrained)")
        overlay = None if source == "timm" else {"file": source}
        donor = timm.create_model(
            self.config.backbone_name,
            pretrained=True,
            pretrained_cfg_overlay=overlay,
            features_only=True,
            out_indices=tuple(self.config.backbone_out_indices),
            **(self.config.backbone_kwargs or {}),
        )
        self.backbone.load_state_dict(donor.state_dict(), strict=True)
        if (
            self.backbone_head is not None
        ):  # conv_head + bn2 live in the classifier, not the feature extractor
            classifier = timm.create_model(
                self.config.backbone_name,
                pretrained=True,
                pretrained_cfg_overlay=overlay,
                **(self.config.backbone_kwargs or {}),
            )
            self.backbone_head[0].load_state_dict(classifier.conv_head.state_dict())
            self.backbone_head[1].load_state_dict(classifier.bn2.state_dict())

    def load_pretrained_segmenter(self, name_or_path: str, **kwargs) -> None:
        """Load SAM weights (e.g. ``facebook/sam-vit-base``) into the region segmenter after construction."""
        if self.segmenter is None:
            raise ValueError("This model partitions with superpixels; it has no SAM segmenter")
        from transformers import SamModel

        donor = SamModel.from_pretrained(name_or_path, **kwargs)
        self.segmenter.load_state_dict(donor.state_dict())

    def train(self, mode: bool = True) -> RSFIQAForQualityScoring:
        super().train(mode)
        if mode:  # weights are about to change: drop the inference copy (rebuilt on the next eval forward)
            self.__dict__.pop("_fused_backbone", None)
        if self.segmenter is not None:
            self.segmenter.eval()
        if mode and self.config.backbone_freeze_bn:  # small IQA batches: keep ImageNet BN statistics
            for m in self.backbone_modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        if mode and self.config.backbone_freeze_prefix:
            for module in self._prefix_modules():
                module.eval()
        return self

    def backbone_modules(self) -> list[nn.Module]:
        """Every module of the pretrained backbone (the conv_head stage included, when configured)."""
        modules = list(self.backbone.modules())
        return modules + (list(self.backbone_head.modules()) if self.backbone_head is not None else [])

    # -- frozen-prefix caching ---------------------------------------------------------------------
    def _prefix_modules(self) -> list[nn.Module]:
        if self._units is None:
            raise NotImplementedError(
                f"backbone_freeze_prefix needs a sequential timm feature extractor; {type(self.backbone).__name__} is not"
            )
        first = self._feature_units[0]
        return [m for name, m in self._units[: [n for n, _ in self._units].index(first) + 1]]

    @torch.no_grad()
    def encode_prefix(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Output of the backbone up to the first RSA stage: cache it and pass it back as ``prefix_features``."""
        x = pixel_values
        for module in self._prefix_modules():
            x = module(x)
        return x

    # -- inference fast path -----------------------------------------------------------------------
    def inference_backbone(self) -> nn.Module:
        """The module the backbone forward runs through in eval mode without gradients.

        With ``config.inference_fuse_batchnorm`` this is a cached copy of ``self.backbone`` with batch norms
        folded into their convolutions (:func:`fuse_conv_batchnorm`); it is rebuilt whenever a backbone
        tensor is modified in place or moved (optimizer steps, ``load_state_dict``, ``.to()``; checked with
        each tensor's storage pointer and version counter, ~0.1 ms per call) and dropped by ``train()``. After
        swapping backbone submodules or parameter objects by hand, call ``train()`` before evaluating. It falls
        back to ``self.backbone`` while training, with gradients on, for non-float32 weights, or when
        forward hooks are registered on the backbone (they would not fire in a copy).
        """
        backbone = self.backbone
        if (
            not getattr(self.config, "inference_fuse_batchnorm", False)
            or self.training
            or torch.is_grad_enabled()
        ):
            return backbone
        cached = self.__dict__.get("_fused_backbone")  # (modules, tensors, stamp, fused)
        if cached is None or cached[0][0] is not backbone or _tensor_stamp(cached[1]) != cached[2]:
            cached = self.__dict__["_fused_backbone"] = self._fold_backbone()
        modules, _, _, fused = cached
        if any(m._forward_hooks or m._forward_pre_hooks for m in modules):
            return backbone
        return fused

    def _fold_backbone(self) -> tuple[list[nn.Module], list[torch.Tensor], tuple | None, nn.Module]:
        """(backbone modules, tensors, their stamp, folded copy or the backbone itself): the inference cache,
        kept in ``__dict__`` outside the module tree (not in state_dict(), parameters() or named_modules())."""
        backbone = self.backbone
        modules = list(backbone.modules())
        tensors = list(backbone.parameters()) + list(backbone.buffers())
        stamp = _tensor_stamp(tensors)
        fused = backbone
        usable = stamp is not None and all(t.dtype == torch.float32 for t in tensors if t.is_floating_point())
        if usable and any(isinstance(m, nn.BatchNorm2d) for m in modules):
            in_chans = int((self.config.backbone_kwargs or {}).get("in_chans", 3))
            probe = torch.randn(1, in_chans, 64, 64, generator=torch.Generator().manual_seed(0))
            try:
                with torch.inference_mode(False), torch.no_grad():
                    fused, _ = fuse_conv_batchnorm(backbone, probe.to(tensors[0].device))
            except Exception:  # noqa: BLE001 - a backbone that rejects the probe keeps its own path
                fused = backbone
        return modules, tensors, stamp, fused

    def _inference_chunk(self, pixel_values: torch.Tensor) -> int:
        """How many images the backbone runs at once: all of them unless this is CPU inference (eval mode, no
        gradients) and ``config.inference_batch_pixels`` splits the batch (never below one image)."""
        b = pixel_values.shape[0]
        budget = getattr(self.config, "inference_batch_pixels", 0)
        if not budget or self.training or torch.is_grad_enabled() or pixel_values.device.type != "cpu":
            return b
        return max(1, min(b, budget // (pixel_values.shape[-2] * pixel_values.shape[-1])))

    def _backbone_features(
        self, pixel_values: torch.Tensor | None, prefix_features: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        # oneDNN runs (depthwise) convolutions much faster on channels-last CPU tensors (MobileNetV2 at
        # 500 px: 57 vs 78 ms per image); the outputs are the same up to float round-off
        if pixel_values is not None and pixel_values.device.type == "cpu" and pixel_values.ndim == 4:
            pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
        if prefix_features is not None and prefix_features.device.type == "cpu":
            prefix_features = prefix_features.contiguous(memory_format=torch.channels_last)
        if prefix_features is not None:
            n_prefix = len(self._prefix_modules())
            x, feats = prefix_features, [prefix_features]
            for name, module in self._units[n_prefix:]:
                x = module(x)
                if name in self._feature_units:
                    feats.append(x)
        else:
            backbone = self.inference_backbone()
            chunk = self._inference_chunk(pixel_values)
            if chunk < pixel_values.shape[0]:  # image by image (see config.inference_batch_pixels)
                parts = [backbone(x) for x in pixel_values.split(chunk)]
                feats = [torch.cat(stage) for stage in zip(*parts)]
            else:
                feats = backbone(pixel_values)
        if self.backbone_head is not None:
            feats = [*feats, self.backbone_head(feats[-1])]
        out = []
        for f, c in zip(feats, self.stage_channels):
            if f.shape[1] != c and f.shape[-1] == c:  # NHWC backbones (e.g. Swin) -> NCHW
                f = f.permute(0, 3, 1, 2)
            out.append(f.contiguous())
        return out

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        region_labels: torch.Tensor | None = None,
        region_text_embeds: torch.Tensor | None = None,
        region_distortion_levels: torch.Tensor | None = None,
        region_annotation_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        prefix_features: torch.Tensor | None = None,
        return_dict: bool | None = None,
    ) -> RSFIQAOutput | tuple:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch, 3, H, W)`): normalised images.
            region_labels (`torch.LongTensor` of shape `(batch, h, w)`, *optional*): region label maps (values
                0..K-1, -1 = ignore) at any resolution, usually `config.label_size`; default: one region.
            region_text_embeds (`torch.FloatTensor` of shape `(batch, K, description_embed_dim)`, *optional*):
                embeddings of the MLLM's region descriptions.
            region_distortion_levels (`torch.FloatTensor` of shape `(batch, K, n_dims)`, *optional*): the MLLM's
                expected distortion levels rescaled to [0, 1] (0 = bad, 1 = excellent).
            region_annotation_mask (`torch.BoolTensor` of shape `(batch, K)`, *optional*): which regions have
                annotations; the others use the learned "no description" embedding.
            labels (`torch.FloatTensor` of shape `(batch,)`, *optional*): human scores (MOS) on `score_range`.
            prefix_features (`torch.FloatTensor`, *optional*): cached `encode_prefix(pixel_values)`; replaces
                `pixel_values` (used to fine-tune the later stages cheaply when `backbone_freeze_prefix`).
        """
        config = self.config
        return_dict = return_dict if return_dict is not None else config.return_dict
        reference = prefix_features if prefix_features is not None else pixel_values
        if reference is None:
            raise ValueError("Pass pixel_values (or cached prefix_features)")
        b, device = reference.shape[0], reference.device
        k = config.max_regions
        if region_labels is None:
            h, w = config.label_size
            region_labels = torch.zeros(b, h, w, dtype=torch.long, device=device)
        if region_labels.ndim != 3 or region_labels.shape[0] != b:
            raise ValueError(
                f"region_labels must be (batch, h, w) with batch={b}, got {tuple(region_labels.shape)}"
            )

        features = self._backbone_features(pixel_values, prefix_features)
        onehot = region_masks_from_labels(region_labels.to(device), k)  # (B, K, h, w)
        region_mask = onehot.sum((-2, -1)) > 0
        dtype = features[0].dtype
        stage_masks = [F.adaptive_avg_pool2d(onehot, f.shape[-2:]).to(dtype) for f in features]

        # 1) region tokens from mask-pooled backbone features + geometry (+ MLLM semantics) -> importance
        visual = torch.cat([self._pool(f, m) for f, m in zip(features, stage_masks)], -1)
        semantic_head = getattr(config, "semantic_head", False)
        importance_logits = self.rsa(
            visual,
            region_geometry(onehot).to(dtype),
            region_mask,
            region_text_embeds,
            region_distortion_levels,
            region_annotation_mask,
            return_tokens=semantic_head,
        )
        if semantic_head:
            importance_logits, region_tokens = importance_logits
        importance = torch.sigmoid(importance_logits)  # 0 for padded regions

        # 2) global attention map painted through the (non-overlapping) masks; re-weight every stage
        attended, image_desc, region_desc = [], [], []
        for f, m in zip(features, stage_masks):
            attn = torch.einsum("bk,bkhw->bhw", importance, m).unsqueeze(1)
            fa = f * (1.0 + attn)
            attended.append(fa)
            image_desc.append(self._pool(fa, attn))
            region_desc.append(self._pool(fa, m))
        image_desc = torch.cat(image_desc, -1).squeeze(1)  # (B, Dv)
        region_desc = torch.cat(region_desc, -1)  # (B, K, Dv)
        if semantic_head:  # (7) region tokens into the head: attention-mass-weighted for the image
            mass = importance * onehot.sum((-2, -1)).to(dtype)  # (B, K)
            pooled = torch.einsum("bk,bkd->bd", mass, region_tokens) / mass.sum(-1, keepdim=True).clamp(
                min=_EPS
            )
            image_desc = torch.cat([image_desc, pooled], -1)
            region_desc = torch.cat([region_desc, region_tokens], -1)

        # 3) one head for the image and for each region: scores on the same scale
        logits = self.head(image_desc).squeeze(-1)
        region_logits = self.head(region_desc).squeeze(-1)
        score = logits * config.label_std + config.label_mean
        region_scores = (region_logits * config.label_std + config.label_mean) * region_mask
        attention_map = torch.einsum("bk,bkhw->bhw", importance, onehot.to(dtype))

        loss = None
        if labels is not None:
            target = (labels.to(logits.dtype).view(-1) - config.label_mean) / config.label_std
            loss = quality_loss(logits, target, config.loss_weights)

        output = RSFIQAOutput(
            loss=loss,
            score=score,
            attention_map=attention_map,
            region_scores=region_scores,
            region_importance=importance,
            region_mask=region_mask,
            logits=logits,
        )
        return output if return_dict else output.to_tuple()

    def _pool(self, features: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        mean, std = masked_mean_std(features, weights)
        return torch.cat([mean, std], -1) if self.config.region_pooling == "mean_std" else mean
