"""SEAGULL: region-of-interest quality with a Mask-based Feature Extractor (Chen et al., arXiv 2411.10161).

Forward pass of :class:`SeagullForConditionalGeneration` (reference: ``seagull/model/seagull_arch.py``,
``seagull/model/layer.py``), for images ``pixel_values (N_img, 3, S, S)`` and ROIs:

1. a FROZEN multi-level vision tower (timm ``features_only``; CLIP ConvNeXt-L at 512 in the paper) gives
   feature maps ``F_l (N_img, C_l, S/s_l, S/s_l)`` for each level ``l`` (res2..res5); each image is encoded
   once, whatever its number of ROIs;
2. the projector (``mlp2x_gelu``: Linear -> GELU -> Linear) turns level ``projector_feature_level`` (res4,
   32x32 = 1024 tokens) into image tokens that replace the ``<image>`` placeholders of the prompt;
3. the Mask-based Feature Extractor (:class:`SeagullMaskFeatureExtractor`) gives two tokens per ROI:
   * GLOBAL: per level, the ROI's mask-pooled feature -> Linear (``q_l``, one query per ROI) and one key per
     CHANNEL of the level (its flattened spatial map -> Linear); ONE block shared by the levels runs
     self-attention across the image's ROIs, cross-attention from the ROIs to the channel keys and an MLP.
     The queries and the block outputs are summed over levels, projected and fused into the global token;
   * LOCAL: the ROI's bounding-box crop -> a tiny CNN (1x1 convs, GELU, 4x4 average pools) -> an MLP;
4. ``<global><local>`` placeholder pairs are replaced by these embeddings, and the sequence runs through any
   ``AutoModelForCausalLM`` (``text_config``); ``generate()`` works as for any causal LM.

Numbers: quality and importance are read from the level-word probabilities at the answer position
(``level_scoring``, as Q-Align) by :meth:`SeagullForConditionalGeneration.score_regions`.

:class:`SeagullForRegionQuality` keeps steps 1 and 3 and replaces the LLM by heads for quality, importance and
per-type severity (the small ROI model).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_seagull import SeagullConfig, SeagullRegionConfig
from .level_scoring import expected_score, level_probs

__all__ = [
    "SeagullVisionTower",
    "SeagullAttention",
    "SeagullRegionBlock",
    "SeagullLocalEncoder",
    "SeagullMaskFeatureExtractor",
    "SeagullMultiModalProjector",
    "SeagullPreTrainedModel",
    "SeagullForConditionalGeneration",
    "SeagullForRegionQuality",
    "SeagullCausalLMOutput",
    "SeagullRegionQualityOutput",
    "create_seagull_model",
]


# ----------------------------------------------------------------------------------------------------------
# outputs
# ----------------------------------------------------------------------------------------------------------
@dataclass
class SeagullCausalLMOutput(ModelOutput):
    """Output of :class:`SeagullForConditionalGeneration`.

    Args:
        loss: next-token cross-entropy over the supervised (``labels != -100``) positions.
        logits: ``(B, T, vocab)`` (or the kept positions with ``logits_to_keep``).
        cache: the LLM's key/value cache.
        hidden_states / attentions: the LLM's, when asked for.
        global_tokens / local_tokens: ``(N_roi, D)`` the MFE's ROI embeddings (when ROIs were given).
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    cache: Any = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    global_tokens: torch.Tensor | None = None
    local_tokens: torch.Tensor | None = None


@dataclass
class SeagullRegionQualityOutput(ModelOutput):
    """Output of :class:`SeagullForRegionQuality`, one row per ROI.

    Args:
        loss: the weighted loss when ``labels`` are given (``SeagullForRegionQuality._loss``).
        quality: ``(N_roi,)`` in [0, 1], higher is better.
        importance: ``(N_roi,)`` in [0, 1], higher = matters more to the whole image.
        severity: ``(N_roi, n_types)`` in [0, 1] per distortion type (``config.distortion_types``); 0 = absent.
        global_tokens / local_tokens: ``(N_roi, D)`` the MFE's ROI embeddings.
    """

    loss: torch.Tensor | None = None
    quality: torch.Tensor | None = None
    importance: torch.Tensor | None = None
    severity: torch.Tensor | None = None
    global_tokens: torch.Tensor | None = None
    local_tokens: torch.Tensor | None = None


# ----------------------------------------------------------------------------------------------------------
# building blocks
# ----------------------------------------------------------------------------------------------------------
class SeagullVisionTower(nn.Module):
    """Multi-level timm feature extractor (``features_only``); weights are loaded after construction."""

    def __init__(self, config: SeagullConfig):
        super().__init__()
        self.trunk = timm.create_model(
            config.vision_backbone,
            pretrained=False,
            features_only=True,
            out_indices=tuple(config.vision_out_indices),
            **(config.vision_backbone_kwargs or {}),
        )
        channels = list(self.trunk.feature_info.channels())
        strides = list(self.trunk.feature_info.reduction())
        if channels != list(config.vision_feature_channels) or strides != list(config.vision_feature_strides):
            raise ValueError(
                f"{config.vision_backbone} levels {config.vision_out_indices} have channels {channels} and "
                f"strides {strides}; the config says {config.vision_feature_channels} and "
                f"{config.vision_feature_strides}"
            )

    def forward(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        return list(self.trunk(pixel_values))


class SeagullAttention(nn.Module):
    """Multi-head attention with a down-projected inner size (SAM's ``Attention``, as the reference uses)."""

    def __init__(self, embed_dim: int, num_heads: int, downsample_rate: int = 1):
        super().__init__()
        self.num_heads = num_heads
        inner = embed_dim // downsample_rate
        self.q_proj = nn.Linear(embed_dim, inner)
        self.k_proj = nn.Linear(embed_dim, inner)
        self.v_proj = nn.Linear(embed_dim, inner)
        self.out_proj = nn.Linear(inner, embed_dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        kv_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``queries (B, Nq, E)``, ``keys/values (B', Nk, E)``; ``kv_index (B,)`` picks row ``kv_index[b]`` of
        the projected keys/values for query row ``b`` (keys shared by several query rows are projected once).
        ``attn_mask`` (bool, True = attend) broadcasts to ``(B, heads, Nq, Nk)``."""
        q, k, v = self.q_proj(queries), self.k_proj(keys), self.v_proj(values)
        if kv_index is not None:
            k, v = k[kv_index], v[kv_index]
        out = F.scaled_dot_product_attention(
            self._heads(q), self._heads(k), self._heads(v), attn_mask=attn_mask
        )
        b, h, n, d = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * d))


class SeagullRegionBlock(nn.Module):
    """The MFE block shared by all levels: self-attention across an image's ROIs, cross-attention from the
    ROIs to the channel keys, MLP (ReLU); post-norm residuals as the reference ``CrossAttention``."""

    def __init__(self, config: SeagullConfig):
        super().__init__()
        e = config.mfe_hidden_size
        self.self_attn = SeagullAttention(e, config.mfe_num_heads)
        self.norm1 = nn.LayerNorm(e)
        self.cross_attn = SeagullAttention(e, config.mfe_num_heads, config.mfe_attention_downsample_rate)
        self.norm2 = nn.LayerNorm(e)
        self.fc1 = nn.Linear(e, config.mfe_mlp_dim)
        self.fc2 = nn.Linear(config.mfe_mlp_dim, e)

    def forward(
        self, queries: torch.Tensor, keys: torch.Tensor, roi_image_index: torch.Tensor
    ) -> torch.Tensor:
        """``queries (N_roi, E)``, ``keys (N_img, C, E)``, ``roi_image_index (N_roi,)`` -> ``(N_roi, E)``."""
        same_image = roi_image_index[:, None] == roi_image_index[None, :]  # ROIs attend within their image
        q = queries[None]
        q = self.norm1(q + self.self_attn(q, q, q, attn_mask=same_image))[0]
        q = self.norm2(q + self.cross_attn(q[:, None], keys, keys, kv_index=roi_image_index)[:, 0])
        return q + self.fc2(F.relu(self.fc1(q)))


class SeagullLocalEncoder(nn.Module):
    """Local token: the ROI's bounding-box crop -> 1x1 conv CNN with two average pools -> MLP.

    The reference passes the CNN's flattened map through a self-attention over ONE token before the MLP;
    softmax over a single key is 1, so that layer reduces exactly to ``out_proj(v_proj(x))``, which is what
    runs here (``value_proj``, ``out_proj``).
    """

    def __init__(self, config: SeagullConfig):
        super().__init__()
        p, c = config.local_pool, config.local_channels
        g = config.local_grid_size**2
        self.cnn = nn.Sequential(
            nn.Conv2d(3, c, 1),
            nn.GELU(),
            nn.AvgPool2d(p, p),
            nn.Conv2d(c, 1, 1),
            nn.GELU(),
            nn.AvgPool2d(p, p),
        )
        self.value_proj = nn.Linear(g, g)
        self.out_proj = nn.Linear(g, g)
        hidden, d = config.local_mlp_hidden_size, config.token_size
        self.mlp = nn.ModuleList([nn.Linear(g, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, d)])

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        x = self.cnn(crops).flatten(1)  # (N_roi, G*G)
        x = self.out_proj(self.value_proj(x))
        for i, layer in enumerate(self.mlp):
            x = layer(x) if i == len(self.mlp) - 1 else F.relu(layer(x))
        return x


class SeagullMaskFeatureExtractor(nn.Module):
    """Mask-based Feature Extractor: ``(features, ROI masks, ROI crops) -> (global, local)`` tokens per ROI."""

    def __init__(self, config: SeagullConfig):
        super().__init__()
        e, d = config.mfe_hidden_size, config.token_size
        self.roi_mask_mode = getattr(config, "roi_mask_mode", "any")
        self.level_projections = nn.ModuleList(nn.Linear(c, e) for c in config.vision_feature_channels)
        self.channel_key_projections = nn.ModuleList(nn.Linear(s * s, e) for s in config.feature_sizes)
        self.block = SeagullRegionBlock(config)
        self.pooled_proj = nn.Linear(e, d)
        self.attended_proj = nn.Linear(e, d)
        self.global_proj = nn.Linear(2 * d, d)
        self.local_encoder = SeagullLocalEncoder(config)

    @staticmethod
    def mask_pool(features: torch.Tensor, masks: torch.Tensor, roi_image_index: torch.Tensor) -> torch.Tensor:
        """Mean of ``features (N_img, C, h, w)`` inside ``masks (N_roi, h, w)`` -> ``(N_roi, C)``."""
        weights = masks.flatten(1)
        weights = (weights / weights.sum(1).clamp(min=1e-8)[:, None]).to(features.dtype)  # (N_roi, h*w)
        flat = features.flatten(2)  # (N_img, C, h*w)
        if flat.shape[0] == 1:  # one image (the pipeline's case): one matmul, no per-ROI copy of the map
            return weights @ flat[0].transpose(0, 1)
        pooled = weights.new_zeros(weights.shape[0], flat.shape[1])
        for i in torch.unique(roi_image_index).tolist():  # per image: its ROIs in one matmul
            rows = torch.nonzero(roi_image_index == i)[:, 0]
            pooled = pooled.index_copy(0, rows, weights[rows] @ flat[i].transpose(0, 1))
        return pooled

    def forward(
        self,
        features: list[torch.Tensor],
        roi_masks: torch.Tensor,
        roi_pixel_values: torch.Tensor,
        roi_image_index: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``features``: one ``(N_img, C_l, h_l, w_l)`` map per level; ``roi_masks (N_roi, h_0, w_0)`` at the
        finest level (``config.roi_mask_mode``: any-coverage, max-pooled to coarser levels; or area
        fractions, average-pooled); ``roi_pixel_values (N_roi, 3, c, c)``;
        ``roi_image_index (N_roi,)``. Returns ``global, local`` of shape ``(N_roi, D)`` each."""
        pooled_sum = attended_sum = 0
        area = self.roi_mask_mode == "area"
        masks = roi_masks.float().clamp(0, 1) if area else (roi_masks > 0).float()
        pool = F.adaptive_avg_pool2d if area else F.adaptive_max_pool2d
        for level, feat in enumerate(features):
            h, w = feat.shape[-2:]
            level_masks = masks if masks.shape[-2:] == (h, w) else pool(masks[:, None], (h, w))[:, 0]
            queries = self.level_projections[level](self.mask_pool(feat, level_masks, roi_image_index))
            keys = self.channel_key_projections[level](feat.flatten(2))  # one key per channel: (N_img, C, E)
            pooled_sum = pooled_sum + queries
            attended_sum = attended_sum + self.block(queries, keys.to(queries.dtype), roi_image_index)
        fused = torch.cat([self.attended_proj(attended_sum), self.pooled_proj(pooled_sum)], dim=-1)
        return self.global_proj(fused), self.local_encoder(roi_pixel_values)


class SeagullMultiModalProjector(nn.Module):
    """``mlp2x_gelu`` (Linear -> GELU -> Linear) or ``linear`` from vision channels to the LLM size."""

    def __init__(self, config: SeagullConfig):
        super().__init__()
        c, d = config.vision_feature_channels[config.projector_feature_level], config.token_size
        self.linear_1 = nn.Linear(c, d)
        self.act = nn.GELU() if config.projector_type == "mlp2x_gelu" else nn.Identity()
        self.linear_2 = nn.Linear(d, d) if config.projector_type == "mlp2x_gelu" else nn.Identity()

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        """``(N_img, C, h, w) -> (N_img, h*w, D)`` (row-major tokens, as the reference's reshape)."""
        return self.linear_2(self.act(self.linear_1(feature_map.flatten(2).transpose(1, 2))))


# ----------------------------------------------------------------------------------------------------------
# pretrained base
# ----------------------------------------------------------------------------------------------------------
class SeagullPreTrainedModel(PreTrainedModel):
    config_class = SeagullConfig
    base_model_prefix = "seagull"
    main_input_name = "input_ids"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _no_split_modules: list[str] = []
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True

    def _init_weights(self, module: nn.Module) -> None:
        # timm initialises its vision tower and the LLM its own weights; only our layers are set here
        if id(module) in getattr(self, "_foreign_module_ids", ()):
            return
        if id(module) in getattr(self, "_lora_b_ids", ()):  # a LoRA B missing from a checkpoint: a no-op
            nn.init.zeros_(module.weight)
            return
        super()._init_weights(module)

    def _freeze_vision_tower(self) -> None:
        self.vision_tower.requires_grad_(False)
        self.vision_tower.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if getattr(self, "_vision_frozen", False):
            self.vision_tower.eval()  # frozen: batch-norm statistics stay put
        return self

    def load_pretrained_vision_tower(self, source: str | None = None) -> None:
        """Load the vision tower's weights after construction (``from_pretrained`` builds on meta).

        ``source``: a ``.safetensors`` / ``.pth`` / ``.bin`` file holding the timm model's own state dict
        (e.g. the ``visual.trunk.*`` part of an open_clip ConvNeXt converted with
        ``examples/convert_seagull_checkpoint.py``), or ``"timm"`` (timm's pretrained tag, needs the Hub).
        """
        source = source or self.config.vision_pretrained
        if not source:
            raise ValueError("no vision tower weights given (source=None and config.vision_pretrained unset)")
        overlay = None if source == "timm" else {"file": source}
        donor = timm.create_model(
            self.config.vision_backbone,
            pretrained=True,
            pretrained_cfg_overlay=overlay,
            features_only=True,
            out_indices=tuple(self.config.vision_out_indices),
            **(self.config.vision_backbone_kwargs or {}),
        )
        self.vision_tower.trunk.load_state_dict(donor.state_dict(), strict=True)

    def encode_images(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """The vision tower's multi-level features (no gradient when the tower is frozen)."""
        frozen = getattr(self, "_vision_frozen", False)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
            dtype = next(self.vision_tower.parameters()).dtype
            return self.vision_tower(pixel_values.to(dtype))


def _check_roi_inputs(
    roi_masks: torch.Tensor, roi_pixel_values: torch.Tensor, roi_image_index: torch.Tensor, n_images: int
) -> None:
    n = roi_masks.shape[0]
    if roi_pixel_values.shape[0] != n or roi_image_index.shape[0] != n:
        raise ValueError(
            f"roi_masks, roi_pixel_values and roi_image_index need one row per ROI, got {roi_masks.shape[0]}, "
            f"{roi_pixel_values.shape[0]} and {roi_image_index.shape[0]}"
        )
    if n and (int(roi_image_index.min()) < 0 or int(roi_image_index.max()) >= n_images):
        raise ValueError(f"roi_image_index must lie in [0, {n_images}), got {roi_image_index.tolist()}")


# ----------------------------------------------------------------------------------------------------------
# the paper's model
# ----------------------------------------------------------------------------------------------------------
LORA_ADAPTER = "seagull"
#: inputs that exist once per image / ROI (not per sequence): not expanded for beam search / sampling
_PER_IMAGE_OR_ROI = ("pixel_values", "roi_masks", "roi_pixel_values", "roi_image_index")
_MULTIMODAL = _PER_IMAGE_OR_ROI + ("sequence_image_index", "sequence_roi_index")


class SeagullForConditionalGeneration(SeagullPreTrainedModel, GenerationMixin):
    """SEAGULL: frozen vision tower + projector + Mask-based Feature Extractor + any causal LLM."""

    _tied_weights_keys: dict[str, str] = {}

    def __init__(self, config: SeagullConfig):
        super().__init__(config)
        if config.text_config is None:
            raise ValueError("SeagullForConditionalGeneration needs config.text_config (the LLM)")
        if (
            config.region_embed_size is not None
            and config.region_embed_size != config.text_config.hidden_size
        ):
            raise ValueError("region_embed_size must be None or the LLM's hidden size")
        self.vision_tower = SeagullVisionTower(config)
        self.multi_modal_projector = SeagullMultiModalProjector(config)
        self.mask_extractor = SeagullMaskFeatureExtractor(config)
        self.language_model = AutoModelForCausalLM.from_config(config.text_config)
        self._foreign_module_ids = {id(m) for m in self.vision_tower.modules()} | {
            id(m) for m in self.language_model.modules()
        }
        self._lora_b_ids: set[int] = set()
        self._vision_frozen = True
        self.post_init()
        self._freeze_vision_tower()
        if config.lora_r > 0:  # after post_init (v5 re-initialises modules not flagged as initialised)
            self.add_lora()

    # -- LoRA ----------------------------------------------------------------------------------------------
    def lora_target_regex(self) -> str:
        """Every linear layer of the LLM but ``lm_head`` (the reference's ``find_all_linear_names`` without the
        multimodal modules), as one regex over module names."""
        head = self.language_model.get_output_embeddings()
        leaves = sorted(
            {
                name.rsplit(".", 1)[-1]
                for name, m in self.language_model.named_modules()
                if isinstance(m, nn.Linear) and m is not head
            }
        )
        if not leaves:
            raise ValueError("the LLM has no linear layers to adapt")
        return rf"language_model\..*\.({'|'.join(map(re.escape, leaves))})"

    def add_lora(self, train_mfe: bool = True, train_projector: bool = True) -> None:
        """Inject peft LoRA (``config.lora_r/alpha/dropout``) into the LLM and freeze its base weights; the MFE
        and the projector stay trainable (as in the reference's instruction tuning), the vision tower frozen."""
        from peft import LoraConfig, inject_adapter_in_model

        if self.config.lora_r <= 0:
            raise ValueError("set config.lora_r > 0 to add LoRA")
        self.config.lora_target = self.config.lora_target or self.lora_target_regex()
        lora = LoraConfig(
            r=self.config.lora_r,
            lora_alpha=self.config.lora_alpha,
            lora_dropout=self.config.lora_dropout,
            target_modules=self.config.lora_target,
            bias="none",
        )
        inject_adapter_in_model(lora, self, adapter_name=LORA_ADAPTER)
        for name, p in self.named_parameters():
            p.requires_grad_("lora_" in name)
        self.mask_extractor.requires_grad_(train_mfe)
        self.multi_modal_projector.requires_grad_(train_projector)
        with torch.no_grad():  # B = 0: the adapter starts as an exact no-op
            for module in self.modules():
                lora_b = getattr(module, "lora_B", None)
                if (
                    isinstance(lora_b, nn.ModuleDict)
                    and LORA_ADAPTER in lora_b
                    and not lora_b[LORA_ADAPTER].weight.is_meta
                ):
                    lora_b[LORA_ADAPTER].weight.zero_()
                    self._lora_b_ids.add(id(lora_b[LORA_ADAPTER]))

    def lora_parameters(self) -> dict[str, nn.Parameter]:
        return {n: p for n, p in self.named_parameters() if "lora_" in n}

    # -- embeddings plumbing (resize_token_embeddings, tying, generate) ------------------------------------
    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_output_embeddings(value)

    def get_decoder(self) -> nn.Module:
        return self.language_model.get_decoder()

    # -- multimodal embedding ----------------------------------------------------------------------------
    def _token_id(self, name: str) -> int:
        value = getattr(self.config, f"{name}_token_id")
        if value is None:
            raise ValueError(f"config.{name}_token_id is not set (use SeagullProcessor.prepare_model)")
        return int(value)

    def embed_inputs(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        roi_masks: torch.Tensor | None = None,
        roi_pixel_values: torch.Tensor | None = None,
        roi_image_index: torch.Tensor | None = None,
        sequence_image_index: torch.Tensor | None = None,
        sequence_roi_index: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Token embeddings with the image tokens and the ``<global><local>`` pairs spliced in.

        Returns ``(inputs_embeds (B, T, D), global_tokens, local_tokens)`` (the latter ``(N_roi, D)`` or None).
        """
        embeds = self.get_input_embeddings()(input_ids)
        if pixel_values is None:
            return embeds, None, None
        b = input_ids.shape[0]
        if sequence_image_index is None:
            if pixel_values.shape[0] != b:
                raise ValueError("sequence_image_index is needed when sequences and images differ in number")
            sequence_image_index = torch.arange(b, device=input_ids.device)
        features = self.encode_images(pixel_values)
        image_mask = input_ids == self._token_id("image")
        if image_mask.any():
            counts = image_mask.sum(1)
            n_tok = self.config.num_image_tokens
            if bool(((counts != 0) & (counts != n_tok)).any()):
                raise ValueError(f"each sequence needs 0 or {n_tok} image tokens, got {counts.tolist()}")
            image_tokens = self.multi_modal_projector(features[self.config.projector_feature_level])
            rows = counts > 0
            source = image_tokens[sequence_image_index[rows]].to(embeds.dtype)
            embeds = embeds.masked_scatter(image_mask[..., None], source.reshape(-1, embeds.shape[-1]))
        global_tokens = local_tokens = None
        global_mask = input_ids == self._token_id("global")
        local_mask = input_ids == self._token_id("local")
        if roi_masks is not None and roi_masks.shape[0] > 0:
            _check_roi_inputs(roi_masks, roi_pixel_values, roi_image_index, pixel_values.shape[0])
            global_tokens, local_tokens = self.mask_extractor(
                features, roi_masks, roi_pixel_values, roi_image_index
            )
        if global_mask.any() or local_mask.any():
            if global_tokens is None or sequence_roi_index is None:
                raise ValueError(
                    "the prompt holds <global>/<local> tokens but no ROIs (roi_masks, sequence_roi_index)"
                )
            for mask, tokens, name in (
                (global_mask, global_tokens, "global"),
                (local_mask, local_tokens, "local"),
            ):
                per_row = mask.sum(1)
                index = sequence_roi_index.to(input_ids.device)
                slots = torch.arange(index.shape[1], device=index.device)[None] < per_row[:, None]
                if bool((per_row > index.shape[1]).any()) or bool((index[slots] < 0).any()):
                    raise ValueError(f"more <{name}> tokens than ROIs in sequence_roi_index")
                embeds = embeds.masked_scatter(mask[..., None], tokens[index[slots]].to(embeds.dtype))
        return embeds, global_tokens, local_tokens

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        roi_masks: torch.Tensor | None = None,
        roi_pixel_values: torch.Tensor | None = None,
        roi_image_index: torch.Tensor | None = None,
        sequence_image_index: torch.Tensor | None = None,
        sequence_roi_index: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Any = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        past_key_values: Any = None,
        **kwargs: Any,
    ) -> SeagullCausalLMOutput:
        r"""Args (beyond a causal LM's): the image/ROI tensors of :class:`SeagullProcessor`:
        ``pixel_values (N_img, 3, S, S)``, ``roi_masks (N_roi, h0, w0)``, ``roi_pixel_values (N_roi, 3, c, c)``,
        ``roi_image_index (N_roi,)``, ``sequence_image_index (B,)`` and ``sequence_roi_index (B, P)``."""
        cache = cache if cache is not None else past_key_values
        global_tokens = local_tokens = None
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("pass input_ids or inputs_embeds")
            inputs_embeds, global_tokens, local_tokens = self.embed_inputs(
                input_ids,
                pixel_values,
                roi_masks,
                roi_pixel_values,
                roi_image_index,
                sequence_image_index,
                sequence_roi_index,
            )
        lm_kwargs = dict(kwargs)
        if cache is not None:
            lm_kwargs["cache"] = cache
        out = self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            labels=labels,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            **lm_kwargs,
        )
        return SeagullCausalLMOutput(
            loss=out.loss,
            logits=out.logits,
            cache=getattr(out, "cache", None)
            if hasattr(out, "cache")
            else getattr(out, "past_key_values", None),
            hidden_states=out.hidden_states,
            attentions=out.attentions,
            global_tokens=global_tokens,
            local_tokens=local_tokens,
        )

    # -- generation ----------------------------------------------------------------------------------------
    def prepare_inputs_for_generation(
        self, input_ids, *args, is_first_iteration: bool | None = False, **kwargs
    ):
        model_inputs = super().prepare_inputs_for_generation(
            input_ids, *args, is_first_iteration=is_first_iteration, **kwargs
        )
        if not is_first_iteration and kwargs.get("use_cache", True):
            for key in _MULTIMODAL:  # the image and ROI tokens are in the cache after the first step
                model_inputs.pop(key, None)
        return model_inputs

    def _expand_inputs_for_generation(
        self, expand_size: int = 1, is_encoder_decoder: bool = False, input_ids=None, **model_kwargs
    ):
        # images and ROIs are shared by sequences through the index tensors: expand only per-sequence inputs
        kept = {k: model_kwargs.pop(k) for k in _PER_IMAGE_OR_ROI if k in model_kwargs}
        input_ids, model_kwargs = super()._expand_inputs_for_generation(
            expand_size=expand_size,
            is_encoder_decoder=is_encoder_decoder,
            input_ids=input_ids,
            **model_kwargs,
        )
        model_kwargs.update(kept)
        return input_ids, model_kwargs

    # -- numbers from level words --------------------------------------------------------------------------
    @torch.no_grad()
    def score_regions(
        self, inputs: dict[str, torch.Tensor], processor: Any, question: str
    ) -> dict[str, torch.Tensor]:
        """Level-word probabilities for ``question`` (``"quality"`` or ``"importance"``) of every sequence.

        ``inputs`` must come from ``processor(..., questions=question, answers=None)``: the answer prefix
        (``"The quality of this region is"``) is appended, the next-token logits at its end are read and
        :func:`level_scoring.level_probs` turns them into ``probs (B, n_levels)`` and ``score (B,)`` on 0..100.
        """
        prefix = processor.tokenizer(" " + processor.answer_prefix(question), add_special_tokens=False)[
            "input_ids"
        ]
        ids = inputs["input_ids"]
        b = ids.shape[0]
        extra = torch.tensor(prefix, dtype=ids.dtype, device=ids.device).expand(b, -1)
        mask = inputs.get("attention_mask")
        mask = torch.ones_like(ids) if mask is None else mask
        full_ids = torch.cat([ids, extra], 1)
        full_mask = torch.cat([mask, torch.ones_like(extra)], 1)
        position_ids = (full_mask.cumsum(1) - 1).clamp(min=0)
        model_inputs = {k: v for k, v in inputs.items() if k in _MULTIMODAL}
        out = self(
            input_ids=full_ids,
            attention_mask=full_mask,
            position_ids=position_ids,
            logits_to_keep=1,
            **model_inputs,
        )
        probs = level_probs(out.logits[:, -1].float(), processor.level_token_ids(question))
        return {"probs": probs, "score": expected_score(probs)}


# ----------------------------------------------------------------------------------------------------------
# the small ROI model: MFE + heads
# ----------------------------------------------------------------------------------------------------------
class SeagullForRegionQuality(SeagullPreTrainedModel):
    """SEAGULL's vision tower + MFE with heads for quality, importance and per-type severity (no LLM)."""

    config_class = SeagullRegionConfig
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    accepts_loss_kwargs = False

    def __init__(self, config: SeagullRegionConfig):
        super().__init__(config)
        self.vision_tower = SeagullVisionTower(config)
        self.mask_extractor = SeagullMaskFeatureExtractor(config)
        d = config.token_size
        n_out = 2 + len(config.distortion_types)
        self.head = nn.Sequential(
            nn.LayerNorm(2 * d),
            nn.Linear(2 * d, config.head_hidden_size),
            nn.GELU(),
            nn.Dropout(config.head_dropout),
            nn.Linear(config.head_hidden_size, n_out),
        )
        # the ROI's size as an input of the heads (log of its area fraction, from roi_masks): mask pooling
        # averages it away, and importance depends on it (SEAGULL-100w's importance: the whole image with only
        # the ROI distorted vs the reference)
        self.area_proj = nn.Linear(1, 2 * d) if config.head_roi_area else None
        self._foreign_module_ids = {id(m) for m in self.vision_tower.modules()}
        self._vision_frozen = bool(config.vision_frozen)
        self.post_init()
        if self._vision_frozen:
            self._freeze_vision_tower()

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        roi_masks: torch.Tensor | None = None,
        roi_pixel_values: torch.Tensor | None = None,
        roi_image_index: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        vision_features: list[torch.Tensor] | None = None,
        **kwargs: Any,
    ) -> SeagullRegionQualityOutput:
        """``labels (N_roi, 2 + n_types)``: quality, importance, severities on [0, 1] (NaN = unknown).
        ``vision_features``: the frozen vision tower's levels for ``pixel_values`` computed beforehand (one
        ``(N_img, C_l, h_l, w_l)`` map per level, as :meth:`encode_images` returns; training on cached
        features); ``pixel_values`` is then not used and may be ``None``."""
        if roi_masks is None or roi_pixel_values is None:
            raise ValueError(
                "SeagullForRegionQuality needs roi_masks and roi_pixel_values (from the processor)"
            )
        if pixel_values is None and vision_features is None:
            raise ValueError("give pixel_values (or the frozen tower's precomputed vision_features)")
        if vision_features is not None and not getattr(self, "_vision_frozen", False):
            raise ValueError(
                "vision_features (precomputed) need a frozen vision tower (config.vision_frozen)"
            )
        n_images = vision_features[0].shape[0] if vision_features is not None else pixel_values.shape[0]
        if roi_image_index is None:
            if n_images != roi_masks.shape[0]:
                raise ValueError("roi_image_index is needed when images and ROIs differ in number")
            roi_image_index = torch.arange(roi_masks.shape[0], device=roi_masks.device)
        _check_roi_inputs(roi_masks, roi_pixel_values, roi_image_index, n_images)
        if vision_features is not None:
            dtype = next(self.mask_extractor.parameters()).dtype
            features = [f.to(dtype) for f in vision_features]
        else:
            features = self.encode_images(pixel_values)
        global_tokens, local_tokens = self.mask_extractor(
            features, roi_masks, roi_pixel_values, roi_image_index
        )
        tokens = torch.cat([global_tokens, local_tokens], -1)
        if self.area_proj is not None:
            area = roi_masks.flatten(1).float().clamp(0, 1).mean(1, keepdim=True)  # fraction of the image
            tokens = tokens + self.area_proj(torch.log(area.clamp(min=1e-4)).to(tokens.dtype))
        logits = self.head(tokens)
        out = torch.sigmoid(logits)
        loss = None
        if labels is not None:
            loss = self._loss(logits, labels.to(out.dtype))
        return SeagullRegionQualityOutput(
            loss=loss,
            quality=out[:, 0],
            importance=out[:, 1],
            severity=out[:, 2:],
            global_tokens=global_tokens,
            local_tokens=local_tokens,
        )

    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``config.loss_weights`` of: ``quality`` / ``importance`` (MSE of the sigmoid outputs), ``rank``
        (pairwise hinge on quality and importance across the batch's ROIs), ``severity`` (binary cross-entropy
        per type with the severity as soft target: unlike MSE it keeps a gradient for the few present types
        among many absent ones) and ``type`` (cross-entropy over "clean" + the types, the severity logits
        being the types' logits against a fixed 0 for "clean", so that the arg-max severity names the type).
        NaN targets are unknown and left out."""
        w = self.config.loss_weights
        pred = torch.sigmoid(logits)
        known = torch.isfinite(target)
        terms = []
        for name, col in (("quality", 0), ("importance", 1)):
            weight = float(w.get(name, 0.0))
            m = known[:, col]
            if weight and m.any():
                terms.append(weight * (pred[m, col] - target[m, col]).pow(2).mean())
        weight = float(w.get("severity", 0.0))
        if weight and known[:, 2:].any():
            m = known[:, 2:]
            terms.append(weight * F.binary_cross_entropy_with_logits(logits[:, 2:][m], target[:, 2:][m]))
        sev_known = known[:, 2:].all(1)  # the type needs every severity of the ROI
        sev_logits, sev_target = logits[sev_known, 2:], target[sev_known, 2:]
        weight = float(w.get("type", 0.0))
        if weight and sev_known.any():
            clean = sev_target.amax(1) <= 0
            type_target = torch.where(clean, 0, sev_target.argmax(1) + 1)
            type_logits = torch.cat([sev_logits.new_zeros(sev_logits.shape[0], 1), sev_logits], 1)
            terms.append(weight * F.cross_entropy(type_logits, type_target))
        rank = float(w.get("rank", 0.0))
        if rank:
            for col in (0, 1):
                m = known[:, col]
                p, t = pred[m, col], target[m, col]
                if p.numel() > 1:
                    dp, dt = p[:, None] - p[None, :], t[:, None] - t[None, :]
                    terms.append(rank * F.relu(-dp * torch.sign(dt)).mean())
        if not terms:
            return logits.sum() * 0.0
        return torch.stack(terms).sum()


# ----------------------------------------------------------------------------------------------------------
# factory entry (modeling_rsfiqa.factory.create_model dispatches here for the seagull presets)
# ----------------------------------------------------------------------------------------------------------
def _resolve_local_path(path: str) -> str:
    """Relative paths in presets are relative to the project root (e.g. ``../shared/weights/...``)."""
    import os
    from pathlib import Path

    if not path or os.path.isabs(path) or path == "timm":
        return path
    candidate = (Path(__file__).resolve().parent.parent / path).resolve()
    return str(candidate) if candidate.exists() else path


def create_seagull_model(
    folder: Any = None,
    config: SeagullConfig | None = None,
    pretrained_backbone: bool | str = False,
    backend: str = "torchvision",
) -> tuple[PreTrainedModel, Any]:
    """``(model, processor)`` for a saved folder or a config (a preset), as ``factory.create_model`` returns.

    The tokenizer comes from ``config.tokenizer_name_or_path``, or (None) is trained in code on the SEAGULL
    prompts with the LLM's vocabulary size; the special tokens' ids are written into the config.
    ``pretrained_backbone``: True loads ``config.vision_pretrained``, a string loads that file.
    """
    from .processing_seagull import SeagullProcessor, build_seagull_tokenizer

    if folder is not None:
        config = SeagullConfig.from_pretrained(folder)
        cls = (
            SeagullForRegionQuality
            if config.model_type == "seagull_region"
            else SeagullForConditionalGeneration
        )
        model = cls.from_pretrained(folder)
        try:
            processor = SeagullProcessor.from_pretrained(folder)
        except (OSError, ValueError, TypeError):
            tokenizer = None
            if cls is SeagullForConditionalGeneration:
                from transformers import AutoTokenizer

                tokenizer = AutoTokenizer.from_pretrained(folder)
            processor = SeagullProcessor.from_model_config(model.config, tokenizer, backend=backend)
        return model, processor
    tokenizer = None
    if config.model_type == "seagull":
        if config.tokenizer_name_or_path:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(config.tokenizer_name_or_path)
            tokenizer.add_tokens(
                [config.image_token, config.global_token, config.local_token], special_tokens=True
            )
        else:
            tokenizer = build_seagull_tokenizer(config, vocab_size=config.text_config.vocab_size)
        if len(tokenizer) > config.text_config.vocab_size:
            raise ValueError(
                f"the tokenizer has {len(tokenizer)} tokens, the LLM {config.text_config.vocab_size}"
            )
        for name in ("image", "global", "local"):
            setattr(
                config, f"{name}_token_id", tokenizer.convert_tokens_to_ids(getattr(config, f"{name}_token"))
            )
        model = SeagullForConditionalGeneration(config)
    else:
        model = SeagullForRegionQuality(config)
    if pretrained_backbone:
        source = pretrained_backbone if isinstance(pretrained_backbone, str) else config.vision_pretrained
        model.load_pretrained_vision_tower(_resolve_local_path(source))
    return model, SeagullProcessor.from_model_config(config, tokenizer, backend=backend)
