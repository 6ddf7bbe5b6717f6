"""One save/load implementation for every network of the package (Motus, ConvIDM, latent-action VAE).

A checkpoint folder is::

    directory/
    ├── config.json          the model's config (``config.to_dict()``)
    ├── model.safetensors    every state-dict tensor, the model's own names
    └── stats.json           optional normalisation stats (opaque nested dict, ``Normalizer.to_dict()``)

Loading is strict: missing, unexpected and mis-shaped keys are reported together in ONE
``CheckpointError``; non-finite weights and missing files are refused with a one-line message
naming the file and the fix. ``from_pretrained`` always returns the model alone; the stats
are read with ``load_stats`` (one return shape for every model).

This module imports nothing from the model modules, so any of them may import it.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from safetensors.torch import load_file, save_file
from torch import nn

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
STATS_NAME = "stats.json"

ModelT = TypeVar("ModelT", bound="PretrainedMixin")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used as it is: wrong keys, corrupt weights or missing files."""


class MissingCheckpointFileError(CheckpointError, FileNotFoundError):
    """A required file of a checkpoint folder is absent."""


# ----------------------------------------------------------------------------------------
# Strict checks shared by every loader (ours and the converters)
# ----------------------------------------------------------------------------------------


def check_state_dict(
    source: str, expected: Mapping[str, torch.Size | tuple[int, ...]], state_dict: Mapping[str, torch.Tensor]
) -> None:
    """Raise ONE ``CheckpointError`` listing every missing, unexpected and mis-shaped key."""
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mis_shaped = sorted(
        f"{key} (expected {tuple(expected[key])}, got {tuple(state_dict[key].shape)})"
        for key in set(expected) & set(state_dict)
        if tuple(state_dict[key].shape) != tuple(expected[key])
    )
    if not (missing or unexpected or mis_shaped):
        return
    lines = [f"checkpoint {source} does not match the model:"]
    for title, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", mis_shaped)):
        if keys:
            shown = keys[:50] + ([f"... and {len(keys) - 50} more"] if len(keys) > 50 else [])
            lines.append(f"  {title} ({len(keys)}): " + ", ".join(shown))
    raise CheckpointError("\n".join(lines))


def check_finite(source: str, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Refuse NaN/Inf weights at load: otherwise the model loads and every request fails later."""
    bad = [
        name
        for name, tensor in state_dict.items()
        if tensor.is_floating_point() and tensor.device.type != "meta" and not bool(torch.isfinite(tensor).all())
    ]
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise CheckpointError(
            f"{source}: {len(bad)} tensor(s) hold NaN or Inf ({shown}); "
            "the file is corrupt: re-export or re-download it"
        )


def require_files(directory: Path, names: tuple[str, ...], what: str) -> None:
    """One-line refusal when the folder or a required file is absent."""
    if not directory.is_dir():
        raise MissingCheckpointFileError(
            f"{what} folder not found: {directory} does not exist; pass a checkpoint folder"
        )
    for name in names:
        if not (directory / name).is_file():
            raise MissingCheckpointFileError(
                f"{directory / name} is missing: {directory} is not a {what} checkpoint; "
                "pass a folder written by save_pretrained"
            )


def load_stats(directory: str | Path) -> dict | None:
    """The folder's ``stats.json`` as a dict, or None when it has none."""
    path = Path(directory) / STATS_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path} is not valid JSON ({error}); re-export the checkpoint's stats") from None


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    raise TypeError(f"stats must hold dicts, lists, numbers, tensors or arrays; got {type(value).__name__}")


def save_stats(directory: str | Path, stats: Mapping[str, Any] | None) -> None:
    """Write ``stats.json``, or remove a stale one when ``stats`` is None (it would silently mis-normalise)."""
    path = Path(directory) / STATS_NAME
    if stats is not None:
        path.write_text(json.dumps(_jsonable(stats), indent=2, sort_keys=True) + "\n")
    elif path.exists():
        path.unlink()


def target_dtype(
    name: str, dtype: torch.dtype | None, stored: torch.dtype, keep_fp32: re.Pattern | None
) -> torch.dtype:
    """The dtype a tensor is loaded in: ``dtype``, except names matching ``keep_fp32`` stay float32 under fp16/bf16."""
    if dtype is None or not stored.is_floating_point:
        return stored
    if dtype in (torch.float16, torch.bfloat16) and keep_fp32 is not None and keep_fp32.search(name):
        return torch.float32
    return dtype


def assign_state_dict(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    source: str,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    keep_fp32: re.Pattern | None = None,
) -> None:
    """Strictly copy ``state_dict`` (the model's names) into ``model``, which may live on the meta device."""
    expected = {name: tensor.shape for name, tensor in model.state_dict().items()}
    check_state_dict(source, expected, state_dict)
    check_finite(source, state_dict)
    converted = {}
    for name, tensor in state_dict.items():
        moved = tensor.to(device=device, dtype=target_dtype(name, dtype, tensor.dtype, keep_fp32))
        # A tensor read from a .safetensors file can sit at any 8-byte offset, and CPU matmuls round differently
        # with the alignment: the same weights in two files gave actions 2e-7 apart, which flipped 6 of 50
        # closed-loop episodes. Torch's own allocation (64-byte aligned) makes the numbers the weights'.
        converted[name] = moved.clone() if moved.data_ptr() == tensor.data_ptr() else moved
    model.load_state_dict(converted, strict=True, assign=True)
    left_on_meta = [name for name, tensor in [*model.named_parameters(), *model.named_buffers()] if tensor.is_meta]
    if left_on_meta:  # a non-persistent buffer the state dict cannot fill: a model bug, not a file problem
        raise RuntimeError(f"{type(model).__name__} has tensors no checkpoint fills: {left_on_meta[:5]}")


# ----------------------------------------------------------------------------------------
# The mixin
# ----------------------------------------------------------------------------------------


class PretrainedMixin:
    """``save_pretrained`` / ``from_pretrained`` for an ``nn.Module`` with a ``config`` attribute.

    Subclasses set ``config_class`` (with ``to_dict`` / ``from_dict``) and may set
    ``model_type`` (checked against the config's ``model_type`` field, so a folder of another
    model is refused with a clear message) and ``keep_fp32`` (names kept float32 under fp16/bf16).
    """

    config_class: ClassVar[Any]
    model_type: ClassVar[str | None] = None
    keep_fp32: ClassVar[re.Pattern | None] = None
    config: Any

    def save_pretrained(self, directory: str | Path, stats: Mapping[str, Any] | None = None) -> Path:
        """Write ``config.json`` + ``model.safetensors`` (+ ``stats.json`` when given; a stale one is removed)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CONFIG_NAME).write_text(json.dumps(self.config.to_dict(), indent=2, sort_keys=True) + "\n")
        tensors = {name: tensor.detach().contiguous().cpu() for name, tensor in self.state_dict().items()}
        metadata = {"format": "pt", "model_type": self.model_type or type(self).__name__}
        save_file(tensors, str(directory / WEIGHTS_NAME), metadata=metadata)
        save_stats(directory, stats)
        logger.info("saved %s (%d tensors) to %s", type(self).__name__, len(tensors), directory)
        return directory

    @classmethod
    def from_pretrained(
        cls: type[ModelT], directory: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype | None = None
    ) -> ModelT:
        """Strictly load a folder written by ``save_pretrained``; returns the model in eval mode.

        The model is built on the meta device and the weights assigned, so no random init runs.
        """
        directory = Path(directory)
        require_files(directory, (CONFIG_NAME, WEIGHTS_NAME), cls.__name__)
        config_file = directory / CONFIG_NAME
        try:
            data = json.loads(config_file.read_text())
        except json.JSONDecodeError as error:
            raise CheckpointError(f"{config_file} is not valid JSON ({error}); re-export the checkpoint") from None
        if cls.model_type is not None and isinstance(data, dict) and data.get("model_type") != cls.model_type:
            raise ValueError(
                f"{config_file} is not a {cls.__name__} config (model_type {data.get('model_type')!r}, "
                f"expected {cls.model_type!r}); pass a {cls.__name__} folder"
            )
        config = cls.config_class.from_dict(data)
        with torch.device("meta"):
            model = cls(config)
        weights_file = directory / WEIGHTS_NAME
        try:
            state_dict = load_file(str(weights_file))
        except Exception as error:  # safetensors raises its own error types for truncated/garbled headers
            raise CheckpointError(f"{weights_file} cannot be read ({error}); re-export or re-download it") from None
        assign_state_dict(model, state_dict, str(weights_file), device=device, dtype=dtype, keep_fp32=cls.keep_fp32)
        logger.info("loaded %s from %s", cls.__name__, directory)
        return model.eval()
