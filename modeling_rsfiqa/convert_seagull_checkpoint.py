"""Convert the reference SEAGULL checkpoint (github chencn2020/SEAGULL; Hub Zevin2023/SEAGULL-7B) to ours.

    python -m modeling_rsfiqa.convert_seagull_checkpoint --checkpoint DIR_OR_FILES --out OUT_DIR \
        [--tokenizer DIR] [--preset seagull-7b]

The reference ``SeagullLlamaForCausalLM`` state dict (LLaVA/Osprey layout) -> ``SeagullForConditionalGeneration``:

==========================================================  ============================================
reference key                                               ours
==========================================================  ============================================
``model.embed_tokens.weight`` / ``lm_head.weight``          ``language_model.model.embed_tokens.weight``
                                                            / ``language_model.lm_head.weight`` (+1 row
                                                            for the ``<image>`` placeholder, see below)
``model.layers.N.*`` / ``model.norm.weight``                ``language_model.model.layers.N.*`` / ``.norm``
``model.mm_projector.0.*`` / ``model.mm_projector.2.*``     ``multi_modal_projector.linear_1`` / ``linear_2``
``model.vision_tower.vision_tower.visual.trunk.stem.0.*``   ``vision_tower.trunk.stem_0.*`` (timm
``... .trunk.stages.i.*``                                   ``features_only`` names: ``stages_i.*``)
``[model.]mask_extractor.res{2..5}``                        ``mask_extractor.level_projections.{0..3}``
``[model.]mask_extractor.g_res{2..5}``                      ``mask_extractor.channel_key_projections.*``
``mask_extractor.cross_att_res.{self_attn,norm1,...}``      ``mask_extractor.block.{self_attn,norm1,...}``
``mask_extractor.cross_att_res.mlp.lin1/lin2``              ``mask_extractor.block.fc1/fc2``
``mask_extractor.feat_linear / cross_feat_linear``          ``mask_extractor.pooled_proj / attended_proj``
``mask_extractor.final_mlp``                                ``mask_extractor.global_proj``
``mask_extractor.global_vit.{0,3}``                         ``mask_extractor.local_encoder.cnn.{0,3}``
``mask_extractor.sa.v_proj / sa.out_proj``                  ``mask_extractor.local_encoder.value_proj /
                                                            out_proj``
``mask_extractor.mlp.layers.{0,1,2}``                       ``mask_extractor.local_encoder.mlp.{0,1,2}``
==========================================================  ============================================

Keys with no counterpart, each because the reference's forward pass never uses them (:data:`UNUSED`):
``mask_extractor.mask_linear.*`` (built, never called), ``mask_extractor.sa.q_proj/k_proj`` (self-attention
over ONE token: softmax is 1, the output is ``out_proj(v_proj(x))``), the CLIP trunk's ``head.norm`` and
open_clip's projection head ``visual.head.*`` (SEAGULL reads the stage features only), and old Llama
checkpoints' ``rotary_emb.inv_freq`` buffers (recomputed). Any other unknown key is an error: nothing is
silently left over.

The reference marks the image with the index -200 instead of a vocabulary token; ours needs an ``<image>``
token, so the embedding matrix and ``lm_head`` grow by one row (embedding: the mean row; ``lm_head``: zeros)
and ``generation_config.suppress_tokens`` keeps the placeholder tokens from ever being generated.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = ["UNUSED", "convert_state_dict", "load_reference_state_dict", "convert_checkpoint", "main"]

_TRUNK = "model.vision_tower.vision_tower.visual.trunk."
_MFE_RENAMES = [
    (r"res([2-5])\.", lambda m: f"level_projections.{int(m.group(1)) - 2}."),
    (r"g_res([2-5])\.", lambda m: f"channel_key_projections.{int(m.group(1)) - 2}."),
    (r"cross_att_res\.mlp\.lin1\.", "block.fc1."),
    (r"cross_att_res\.mlp\.lin2\.", "block.fc2."),
    (r"cross_att_res\.", "block."),
    (r"feat_linear\.", "pooled_proj."),
    (r"cross_feat_linear\.", "attended_proj."),
    (r"final_mlp\.", "global_proj."),
    (r"global_vit\.([03])\.", lambda m: f"local_encoder.cnn.{m.group(1)}."),
    (r"sa\.v_proj\.", "local_encoder.value_proj."),
    (r"sa\.out_proj\.", "local_encoder.out_proj."),
    (r"mlp\.layers\.([012])\.", lambda m: f"local_encoder.mlp.{m.group(1)}."),
]
#: reference keys the reference forward pass never reads (regexes), with the reason
UNUSED: dict[str, str] = {
    r"(model\.)?mask_extractor\.mask_linear\..*": "MaskExtractor.mask_linear is built but never called",
    r"(model\.)?mask_extractor\.sa\.(q_proj|k_proj)\..*": "self-attention over one token: q/k cancel out",
    r"model\.vision_tower\.vision_tower\.visual\.trunk\.head\..*": "the trunk's classifier norm (unused)",
    r"model\.vision_tower\.vision_tower\.visual\.head\..*": "open_clip's projection head (unused)",
    r".*rotary_emb\.inv_freq": "RoPE frequencies are recomputed",
}


def _rename(key: str) -> str | None:
    """Our name of a reference key, or None if it has none."""
    if key.startswith(_TRUNK):
        rest = key[len(_TRUNK) :]
        if rest.startswith(("stem.", "stages.")):
            return "vision_tower.trunk." + rest.replace(".", "_", 1)
        return None
    if key.startswith("model.mm_projector."):
        rest = key[len("model.mm_projector.") :]
        index, _, param = rest.partition(".")
        return {
            "0": f"multi_modal_projector.linear_1.{param}",
            "2": f"multi_modal_projector.linear_2.{param}",
        }.get(index)
    if key.startswith(("mask_extractor.", "model.mask_extractor.")):
        rest = key.split("mask_extractor.", 1)[1]
        for pattern, repl in _MFE_RENAMES:
            new, n = re.subn(rf"^{pattern}", repl, rest)
            if n:
                return "mask_extractor." + new
        return None
    if key == "lm_head.weight":
        return "language_model.lm_head.weight"
    if key.startswith("model.") and key.split(".")[1] in ("embed_tokens", "layers", "norm"):
        return "language_model." + key
    return None


def convert_state_dict(
    reference: Mapping[str, torch.Tensor], vocab_size: int | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, list[str]]]:
    """Reference state dict -> ours. Returns ``(state_dict, report)``; ``report`` lists ``"unused"`` keys
    (with :data:`UNUSED` reasons) and ``"unknown"`` ones (an error unless empty). ``vocab_size``: ours
    (the reference's rows + the ``<image>`` placeholder by default)."""
    out: dict[str, torch.Tensor] = {}
    report: dict[str, list[str]] = {"mapped": [], "unused": [], "unknown": []}
    for key, value in reference.items():
        new = None if any(re.fullmatch(p, key) for p in UNUSED) else _rename(key)
        if new is not None:
            if new in out:
                raise ValueError(f"two reference keys map to {new} (the second is {key})")
            out[new] = value
            report["mapped"].append(key)
        elif any(re.fullmatch(p, key) for p in UNUSED):
            report["unused"].append(key)
        else:
            report["unknown"].append(key)
    for name in ("language_model.model.embed_tokens.weight", "language_model.lm_head.weight"):
        if name not in out:
            continue
        weight = out[name]
        target = vocab_size if vocab_size is not None else weight.shape[0] + 1
        if target < weight.shape[0]:
            raise ValueError(
                f"{name}: the checkpoint has {weight.shape[0]} rows, more than vocab_size {target}"
            )
        if target > weight.shape[0]:
            n = target - weight.shape[0]
            if weight.is_meta:  # shape checks only
                out[name] = weight.new_empty(target, weight.shape[1])
                continue
            fill = (
                weight.float().mean(0, keepdim=True)
                if "embed" in name
                else weight.new_zeros(1, weight.shape[1])
            )
            out[name] = torch.cat([weight, fill.to(weight.dtype).expand(n, -1)], 0)
    return out, report


def load_reference_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint folder (``*.safetensors`` / ``pytorch_model*.bin`` shards) or one file."""
    path = Path(path)
    files = (
        [path]
        if path.is_file()
        else sorted(path.glob("*.safetensors")) or sorted(path.glob("pytorch_model*.bin"))
    )
    if not files:
        raise FileNotFoundError(f"no .safetensors or pytorch_model*.bin weights in {path}")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            state.update(load_file(str(file)))
        else:
            state.update(torch.load(str(file), map_location="cpu", weights_only=True))
    return state


def config_from_reference(reference: Mapping[str, torch.Tensor], base: Any) -> Any:
    """``base`` (a SeagullConfig, e.g. the seagull-7b preset) with the LLM sizes read off the tensors."""
    text = base.text_config
    emb = reference["model.embed_tokens.weight"]
    text.vocab_size = int(emb.shape[0]) + 1
    text.hidden_size = int(emb.shape[1])
    layers = {int(k.split(".")[2]) for k in reference if k.startswith("model.layers.")}
    text.num_hidden_layers = max(layers) + 1
    text.intermediate_size = int(reference["model.layers.0.mlp.gate_proj.weight"].shape[0])
    kv = int(reference["model.layers.0.self_attn.k_proj.weight"].shape[0])
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    text.num_key_value_heads = kv // head_dim
    return base


def convert_checkpoint(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    tokenizer: str | os.PathLike | None = None,
    preset: str = "seagull-7b",
    dtype: torch.dtype = torch.float16,
) -> dict[str, Any]:
    """Convert a reference checkpoint to a ``SeagullForConditionalGeneration`` folder (+ processor)."""
    from .factory import preset_config
    from .modeling_seagull import SeagullForConditionalGeneration
    from .processing_seagull import SeagullProcessor

    reference = load_reference_state_dict(checkpoint)
    config = config_from_reference(reference, preset_config(preset))
    state, report = convert_state_dict(reference, config.text_config.vocab_size)
    if report["unknown"]:
        raise ValueError(
            f"{len(report['unknown'])} reference keys have no counterpart: {report['unknown'][:10]}"
        )
    tok = None
    if tokenizer or Path(checkpoint).is_dir():
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(tokenizer or checkpoint)
        tok.add_tokens([config.image_token, config.global_token, config.local_token], special_tokens=True)
        if len(tok) > config.text_config.vocab_size:
            raise ValueError(
                f"tokenizer has {len(tok)} tokens, the converted LLM {config.text_config.vocab_size}"
            )
        for name in ("image", "global", "local"):
            setattr(config, f"{name}_token_id", tok.convert_tokens_to_ids(getattr(config, f"{name}_token")))
    with torch.device("meta"):
        model = SeagullForConditionalGeneration(config)
    model.load_state_dict(state, strict=True, assign=True)
    model.to(dtype)
    model.save_pretrained(out_dir)
    if tok is not None:
        SeagullProcessor.from_model_config(config, tok).save_pretrained(out_dir)
    with open(Path(out_dir) / "conversion_report.json", "w", encoding="utf-8") as f:
        json.dump({k: len(v) for k, v in report.items()} | {"unused_keys": report["unused"]}, f, indent=2)
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="reference checkpoint folder or weights file")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the checkpoint folder)")
    parser.add_argument("--preset", default="seagull-7b")
    parser.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    args = parser.parse_args(argv)
    report = convert_checkpoint(
        args.checkpoint, args.out, args.tokenizer, args.preset, getattr(torch, args.dtype)
    )
    print(f"mapped {len(report['mapped'])} keys, dropped {len(report['unused'])} unused ones -> {args.out}")


if __name__ == "__main__":
    main()
