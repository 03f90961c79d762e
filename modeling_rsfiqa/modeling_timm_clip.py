"""A contrastive two-tower model from a timm CNN and a CLIP text transformer, for Q-CLIP's small shipped model.

Q-CLIP (Mi et al., arXiv 2508.06092) adapts a frozen contrastive VLM. Offline there is none, so
:class:`TimmCLIPModel` pairs the ImageNet MobileNetV2 (frozen) with a small, frozen, RANDOM CLIP text tower:
the text side is a fixed random feature map of the prompt tokens, and Q-CLIP's three learnable context
vectors, its text adapters and w are what make the five prompt features useful. It has the attributes
:class:`~.modeling_qclip.QCLIPForVideoQualityScoring` reaches for (``vision_model`` / ``text_model`` with
``blocks`` / ``encoder.layers``, ``visual_projection``, ``text_projection``), so E-SCMA hooks the blocks of
one CNN stage (run channels-last, see :class:`ChannelsLastBlock`) and P-SCMA the pooled 1280-d feature.

Training speed-up: everything before the adapted stage is frozen and unadapted, so
:meth:`TimmCNNTower.prefix` can be run once per frame and its output fed back as ``pixel_values`` (the
tower recognises the prefix's channel count).
"""

from __future__ import annotations

import os

import torch
from torch import nn
from transformers import AutoModel, CLIPTextModel, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .configuration_timm_clip import TimmCLIPConfig

__all__ = ["ChannelsLastBlock", "EOSPooledCLIPTextModel", "TimmCNNTower", "TimmCLIPModel"]


class ChannelsLastBlock(nn.Module):
    """A CNN block run on ``(B, H, W, C)`` tensors, so a Linear on the last axis (E-SCMA) mixes channels."""

    def __init__(self, block: nn.Module, hidden_size: int):
        super().__init__()
        self.block = block
        self.hidden_size = hidden_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


def _out_channels(stage: nn.Module) -> int:
    convs = [m for m in stage.modules() if isinstance(m, nn.Conv2d)]
    return int(convs[-1].out_channels)


class EOSPooledCLIPTextModel(CLIPTextModel):
    """CLIPTextModel pooling at the first ``eos_token_id`` whatever its value (CLIP's legacy path for
    ``eos_token_id == 2``, which small word-level vocabularies have, pools at the highest token id instead)."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs):
        out = super().forward(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        eos = (input_ids == self.config.eos_token_id).int().argmax(-1)
        out.pooler_output = out.last_hidden_state[torch.arange(len(input_ids), device=eos.device), eos]
        return out


class TimmCNNTower(nn.Module):
    """timm EfficientNet-family CNN split as stem + stages, the ``adapted_stage`` exposed as ``blocks``."""

    def __init__(self, config: TimmCLIPConfig):
        super().__init__()
        import timm

        net = timm.create_model(
            config.vision_model_name, pretrained=False, num_classes=0, **(config.vision_kwargs or {})
        )
        s = config.adapted_stage
        if not 0 <= s < len(net.blocks):
            raise ValueError(f"adapted_stage={s} but {config.vision_model_name} has {len(net.blocks)} stages")
        self.conv_stem, self.bn1 = net.conv_stem, net.bn1
        self.stages_before = nn.Sequential(*list(net.blocks)[:s])
        width = _out_channels(net.blocks[s])
        self.blocks = nn.ModuleList([ChannelsLastBlock(b, width) for b in net.blocks[s]])
        self.stages_after = nn.Sequential(*list(net.blocks)[s + 1 :])
        self.conv_head, self.bn2, self.global_pool = net.conv_head, net.bn2, net.global_pool
        self.num_features = int(net.num_features)
        self.prefix_channels = _out_channels(net.blocks[s - 1]) if s > 0 else _out_channels(net.bn1)

    @torch.no_grad()
    def prefix(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The frozen, unadapted part (stem and the stages before ``blocks``): cacheable during training."""
        return self.stages_before(self.bn1(self.conv_stem(pixel_values)))

    def forward(self, pixel_values: torch.Tensor, **kwargs) -> BaseModelOutputWithPooling:
        x = pixel_values
        if x.shape[1] != self.prefix_channels or x.shape[1] == 3:
            x = self.prefix(x)
        x = x.permute(0, 2, 3, 1)
        for block in self.blocks:
            x = block(x)
        x = self.stages_after(x.permute(0, 3, 1, 2))
        x = self.bn2(self.conv_head(x))
        return BaseModelOutputWithPooling(last_hidden_state=x, pooler_output=self.global_pool(x).flatten(1))

    def timm_state_dict_map(self) -> dict[str, str]:
        """Our parameter names -> timm's (``blocks.i.j``), for loading timm checkpoints."""
        s = len(self.stages_before)
        names = {}
        for k in self.state_dict():
            if k.startswith("stages_before."):
                names[k] = "blocks." + k.removeprefix("stages_before.")
            elif k.startswith("blocks."):
                j, rest = k.removeprefix("blocks.").split(".block.", 1)
                names[k] = f"blocks.{s}.{j}.{rest}"
            elif k.startswith("stages_after."):
                i, rest = k.removeprefix("stages_after.").split(".", 1)
                names[k] = f"blocks.{s + 1 + int(i)}.{rest}"
            else:
                names[k] = k
        return names


class TimmCLIPModel(PreTrainedModel):
    """Frozen timm CNN + frozen (random, seeded) CLIP text tower, with projections to a shared space."""

    config_class = TimmCLIPConfig
    base_model_prefix = "timm_clip"
    main_input_name = "pixel_values"
    input_modalities = ("image", "text")
    _no_split_modules: list[str] = []

    def __init__(self, config: TimmCLIPConfig):
        super().__init__(config)
        self.vision_model = TimmCNNTower(config)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.text_seed)
            self.text_model = EOSPooledCLIPTextModel(config.text_config)
        self.visual_projection = nn.Linear(self.vision_model.num_features, config.projection_dim, bias=False)
        self.text_projection = nn.Linear(config.text_config.hidden_size, config.projection_dim, bias=False)
        self._foreign_module_ids = {
            id(m) for m in list(self.vision_model.modules()) + list(self.text_model.modules())
        }
        self.post_init()
        self.eval()

    def _init_weights(self, module: nn.Module) -> None:
        if id(module) in getattr(self, "_foreign_module_ids", ()):
            return  # timm and CLIPTextModel initialise their own weights
        if isinstance(module, nn.Linear):
            module.reset_parameters()

    def train(self, mode: bool = True) -> TimmCLIPModel:
        """Always in eval mode: both towers are frozen (BatchNorm keeps its ImageNet statistics)."""
        return super().train(False)

    def load_vision_weights(self, path: str | os.PathLike | None = None) -> None:
        """Load timm ImageNet weights (``.safetensors`` / ``.pth``; default ``config.vision_pretrained``)."""
        path = os.fspath(path or self.config.vision_pretrained or "")
        if not path:
            raise ValueError("no vision weights given (argument or config.vision_pretrained)")
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        names = self.vision_model.timm_state_dict_map()
        missing = sorted(v for v in names.values() if v not in state)
        if missing:
            raise ValueError(f"{path} does not fit {self.config.vision_model_name}: missing {missing[:5]}")
        self.vision_model.load_state_dict({k: state[v] for k, v in names.items()}, strict=True)

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.visual_projection(self.vision_model(pixel_values).pooler_output)

    def get_text_features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        pooled = self.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        return self.text_projection(pooled)


AutoModel.register(TimmCLIPConfig, TimmCLIPModel, exist_ok=True)
