"""Compatibility facade over the two homes of checkpoint code.

- Our folder format (``config.json`` + ``model.safetensors`` + optional ``stats.json``):
  ``modeling_utils.PretrainedMixin``, i.e. ``MotusModel.save_pretrained`` / ``MotusModel.from_pretrained``.
- Foreign layouts (the thu-ml/Motus release, diffusers' Wan2.2 transformer): ``convert_checkpoints``.

``save_pretrained`` / ``load_pretrained`` below keep the older function spelling working
(``load_pretrained`` returns ``(model, stats)``). Nothing here is imported by the model modules.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from motus_model.convert_checkpoints import (
    REFERENCE_WEIGHTS_NAME,
    diffusers_wan_key_map,
    load_reference_checkpoint,
    load_wan_diffusers_transformer,
    reference_config,
    reference_key_map,
)
from motus_model.modeling_motus import MotusModel
from motus_model.modeling_utils import (
    CONFIG_NAME,
    STATS_NAME,
    WEIGHTS_NAME,
    CheckpointError,
    MissingCheckpointFileError,
    load_stats,
)

__all__ = [
    "CONFIG_NAME",
    "REFERENCE_WEIGHTS_NAME",
    "STATS_NAME",
    "WEIGHTS_NAME",
    "CheckpointError",
    "MissingCheckpointFileError",
    "diffusers_wan_key_map",
    "load_pretrained",
    "load_reference_checkpoint",
    "load_stats",
    "load_wan_diffusers_transformer",
    "reference_config",
    "reference_key_map",
    "save_pretrained",
]


def save_pretrained(model: MotusModel, directory: str | Path, stats: Mapping[str, Any] | None = None) -> Path:
    """``model.save_pretrained(directory, stats)``."""
    return model.save_pretrained(directory, stats=stats)


def load_pretrained(
    directory: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype | None = None
) -> tuple[MotusModel, dict | None]:
    """``(MotusModel.from_pretrained(directory), load_stats(directory))``."""
    return MotusModel.from_pretrained(directory, device=device, dtype=dtype), load_stats(directory)
