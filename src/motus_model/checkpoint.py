"""Checkpoint I/O: our folder format, the reference (DeepSpeed) release, and diffusers Wan2.2 weights.

Every loader maps keys explicitly and is strict: missing, unexpected or mis-shaped keys
raise ONE ``CheckpointError`` listing all of them (the reference loads with
``strict=False``, which hides such problems).

Reference naming assumed for the action and understanding experts
-----------------------------------------------------------------
The reference release (thu-ml/Motus, ``mp_rank_00_model_states.pt``) does not publish its
key list. The video expert keeps the original Wan names under ``video_model.wan_model.``
(checked against the Wan layout). For the two new experts the names below are INFERRED
from the reference code structure (``input_encoder``/``decoder`` are named in its README's
stage-3 notes); change ``_ACTION_RENAMES``/``_UND_RENAMES`` if a real file disagrees:

===========================================================  ==========================================
reference key (inferred)                                     MotusModel key
===========================================================  ==========================================
video_model.wan_model.<wan name>                             video.<wan name>
action_expert.state_encoder.{0,2,4}.{weight,bias}            action_expert.state_encoder.*
action_expert.input_encoder.{0,2,4}.{weight,bias}            action_expert.action_encoder.*
action_expert.registers                                      action_expert.registers
action_expert.time_embedding.{0,2}.* / time_projection.1.*   action_expert.time_embedding.* / time_projection.1.*
action_expert.blocks.N.modulation                            action_expert.blocks.N.modulation
action_expert.blocks.N.qkv  [3, heads, D, head_dim]          action_expert.blocks.N.attn.qkv
action_expert.blocks.N.norm_q / norm_k .weight               action_expert.blocks.N.attn.norm_q / norm_k .weight
action_expert.blocks.N.o.weight / ffn.{0,2}.*                action_expert.blocks.N.o.weight / ffn.{0,2}.*
action_expert.decoder.modulation / decoder.head.*            action_expert.head.modulation / head.head.*
und_expert.adapter.{0,2,4}.*                                 und_expert.adapter.*
und_expert.blocks.N.qkv / norm_q / norm_k                    und_expert.blocks.N.attn.qkv / attn.norm_q / attn.norm_k
und_expert.blocks.N.{norm1, o, norm2, ffn.0, ffn.2}.*        und_expert.blocks.N.{norm1, o, norm2, ffn.0, ffn.2}.*
vlm_model.<HF Qwen3-VL name>                                 returned separately (VLM feature extractor)
video_module.video_model.<...>                               duplicate alias of video_model.<...>: dropped if equal
===========================================================  ==========================================
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from motus_model.config import MotusConfig
from motus_model.modeling_motus import MotusModel

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
STATS_NAME = "stats.json"
REFERENCE_WEIGHTS_NAME = "mp_rank_00_model_states.pt"

# Parameters kept in float32 when a model is loaded in a lower precision (as diffusers'
# ``_keep_in_fp32_modules`` for Wan): AdaLN modulation, time embeddings and norms.
_KEEP_FP32 = re.compile(r"(modulation|time_embedding|time_projection|norm)")


class CheckpointError(RuntimeError):
    """A checkpoint does not match the model: lists every missing, unexpected and mis-shaped key."""


# ----------------------------------------------------------------------------------------
# Strict assignment shared by all loaders
# ----------------------------------------------------------------------------------------


def _report(source: str, missing: list[str], unexpected: list[str], mis_shaped: list[str]) -> None:
    if not (missing or unexpected or mis_shaped):
        return
    lines = [f"checkpoint {source} does not match the model:"]
    for title, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", mis_shaped)):
        if keys:
            shown = keys[:50] + ([f"... and {len(keys) - 50} more"] if len(keys) > 50 else [])
            lines.append(f"  {title} ({len(keys)}): " + ", ".join(shown))
    raise CheckpointError("\n".join(lines))


def _check(source: str, expected: Mapping[str, torch.Size], state_dict: Mapping[str, torch.Tensor]) -> None:
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mis_shaped = sorted(
        f"{key} (expected {tuple(expected[key])}, got {tuple(state_dict[key].shape)})"
        for key in set(expected) & set(state_dict)
        if tuple(state_dict[key].shape) != tuple(expected[key])
    )
    _report(source, missing, unexpected, mis_shaped)


def _target_dtype(name: str, dtype: torch.dtype | None, stored: torch.dtype) -> torch.dtype:
    if dtype is None:
        return stored
    if dtype in (torch.float16, torch.bfloat16) and _KEEP_FP32.search(name):
        return torch.float32
    return dtype


def _assign(model: MotusModel, state_dict: Mapping[str, torch.Tensor], source: str, device, dtype) -> None:
    """Strictly copy ``state_dict`` (our names) into ``model`` (possibly on meta)."""
    expected = {name: p.shape for name, p in model.state_dict().items()}
    _check(source, expected, state_dict)
    converted = {}
    for name, tensor in tqdm(state_dict.items(), desc=f"loading {Path(source).name}", unit="tensor", leave=False):
        converted[name] = tensor.to(device=device, dtype=_target_dtype(name, dtype, tensor.dtype))
    model.load_state_dict(converted, strict=True, assign=True)


def _build_on_meta(config: MotusConfig) -> MotusModel:
    with torch.device("meta"):
        return MotusModel(config)


# ----------------------------------------------------------------------------------------
# Our format
# ----------------------------------------------------------------------------------------


def save_pretrained(model: MotusModel, directory: str | Path, stats: dict | None = None) -> Path:
    """Write a checkpoint folder::

        directory/
        ├── config.json          MotusConfig.to_dict()
        ├── model.safetensors    every parameter, MotusModel names
        └── stats.json           optional normalisation stats, an opaque nested dict of
                                 float lists, e.g. {"action": {"mean": [...], "std": [...],
                                 "min": [...], "max": [...]}, "state": {...}}
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.config.save(directory / CONFIG_NAME)
    tensors = {name: tensor.detach().contiguous().cpu() for name, tensor in model.state_dict().items()}
    save_file(tensors, str(directory / WEIGHTS_NAME), metadata={"format": "pt"})
    if stats is not None:
        (directory / STATS_NAME).write_text(json.dumps(_jsonable(stats), indent=2, sort_keys=True) + "\n")
    elif (directory / STATS_NAME).exists():
        (directory / STATS_NAME).unlink()  # a stale stats file would silently mis-normalise
    logger.info("saved Motus checkpoint (%d tensors) to %s", len(tensors), directory)
    return directory


def _jsonable(value):
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


def load_pretrained(
    directory: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype | None = None
) -> tuple[MotusModel, dict | None]:
    """Strictly load a folder written by ``save_pretrained``.

    Returns the model (eval mode) and the stats dict (None when the folder has no stats.json).
    ``dtype`` casts weights (AdaLN, time embeddings and norms stay float32 under fp16/bf16).
    """
    directory = Path(directory)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (directory / name).is_file():
            raise CheckpointError(f"{directory} is not a Motus checkpoint: {name} is missing")
    config = MotusConfig.load(directory / CONFIG_NAME)
    model = _build_on_meta(config)
    state_dict = load_file(str(directory / WEIGHTS_NAME))
    _assign(model, state_dict, str(directory / WEIGHTS_NAME), device, dtype)
    stats = json.loads((directory / STATS_NAME).read_text()) if (directory / STATS_NAME).is_file() else None
    logger.info("loaded Motus checkpoint %s (%s)", directory, model.count_parameters())
    return model.eval(), stats


# ----------------------------------------------------------------------------------------
# The reference release (DeepSpeed mp_rank_00_model_states.pt)
# ----------------------------------------------------------------------------------------

_VIDEO_PREFIX = "video_model.wan_model."
_VLM_PREFIX = "vlm_model."
# alias prefix -> canonical prefix (the wrapper modules reference the same submodules).
_ALIASES = {"video_module.video_model.": "video_model."}
# (our sub-name regex, reference sub-name) inside action_expert.* / und_expert.*
_ACTION_RENAMES = [
    (r"^action_encoder\.", "input_encoder."),
    (r"^blocks\.(\d+)\.attn\.", r"blocks.\1."),
    (r"^head\.", "decoder."),
]
_UND_RENAMES = [
    (r"^blocks\.(\d+)\.attn\.", r"blocks.\1."),
]


def _reference_name(our_name: str) -> str:
    """Our parameter name -> the reference's (see the table in the module docstring)."""
    if our_name.startswith("video."):
        return _VIDEO_PREFIX + our_name[len("video."):]
    for prefix, renames in (("action_expert.", _ACTION_RENAMES), ("und_expert.", _UND_RENAMES)):
        if our_name.startswith(prefix):
            rest = our_name[len(prefix):]
            for pattern, replacement in renames:
                rest = re.sub(pattern, replacement, rest)
            return prefix + rest
    raise ValueError(f"no reference name for parameter {our_name!r}")


def reference_key_map(config: MotusConfig) -> dict[str, str]:
    """Explicit {reference key: MotusModel key} for every parameter of ``config``'s model."""
    model = _build_on_meta(config)
    key_map = {_reference_name(name): name for name in model.state_dict()}
    if len(key_map) != len(model.state_dict()):
        raise RuntimeError("reference key map is not one-to-one; fix _ACTION_RENAMES/_UND_RENAMES")
    return key_map


def _deduplicate_aliases(module_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop alias keys whose canonical key holds an identical tensor; rename lone aliases."""
    result = {key: value for key, value in module_state.items() if not key.startswith(tuple(_ALIASES))}
    conflicts = []
    dropped = 0
    for key, value in module_state.items():
        alias = next((a for a in _ALIASES if key.startswith(a)), None)
        if alias is None:
            continue
        canonical = _ALIASES[alias] + key[len(alias):]
        if canonical in module_state:
            if module_state[canonical].shape != value.shape or not torch.equal(module_state[canonical], value):
                conflicts.append(f"{key} differs from {canonical}")
            dropped += 1
        else:
            result[canonical] = value
    if conflicts:
        raise CheckpointError("alias keys hold tensors different from their canonical keys: " + ", ".join(conflicts[:20]))
    if dropped:
        logger.info("dropped %d duplicate alias keys (%s)", dropped, ", ".join(_ALIASES))
    return result


def load_reference_checkpoint(
    path: str | Path, config: MotusConfig, device: torch.device | str = "cpu", dtype: torch.dtype | None = None
) -> tuple[MotusModel, dict[str, torch.Tensor]]:
    """Load a thu-ml/Motus release folder (or the ``.pt`` file itself).

    Returns ``(model, vlm_state_dict)``: the Qwen3-VL weights (``vlm_model.*``) are not part of
    MotusModel; they are returned with the prefix stripped, for the VLM feature extractor.
    """
    path = Path(path)
    file = path / REFERENCE_WEIGHTS_NAME if path.is_dir() else path
    if not file.is_file():
        raise CheckpointError(f"reference checkpoint file not found: {file}")
    logger.info("reading reference checkpoint %s", file)
    # mmap: the release file holds the 8B model plus Qwen3-VL (~20 GB); map it instead of reading it all.
    payload = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    if not isinstance(payload, Mapping) or "module" not in payload:
        raise CheckpointError(f"{file} has no 'module' state dict (keys: {sorted(payload)[:10] if isinstance(payload, Mapping) else type(payload).__name__})")
    module_state = _deduplicate_aliases(dict(payload["module"]))

    vlm_state = {key[len(_VLM_PREFIX):]: value for key, value in module_state.items() if key.startswith(_VLM_PREFIX)}
    if vlm_state:
        logger.info("routed %d vlm_model.* tensors to the VLM feature extractor", len(vlm_state))
    key_map = reference_key_map(config)
    model = _build_on_meta(config)
    expected_shapes = {ref: model.state_dict()[ours].shape for ref, ours in key_map.items()}
    motus_state = {key: value for key, value in module_state.items() if not key.startswith(_VLM_PREFIX)}
    _check(str(file), expected_shapes, motus_state)
    renamed = {key_map[ref]: tensor for ref, tensor in motus_state.items()}
    _assign(model, renamed, str(file), device, dtype)
    return model.eval(), vlm_state


# ----------------------------------------------------------------------------------------
# Public Wan2.2-TI2V-5B transformer in diffusers layout
# ----------------------------------------------------------------------------------------

_DIFFUSERS_BLOCK_RENAMES = {
    "scale_shift_table": "modulation",
    "attn1.to_q.": "self_attn.q.",
    "attn1.to_k.": "self_attn.k.",
    "attn1.to_v.": "self_attn.v.",
    "attn1.to_out.0.": "self_attn.o.",
    "attn1.norm_q.": "self_attn.norm_q.",
    "attn1.norm_k.": "self_attn.norm_k.",
    "attn2.to_q.": "cross_attn.q.",
    "attn2.to_k.": "cross_attn.k.",
    "attn2.to_v.": "cross_attn.v.",
    "attn2.to_out.0.": "cross_attn.o.",
    "attn2.norm_q.": "cross_attn.norm_q.",
    "attn2.norm_k.": "cross_attn.norm_k.",
    # diffusers' norm2 is the affine cross-attention norm, Wan's norm3.
    "norm2.": "norm3.",
    "ffn.net.0.proj.": "ffn.0.",
    "ffn.net.2.": "ffn.2.",
}
_DIFFUSERS_TOP_RENAMES = {
    "patch_embedding.": "patch_embedding.",
    "condition_embedder.text_embedder.linear_1.": "text_embedding.0.",
    "condition_embedder.text_embedder.linear_2.": "text_embedding.2.",
    "condition_embedder.time_embedder.linear_1.": "time_embedding.0.",
    "condition_embedder.time_embedder.linear_2.": "time_embedding.2.",
    "condition_embedder.time_proj.": "time_projection.1.",
    # head: scale_shift_table [1, 2, D] is Wan's head.modulation [1, 2, D] (same order: shift, scale).
    "scale_shift_table": "head.modulation",
    "proj_out.": "head.head.",
}


def diffusers_wan_key_map(num_layers: int) -> dict[str, str]:
    """Explicit {diffusers key: Wan (video expert) key} for a WanTransformer3DModel of ``num_layers``."""
    suffixes = ("weight", "bias")
    key_map = {}
    for source, target in _DIFFUSERS_TOP_RENAMES.items():
        if source.endswith("."):
            for suffix in suffixes:
                key_map[source + suffix] = target + suffix
        else:
            key_map[source] = target
    for layer in range(num_layers):
        for source, target in _DIFFUSERS_BLOCK_RENAMES.items():
            if source.endswith("."):
                names = ("weight",) if "norm_q" in source or "norm_k" in source else suffixes
                for suffix in names:
                    key_map[f"blocks.{layer}.{source}{suffix}"] = f"blocks.{layer}.{target}{suffix}"
            else:
                key_map[f"blocks.{layer}.{source}"] = f"blocks.{layer}.{target}"
    return key_map


def _read_diffusers_folder(directory: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{directory} has no config.json (expected a diffusers WanTransformer3DModel folder)")
    wan_config = json.loads(config_file.read_text())
    index_files = sorted(directory.glob("*.safetensors.index.json"))
    if index_files:
        shard_names = sorted(set(json.loads(index_files[0].read_text())["weight_map"].values()))
        shards = [directory / name for name in shard_names]
    else:
        shards = sorted(directory.glob("*.safetensors"))
    if not shards:
        raise CheckpointError(f"{directory} holds no .safetensors weights")
    state_dict: dict[str, torch.Tensor] = {}
    for shard in tqdm(shards, desc="reading Wan shards", unit="file", leave=False):
        state_dict.update(load_file(str(shard)))
    return wan_config, state_dict


def _check_wan_config(wan_config: Mapping, config: MotusConfig) -> None:
    video = config.video
    expected = {
        "num_layers": config.num_layers,
        "num_attention_heads": video.num_heads,
        "attention_head_dim": video.head_dim,
        "in_channels": video.latent_channels,
        "out_channels": video.latent_channels,
        "ffn_dim": video.ffn_dim,
        "text_dim": video.text_dim,
        "freq_dim": video.freq_dim,
        "patch_size": list(video.patch_size),
    }
    wrong = [
        f"{key} (Motus {value}, Wan {wan_config[key]})"
        for key, value in expected.items()
        if key in wan_config and (list(wan_config[key]) if key == "patch_size" else wan_config[key]) != value
    ]
    if wrong:
        raise CheckpointError("Wan transformer config does not match the Motus video expert: " + ", ".join(wrong))


def load_wan_diffusers_transformer(
    model: MotusModel, directory_or_state_dict: str | Path | Mapping[str, torch.Tensor]
) -> MotusModel:
    """Load Wan2.2-TI2V-5B (diffusers ``WanTransformer3DModel`` layout) into ``model.video``, strictly.

    Accepts a folder (config.json + single or sharded safetensors) or a diffusers state dict.
    The action and understanding experts are left untouched. Returns ``model``.
    """
    if isinstance(directory_or_state_dict, Mapping):
        state_dict, source = dict(directory_or_state_dict), "<state dict>"
    else:
        directory = Path(directory_or_state_dict)
        wan_config, state_dict = _read_diffusers_folder(directory)
        _check_wan_config(wan_config, model.config)
        source = str(directory)
    key_map = diffusers_wan_key_map(model.config.num_layers)
    video_shapes = {name: p.shape for name, p in model.video.state_dict().items()}
    expected = {source_key: video_shapes[target] for source_key, target in key_map.items() if target in video_shapes}
    if len(expected) != len(video_shapes):
        raise RuntimeError("diffusers Wan key map does not cover every video-expert parameter")
    _check(source, expected, state_dict)
    device = model.video.patch_embedding.weight.device
    video_state = model.video.state_dict()
    renamed = {}
    for key, tensor in tqdm(state_dict.items(), desc="loading Wan transformer", unit="tensor", leave=False):
        target = video_state[key_map[key]]
        renamed[key_map[key]] = tensor.to(device=device if device.type != "meta" else "cpu", dtype=target.dtype)
    model.video.load_state_dict(renamed, strict=True, assign=device.type == "meta")
    logger.info("loaded %d Wan transformer tensors from %s into the video expert", len(renamed), source)
    return model
