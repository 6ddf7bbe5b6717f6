"""Model latency benchmark: per mode, per denoising step, cached engine vs naive per-step recompute.

Prints one JSON document (and writes it to --out when given). Not a test: nothing is asserted.

What is measured, per preset (random weights, seeded; see MotusEngine.from_config):
- per mode: median end-to-end latency of `MotusEngine.infer` and its stages (timing_ms),
  and the sampling time per denoising step;
- caching: the same VLA request through the engine (VLM features, text features + their
  cross-attention K/V, conditioning-frame latents computed once per request) and through
  a `naive=True` engine that recomputes them every denoising step as the reference does;
  reported as a ratio naive / cached, measured in the same run;
- batching: 4 concurrent VLA requests (batched by the worker) vs the same 4 one after another.

Usage:
    PYTHONPATH=src .venv/bin/python bench/bench_model.py                      # motus-tiny + motus-small, CPU
    PYTHONPATH=src python bench/bench_model.py --preset motus-8b --device cuda --dtype bfloat16 \\
        --encoder-layers 28 --published-vae --out bench/results/motus-8b-h100.json
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import time
from concurrent.futures import wait
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench_report import emit
from motus_model.config import MotusConfig
from motus_model.engine import MotusEngine, MotusRequest
from motus_model.flow_matching import Mode
from motus_model.video_latents import WanVAECodec, random_wan22_vae

logger = logging.getLogger("bench_model")

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
INSTRUCTION = "pick"  # short enough for every preset's text_len (motus-tiny: 8 tokens)


def camera_views(seed: int, height: int = 240, width: int = 320) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        role: rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for role in ("high", "left_wrist", "right_wrist")
    }


def make_request(config: MotusConfig, mode: Mode, seed: int, steps: int) -> MotusRequest:
    fields: dict[str, Any] = dict(
        mode=mode,
        images=camera_views(seed),
        state=np.zeros(config.action.state_dim, dtype=np.float32),
        instruction=INSTRUCTION,
        steps=steps,
        seed=seed,
    )
    if mode is Mode.WORLD_MODEL:
        fields["actions"] = np.zeros((config.temporal.action_chunk, config.action.action_dim), dtype=np.float32)
    if mode is Mode.IDM:
        fields["future_frames"] = [camera_views(seed + 1 + index) for index in range(config.temporal.num_video_frames)]
    if config.training_mode != "finetune":
        fields["state"] = None
    return MotusRequest(**fields)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def time_requests(engine: MotusEngine, mode: Mode, steps: int, repeats: int) -> dict[str, Any]:
    """Median stage timings of `repeats` requests (after one warm-up)."""
    config = engine.config
    engine.infer(make_request(config, mode, seed=0, steps=steps))
    runs = []
    for repeat in range(repeats):
        result = engine.infer(make_request(config, mode, seed=repeat + 1, steps=steps))
        runs.append(result.timing_ms)
    stages = {stage: median([run[stage] for run in runs]) for stage in runs[0]}
    return {
        "steps": steps,
        "latency_ms": stages["total"],
        "per_step_ms": round(stages["sampling"] / steps, 3),
        "stages_ms": stages,
    }


def compare_caching(engine: MotusEngine, naive: MotusEngine, steps: int, repeats: int) -> dict[str, Any]:
    """The same VLA requests through the cached and the naive engine, interleaved so that
    load from other processes hits both alike; the ratio is the median of per-pair ratios."""
    config = engine.config
    for warm_up in (engine, naive):
        warm_up.infer(make_request(config, Mode.VLA, seed=0, steps=steps))
    cached, recomputed, ratios = [], [], []
    for repeat in range(repeats):
        request = make_request(config, Mode.VLA, seed=200 + repeat, steps=steps)
        fast = engine.infer(request).timing_ms["total"]
        slow = naive.infer(request).timing_ms["total"]
        cached.append(fast)
        recomputed.append(slow)
        ratios.append(slow / fast)
    return {
        "steps": steps,
        "cached_ms": median(cached),
        "naive_ms": median(recomputed),
        "naive_over_cached": median(ratios),
        "what_naive_recomputes_per_step": (
            "VLM features, umT5 features, prepare_conditioning (text K/V, und adapter), conditioning-frame latents"
        ),
    }


def time_batching(engine: MotusEngine, steps: int, requests: int = 4) -> dict[str, Any]:
    config = engine.config
    batch = [make_request(config, Mode.VLA, seed=100 + index, steps=steps) for index in range(requests)]
    started = time.perf_counter()
    for request in batch:
        engine.infer(request)
    sequential = (time.perf_counter() - started) * 1e3
    started = time.perf_counter()
    futures = [engine.submit(request) for request in batch]
    wait(futures)
    together = (time.perf_counter() - started) * 1e3
    sizes = [future.result().batch_size for future in futures]
    return {
        "requests": requests,
        "sequential_ms": round(sequential, 3),
        "submitted_together_ms": round(together, 3),
        "batch_sizes": sizes,
        "speedup": round(sequential / together, 3),
    }


def bench_preset(name: str, args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]
    config = MotusConfig.preset(name)
    steps = args.steps or config.schedule.inference_steps
    codec = None
    if config.latents.kind == "wan_vae" and args.published_vae:
        codec = WanVAECodec(random_wan22_vae(), device=device, dtype=dtype)
    built = time.perf_counter()
    engine = MotusEngine.from_config(
        config,
        seed=0,
        device=device,
        dtype=None if dtype == torch.float32 else dtype,
        max_batch=args.max_batch,
        encoder_layers=args.encoder_layers,
        codec=codec,
    )
    build_s = time.perf_counter() - built
    naive = MotusEngine(
        engine.model, engine.codec, engine.normalizer, engine.text.encoder, engine.vlm, device=device, naive=True
    )
    try:
        counts = engine.model.count_parameters()
        report: dict[str, Any] = {
            "preset": name,
            "parameters": counts,
            "video_tokens": config.num_video_tokens(),
            "action_tokens": config.num_action_tokens(),
            "composite": [config.latents.image_height, config.latents.image_width],
            "latents": config.latents.kind,
            "encoders": {
                "umt5_layers": args.encoder_layers,
                "text_dim": config.video.text_dim,
                "text_len": config.video.text_len,
                "qwen3_vl_layers": args.encoder_layers,
                "vlm_dim": config.understanding.vlm_dim,
                "vlm_tokens_per_request": None,
            },
            "build_s": round(build_s, 2),
            "modes": {},
        }
        hidden, _ = engine.vlm.extract([INSTRUCTION], [engine._composite(camera_views(0))])
        report["encoders"]["vlm_tokens_per_request"] = int(hidden.shape[1])
        for mode in args.modes:
            logger.info("%s: %s", name, mode.value)
            report["modes"][mode.value] = time_requests(engine, mode, steps, args.repeats)

        report["caching_vla"] = compare_caching(engine, naive, steps, max(args.repeats, 5))
        report["batching_vla"] = time_batching(engine, steps)
        report["engine_stats"] = engine.stats
        return report
    finally:
        naive.close()
        engine.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", nargs="+", default=["motus-tiny", "motus-small"], help="presets to run")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: the preset's)")
    parser.add_argument("--repeats", type=int, default=3, help="timed requests per measurement (after a warm-up)")
    parser.add_argument("--modes", nargs="+", default=[mode.value for mode in Mode], help="modes to time")
    parser.add_argument("--max-batch", type=int, default=4)
    parser.add_argument(
        "--encoder-layers",
        type=int,
        default=1,
        help="depth of the random umT5 / Qwen3-VL language models (real: 24 / 28)",
    )
    parser.add_argument(
        "--published-vae",
        action="store_true",
        help="wan_vae presets: a random VAE of the published Wan 2.2 size instead of a tiny one",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="also write the JSON here (e.g. bench/results/NAME.json)"
    )
    args = parser.parse_args(argv)
    args.modes = [Mode(mode) for mode in args.modes]
    return args


def main(argv: list[str] | None = None) -> int:
    # A context, not torch.set_grad_enabled(False): a test that calls main() in-process must get gradients back.
    with torch.no_grad():
        return _main(argv)


def _main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    args = parse_args(argv)
    started = time.perf_counter()
    results = {
        "benchmark": "bench_model",
        "environment": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "device": args.device,
            "device_name": torch.cuda.get_device_name(args.device)
            if args.device.startswith("cuda")
            else platform.processor() or platform.machine(),
            "dtype": args.dtype,
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
        },
        "weights": "random (seeded); latencies only, outputs meaningless",
        "presets": [bench_preset(name, args) for name in args.preset],
    }
    results["wall_s"] = round(time.perf_counter() - started, 1)
    emit(results, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
