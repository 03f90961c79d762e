"""Presets and the one-call entry point (timm's ``create_model``, open_clip's model + preprocessing).

Presets are JSON config files kept in ``configuration/models/`` (installed inside the package as
``modeling_rsfiqa/presets``); their ``model_type`` picks the family (:data:`FAMILIES`)::

    model, processor = create_model("rsfiqa-mobile", pretrained_backbone=True)
    model, processor = create_model("seagull-tiny")
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["list_presets", "preset_config", "create_model", "preset_dirs", "FAMILIES"]

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
    for check in ("validate_rsfiqa", "validate_seagull"):
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
