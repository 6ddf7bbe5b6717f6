"""The one-core floor of a Motus chunk and how far the real CPU latency is from it.

Prints one JSON document (and writes it to --out). Not a test: nothing is asserted.

1. Counts, per preset, of ONE chunk in VLA mode and in joint mode: FLOPs (torch's FlopCounterMode)
   and bytes (weights read, activations written) per denoising step (one model forward) and of the
   fixed part (VLM, text encoder, prepare_conditioning, conditioning-frame encode, decode).
   - ``motus-small``: the shipped checkpoint's config (models/motus-small-aloha-transfer-cube), real run.
   - ``motus-8b``: the published shape on the ``meta`` device (no memory); the umT5-XXL and Qwen3-VL-2B
     encoders analytically (formulas checked against FlopCounterMode on the small checkpoint's encoders).
2. This machine's one-core rates, measured in the same run: fp32 matmul GFLOP/s on every matmul
   shape the small forward runs (and a large square one), copy bandwidth, and the cost of one aten op.
3. The one-core floor of a chunk: per part max(FLOPs / matmul rate, bytes / bandwidth).
4. The measured chunk latency (1 torch thread, 10 Euler steps, the shipped checkpoint), stage by stage
   (preprocess, text, VLM, prepare_conditioning, each denoising step, decode), in wall-clock AND in this
   thread's CPU time (the machine is shared: CPU time is what the chunk itself used), the CPU time inside
   aten ops by kind (matmul, attention, other) against the time outside them (Python, module calls), and
   the ratios measured / floor.

Usage:
    tools/env.sh python bench/bench_floor.py [--out bench/results/floor.json] [--repeats 5]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_report import emit
from motus_counts import (
    QWEN3_VL_2B_TEXT,
    QWEN3_VL_2B_VISION,
    UMT5_XXL,
    Counts,
    OpTimer,
    count,
    count_model,
    meta_model,
    qwen3_vl_flops,
    qwen3_vl_parameters,
    umt5_flops,
    umt5_parameters,
)
from motus_model.config import MotusConfig
from motus_model.flow_matching import Mode
from motus_model.pipeline_motus import MotusPipeline, MotusRequest

logger = logging.getLogger("bench_floor")

REPO = Path(__file__).resolve().parent.parent
CHECKPOINT = REPO / "models" / "motus-small-aloha-transfer-cube"
INSTRUCTION = "transfer the cube"
# Published prompt: 120 image tokens (384x320, 16-px patches, 2x2 merge) + chat template and instruction.
UND_TOKENS_8B = 150


def camera_views(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {role: rng.integers(0, 256, (120, 160, 3), dtype=np.uint8) for role in ("high", "left_wrist", "right_wrist")}


class Clock:
    """Wall-clock and this thread's CPU time, together."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.thread_time()

    def lap(self) -> tuple[float, float]:
        """(wall ms, cpu ms) since the last lap."""
        wall, cpu = time.perf_counter(), time.thread_time()
        out = ((wall - self.wall) * 1e3, (cpu - self.cpu) * 1e3)
        self.wall, self.cpu = wall, cpu
        return out


def _cpu_seconds(fn: Callable[[], Any], min_seconds: float = 0.2) -> float:
    """Best per-call thread CPU time of ``fn`` over a few batches (CPU time: other processes do not count)."""
    fn()
    best = float("inf")
    for _ in range(3):
        calls, started = 0, time.thread_time()
        while time.thread_time() - started < min_seconds / 3 or calls < 2:
            fn()
            calls += 1
        best = min(best, (time.thread_time() - started) / calls)
    return best


# ----------------------------------------------------------------------------------------
# Machine rates
# ----------------------------------------------------------------------------------------


def matmul_rates(shapes: list[tuple[str, tuple[tuple[int, ...], ...]]]) -> dict[str, Any]:
    """GFLOP/s of each distinct matmul shape of a forward, alone; and the FLOP-weighted rate over them."""
    distinct: dict[tuple, int] = {}
    for shape in shapes:
        distinct[shape] = distinct.get(shape, 0) + 1
    per_shape, total_flops, total_s = [], 0.0, 0.0
    for (op, dims), calls in sorted(distinct.items()):
        args = [torch.randn(d) for d in dims]
        fn = {"aten.mm.default": torch.mm, "aten.bmm.default": torch.bmm, "aten.addmm.default": torch.addmm}[op]
        a, b = args[-2], args[-1]
        flops = 2 * a.shape[-2] * a.shape[-1] * b.shape[-1] * (a.shape[0] if a.ndim == 3 else 1)
        seconds = _cpu_seconds(lambda fn=fn, args=args: fn(*args), 0.05)
        per_shape.append(
            {"op": op.split(".")[1], "shapes": dims, "calls": calls, "gflops": round(flops / seconds / 1e9, 2)}
        )
        total_flops += flops * calls
        total_s += seconds * calls
    big = torch.randn(1024, 1024)
    peak = 2 * 1024**3 / _cpu_seconds(lambda: torch.mm(big, big), 0.3) / 1e9
    return {
        "model_shapes_gflops": round(total_flops / total_s / 1e9, 2) if total_s else None,
        "square_1024_gflops": round(peak, 2),
        "per_shape": per_shape,
    }


def bandwidth_gbs(megabytes: int = 256) -> float:
    """One-thread copy bandwidth (bytes read + written) on a buffer well beyond the last-level cache."""
    source = torch.ones(megabytes * 2**20 // 4)
    target = torch.empty_like(source)
    seconds = _cpu_seconds(lambda: target.copy_(source), 0.3)
    return 2 * source.numel() * 4 / seconds / 1e9


def aten_op_us() -> float:
    """CPU cost of one small aten op from Python (dispatch + allocation): the floor per op of eager PyTorch."""
    x = torch.randn(8, 8)
    return _cpu_seconds(lambda: torch.add(x, x), 0.1) * 1e6


def floor_ms(counts: Counts, gflops: float, gbs: float, activations: bool = True) -> float:
    """max(FLOPs / rate, bytes / bandwidth) in ms; bytes = weights read + 2x activations written (write, read back)."""
    moved = counts.weight_bytes + (2 * counts.activation_bytes if activations else 0)
    return max(counts.flops / (gflops * 1e9), moved / (gbs * 1e9)) * 1e3


# ----------------------------------------------------------------------------------------
# Counting
# ----------------------------------------------------------------------------------------


def count_small(pipe: MotusPipeline, steps: int) -> dict[str, Any]:
    """Counts of the shipped checkpoint's chunk (real run on CPU) + the analytic-formula check on its encoders."""
    config = pipe.config
    composite = pipe._composite(camera_views(0))
    text_counts, _ = count(lambda: pipe.text.encoder.encode([INSTRUCTION]), [pipe.text.encoder.model])
    vlm_counts, (vlm_hidden, _) = count(lambda: pipe.vlm.extract([INSTRUCTION], [composite]), [pipe.vlm.model])
    und_tokens = int(vlm_hidden.shape[1])
    text_tokens = int(pipe.text.encoder.tokenizer(INSTRUCTION, return_tensors="pt")["input_ids"].shape[1])
    vlm_model = pipe.vlm.model.config
    analytic_vlm = qwen3_vl_flops(vlm_model.text_config, vlm_model.vision_config, und_tokens, composite.shape[:2])
    analytic_text = umt5_flops(pipe.text.encoder.model.config, config.video.text_len)
    frames = torch.zeros(1, 1, 3, config.latents.image_height, config.latents.image_width)
    encode_counts, latents = count(lambda: pipe.codec.encode(frames), [])
    decode_counts, _ = count(
        lambda: pipe.codec.decode(
            torch.zeros(1, config.latents.channels, config.latent_grid()[0], *latents.shape[-2:])
        ),
        [],
    )
    modes = {mode.value: count_model(pipe.model, und_tokens, mode) for mode in (Mode.VLA, Mode.JOINT)}
    return {
        "und_tokens": und_tokens,
        "text_tokens": text_tokens,
        "text_encoder": text_counts,
        "vlm": vlm_counts,
        "encode": encode_counts,
        "decode": decode_counts,
        "modes": modes,
        "formula_check": {
            "qwen3_vl_flopcounter_gflop": round(vlm_counts.flops / 1e9, 5),
            "qwen3_vl_formula_gflop": round(analytic_vlm["total"] / 1e9, 5),
            "umt5_flopcounter_gflop": round(text_counts.flops / 1e9, 5),
            "umt5_formula_gflop": round(analytic_text / 1e9, 5),
        },
        "steps": steps,
    }


def count_8b(und_tokens: int) -> dict[str, Any]:
    """The published preset on the meta device (bf16 weights, fp32 modulation/norms as loading keeps them)."""
    config = MotusConfig.preset("motus-8b")
    model = meta_model(config, torch.bfloat16)
    modes = {mode.value: count_model(model, und_tokens, mode) for mode in (Mode.VLA, Mode.JOINT)}
    height, width = config.latents.image_height, config.latents.image_width
    vlm = qwen3_vl_flops(QWEN3_VL_2B_TEXT, QWEN3_VL_2B_VISION, und_tokens, (height, width))
    vlm_counts = Counts(flops=vlm["total"], weight_bytes=2 * qwen3_vl_parameters(QWEN3_VL_2B_TEXT, QWEN3_VL_2B_VISION))
    text_counts = Counts(flops=umt5_flops(UMT5_XXL, config.video.text_len), weight_bytes=2 * umt5_parameters(UMT5_XXL))
    vae = {}
    try:  # the Wan2.2 VAE at its published size, on meta: encode one frame, decode the chunk's frames
        from motus_model.video_latents import random_wan22_vae

        with torch.device("meta"):
            network = random_wan22_vae().to(torch.bfloat16)
        pixels = torch.zeros(1, 3, 1, height, width, device="meta", dtype=torch.bfloat16)
        vae["encode"], _ = count(lambda: network.encode(pixels).latent_dist.mode(), [network])
        latent = torch.zeros(
            1, 48, config.latent_grid()[0], height // 16, width // 16, device="meta", dtype=torch.bfloat16
        )
        vae["decode"], _ = count(lambda: network.decode(latent).sample, [network])
    except Exception as error:  # noqa: BLE001  (reported, not fatal)
        vae["error"] = f"{type(error).__name__}: {error}"[:300]
    return {
        "und_tokens": und_tokens,
        "image_tokens": vlm["image_tokens"],
        "modes": modes,
        "vlm": vlm_counts,
        "text_encoder": text_counts,
        "vae": vae,
        "parameters": model.count_parameters(),
    }


# ----------------------------------------------------------------------------------------
# Measuring the chunk
# ----------------------------------------------------------------------------------------


def run_chunk(pipe: MotusPipeline, mode: Mode, steps: int, seed: int) -> dict[str, Any]:
    """One chunk, stage by stage as ``MotusPipeline.__call__`` runs it, in wall and CPU ms."""
    request = MotusRequest(
        mode=mode,
        images=camera_views(seed),
        state=np.zeros(pipe.config.action.state_dim, np.float32),
        instruction=INSTRUCTION,
        steps=steps,
        seed=seed,
    )
    clock = Clock()
    stages: dict[str, tuple[float, float]] = {}
    step_times: list[tuple[float, float]] = []
    checked_mode, checked_steps, checked_seed = pipe.check_inputs(request)
    from motus_model.pipeline_motus import PreparedRequest

    item = PreparedRequest(request, checked_mode, checked_steps, checked_seed)
    with torch.no_grad():
        pipe.prepare_inputs(item)
        stages["preprocess"] = clock.lap()
        pipe.encode_conditioning(item)
        stages["conditioning"] = clock.lap()
    stages["conditioning_text_wall"] = (item.timing_ms["conditioning_text"], float("nan"))

    def on_step(step: int, total: int, state: Any) -> None:
        step_times.append(clock.lap())

    clock.lap()
    state = pipe.denoise([item], callback_on_step_end=on_step)
    stages["sampling_tail"] = clock.lap()  # after the last step's callback: nothing
    pipe.postprocess(state)
    stages["decode"] = clock.lap()
    wall = {name: value[0] for name, value in stages.items()}
    cpu = {name: value[1] for name, value in stages.items()}
    return {
        "stages_wall_ms": wall,
        "stages_cpu_ms": cpu,
        "steps_wall_ms": [s[0] for s in step_times],
        "steps_cpu_ms": [s[1] for s in step_times],
        "timing_ms": dict(item.timing_ms),
    }


def summarise_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over runs: each stage, each step position, the chunk total (wall and CPU)."""

    def med(values: list[float]) -> float:
        return round(statistics.median(values), 2)

    out: dict[str, Any] = {}
    for kind in ("wall", "cpu"):
        stages = {
            name: med([run[f"stages_{kind}_ms"][name] for run in runs])
            for name in ("preprocess", "conditioning", "decode")
        }
        steps = [
            med([run[f"steps_{kind}_ms"][index] for run in runs]) for index in range(len(runs[0][f"steps_{kind}_ms"]))
        ]
        totals = [
            sum(run[f"stages_{kind}_ms"][n] for n in ("preprocess", "conditioning", "sampling_tail", "decode"))
            + sum(run[f"steps_{kind}_ms"])
            for run in runs
        ]
        out[kind] = {"chunk_ms": med(totals), "stages_ms": stages, "step_ms": steps, "step_median_ms": med(steps)}
    out["conditioning_split_wall_ms"] = {
        name: med([run["timing_ms"][name] for run in runs])
        for name in ("conditioning_text", "conditioning_vlm", "conditioning_prepare")
    }
    return out


def compiled_vla(pipe: MotusPipeline, steps: int, repeats: int, floor_chunk_ms: float) -> dict[str, Any]:
    """The VLA chunk with the model's forward compiled by torch.compile (inductor fuses the ~1,000 small
    elementwise ops per step that eager mode runs one by one). Run last: the eager numbers above are unaffected.
    The first chunk includes the compilation (minutes on a cold cache; inductor caches it on disk)."""
    eager_forward = pipe.model.forward
    try:
        pipe.model.forward = torch.compile(eager_forward, dynamic=False)
        compile_started = time.perf_counter()
        run_chunk(pipe, Mode.VLA, steps, seed=0)  # compiles
        compile_s = time.perf_counter() - compile_started
        summary = summarise_runs([run_chunk(pipe, Mode.VLA, steps, seed=1 + r) for r in range(repeats)])
    except Exception as exc:  # no C++ compiler, an unsupported op: reported, not fatal
        return {"error": f"{type(exc).__name__}: {exc}"[:500]}
    finally:
        pipe.model.forward = eager_forward
    return {
        "first_chunk_with_compilation_s": round(compile_s, 1),
        "cpu": summary["cpu"],
        "cpu_over_floor": round(summary["cpu"]["chunk_ms"] / floor_chunk_ms, 2),
    }


def profile_chunk(pipe: MotusPipeline, steps: int, chunk_cpu_ms: float, step_gflop: float) -> dict[str, Any]:
    """Where one VLA chunk's CPU time goes, by aten op (``OpTimer``: this thread's CPU time inside each op).

    ``outside_aten_ops_ms`` (Python, nn.Module calls, dispatch) is the measured chunk CPU time without the
    timer minus the time inside ops; the timer's own clock reads inflate each op a little (see aten_op_us).
    """
    request = MotusRequest(
        mode=Mode.VLA,
        images=camera_views(7),
        state=np.zeros(pipe.config.action.state_dim, np.float32),
        instruction=INSTRUCTION,
        steps=steps,
        seed=7,
    )
    # The timer's own cost per op (clock reads, context switches on a loaded machine): what it records
    # for a view, which does no work. Subtracted from every op's total below.
    probe, calibration = torch.zeros(4), OpTimer()
    with calibration:
        for _ in range(2000):
            probe.view(-1)
    per_op_s = calibration.cpu_s["view"] / calibration.calls["view"]
    timer = OpTimer()
    with timer:
        pipe(request)
    timer.cpu_s = {name: max(0.0, value - timer.calls[name] * per_op_s) for name, value in timer.cpu_s.items()}
    in_ops = sum(timer.cpu_s.values()) * 1e3
    kinds = {"matmul": ("addmm", "mm", "bmm", "linear"), "attention": ("_scaled_dot_product_flash_attention_for_cpu",)}
    by_kind = {kind: sum(v for k, v in timer.cpu_s.items() if k in names) * 1e3 for kind, names in kinds.items()}
    by_kind["other_ops"] = in_ops - sum(by_kind.values())
    matmul_gflop = steps * step_gflop  # the steps' matmul+attention FLOPs dominate the chunk's
    top = sorted(timer.cpu_s.items(), key=lambda kv: kv[1], reverse=True)[:12]
    return {
        "chunk_cpu_ms_untimed": round(chunk_cpu_ms, 1),
        "inside_aten_ops_ms": round(in_ops, 1),
        "outside_aten_ops_ms": round(chunk_cpu_ms - in_ops, 1),
        "inside_by_kind_ms": {kind: round(value, 1) for kind, value in by_kind.items()},
        "aten_calls": sum(timer.calls.values()),
        "timer_overhead_per_op_us_subtracted": round(per_op_s * 1e6, 2),
        "in_forward_matmul_attention_gflops": round(
            matmul_gflop / ((by_kind["matmul"] + by_kind["attention"]) / 1e3), 2
        ),
        "top_ops": [{"op": name, "cpu_ms": round(value * 1e3, 1), "calls": timer.calls[name]} for name, value in top],
    }


# ----------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------


def chunk_floor(parts: dict[str, Counts], steps: int, gflops: float, gbs: float) -> dict[str, Any]:
    """Floor of a chunk: fixed parts once, the step ``steps`` times; per part max(compute, bytes)."""
    fixed = {name: round(floor_ms(c, gflops, gbs), 3) for name, c in parts.items() if name != "step"}
    step = floor_ms(parts["step"], gflops, gbs)
    return {
        "step_ms": round(step, 3),
        "step_compute_ms": round(parts["step"].flops / gflops / 1e6, 3),
        "step_bytes_ms": round((parts["step"].weight_bytes + 2 * parts["step"].activation_bytes) / gbs / 1e6, 3),
        "fixed_ms": fixed,
        "chunk_ms": round(sum(fixed.values()) + steps * step, 3),
    }


def parts_json(parts: dict[str, Counts]) -> dict[str, Any]:
    return {name: c.to_json() for name, c in parts.items()}


def main(argv: list[str] | None = None) -> int:
    # A context, not torch.set_grad_enabled(False): a test that calls main() in-process must get gradients back.
    with torch.no_grad():
        return _main(argv)


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=CHECKPOINT, help="the embedded checkpoint folder")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5, help="timed chunks per mode (after one warm-up)")
    parser.add_argument("--und-tokens-8b", type=int, default=UND_TOKENS_8B, help="VLM tokens of the 8B prompt")
    parser.add_argument("--no-profile", action="store_true", help="skip the per-op CPU-time breakdown")
    parser.add_argument(
        "--no-compile", action="store_true", help="skip the VLA chunk with torch.compile (inductor, CPU)"
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    torch.set_num_threads(1)
    started = time.perf_counter()

    pipe = MotusPipeline.from_pretrained(args.checkpoint)
    small = count_small(pipe, args.steps)
    big = count_8b(args.und_tokens_8b)

    logger.info("measuring this core's rates")
    rates = matmul_rates(small["modes"]["vla"]["step"].matmul_shapes)
    gbs = bandwidth_gbs()
    op_us = aten_op_us()
    gflops = rates["model_shapes_gflops"]

    logger.info("timing chunks")
    measured: dict[str, Any] = {}
    for mode in (Mode.VLA, Mode.JOINT):
        run_chunk(pipe, mode, args.steps, seed=0)  # warm-up
        measured[mode.value] = summarise_runs(
            [run_chunk(pipe, mode, args.steps, seed=1 + r) for r in range(args.repeats)]
        )

    presets: dict[str, Any] = {}
    for name, counted in (("motus-small", small), ("motus-8b", big)):
        entry: dict[str, Any] = {"und_tokens": counted["und_tokens"], "modes": {}}
        for mode in ("vla", "joint"):
            fixed: dict[str, Counts] = {
                "vlm": counted["vlm"],
                "prepare_conditioning": counted["modes"][mode]["conditioning"],
            }
            if name == "motus-small":
                fixed["encode_conditioning_frame"] = counted["encode"]
                if mode == "joint":
                    fixed["decode"] = counted["decode"]
            elif "encode" in counted["vae"]:
                fixed["encode_conditioning_frame"] = counted["vae"]["encode"]
                if mode == "joint":
                    fixed["decode"] = counted["vae"]["decode"]
            parts = {**fixed, "step": counted["modes"][mode]["step"]}
            total_flops = sum(c.flops for c in fixed.values()) + args.steps * parts["step"].flops
            entry["modes"][mode] = {
                "counts": parts_json(parts),
                "chunk_gflop": round(total_flops / 1e9, 3),
                "step_gflop": round(parts["step"].flops / 1e9, 4),
                "fixed_gflop": round(sum(c.flops for c in fixed.values()) / 1e9, 4),
                "one_core_floor": chunk_floor(parts, args.steps, gflops, gbs),
                "dispatch_floor_ms": round(
                    (sum(c.aten_ops for c in fixed.values()) + args.steps * parts["step"].aten_ops) * op_us / 1e3, 2
                ),
            }
        entry["text_encoder_once_per_instruction"] = counted["text_encoder"].to_json()
        presets[name] = entry
    presets["motus-small"]["formula_check"] = small["formula_check"]
    presets["motus-8b"]["parameters"] = big["parameters"]
    if "error" in big["vae"]:
        presets["motus-8b"]["vae_error"] = big["vae"]["error"]

    ratios: dict[str, Any] = {}
    for mode in ("vla", "joint"):
        floor = presets["motus-small"]["modes"][mode]["one_core_floor"]
        ratios[mode] = {
            "floor_chunk_ms": floor["chunk_ms"],
            "measured_cpu_chunk_ms": measured[mode]["cpu"]["chunk_ms"],
            "measured_wall_chunk_ms": measured[mode]["wall"]["chunk_ms"],
            "cpu_over_floor": round(measured[mode]["cpu"]["chunk_ms"] / floor["chunk_ms"], 2),
            "wall_over_floor": round(measured[mode]["wall"]["chunk_ms"] / floor["chunk_ms"], 2),
            "step_cpu_over_floor": round(measured[mode]["cpu"]["step_median_ms"] / floor["step_ms"], 2),
        }
    report = {
        "benchmark": "bench_floor",
        "environment": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "load_avg_1m": os.getloadavg()[0],
        },
        "checkpoint": str(
            args.checkpoint.relative_to(REPO) if args.checkpoint.is_relative_to(REPO) else args.checkpoint
        ),
        "steps": args.steps,
        "rates_one_core": {
            "matmul_gflops_model_shapes": gflops,
            "matmul_gflops_square_1024": rates["square_1024_gflops"],
            "copy_bandwidth_gbs": round(gbs, 2),
            "aten_op_us": round(op_us, 2),
            "matmul_per_shape": rates["per_shape"],
        },
        "presets": presets,
        "measured_motus_small": measured,
        "ratios_motus_small": ratios,
    }
    if not args.no_profile:
        report["profile_vla_chunk"] = profile_chunk(
            pipe, args.steps, measured["vla"]["cpu"]["chunk_ms"], presets["motus-small"]["modes"]["vla"]["step_gflop"]
        )
    if not args.no_compile:
        report["compiled_vla"] = compiled_vla(pipe, args.steps, args.repeats, ratios["vla"]["floor_chunk_ms"])
    report["wall_s"] = round(time.perf_counter() - started, 1)
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
