"""Presets and the one-call entry point (timm's ``create_model``, open_clip's model + preprocessing).

Presets are JSON config files kept in ``configuration/models/`` (installed inside the package as
``modeling_rsfiqa/presets``); their ``model_type`` picks the family (:data:`FAMILIES`)::

    model, processor = create_model("rsfiqa-mobile", pretrained_backbone=True)
    model, processor = create_model("seagull-tiny")
    model, processor = create_model("qclip-tiny")
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any

__all__ = [
    "list_presets",
    "preset_config",
    "create_model",
    "preset_dirs",
    "FAMILIES",
    "create_qclip_model",
    "qclip_preset_config",
    "qclip_tokenizer",
]

#: model_type -> (config module, config class, ``module.function`` creating ``(model, processor)``; called as
#: ``fn(folder_or_none, config_or_none, pretrained_backbone, backend)``; None: RSFIQA, handled here)
FAMILIES: dict[str, tuple[str, str, str | None]] = {
    "rsfiqa": ("configuration_rsfiqa", "RSFIQAConfig", None),
    "seagull": ("configuration_seagull", "SeagullConfig", "modeling_seagull.create_seagull_model"),
    "seagull_region": (
        "configuration_seagull",
        "SeagullRegionConfig",
        "modeling_seagull.create_seagull_model",
    ),
    "qclip": ("configuration_qclip", "QCLIPConfig", "factory._create_qclip"),
}


def _sibling(dotted: str) -> Any:
    module, name = dotted.rsplit(".", 1)
    return getattr(importlib.import_module(f".{module}", __package__), name)


def _config_class(model_type: str) -> Any:
    if model_type not in FAMILIES:
        raise ValueError(f"unknown model_type {model_type!r}; known: {sorted(FAMILIES)}")
    module, name, _ = FAMILIES[model_type]
    return _sibling(f"{module}.{name}")


def _json_model_type(path: Path) -> str:
    with open(path, encoding="utf-8") as f:
        return json.load(f).get("model_type", "rsfiqa")


def preset_dirs() -> list[Path]:
    """Where presets are looked up: the installed package data, then a source checkout's configuration/."""
    here = Path(__file__).resolve().parent
    return [d for d in (here / "presets", here.parent / "configuration" / "models") if d.is_dir()]


def list_presets(model_type: str | None = None) -> list[str]:
    """Preset names, optionally only those of one family (``"rsfiqa"``, ``"seagull"``, ...)."""
    files = {p.stem: p for d in reversed(preset_dirs()) for p in d.glob("*.json")}
    return sorted(n for n, p in files.items() if model_type is None or _json_model_type(p) == model_type)


def _load_config(path: Path) -> Any:
    return _config_class(_json_model_type(path)).from_json_file(str(path))


def preset_config(name_or_path: str | os.PathLike, **overrides) -> Any:
    """Config from a preset name, a JSON file or a saved model folder; ``overrides`` replace fields.

    The JSON's ``model_type`` picks the config class (:data:`FAMILIES`; RSFIQA when absent)."""
    path = Path(name_or_path)
    if path.is_dir():
        config = _load_config(path / "config.json")
    elif path.suffix == ".json" and path.is_file():
        config = _load_config(path)
    else:
        for d in preset_dirs():
            candidate = d / f"{name_or_path}.json"
            if candidate.is_file():
                config = _load_config(candidate)
                break
        else:
            raise FileNotFoundError(
                f"No preset, JSON file or model folder {str(name_or_path)!r}; presets: {list_presets()}"
            )
    for key, value in overrides.items():
        if not hasattr(config, key):
            raise ValueError(f"{type(config).__name__} has no field {key!r}")
        setattr(config, key, value)
    for check in ("validate_rsfiqa", "validate_seagull", "validate_qclip"):
        if hasattr(config, check):
            getattr(config, check)()
    return config


def create_model(
    name_or_path: str | os.PathLike,
    pretrained_backbone: bool | str = False,
    backend: str = "torchvision",
    **overrides,
):
    """Return ``(model, processor)`` for a preset name, a config JSON or a saved folder.

    ``pretrained_backbone``: False (random), True (``config.backbone_pretrained``) or a weights file. A saved
    folder loads its trained weights and processor with ``from_pretrained``.
    """
    path = Path(name_or_path)
    model_type = _json_model_type(path / "config.json" if path.is_dir() else _preset_file(name_or_path))
    _config_class(model_type)  # unknown families fail here
    if FAMILIES[model_type][2] is not None:
        creator = _sibling(FAMILIES[model_type][2])
        if path.is_dir() and not overrides:
            return creator(path, None, pretrained_backbone, backend)
        return creator(None, preset_config(name_or_path, **overrides), pretrained_backbone, backend)
    from .modeling_rsfiqa import RSFIQAForQualityScoring
    from .processing_rsfiqa import RSFIQAProcessor

    if path.is_dir() and (path / "config.json").is_file() and not overrides:
        model = RSFIQAForQualityScoring.from_pretrained(path)
        try:
            processor = RSFIQAProcessor.from_pretrained(path)
        except (OSError, ValueError):
            processor = RSFIQAProcessor.from_model_config(model.config, backend=backend)
        return model, processor
    config = preset_config(name_or_path, **overrides)
    model = RSFIQAForQualityScoring(config)
    if pretrained_backbone:
        source = pretrained_backbone if isinstance(pretrained_backbone, str) else None
        if source is None and config.backbone_pretrained and not os.path.isabs(config.backbone_pretrained):
            # relative paths in presets are relative to the project root (e.g. ../shared/weights/...)
            root = Path(__file__).resolve().parent.parent
            candidate = (root / config.backbone_pretrained).resolve()
            source = str(candidate) if candidate.exists() else config.backbone_pretrained
        model.load_pretrained_backbone(source)
    return model, RSFIQAProcessor.from_model_config(config, backend=backend)


def _preset_file(name_or_path: str | os.PathLike) -> Path:
    path = Path(name_or_path)
    if path.suffix == ".json" and path.is_file():
        return path
    for d in preset_dirs():
        if (d / f"{name_or_path}.json").is_file():
            return d / f"{name_or_path}.json"
    raise FileNotFoundError(
        f"No preset, JSON file or model folder {str(name_or_path)!r}; presets: {list_presets()}"
    )


# ----------------------------------------------------------------------------------------------------------
# Q-CLIP (video quality): the prompts are tokenised by the processor and stored in the config
# ----------------------------------------------------------------------------------------------------------
def qclip_preset_config(name_or_path: str | os.PathLike, **overrides):
    """:class:`QCLIPConfig` from a preset name, a JSON file or a saved folder; ``overrides`` replace fields."""
    config = preset_config(name_or_path, **overrides)
    if config.model_type != "qclip":
        raise ValueError(f"{str(name_or_path)!r} is a {config.model_type!r} config, not a Q-CLIP one")
    return config


def qclip_tokenizer(config):
    """The tokenizer a Q-CLIP config names: ``"prompt-vocabulary"`` (built in code) or a folder / Hub id."""
    from .processing_qclip import prompt_vocabulary_tokenizer

    name = config.tokenizer_name_or_path
    text_config = getattr(config.vlm_config, "text_config", None)
    max_length = getattr(text_config, "max_position_embeddings", None) or 77
    if name == "prompt-vocabulary" or name is None:
        words = sorted({w for prompt in config.prompts for w in prompt.split()})
        return prompt_vocabulary_tokenizer(words, model_max_length=max_length)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name, model_max_length=max_length)


def _create_qclip(folder, config, pretrained_backbone=False, backend="torchvision", tokenizer=None):
    """:data:`FAMILIES` creator of Q-CLIP (``backend`` does not apply: frames are prepared by the video processor).

    A fresh config gets its prompt token ids (re)computed with the tokenizer, so overridden prompt settings and
    another ``tokenizer`` take effect (for unchanged settings this reproduces the stored ids)."""
    from .modeling_qclip import QCLIPForVideoQualityScoring
    from .processing_qclip import QCLIPProcessor

    if folder is not None:
        model = QCLIPForVideoQualityScoring.from_pretrained(folder)
        try:
            processor = QCLIPProcessor.from_pretrained(folder)
        except (OSError, ValueError, TypeError):
            processor = QCLIPProcessor.from_model_config(
                model.config, tokenizer or qclip_tokenizer(model.config)
            )
        return model, processor
    processor = QCLIPProcessor.from_model_config(config, tokenizer or qclip_tokenizer(config))
    processor.fill_prompt_fields(config)
    model = QCLIPForVideoQualityScoring(config)
    if pretrained_backbone:
        model.load_pretrained_vlm(pretrained_backbone if isinstance(pretrained_backbone, str) else None)
    return model, processor


def create_qclip_model(
    name_or_path: str | os.PathLike, pretrained_vlm: bool | str = False, tokenizer=None, **overrides
):
    """``(model, processor)`` of Q-CLIP for a preset, a config JSON or a saved folder (as :func:`create_model`,
    plus a prompt ``tokenizer``).

    ``pretrained_vlm``: False (random towers), True (``config.vlm_name_or_path``) or a source (transformers
    folder / Hub id, or a PE-Core ``.pt`` file). ``tokenizer``: overrides ``config.tokenizer_name_or_path``.
    """
    path = Path(name_or_path)
    if path.is_dir() and (path / "config.json").is_file() and not overrides:
        return _create_qclip(path, None, pretrained_vlm, tokenizer=tokenizer)
    return _create_qclip(
        None, qclip_preset_config(name_or_path, **overrides), pretrained_vlm, tokenizer=tokenizer
    )
