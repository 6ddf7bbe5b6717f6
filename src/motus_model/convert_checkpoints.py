"""Checkpoint converters: the reference release (thu-ml/Motus) and diffusers' Wan2.2 transformer.

Our own folder format lives in ``modeling_utils`` (``MotusModel.save_pretrained`` /
``from_pretrained``); this module only maps foreign key layouts onto ``MotusModel`` names, and
loads strictly (every missing, unexpected and mis-shaped key in one ``CheckpointError``; the
reference itself loads with ``strict=False``, which hides such problems).

The reference release (``mp_rank_00_model_states.pt``, a DeepSpeed ``{"module": state_dict}``)
-------------------------------------------------------------------------------------------------
Names follow the reference's module tree (``models/motus.py``, ``models/action_expert.py``,
``models/und_expert.py`` of thu-ml/Motus): ``Motus.video_model.wan_model`` (original Wan
names), ``Motus.action_expert`` and ``Motus.und_expert``; the wrappers ``video_module`` /
``und_module`` hold the same submodules again, so their keys are duplicates.

=============================================================  ==========================================
reference key                                                  MotusModel key
=============================================================  ==========================================
video_model.wan_model.<wan name>                               video.<wan name>
action_expert.input_encoder.state_encoder.{0,2,4}.*            action_expert.state_encoder.{0,2,4}.*
action_expert.input_encoder.action_encoder.{0,2,4}.*           action_expert.action_encoder.{0,2,4}.*
action_expert.input_encoder.pos_embedding  (buffer)            none: checked equal to our sin-cos table, dropped
action_expert.registers                                        action_expert.registers
action_expert.time_embedding.{0,2}.* / time_projection.1.*     same names
action_expert.blocks.N.modulation / ffn.{0,2}.*                same names
action_expert.blocks.N.wan_action_qkv  [3, heads, D, hd]       action_expert.blocks.N.attn.qkv
action_expert.blocks.N.wan_action_norm_{q,k}.weight            action_expert.blocks.N.attn.norm_{q,k}.weight
action_expert.blocks.N.wan_action_o.weight                     action_expert.blocks.N.o.weight
action_expert.decoder.modulation                               action_expert.head.modulation
action_expert.decoder.action_head.0.{weight,bias}              action_expert.head.head.{weight,bias}
und_expert.vlm_adapter.{0,2,4}.*                               und_expert.adapter.{0,2,4}.*
und_expert.blocks.N.wan_und_qkv                                und_expert.blocks.N.attn.qkv
und_expert.blocks.N.wan_und_norm_{q,k}.weight                  und_expert.blocks.N.attn.norm_{q,k}.weight
und_expert.blocks.N.wan_und_o.weight                           und_expert.blocks.N.o.weight
und_expert.blocks.N.ffn.{0,2}.*                                same names
vlm_model.<HF Qwen3-VL name>                                   returned separately (VLM feature extractor)
video_module.video_model.* / und_module.und_expert.*           duplicate aliases: dropped if equal
=============================================================  ==========================================

Norms without parameters in the reference: the action blocks' ``norm1``/``norm2``, the action
decoder's ``norm`` and the understanding blocks' ``norm1``/``norm2`` (Wan's ``WanLayerNorm``,
``elementwise_affine=False``). Our understanding norms are affine by default, so the loader
builds the model with ``understanding.norm_affine = False`` (``reference_config``).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file
from tqdm.auto import tqdm

from motus_model.config import MotusConfig
from motus_model.modeling_motus import MotusModel, sincos_positions
from motus_model.modeling_utils import (
    CheckpointError,
    MissingCheckpointFileError,
    assign_state_dict,
    check_finite,
    check_state_dict,
)
from motus_model.video_latents import PatchPCACodec

logger = logging.getLogger(__name__)

REFERENCE_WEIGHTS_NAME = "mp_rank_00_model_states.pt"


def _build_on_meta(config: MotusConfig) -> MotusModel:
    with torch.device("meta"):
        return MotusModel(config)


# ----------------------------------------------------------------------------------------
# The reference release
# ----------------------------------------------------------------------------------------

_VIDEO_PREFIX = "video_model.wan_model."
_VLM_PREFIXES = ("vlm_model.", "und_module.vlm_model.")
# alias prefix -> canonical prefix (the wrapper modules reference the same submodules).
_ALIASES = {"video_module.video_model.": "video_model.", "und_module.und_expert.": "und_expert."}
_POS_EMBEDDING = "action_expert.input_encoder.pos_embedding"
# (our sub-name regex, reference sub-name) inside action_expert.* / und_expert.*
_ACTION_RENAMES = [
    (r"^state_encoder\.", "input_encoder.state_encoder."),
    (r"^action_encoder\.", "input_encoder.action_encoder."),
    (r"^blocks\.(\d+)\.attn\.qkv$", r"blocks.\1.wan_action_qkv"),
    (r"^blocks\.(\d+)\.attn\.norm_(q|k)\.", r"blocks.\1.wan_action_norm_\2."),
    (r"^blocks\.(\d+)\.o\.", r"blocks.\1.wan_action_o."),
    (r"^head\.head\.", "decoder.action_head.0."),
    (r"^head\.modulation$", "decoder.modulation"),
]
_UND_RENAMES = [
    (r"^adapter\.", "vlm_adapter."),
    (r"^blocks\.(\d+)\.attn\.qkv$", r"blocks.\1.wan_und_qkv"),
    (r"^blocks\.(\d+)\.attn\.norm_(q|k)\.", r"blocks.\1.wan_und_norm_\2."),
    (r"^blocks\.(\d+)\.o\.", r"blocks.\1.wan_und_o."),
]


def reference_config(config: MotusConfig) -> MotusConfig:
    """``config`` with parameter-free understanding norms, as the reference's ``UndExpertBlock``."""
    if not config.understanding.norm_affine:
        return config
    return dataclasses.replace(config, understanding=dataclasses.replace(config.understanding, norm_affine=False))


def _reference_name(our_name: str) -> str:
    """Our parameter name -> the reference's (see the table in the module docstring)."""
    if our_name.startswith("video."):
        return _VIDEO_PREFIX + our_name[len("video.") :]
    for prefix, renames in (("action_expert.", _ACTION_RENAMES), ("und_expert.", _UND_RENAMES)):
        if our_name.startswith(prefix):
            rest = our_name[len(prefix) :]
            for pattern, replacement in renames:
                rest = re.sub(pattern, replacement, rest)
            return prefix + rest
    raise ValueError(f"no reference name for parameter {our_name!r}")


def reference_key_map(config: MotusConfig) -> dict[str, str]:
    """Explicit {reference key: MotusModel key} for every parameter of the model the reference layout needs."""
    model = _build_on_meta(reference_config(config))
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
        canonical = _ALIASES[alias] + key[len(alias) :]
        if canonical in module_state:
            if module_state[canonical].shape != value.shape or not torch.equal(module_state[canonical], value):
                conflicts.append(f"{key} differs from {canonical}")
            dropped += 1
        else:
            result[canonical] = value
    if conflicts:
        raise CheckpointError(
            "alias keys hold tensors different from their canonical keys: " + ", ".join(conflicts[:20])
        )
    if dropped:
        logger.info("dropped %d duplicate alias keys (%s)", dropped, ", ".join(_ALIASES))
    return result


def _check_pos_embedding(source: str, table: torch.Tensor | None, config: MotusConfig) -> None:
    """The reference stores its fixed action positions; ours are computed. Refuse a table that disagrees."""
    if table is None:
        return
    length = config.num_action_tokens()
    if table.ndim != 3 or table.shape[0] != 1 or table.shape[2] != config.action.dim or table.shape[1] < length:
        raise CheckpointError(
            f"{source}: {_POS_EMBEDDING} has shape {tuple(table.shape)}, expected [1, >= {length}, {config.action.dim}]"
        )
    ours = sincos_positions(length, config.action.dim, torch.device("cpu"))
    if not torch.allclose(table[0, :length].float(), ours, atol=1e-4):
        raise CheckpointError(f"{source}: {_POS_EMBEDDING} is not the 1-D sin-cos table this model computes")


def load_reference_checkpoint(
    path: str | Path, config: MotusConfig, device: torch.device | str = "cpu", dtype: torch.dtype | None = None
) -> tuple[MotusModel, dict[str, torch.Tensor]]:
    """Load a thu-ml/Motus release folder (or the ``.pt`` file itself).

    Returns ``(model, vlm_state_dict)``: the Qwen3-VL weights (``vlm_model.*``) are not part of
    MotusModel; they are returned with the prefix stripped, for the VLM feature extractor. The
    model's config has ``understanding.norm_affine = False`` (the reference's norms have no parameters).
    """
    path = Path(path)
    file = path / REFERENCE_WEIGHTS_NAME if path.is_dir() else path
    if not file.is_file():
        raise MissingCheckpointFileError(
            f"reference checkpoint file not found: {file}; pass the release folder holding {REFERENCE_WEIGHTS_NAME}"
        )
    logger.info("reading reference checkpoint %s", file)
    # mmap: the release file holds the 8B model plus Qwen3-VL (~20 GB); map it instead of reading it all.
    payload = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    if not isinstance(payload, Mapping) or "module" not in payload:
        found = sorted(payload)[:10] if isinstance(payload, Mapping) else type(payload).__name__
        raise CheckpointError(f"{file} has no 'module' state dict (found: {found})")
    module_state = _deduplicate_aliases(dict(payload["module"]))

    vlm_state = {}
    for prefix in _VLM_PREFIXES:
        vlm_state.update({key[len(prefix) :]: value for key, value in module_state.items() if key.startswith(prefix)})
    if vlm_state:
        logger.info("routed %d vlm_model.* tensors to the VLM feature extractor", len(vlm_state))
    config = reference_config(config)
    _check_pos_embedding(str(file), module_state.get(_POS_EMBEDDING), config)
    key_map = reference_key_map(config)
    model = _build_on_meta(config)
    expected_shapes = {ref: model.state_dict()[ours].shape for ref, ours in key_map.items()}
    motus_state = {
        key: value for key, value in module_state.items() if not key.startswith(_VLM_PREFIXES) and key != _POS_EMBEDDING
    }
    check_state_dict(str(file), expected_shapes, motus_state)
    renamed = {key_map[ref]: tensor for ref, tensor in motus_state.items()}
    assign_state_dict(model, renamed, str(file), device=device, dtype=dtype, keep_fp32=MotusModel.keep_fp32)
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
    check_state_dict(source, expected, state_dict)
    device = model.video.patch_embedding.weight.device
    video_state = model.video.state_dict()
    renamed = {}
    for key, tensor in tqdm(state_dict.items(), desc="loading Wan transformer", unit="tensor", leave=False):
        target = video_state[key_map[key]]
        renamed[key_map[key]] = tensor.to(device=device if device.type != "meta" else "cpu", dtype=target.dtype)
    check_finite(source, renamed)
    model.video.load_state_dict(renamed, strict=True, assign=device.type == "meta")
    logger.info("loaded %d Wan transformer tensors from %s into the video expert", len(renamed), source)
    return model


# ----------------------------------------------------------------------------------------
# Our own checkpoints onto another video latent space
# ----------------------------------------------------------------------------------------

# The video head's output layer: its targets change with the latent space (see pixel_patch_to_patch_pca).
VIDEO_HEAD_OUTPUT_PREFIX = "video.head.head."


def pixel_patch_to_patch_pca(model: MotusModel, codec: PatchPCACodec) -> MotusModel:
    """A copy of a ``pixel_patch`` model that reads and writes ``codec``'s PCA latents, keeping what it learned.

    The patch embedding is composed with the codec's decoder: the new embedding of a PCA latent z is the old
    embedding of its reconstruction (W (components^T (std * z) + mean) + b), so a clean frame (the conditioning
    frame the policy looks at) gives the same tokens up to the codec's reconstruction error, and exactly with
    every component kept. Every other weight is copied, except the video head's output layer, which starts
    from its fresh (zero) initialisation: the velocity it must predict, noise - z0 with unit-variance noise per
    PCA channel, is not a linear function of the old pixel velocity (the noise differs), so no map of the old
    head is right. Use it to move a trained model onto a latent space its video expert can fully denoise,
    then fine-tune (``motus convert-latents``; docs/results.md).

    Raises:
        ValueError: the model is not on pixel_patch latents with one frame per latent frame, or the codec's
            patch differs from the model's.
    """
    latents = model.config.latents
    if latents.kind != "pixel_patch" or latents.temporal_compression != 1:
        raise ValueError(
            f"convert-latents needs a pixel_patch model with temporal_compression 1, got {latents.kind!r} "
            f"with temporal_compression {latents.temporal_compression}"
        )
    if codec.spatial_compression != latents.spatial_compression or codec.pixels.latent_channels != latents.channels:
        raise ValueError(
            f"the codec's {codec.spatial_compression}x{codec.spatial_compression} patches do not match the model's "
            f"{latents.spatial_compression}x{latents.spatial_compression} pixel_patch latents"
        )
    config = copy.deepcopy(model.config)
    config.latents = dataclasses.replace(latents, kind="patch_pca", channels=codec.latent_channels)
    config.video.latent_channels = codec.latent_channels
    config.__post_init__()
    converted = MotusModel(config)  # its video head output layer is zero-initialised: no seed needed
    previous = model.state_dict()
    state = converted.state_dict()
    old_embedding = model.video.patch_embedding
    weight = old_embedding.weight.detach().double()  # [D, 192, pt, ph, pw]
    # decoder: pixel patch = components^T (std * z) + mean, so W_new[:, k] = sum_c W[:, c] components[k, c] std[k]
    decoder = codec.components.double().T * codec.std.double()  # [192, k]
    new_weight = torch.einsum("dcthw,ck->dkthw", weight, decoder)
    new_bias = old_embedding.bias.detach().double() + torch.einsum("dcthw,c->d", weight, codec.mean.double())
    with torch.no_grad():
        for key, value in state.items():
            if key == "video.patch_embedding.weight":
                value.copy_(new_weight.to(value.dtype))
            elif key == "video.patch_embedding.bias":
                value.copy_(new_bias.to(value.dtype))
            elif not key.startswith(VIDEO_HEAD_OUTPUT_PREFIX):
                value.copy_(previous[key])
    return converted.to(next(model.parameters()).dtype)
