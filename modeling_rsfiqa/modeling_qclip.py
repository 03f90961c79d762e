"""Q-CLIP model: a frozen contrastive VLM + Shared Cross-Modal Adapter + learnable quality prompts.

Mi et al., "Q-CLIP: Unleashing the Power of Vision-Language Models for Video Quality Assessment through
Unified Cross-Modal Adaptation" (arXiv 2508.06092); the released code (github xiao-mi-d/Q-CLIP) fixes the
details we follow. Forward pass, video -> score:

1. every sampled frame goes through the vision tower alone; after each of the last N blocks of the tower,
   E-SCMA adds ``alpha_v * LN_i(Up_i(core(Down_i(x))))`` (the core is ONE two-layer MLP shared by every
   adapted block of both towers);
2. the pooled feature p of each frame becomes ``f = W_proj p + beta_v * MLP(p)`` (P-SCMA);
3. the five prompts "X X X a video of {bad, poor, fair, good, excellent} quality" go through the text tower
   with the embeddings of "X X X" replaced by three learnable context vectors (shared by the five prompts),
   with the same E-SCMA (alpha_t) and P-SCMA (beta_t) on the text side; being constant at inference, the
   five text features are computed once and cached (recomputed whenever a text-side weight changes);
4. the frame features are mean-pooled over time and L2-normalised; the five cosines to the normalised text
   features, dotted with a learnable 5-vector w, give the quality (``logits``); the same read-out on each
   frame's own feature gives per-frame scores.

Adapters are applied with forward hooks on the VLM's own blocks while a tower runs (registered and removed
around each call), so any transformers contrastive model works unchanged (CLIPModel, SiglipModel,
MetaClip2Model) and its pretrained weights keep their names. PE-Core, which transformers lacks, is
:class:`PECoreCLIPModel` (timm's PE vision tower + a CLIP text tower) with :func:`load_pe_core_checkpoint`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_qclip import PECoreCLIPConfig, QCLIPConfig
from .losses import quality_loss
from .modeling_timm_clip import TimmCLIPModel

__all__ = [
    "QCLIPPreTrainedModel",
    "QCLIPForVideoQualityScoring",
    "QCLIPOutput",
    "PECoreCLIPModel",
    "load_pe_core_checkpoint",
    "convert_pe_core_state_dict",
]

logger = logging.getLogger(__name__)


@dataclass
class QCLIPOutput(ModelOutput):
    """Output of [`QCLIPForVideoQualityScoring`] (B videos of T frames, L quality levels = 5, D embedding size).

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*): PLCC + 0.3 rank loss (config.loss_weights) on `logits`.
        score (`torch.FloatTensor` of shape `(B,)`): quality on `config.score_range` (calibrated `logits`).
        logits (`torch.FloatTensor` of shape `(B,)`): raw quality ``cos(video, prompts) . w``.
        frame_scores (`torch.FloatTensor` of shape `(B, T)`): each frame's quality on the `score` scale.
        frame_logits (`torch.FloatTensor` of shape `(B, T)`): each frame's raw quality.
        level_similarity (`torch.FloatTensor` of shape `(B, L)`): cosines of the video to the L prompts.
        frame_level_similarity (`torch.FloatTensor` of shape `(B, T, L)`): cosines of each frame to the prompts.
        video_embeds (`torch.FloatTensor` of shape `(B, D)`): mean-pooled, L2-normalised video feature.
        frame_embeds (`torch.FloatTensor` of shape `(B, T, D)`): per-frame features (before pooling, unnormalised).
        text_embeds (`torch.FloatTensor` of shape `(L, D)`): L2-normalised prompt features.
    """

    loss: torch.FloatTensor | None = None
    score: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    frame_scores: torch.FloatTensor | None = None
    frame_logits: torch.FloatTensor | None = None
    level_similarity: torch.FloatTensor | None = None
    frame_level_similarity: torch.FloatTensor | None = None
    video_embeds: torch.FloatTensor | None = None
    frame_embeds: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None


# ----------------------------------------------------------------------------------------------------------
# PE-Core as a two-tower model (transformers has none)
# ----------------------------------------------------------------------------------------------------------
class PECoreCLIPModel(PreTrainedModel):
    """PE-Core CLIP: timm's PE vision tower (attention pooling; ``head`` = the projection) + CLIP text tower."""

    config_class = PECoreCLIPConfig
    base_model_prefix = "pe_core"
    main_input_name = "pixel_values"
    input_modalities = ("image", "text")
    _no_split_modules: list[str] = []

    def __init__(self, config: PECoreCLIPConfig):
        super().__init__(config)
        import timm
        from transformers import CLIPTextModel

        self.vision_model = timm.create_model(
            config.vision_model_name,
            pretrained=False,
            num_classes=config.projection_dim,
            **(config.vision_kwargs or {}),
        )
        self.text_model = CLIPTextModel(config.text_config)
        self.text_projection = nn.Linear(config.text_config.hidden_size, config.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(2.6592))
        self._foreign_module_ids = {
            id(m) for m in list(self.vision_model.modules()) + list(self.text_model.modules())
        }
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if id(module) in getattr(self, "_foreign_module_ids", ()):
            return  # timm and CLIPTextModel initialise their own weights
        super()._init_weights(module)

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.vision_model(pixel_values)

    def get_text_features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        pooled = self.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        return self.text_projection(pooled)


def convert_pe_core_state_dict(
    state_dict: dict[str, torch.Tensor], model: PECoreCLIPModel
) -> dict[str, torch.Tensor]:
    """Meta's PE-Core checkpoint (``PE-Core-L14-336.pt``) -> :class:`PECoreCLIPModel` names and shapes.

    Vision keys (``visual.*``) go through timm's own PE converter (``conv1`` -> ``patch_embed.proj``,
    ``transformer.resblocks`` -> ``blocks``, ``attn_pool`` split into q / kv, ``proj`` -> ``head``). Text keys
    follow the open_clip -> transformers CLIP mapping: ``token_embedding``, ``positional_embedding``,
    ``transformer.resblocks.i.{ln_1, attn.in_proj_*, attn.out_proj, ln_2, mlp.c_fc, mlp.c_proj}``, ``ln_final``
    and ``text_projection`` (stored as ``x @ P``, i.e. transposed). A text LayerScale (``ls_1/ls_2.gamma``),
    if the checkpoint has one, is folded exactly into ``out_proj`` / ``fc2`` (gamma * (W x + b)).
    """
    from timm.models.eva import checkpoint_filter_fn

    sd = state_dict.get("model", state_dict.get("state_dict", state_dict))
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    out: dict[str, torch.Tensor] = {}
    visual = {k: v for k, v in sd.items() if k.startswith("visual.")}
    for k, v in checkpoint_filter_fn(visual, model.vision_model).items():
        out[f"vision_model.{k}"] = v
    t = "text_model."
    if "token_embedding.weight" not in sd:
        raise KeyError("not a PE-Core CLIP checkpoint: no text tower ('token_embedding.weight')")
    out[t + "embeddings.token_embedding.weight"] = sd["token_embedding.weight"]
    out[t + "embeddings.position_embedding.weight"] = sd["positional_embedding"]
    out[t + "final_layer_norm.weight"] = sd["ln_final.weight"]
    out[t + "final_layer_norm.bias"] = sd["ln_final.bias"]
    out["text_projection.weight"] = sd["text_projection"].t().contiguous()
    if "logit_scale" in sd:
        out["logit_scale"] = sd["logit_scale"].reshape(())
    layers = sorted({int(k.split(".")[2]) for k in sd if k.startswith("transformer.resblocks.")})
    for i in layers:
        src, dst = f"transformer.resblocks.{i}.", f"{t}encoder.layers.{i}."
        w, b = sd[src + "attn.in_proj_weight"], sd[src + "attn.in_proj_bias"]
        for name, wi, bi in zip(("q_proj", "k_proj", "v_proj"), w.chunk(3), b.chunk(3)):
            out[dst + f"self_attn.{name}.weight"], out[dst + f"self_attn.{name}.bias"] = wi, bi
        ow, ob = sd[src + "attn.out_proj.weight"], sd[src + "attn.out_proj.bias"]
        f2w, f2b = sd[src + "mlp.c_proj.weight"], sd[src + "mlp.c_proj.bias"]
        if src + "ls_1.gamma" in sd:
            g = sd[src + "ls_1.gamma"]
            ow, ob = ow * g[:, None], ob * g
        if src + "ls_2.gamma" in sd:
            g = sd[src + "ls_2.gamma"]
            f2w, f2b = f2w * g[:, None], f2b * g
        out[dst + "self_attn.out_proj.weight"], out[dst + "self_attn.out_proj.bias"] = ow, ob
        out[dst + "mlp.fc1.weight"], out[dst + "mlp.fc1.bias"] = (
            sd[src + "mlp.c_fc.weight"],
            sd[src + "mlp.c_fc.bias"],
        )
        out[dst + "mlp.fc2.weight"], out[dst + "mlp.fc2.bias"] = f2w, f2b
        for ln_src, ln_dst in (("ln_1", "layer_norm1"), ("ln_2", "layer_norm2")):
            out[dst + f"{ln_dst}.weight"] = sd[src + f"{ln_src}.weight"]
            out[dst + f"{ln_dst}.bias"] = sd[src + f"{ln_src}.bias"]
    return out


def load_pe_core_checkpoint(model: PECoreCLIPModel, path: str | os.PathLike) -> None:
    """Load Meta's ``PE-Core-*.pt`` (e.g. facebook/PE-Core-L14-336 on the Hub) into ``model``, strictly.

    Shapes are checked against the model before anything is copied, so a checkpoint of another PE size gives
    one clear error listing the mismatches.
    """
    state = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    converted = convert_pe_core_state_dict(state, model)
    own = model.state_dict()
    missing = sorted(set(own) - set(converted))
    unexpected = sorted(set(converted) - set(own))
    wrong = [
        f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in converted.items()
        if k in own and v.shape != own[k].shape
    ]
    if missing or unexpected or wrong:
        raise ValueError(
            f"{path} does not fit {model.config.vision_model_name} + CLIP text "
            f"({model.config.text_config.num_hidden_layers} layers): missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}, shape mismatches {wrong[:5]}"
        )
    model.load_state_dict(converted, strict=True)


# ----------------------------------------------------------------------------------------------------------
# reaching into the towers of a contrastive VLM
# ----------------------------------------------------------------------------------------------------------
def _blocks(tower: nn.Module, what: str) -> nn.ModuleList:
    for name in ("encoder.layers", "blocks", "transformer.resblocks", "encoder.layer", "layers"):
        try:
            module = tower.get_submodule(name)
        except AttributeError:
            continue
        if isinstance(module, nn.ModuleList) and len(module):
            return module
    raise TypeError(f"cannot find the {what} tower's blocks (a ModuleList) in {type(tower).__name__}")


def _width(block_list: nn.ModuleList) -> int:
    if getattr(block_list[0], "hidden_size", None):  # e.g. modeling_timm_clip.ChannelsLastBlock (a CNN stage)
        return int(block_list[0].hidden_size)
    for module in block_list[0].modules():
        if isinstance(module, nn.LayerNorm):
            return int(module.normalized_shape[0])
    raise TypeError(f"cannot infer the width of {type(block_list[0]).__name__}")


class _Towers:
    """Uniform access to a contrastive VLM's towers: blocks to adapt, pooled features, projections."""

    def __init__(self, vlm: nn.Module):
        self.kind = (
            "pe_core"
            if isinstance(vlm, PECoreCLIPModel)
            else "siglip"
            if hasattr(getattr(vlm, "text_model", None), "head") and not hasattr(vlm, "text_projection")
            else "clip"
        )
        if not hasattr(vlm, "vision_model") or not hasattr(vlm, "text_model"):
            raise TypeError(f"{type(vlm).__name__} has no vision_model / text_model towers")

    @staticmethod
    def vision_blocks(vlm) -> nn.ModuleList:
        return _blocks(vlm.vision_model, "vision")

    @staticmethod
    def text_blocks(vlm) -> nn.ModuleList:
        return _blocks(vlm.text_model, "text")

    @staticmethod
    def token_embedding(vlm) -> nn.Embedding:
        return vlm.text_model.embeddings.token_embedding

    def image_pooled(self, vlm, pixel_values: torch.Tensor) -> torch.Tensor:
        if self.kind == "pe_core":
            timm_model = vlm.vision_model
            return timm_model.forward_head(timm_model.forward_features(pixel_values), pre_logits=True)
        return vlm.vision_model(pixel_values=pixel_values).pooler_output

    def image_projection(self, vlm) -> nn.Module:
        if self.kind == "pe_core":
            return vlm.vision_model.head
        return getattr(vlm, "visual_projection", None) or nn.Identity()

    def text_pooled(self, vlm, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        out = vlm.text_model(input_ids=input_ids, attention_mask=attention_mask)
        if self.kind == "siglip":
            return out.last_hidden_state[:, -1]  # SigLIP pools the last token, then its `head` projects it
        return out.pooler_output

    def text_projection(self, vlm) -> nn.Module:
        if self.kind == "siglip":
            return vlm.text_model.head
        return vlm.text_projection


def _linear_in(module: nn.Module) -> int | None:
    if isinstance(module, nn.Identity):
        return None
    return int(module.in_features)


def _linear_out(module: nn.Module, default: int) -> int:
    return default if isinstance(module, nn.Identity) else int(module.out_features)


class LayerAdapter(nn.Module):
    """Down_i, Up_i, LN_i of one adapted block: ``x + scale * LN(Up(core(Down(x))))``."""

    def __init__(self, width: int, dim: int):
        super().__init__()
        self.down = nn.Linear(width, dim)
        self.up = nn.Linear(dim, width)
        self.norm = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor, core: nn.Module, scale: torch.Tensor) -> torch.Tensor:
        return x + scale.to(x.dtype) * self.norm(self.up(core(self.down(x))))


class ProjectionAdapter(nn.Module):
    """P-SCMA's MLP: Linear(in, d) -> Linear(d, d) -> GELU -> Linear(d, out) (the reference's layout)."""

    def __init__(self, in_dim: int, dim: int, out_dim: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, dim), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, out_dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _tensor_stamp(tensors: list[torch.Tensor]) -> tuple | None:
    """Identity of tensors' storage and contents: changes on ``.to()``, ``load_state_dict`` and optimizer steps."""
    try:
        return tuple((t.data_ptr(), t._version) for t in tensors)
    except RuntimeError:
        return None


# ----------------------------------------------------------------------------------------------------------
class QCLIPPreTrainedModel(PreTrainedModel):
    config_class = QCLIPConfig
    base_model_prefix = "qclip"
    main_input_name = "pixel_values_videos"
    input_modalities = ("video",)
    supports_gradient_checkpointing = False
    _no_split_modules: list[str] = []
    # Trainer: the loss is a batch statistic (PLCC, rank) -- do not rescale it by token counts.
    accepts_loss_kwargs = False

    def _init_weights(self, module: nn.Module) -> None:
        if id(module) in getattr(self, "_foreign_module_ids", ()):
            return  # the VLM is pretrained (or initialised by its own class)
        if isinstance(module, nn.Linear):
            module.reset_parameters()  # PyTorch's default, as the reference's adapters
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, QCLIPForVideoQualityScoring):
            cfg = self.config
            nn.init.constant_(module.alpha_vision, cfg.adapter_scale_init)
            nn.init.constant_(module.alpha_text, cfg.adapter_scale_init)
            nn.init.constant_(module.beta_vision, cfg.projection_adapter_scale_init)
            nn.init.constant_(module.beta_text, cfg.projection_adapter_scale_init)
            nn.init.normal_(module.level_weights, std=len(cfg.level_words) ** -0.5)
            module.init_prompt_context()


class QCLIPForVideoQualityScoring(QCLIPPreTrainedModel):
    """Q-CLIP: frozen contrastive VLM + E-SCMA + P-SCMA + learnable quality prompts -> video quality."""

    def __init__(self, config: QCLIPConfig):
        super().__init__(config)
        if config.prompt_input_ids is None:
            raise ValueError(
                "QCLIPConfig.prompt_input_ids is empty: build the model with factory.create_model or fill the "
                "prompt fields with QCLIPProcessor.prompt_inputs(config)"
            )
        # Built from config only; pretrained towers are loaded AFTER construction (load_pretrained_vlm), as
        # from_pretrained builds models on the meta device.
        vlm_config = config.vlm_config
        self.vlm = (
            PECoreCLIPModel(vlm_config)
            if isinstance(vlm_config, PECoreCLIPConfig)
            else TimmCLIPModel(vlm_config)
            if vlm_config.model_type == TimmCLIPModel.config_class.model_type
            else AutoModel.from_config(vlm_config)
        )
        self.vlm.requires_grad_(False)
        self._foreign_module_ids = {id(m) for m in self.vlm.modules()}
        towers = _Towers(self.vlm)
        vblocks, tblocks = towers.vision_blocks(self.vlm), towers.text_blocks(self.vlm)
        vwidth, twidth = _width(vblocks), _width(tblocks)
        self.vision_positions = config.adapted_positions(len(vblocks))
        self.text_positions = config.adapted_positions(len(tblocks))
        if len(self.vision_positions) != len(self.text_positions):
            raise ValueError("both towers need the same number of adapted blocks")
        share = config.share_layer_adapters
        self.share_layer_adapters = (vwidth == twidth) if share is None else bool(share)
        if self.share_layer_adapters and vwidth != twidth:
            raise ValueError(
                f"share_layer_adapters=True needs equal tower widths, got vision {vwidth} and text {twidth}; "
                "set it to False (separate Down/Up/LN per tower) or None"
            )
        d, n = config.adapter_dim, len(self.vision_positions)
        self.core = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))  # ONE core, both towers
        self.vision_adapters = nn.ModuleList([LayerAdapter(vwidth, d) for _ in range(n)])
        self.text_adapters = (
            None if self.share_layer_adapters else nn.ModuleList([LayerAdapter(twidth, d) for _ in range(n)])
        )
        self.alpha_vision = nn.Parameter(torch.tensor(float(config.adapter_scale_init)))
        self.alpha_text = nn.Parameter(torch.tensor(float(config.adapter_scale_init)))
        vproj, tproj = towers.image_projection(self.vlm), towers.text_projection(self.vlm)
        probe_dim = _linear_out(tproj, twidth)
        v_in = _linear_in(vproj) or vwidth  # pooled feature size (SigLIP: after its attention-pool head)
        t_in = _linear_in(tproj) or twidth
        embed_dim = _linear_out(vproj, v_in)
        if embed_dim != probe_dim:
            raise ValueError(f"vision and text embeddings differ in size ({embed_dim} vs {probe_dim})")
        self.projection_adapter = self.text_projection_adapter = None
        if config.use_projection_adapter:
            self.projection_adapter = ProjectionAdapter(v_in, d, embed_dim)
            if v_in != t_in:
                self.text_projection_adapter = ProjectionAdapter(t_in, d, embed_dim)
        self.beta_vision = nn.Parameter(torch.tensor(float(config.projection_adapter_scale_init)))
        self.beta_text = nn.Parameter(torch.tensor(float(config.projection_adapter_scale_init)))
        if not config.use_projection_adapter:
            self.beta_vision.requires_grad_(False)
            self.beta_text.requires_grad_(False)
        self.prompt_context = nn.Parameter(
            torch.zeros(config.num_context_tokens, towers.token_embedding(self.vlm).embedding_dim)
        )
        self.level_weights = nn.Parameter(torch.zeros(len(config.level_words)))
        self._towers = towers
        self._text_cache: tuple[Any, torch.Tensor] | None = None
        self.post_init()

    # ------------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def init_prompt_context(self) -> None:
        """Set the context vectors to the token embeddings of the context words ("X"), as the reference does."""
        embedding = self._towers.token_embedding(self.vlm)
        if embedding.weight.is_meta or self.prompt_context.is_meta or not self.config.num_context_tokens:
            return
        ids = torch.tensor(self.config.prompt_input_ids[0], device=embedding.weight.device)
        positions = torch.tensor(self.config.prompt_context_positions, device=ids.device)
        self.prompt_context.copy_(embedding(ids[positions]).to(self.prompt_context.dtype))

    def load_pretrained_vlm(self, source: str | os.PathLike | None = None) -> None:
        """Load the frozen VLM's pretrained weights after construction, then re-initialise the context from them.

        ``source``: a transformers model folder / Hub id of the same architecture, or a PE-Core ``.pt`` file
        (for :class:`PECoreCLIPModel`); default ``config.vlm_name_or_path``.
        """
        source = os.fspath(source or self.config.vlm_name_or_path or "")
        if not source:
            raise ValueError("no VLM weights given (argument or config.vlm_name_or_path)")
        if isinstance(self.vlm, PECoreCLIPModel):
            load_pe_core_checkpoint(self.vlm, source)
        elif isinstance(self.vlm, TimmCLIPModel):
            self.vlm.load_vision_weights(source)  # timm ImageNet weights; the text tower stays random
        else:
            donor = type(self.vlm).from_pretrained(source)
            missing, unexpected = self.vlm.load_state_dict(donor.state_dict(), strict=False)
            if missing:
                raise ValueError(f"{source} lacks weights of the VLM: {missing[:5]}")
        self.vlm.requires_grad_(False)
        self.init_prompt_context()
        self._text_cache = None

    def trainable_parameter_report(self) -> dict[str, int]:
        """Trainable parameter counts per part (E-SCMA, P-SCMA, prompts, w, scales) and in total; frozen VLM."""
        groups = {
            "escma_core": self.core,
            "escma_layers": nn.ModuleList(
                [m for m in (self.vision_adapters, self.text_adapters) if m is not None]
            ),
            "pscma": nn.ModuleList(
                [m for m in (self.projection_adapter, self.text_projection_adapter) if m is not None]
            ),
        }
        report = {k: sum(p.numel() for p in m.parameters() if p.requires_grad) for k, m in groups.items()}
        report["prompt_context"] = self.prompt_context.numel() if self.prompt_context.requires_grad else 0
        report["level_weights"] = self.level_weights.numel()
        report["scales"] = sum(
            p.numel()
            for p in (self.alpha_vision, self.alpha_text, self.beta_vision, self.beta_text)
            if p.requires_grad
        )
        report["total_trainable"] = sum(p.numel() for p in self.parameters() if p.requires_grad)
        report["frozen_vlm"] = sum(p.numel() for p in self.vlm.parameters())
        return report

    # ------------------------------------------------------------------------------------------------------
    @contextmanager
    def _adapted(self, tower: str) -> Iterator[None]:
        """Hooks that apply E-SCMA after the adapted blocks of ``tower`` ('vision' / 'text') during the call."""
        blocks = (
            self._towers.vision_blocks(self.vlm) if tower == "vision" else self._towers.text_blocks(self.vlm)
        )
        positions = self.vision_positions if tower == "vision" else self.text_positions
        adapters = (
            self.vision_adapters if tower == "vision" or self.text_adapters is None else self.text_adapters
        )
        scale = self.alpha_vision if tower == "vision" else self.alpha_text
        handles = []

        def make_hook(adapter: LayerAdapter):
            def hook(module, args, output):
                if isinstance(output, tuple):
                    return (adapter(output[0], self.core, scale), *output[1:])
                return adapter(output, self.core, scale)

            return hook

        try:
            for adapter, pos in zip(adapters, positions):
                handles.append(blocks[pos].register_forward_hook(make_hook(adapter)))
            if tower == "text" and self.config.num_context_tokens:
                positions_t = torch.tensor(self.config.prompt_context_positions)

                def context_hook(module, args, output):
                    output = output.clone()
                    output[:, positions_t.to(output.device)] = self.prompt_context.to(output.dtype)
                    return output

                handles.append(self._towers.token_embedding(self.vlm).register_forward_hook(context_hook))
            yield
        finally:
            for handle in handles:
                handle.remove()

    def encode_frames(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` frames -> ``(N, D)`` features ``W_proj p + beta_v * MLP(p)`` (not normalised)."""
        with self._adapted("vision"):
            pooled = self._towers.image_pooled(self.vlm, pixel_values)
        features = self._towers.image_projection(self.vlm)(pooled)
        if self.projection_adapter is not None:
            features = features + self.beta_vision.to(features.dtype) * self.projection_adapter(pooled)
        return features

    def _text_side_tensors(self) -> list[torch.Tensor]:
        tensors = [self.prompt_context, self.alpha_text, self.beta_text, *self.core.parameters()]
        tensors += list((self.text_adapters or self.vision_adapters).parameters())
        for module in (self.text_projection_adapter or self.projection_adapter,):
            if module is not None:
                tensors += list(module.parameters())
        tensors += list(self.vlm.text_model.parameters())
        tensors += list(self._towers.text_projection(self.vlm).parameters())
        return tensors

    def encode_prompts(self) -> torch.Tensor:
        """The L2-normalised features of the quality prompts ``(L, D)``; cached unless gradients need them."""
        tensors = self._text_side_tensors()
        needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
        stamp = None if needs_grad else _tensor_stamp(tensors)
        if stamp is not None and self._text_cache is not None and self._text_cache[0] == stamp:
            return self._text_cache[1]
        device = self.prompt_context.device
        ids = torch.tensor(self.config.prompt_input_ids, device=device)
        mask = (
            torch.tensor(self.config.prompt_attention_mask, device=device)
            if self.config.prompt_attention_mask
            else None
        )
        with self._adapted("text"):
            pooled = self._towers.text_pooled(self.vlm, ids, mask)
        features = self._towers.text_projection(self.vlm)(pooled)
        adapter = self.text_projection_adapter or self.projection_adapter
        if adapter is not None:
            features = features + self.beta_text.to(features.dtype) * adapter(pooled)
        features = F.normalize(features, dim=-1)
        self._text_cache = (stamp, features.detach()) if stamp is not None else None
        return features

    def calibrate(self, logits: torch.Tensor) -> torch.Tensor:
        """Raw quality -> ``config.score_range`` scale (the training set's z-scored linear map)."""
        c = self.config
        return (logits - c.logit_mean) / c.logit_std * c.label_std + c.label_mean

    def forward(
        self,
        pixel_values_videos: torch.Tensor,
        video_frame_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> QCLIPOutput | tuple:
        r"""
        Args:
            pixel_values_videos (`torch.FloatTensor` of shape `(B, T, 3, H, W)`): frames from `QCLIPVideoProcessor`.
            video_frame_mask (`torch.BoolTensor` of shape `(B, T)`, *optional*): which frames are real (padding
                excluded from the mean pooling); default all.
            labels (`torch.FloatTensor` of shape `(B,)`, *optional*): MOS; gives `loss`.
        """
        if pixel_values_videos.ndim == 4:  # one video (T, 3, H, W)
            pixel_values_videos = pixel_values_videos.unsqueeze(0)
        if pixel_values_videos.ndim != 5:
            raise ValueError(
                f"pixel_values_videos must be (B, T, 3, H, W), got {tuple(pixel_values_videos.shape)}"
            )
        b, t = pixel_values_videos.shape[:2]
        dtype = next(self.vlm.parameters()).dtype
        frames = self.encode_frames(pixel_values_videos.flatten(0, 1).to(dtype)).float()
        frame_embeds = frames.view(b, t, -1)
        if video_frame_mask is None:
            weights = frame_embeds.new_ones(b, t)
        else:
            weights = video_frame_mask.to(frame_embeds.dtype)
        pooled = (frame_embeds * weights[..., None]).sum(1) / weights.sum(1, keepdim=True).clamp(min=1.0)
        video_embeds = F.normalize(pooled, dim=-1)
        text_embeds = self.encode_prompts().float()
        level_similarity = video_embeds @ text_embeds.t()
        logits = level_similarity @ self.level_weights
        frame_level_similarity = F.normalize(frame_embeds, dim=-1) @ text_embeds.t()
        frame_logits = frame_level_similarity @ self.level_weights
        loss = None
        if labels is not None:
            loss = quality_loss(logits, labels.to(logits.device), self.config.loss_weights)
        out = QCLIPOutput(
            loss=loss,
            score=self.calibrate(logits),
            logits=logits,
            frame_scores=self.calibrate(frame_logits),
            frame_logits=frame_logits,
            level_similarity=level_similarity,
            frame_level_similarity=frame_level_similarity,
            video_embeds=video_embeds,
            frame_embeds=frame_embeds,
            text_embeds=text_embeds,
        )
        return out if return_dict is not False else out.to_tuple()
