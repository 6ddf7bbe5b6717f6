"""FLOP and byte counting for one Motus chunk, shared by ``bench_floor.py`` and ``bench_gpu.py``.

Everything here runs on any device, the ``meta`` device included (no memory, no arithmetic): the
8B preset is counted without allocating it. ``count`` wraps a call in torch's ``FlopCounterMode``
(matmuls, convolutions, attention) and a dispatch mode that records which parameters each aten op
reads (the weight bytes a forward must stream), the bytes every op writes (activation traffic) and
the number of aten ops (the dispatch overhead a CPU pays per op, whatever the arithmetic).

Encoders that cannot run on meta (transformers' Qwen3-VL moves grid sizes to Python; umT5 is
cheap to reason about) are counted analytically (``qwen3_vl_flops``, ``umt5_flops``); bench_floor
checks those formulas against ``count`` on the small checkpoint's real tiny encoders.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from motus_model.config import MotusConfig
from motus_model.flow_matching import Mode, Treatment
from motus_model.modeling_motus import MotusConditioning, MotusModel


def _cpu_sdpa_flop(
    query_shape: Any, key_shape: Any, value_shape: Any, *args: Any, out_shape: Any = None, **kwargs: Any
) -> int:
    """The CPU flash-attention kernel, which torch's FlopCounterMode does not know: same count as the GPU ones."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


CUSTOM_FLOPS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flop}

# Shapes of the matmuls a forward runs, kept for the rate measurement: (op, shapes of its inputs).
MATMUL_OPS = {"aten.mm.default", "aten.addmm.default", "aten.bmm.default"}


@dataclass
class Counts:
    """What one call costs: FLOPs (per aten op kind), weight bytes read, activation bytes written, op count."""

    flops: int = 0
    flops_by_op: dict[str, int] = field(default_factory=dict)
    weight_bytes: int = 0
    activation_bytes: int = 0
    aten_ops: int = 0
    matmul_shapes: list[tuple[str, tuple[tuple[int, ...], ...]]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "gflop": round(self.flops / 1e9, 4),
            "gflop_by_op": {op: round(value / 1e9, 4) for op, value in sorted(self.flops_by_op.items())},
            "weight_mb": round(self.weight_bytes / 1e6, 3),
            "activation_written_mb": round(self.activation_bytes / 1e6, 3),
            "aten_ops": self.aten_ops,
        }


class _Traffic(TorchDispatchMode):
    """Records the parameters each aten op reads (once per parameter) and the bytes each op writes."""

    def __init__(self, params: dict[int, torch.Tensor]) -> None:
        super().__init__()
        self.params = params
        self.read: dict[int, int] = {}
        self.written = 0
        self.ops = 0
        self.matmuls: list[tuple[str, tuple[tuple[int, ...], ...]]] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        for leaf in tree_leaves((args, kwargs)):
            # Python objects of parameters survive into the dispatcher, so identity finds them.
            if isinstance(leaf, torch.Tensor) and id(leaf) in self.params and id(leaf) not in self.read:
                self.read[id(leaf)] = leaf.numel() * leaf.element_size()
        out = func(*args, **kwargs)
        name = str(func)
        if name in MATMUL_OPS:
            self.matmuls.append((name, tuple(tuple(a.shape) for a in args if isinstance(a, torch.Tensor))))
        # Views write nothing; everything else materialises its outputs.
        if not (func.is_view or name.endswith((".view", "._unsafe_view"))):
            self.written += sum(o.numel() * o.element_size() for o in tree_leaves(out) if isinstance(o, torch.Tensor))
        self.ops += 1
        return out


def count(fn: Callable[[], Any], modules: list[torch.nn.Module] | tuple = ()) -> tuple[Counts, Any]:
    """Run ``fn()`` under the counters; weight bytes are those of ``modules``' parameters it reads."""
    params = {id(p): p for module in modules for p in module.parameters()}
    traffic = _Traffic(params)
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=CUSTOM_FLOPS) as flops, traffic:
        result = fn()
    by_op = {
        str(op).replace("aten.", ""): int(value) for op, value in flops.get_flop_counts().get("Global", {}).items()
    }
    counts = Counts(
        flops=int(flops.get_total_flops()),
        flops_by_op=by_op,
        weight_bytes=sum(traffic.read.values()),
        activation_bytes=traffic.written,
        aten_ops=traffic.ops,
        matmul_shapes=traffic.matmuls,
    )
    return counts, result


class OpTimer(TorchDispatchMode):
    """This thread's CPU time inside each aten op (the rest of a call's CPU time is Python and dispatch)."""

    def __init__(self) -> None:
        super().__init__()
        self.cpu_s: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        started = time.thread_time()
        out = func(*args, **(kwargs or {}))
        name = str(func.overloadpacket).replace("aten.", "")
        self.cpu_s[name] = self.cpu_s.get(name, 0.0) + time.thread_time() - started
        self.calls[name] = self.calls.get(name, 0) + 1
        return out


# ----------------------------------------------------------------------------------------
# The Motus model: inputs of the right shapes, conditioning, one denoising step
# ----------------------------------------------------------------------------------------


def model_inputs(
    config: MotusConfig, und_tokens: int, device: torch.device | str, dtype: torch.dtype
) -> dict[str, Any]:
    """Zero tensors of one request's shapes (batch 1): latents, sigmas, actions, state, text and VLM features."""
    frames, height, width = config.latent_grid()
    with torch.device(device):
        return {
            "video": torch.zeros(1, config.video.latent_channels, frames, height, width),
            "sigma": torch.full((1,), 0.5),
            "actions": torch.zeros(1, config.temporal.action_chunk, config.action.action_dim),
            "state": torch.zeros(1, config.action.state_dim) if config.uses_state else None,
            "text": torch.zeros(1, config.video.text_len, config.video.text_dim, dtype=dtype),
            "vlm": torch.zeros(1, und_tokens, config.understanding.vlm_dim, dtype=dtype),
        }


def count_model(model: MotusModel, und_tokens: int, mode: Mode = Mode.VLA) -> dict[str, Counts]:
    """``prepare_conditioning`` (once per chunk) and one denoising forward in ``mode`` (per step)."""
    config = model.config
    param = next(model.parameters())
    inputs = model_inputs(config, und_tokens, param.device, torch.float32)
    conditioning_counts, conditioning = count(
        lambda: model.prepare_conditioning(inputs["text"], None, inputs["vlm"], None), [model]
    )
    video_sigma = {Treatment.CLEAN: 0.0, Treatment.MARGINALISED: 1.0}.get(mode.video, 0.5)
    action_sigma = {Treatment.CLEAN: 0.0, Treatment.MARGINALISED: 1.0}.get(mode.actions, 0.5)
    # Models that skip the outputs a mode discards are asked to, as euler_step does.
    forward_kwargs = (
        {"need_video": mode.video is Treatment.DENOISED, "need_actions": mode.actions is Treatment.DENOISED}
        if _skips_outputs(model)
        else {}
    )

    def step() -> Any:
        return model(
            inputs["video"],
            torch.full_like(inputs["sigma"], video_sigma),
            inputs["actions"],
            torch.full_like(inputs["sigma"], action_sigma),
            inputs["state"],
            conditioning,
            **forward_kwargs,
        )

    step_counts, _ = count(step, [model])
    return {"conditioning": conditioning_counts, "step": step_counts}


def _skips_outputs(model: MotusModel) -> bool:
    """Whether this model's forward can skip an output (``need_video`` / ``need_actions``)."""
    return "need_video" in inspect.signature(model.forward).parameters


def meta_model(config: MotusConfig, dtype: torch.dtype = torch.bfloat16) -> MotusModel:
    """The model on the meta device (no memory) in ``dtype``, with fp32 where loading keeps fp32."""
    with torch.device("meta"):
        model = MotusModel(config)
    for name, param in model.named_parameters():
        if not (dtype in (torch.float16, torch.bfloat16) and model.keep_fp32.search(name)):
            param.data = param.data.to(dtype)
    return model.eval()


def conditioning_bytes(conditioning: MotusConditioning) -> int:
    tensors = [conditioning.und_tokens, *conditioning.text_keys, *conditioning.text_values]
    return sum(t.numel() * t.element_size() for t in tensors)


# ----------------------------------------------------------------------------------------
# Encoders, analytically (checked against FlopCounterMode on the tiny real ones)
# ----------------------------------------------------------------------------------------


def _get(config: Any, name: str, default: Any = None) -> Any:
    return config.get(name, default) if isinstance(config, dict) else getattr(config, name, default)


def qwen3_vl_flops(text_config: Any, vision_config: Any, num_tokens: int, image_hw: tuple[int, int]) -> dict[str, int]:
    """Matmul FLOPs of one Qwen3-VL prefix pass (vision tower + language model, no LM head) on one image.

    Vision: Conv3d patch embedding, ``depth`` blocks (fused qkv, proj, 2-matrix MLP, full attention over
    the patches), the merger and one merger per DeepStack level (2x2 merge, 2 matrices). Language model:
    ``num_hidden_layers`` of GQA attention (q/o full, k/v ``num_key_value_heads``) and a gated MLP
    (3 matrices), causal attention over ``num_tokens`` (image tokens included).
    """
    patch = _get(vision_config, "patch_size")
    temporal = _get(vision_config, "temporal_patch_size")
    merge = _get(vision_config, "spatial_merge_size")
    unit = patch * merge  # the image processor resizes to multiples of this (no resize when already aligned)
    height, width = (max(unit, round(side / unit) * unit) for side in image_hw)
    patches = (height // patch) * (width // patch)
    v_dim = _get(vision_config, "hidden_size")
    v_ffn = _get(vision_config, "intermediate_size")
    v_out = _get(vision_config, "out_hidden_size")
    depth = _get(vision_config, "depth")
    mergers = 1 + len(_get(vision_config, "deepstack_visual_indexes", []) or [])
    merged = patches // merge**2
    vision = 2 * patches * (3 * temporal * patch * patch) * v_dim  # Conv3d patch embedding
    vision += depth * (2 * patches * (4 * v_dim * v_dim + 2 * v_dim * v_ffn) + 4 * patches * patches * v_dim)
    merged_dim = v_dim * merge**2
    vision += mergers * 2 * merged * (merged_dim * merged_dim + merged_dim * v_out)

    dim = _get(text_config, "hidden_size")
    heads = _get(text_config, "num_attention_heads")
    kv_heads = _get(text_config, "num_key_value_heads")
    head_dim = _get(text_config, "head_dim") or dim // heads
    ffn = _get(text_config, "intermediate_size")
    layers = _get(text_config, "num_hidden_layers")
    linear = 2 * dim * heads * head_dim + 2 * dim * kv_heads * head_dim + 3 * dim * ffn
    # SDPA (what FlopCounterMode counts) multiplies the full square even under the causal mask.
    attention = 4 * num_tokens * num_tokens * heads * head_dim
    language = layers * (2 * num_tokens * linear + attention)
    return {"vision": int(vision), "language": int(language), "image_tokens": merged, "total": int(vision + language)}


def umt5_flops(config: Any, num_tokens: int) -> int:
    """Matmul FLOPs of one umT5 encoder pass: per layer q/k/v/o and a gated-GELU FFN (3 matrices), full attention."""
    d_model = _get(config, "d_model")
    inner = _get(config, "num_heads") * _get(config, "d_kv")
    d_ff = _get(config, "d_ff")
    gated = str(_get(config, "feed_forward_proj", "gated-gelu")).startswith("gated")
    linear = 4 * d_model * inner + (3 if gated else 2) * d_model * d_ff
    return int(_get(config, "num_layers") * (2 * num_tokens * linear + 4 * num_tokens * num_tokens * inner))


# The published encoders' shapes (Qwen3-VL-2B-Instruct and umT5-XXL config.json); counted analytically.
QWEN3_VL_2B_TEXT = {
    "hidden_size": 2048,
    "intermediate_size": 6144,
    "num_hidden_layers": 28,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "vocab_size": 151936,
}
QWEN3_VL_2B_VISION = {
    "depth": 24,
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_heads": 16,
    "out_hidden_size": 2048,
    "patch_size": 16,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "deepstack_visual_indexes": [5, 11, 17],
}
UMT5_XXL = {
    "d_model": 4096,
    "d_ff": 10240,
    "num_layers": 24,
    "num_heads": 64,
    "d_kv": 64,
    "feed_forward_proj": "gated-gelu",
    "vocab_size": 256384,
}


def qwen3_vl_parameters(text: dict, vision: dict) -> int:
    """Parameters of the Qwen3-VL prefix (embeddings, LM layers, vision tower, mergers): the bytes one pass reads."""
    dim, layers = text["hidden_size"], text["num_hidden_layers"]
    inner, kv = text["num_attention_heads"] * text["head_dim"], text["num_key_value_heads"] * text["head_dim"]
    lm = layers * (2 * dim * inner + 2 * dim * kv + 3 * dim * text["intermediate_size"])
    v_dim, v_ffn = vision["hidden_size"], vision["intermediate_size"]
    tower = vision["depth"] * (4 * v_dim * v_dim + 2 * v_dim * v_ffn)
    tower += 3 * vision["temporal_patch_size"] * vision["patch_size"] ** 2 * v_dim
    merged = v_dim * vision["spatial_merge_size"] ** 2
    tower += (1 + len(vision["deepstack_visual_indexes"])) * (merged * merged + merged * vision["out_hidden_size"])
    # The embedding table is read only at the prompt's rows: not counted as streamed bytes.
    return int(lm + tower)


def umt5_parameters(config: dict) -> int:
    inner = config["num_heads"] * config["d_kv"]
    return int(config["num_layers"] * (4 * config["d_model"] * inner + 3 * config["d_model"] * config["d_ff"]))
