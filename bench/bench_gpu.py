"""One-shot GPU benchmark of a Motus preset (the published 8B by default) with random weights.

Meant for a lent H100/H200 and sized to finish in under 10 minutes (``--budget-s`` stops starting new
variants when the time is spent). Per mode (VLA, joint) it measures the latency of one chunk at 10
Euler steps (``prepare_conditioning`` once + the steps, the serving path's model work; joint mode
also decodes the video with a random VAE of the preset's kind) and the peak device memory, for each
variant: eager, ``torch.compile`` and ``torch.compile(mode="reduce-overhead")`` (CUDA graphs). A
variant that fails is reported in the JSON with its error, never a crash. It also computes the 8B
model's bf16 inference memory on the ``meta`` device (weights, per-request conditioning cache, peak
live activations of one forward; the frozen encoders listed beside), against the 24 GB target, and
compares latencies with the targets (<= 60 ms VLA chunk, <= 80 ms joint).

It runs on the CPU too, with a small preset (motus-small by default there; the test uses motus-tiny):
    tools/env.sh python bench/bench_gpu.py --preset motus-tiny --device cpu --steps 2 --repeats 1

On the GPU:
    python bench/bench_gpu.py --out bench/results/gpu-h200.json

Writes the JSON to stdout (and to --out).
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import time
import traceback
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_report import emit
from motus_counts import (
    QWEN3_VL_2B_TEXT,
    QWEN3_VL_2B_VISION,
    UMT5_XXL,
    count_model,
    meta_model,
    model_inputs,
    qwen3_vl_parameters,
    umt5_parameters,
)
from motus_model.config import MotusConfig
from motus_model.flow_matching import (
    FlowMatchSchedule,
    Mode,
    euler_step,
    initial_latents,
)
from motus_model.modeling_motus import MotusModel

logger = logging.getLogger("bench_gpu")

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
VARIANTS = ("eager", "compile", "compile_cudagraphs")
TARGETS_MS = {"vla": 60.0, "joint": 80.0}
MEMORY_TARGET_GB = 24.0
UND_TOKENS = 150  # the published prompt: 120 image tokens + template and instruction


# ----------------------------------------------------------------------------------------
# Memory on the meta device
# ----------------------------------------------------------------------------------------


class _LiveBytes(TorchDispatchMode):
    """Peak bytes of the op outputs alive at once (views excluded): the activations one call needs."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0

    def _free(self, nbytes: int) -> None:
        self.live -= nbytes

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if not func.is_view:
            for tensor in tree_leaves(out):
                if isinstance(tensor, torch.Tensor):
                    nbytes = tensor.numel() * tensor.element_size()
                    self.live += nbytes
                    weakref.finalize(tensor, self._free, nbytes)
            self.peak = max(self.peak, self.live)
        return out


def _gb(nbytes: float) -> float:
    """Gigabytes to 4 significant digits (tiny presets stay non-zero)."""
    return float(f"{nbytes / 1e9:.4g}")


def meta_memory(preset: str, dtype: torch.dtype, und_tokens: int) -> dict[str, Any]:
    """Inference memory of ``preset`` in ``dtype`` computed on the meta device (nothing allocated)."""
    config = MotusConfig.preset(preset)
    model = meta_model(config, dtype)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    inputs = model_inputs(config, und_tokens, "meta", dtype)
    with torch.no_grad():
        conditioning = model.prepare_conditioning(inputs["text"], None, inputs["vlm"], None)
        cache = sum(
            t.numel() * t.element_size()
            for t in [conditioning.und_tokens, *conditioning.text_keys, *conditioning.text_values]
        )
        peaks = {}
        for mode in (Mode.VLA, Mode.JOINT):
            tracker = _LiveBytes()
            with tracker:
                video, actions = initial_latents(config, mode, inputs["video"][:, :, :1])
                euler_step(model, mode, video, actions, 1.0, 0.9, inputs["state"], conditioning, video[:, :, :1])
            peaks[mode.value] = tracker.peak
    model_total = weights + cache + max(peaks.values())
    published = preset.startswith("motus-8b")
    vlm = 2 * qwen3_vl_parameters(QWEN3_VL_2B_TEXT, QWEN3_VL_2B_VISION) + 2 * 151936 * 2048 if published else 0
    umt5 = 2 * umt5_parameters(UMT5_XXL) + 2 * UMT5_XXL["vocab_size"] * UMT5_XXL["d_model"] if published else 0
    with_vlm = model_total + vlm
    return {
        "preset": preset,
        "dtype": str(dtype).replace("torch.", ""),
        "und_tokens": und_tokens,
        "weights_gb": _gb(weights),
        "conditioning_cache_gb": _gb(cache),
        "peak_activations_gb": {mode: _gb(value) for mode, value in peaks.items()},
        "model_total_gb": _gb(model_total),
        "qwen3_vl_2b_gb": _gb(vlm),
        "umt5_xxl_gb_if_resident": _gb(umt5),
        "model_plus_vlm_gb": _gb(with_vlm),
        "target_gb": MEMORY_TARGET_GB,
        "within_target_text_pre_encoded": with_vlm / 1e9 <= MEMORY_TARGET_GB,
        "within_target_umt5_resident": (with_vlm + umt5) / 1e9 <= MEMORY_TARGET_GB,
        "note": "VAE (joint decode) not included; text features pre-encoded or umT5 offloaded after encoding",
    }


# ----------------------------------------------------------------------------------------
# Latency on the device
# ----------------------------------------------------------------------------------------


def random_model(config: MotusConfig, device: torch.device, dtype: torch.dtype) -> MotusModel:
    """Random weights straight on the device in ``dtype`` (fp32 where loading keeps fp32), no fp32 detour."""
    model = meta_model(config, dtype).to_empty(device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.02, generator=generator)
    return model.eval()


def random_decoder(config: MotusConfig, device: torch.device, dtype: torch.dtype) -> Callable[[torch.Tensor], Any]:
    """The codec's decode for joint mode: pixel_patch (no weights) or a random VAE of the published Wan 2.2 size."""
    from motus_model.video_latents import (
        PixelPatchCodec,
        WanVAECodec,
        build_codec,
        random_wan22_vae,
    )

    if config.latents.kind == "wan_vae":
        return WanVAECodec(random_wan22_vae(), device=device, dtype=dtype).decode
    codec = build_codec(config)
    assert isinstance(codec, PixelPatchCodec)
    return codec.decode


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def chunk_fn(
    model: Any,
    config: MotusConfig,
    mode: Mode,
    steps: int,
    device: torch.device,
    dtype: torch.dtype,
    decode: Callable[[torch.Tensor], Any] | None,
) -> Callable[[], Any]:
    """One chunk of the serving path's model work: prepare_conditioning, ``steps`` Euler steps, decode (joint)."""
    inputs = model_inputs(config, UND_TOKENS if config.understanding.vlm_dim >= 1024 else 16, device, dtype)
    grid = FlowMatchSchedule(config.schedule).inference_sigmas(steps).tolist()
    generator = torch.Generator(device=device).manual_seed(0)
    cond_latent = torch.randn(inputs["video"][:, :, :1].shape, device=device, generator=generator)
    text, vlm = inputs["text"].normal_(generator=generator), inputs["vlm"].normal_(generator=generator)

    def run() -> Any:
        conditioning = model.prepare_conditioning(text, None, vlm, None)
        video, actions = initial_latents(config, mode, cond_latent, generator=generator)
        for step in range(steps):
            video, actions = euler_step(
                model, mode, video, actions, grid[step], grid[step + 1], inputs["state"], conditioning, cond_latent
            )
        if decode is not None:
            video = decode(video)
        return video, actions

    return run


def time_variant(
    name: str,
    model: MotusModel,
    config: MotusConfig,
    mode: Mode,
    args: argparse.Namespace,
    device: torch.device,
    dtype: torch.dtype,
) -> dict[str, Any]:
    """Latency (median of repeats after warm-ups) and peak memory of one (variant, mode); errors reported."""
    started = time.perf_counter()
    try:
        runner: Any = model
        if name == "compile":
            runner = torch.compile(model, dynamic=False)
        elif name == "compile_cudagraphs":
            runner = torch.compile(model, mode="reduce-overhead", dynamic=False)
        decode = random_decoder(config, device, dtype) if mode is Mode.JOINT else None
        # The compiled module stands in for the model; its config and prepare_conditioning are the model's.
        facade = runner if name == "eager" else _Compiled(model, runner)
        run = chunk_fn(facade, config, mode, args.steps, device, dtype, decode)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        with torch.no_grad():
            warm = time.perf_counter()
            for _ in range(args.warmup):
                run()
            synchronize(device)
            warmup_s = time.perf_counter() - warm
            times = []
            for _ in range(args.repeats):
                begin = time.perf_counter()
                run()
                synchronize(device)
                times.append((time.perf_counter() - begin) * 1e3)
        result: dict[str, Any] = {
            "ok": True,
            "chunk_ms": round(statistics.median(times), 3),
            "chunk_ms_all": [round(t, 3) for t in times],
            "per_step_ms": round(statistics.median(times) / args.steps, 3),
            "warmup_s": round(warmup_s, 2),
        }
        if device.type == "cuda":
            result["peak_memory_gb"] = round(torch.cuda.max_memory_allocated(device) / 1e9, 3)
        target = TARGETS_MS.get(mode.value)
        if target is not None and args.preset.startswith("motus-8b") and device.type == "cuda":  # targets: 8B on a GPU
            result["target_ms"] = target
            result["meets_target"] = result["chunk_ms"] <= target
        return result
    except Exception as error:  # noqa: BLE001  (a failing variant is a result, not a crash)
        return {
            "ok": False,
            "error": f"{type(error).__name__}: {error}"[:500],
            "where": traceback.format_exc(limit=3)[-800:],
            "seconds": round(time.perf_counter() - started, 1),
        }
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()


class _Compiled:
    """The compiled forward with the model's other methods (prepare_conditioning, config) reachable."""

    def __init__(self, model: MotusModel, compiled: Any) -> None:
        self.model, self.compiled = model, compiled
        self.config = model.config
        self.prepare_conditioning = model.prepare_conditioning

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.compiled(*args, **kwargs)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cuda = torch.cuda.is_available()
    parser.add_argument("--preset", default=None, help="default: motus-8b on cuda, motus-small on cpu")
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument(
        "--dtype", default=None, choices=sorted(DTYPES), help="default: bfloat16 on cuda, float32 on cpu"
    )
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=10, help="timed chunks per (variant, mode)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed chunks first (compilation happens here)")
    parser.add_argument("--modes", nargs="+", default=["vla", "joint"], choices=["vla", "joint"])
    parser.add_argument(
        "--variants", nargs="+", default=None, choices=VARIANTS, help="default: all on cuda, eager on cpu"
    )
    parser.add_argument("--memory-preset", default="motus-8b", help="preset whose inference memory is computed on meta")
    parser.add_argument("--budget-s", type=float, default=540.0, help="no new variant starts after this many seconds")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.steps < 1 or args.repeats < 1 or args.warmup < 0:
        parser.error("--steps and --repeats must be >= 1 and --warmup >= 0")
    if args.device.startswith("cuda") and not cuda:
        parser.error(f"--device {args.device}: no CUDA device here; use --device cpu with a small preset")
    args.preset = args.preset or ("motus-8b" if args.device.startswith("cuda") else "motus-small")
    if args.preset not in MotusConfig.preset_names() or args.memory_preset not in MotusConfig.preset_names():
        parser.error(f"--preset/--memory-preset must be one of {MotusConfig.preset_names()}")
    args.dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    args.variants = args.variants or (list(VARIANTS) if args.device.startswith("cuda") else ["eager"])
    return args


def main(argv: list[str] | None = None) -> int:
    # A context, not torch.set_grad_enabled(False): a test that calls main() in-process must get gradients back.
    with torch.no_grad():
        return _main(argv)


def _main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    started = time.perf_counter()
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    report: dict[str, Any] = {
        "benchmark": "bench_gpu",
        "environment": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
        },
        "preset": args.preset,
        "dtype": args.dtype,
        "steps": args.steps,
        "weights": "random",
        "measures": "prepare_conditioning + steps x euler_step (+ video decode in joint); encoders not included",
    }
    report["memory_on_meta"] = meta_memory(args.memory_preset, torch.bfloat16, UND_TOKENS)
    config = MotusConfig.preset(args.preset)
    counted = count_model(meta_model(config, dtype), UND_TOKENS if config.understanding.vlm_dim >= 1024 else 16)
    report["counts_per_step"] = counted["step"].to_json()
    report["counts_conditioning"] = counted["conditioning"].to_json()
    built = time.perf_counter()
    model = random_model(config, device, dtype)
    synchronize(device)
    report["build_s"] = round(time.perf_counter() - built, 2)
    report["parameters"] = model.count_parameters()
    results: dict[str, dict[str, Any]] = {mode: {} for mode in args.modes}
    for variant in args.variants:
        for mode in args.modes:
            if time.perf_counter() - started > args.budget_s:
                results[mode][variant] = {"ok": False, "error": f"skipped: the {args.budget_s:.0f} s budget is spent"}
                continue
            logger.info("%s / %s", variant, mode)
            results[mode][variant] = time_variant(variant, model, config, Mode(mode), args, device, dtype)
    report["latency"] = results
    report["wall_s"] = round(time.perf_counter() - started, 1)
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
