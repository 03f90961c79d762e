"""Presets and the one-call entry point (timm's ``create_model``, open_clip's model + preprocessing).

Presets are JSON files of :class:`RSFIQAConfig` kept in ``configuration/models/`` (installed inside the
package as ``modeling_rsfiqa/presets``)::

    model, processor = create_model("rsfiqa-mobile", pretrained_backbone=True)
"""

from __future__ import annotations

import os
from pathlib import Path

from .configuration_rsfiqa import RSFIQAConfig

__all__ = ["list_presets", "preset_config", "create_model", "preset_dirs"]


def preset_dirs() -> list[Path]:
    """Where presets are looked up: the installed package data, then a source checkout's configuration/."""
    here = Path(__file__).resolve().parent
    return [d for d in (here / "presets", here.parent / "configuration" / "models") if d.is_dir()]


def list_presets() -> list[str]:
    return sorted({p.stem for d in preset_dirs() for p in d.glob("*.json")})


def preset_config(name_or_path: str | os.PathLike, **overrides) -> RSFIQAConfig:
    """Config from a preset name, a JSON file or a saved model folder; ``overrides`` replace fields."""
    path = Path(name_or_path)
    if path.is_dir():
        config = RSFIQAConfig.from_pretrained(path)
    elif path.suffix == ".json" and path.is_file():
        config = RSFIQAConfig.from_json_file(str(path))
    else:
        for d in preset_dirs():
            candidate = d / f"{name_or_path}.json"
            if candidate.is_file():
                config = RSFIQAConfig.from_json_file(str(candidate))
                break
        else:
            raise FileNotFoundError(
                f"No preset, JSON file or model folder {str(name_or_path)!r}; presets: {list_presets()}"
            )
    for key, value in overrides.items():
        if not hasattr(config, key):
            raise ValueError(f"RSFIQAConfig has no field {key!r}")
        setattr(config, key, value)
    config.validate_rsfiqa()
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
    from .modeling_rsfiqa import RSFIQAForQualityScoring
    from .processing_rsfiqa import RSFIQAProcessor

    path = Path(name_or_path)
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
