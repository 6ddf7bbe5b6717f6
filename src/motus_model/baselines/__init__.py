"""Baselines Motus is compared against (small, CPU-trainable, same data and normalisation as Motus).

- ``conv_idm``: a small convolutional inverse-dynamics model (current + future composites, state -> chunk),
  the baseline for Motus's IDM mode; ``motus train-conv-idm``.
- ``idm_eval``: held-out comparison of Motus's IDM mode, the conv IDM and "hold the current state";
  ``motus idm-eval``.

This module stays light (argparse only) because ``motus_model.cli`` imports it to register the two
subcommands; torch and the models are imported when a command runs.
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def conv_idm_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``motus train-conv-idm``."""
    parser.add_argument("--dataset", required=True, help="LeRobot dataset folder (the one Motus trains on)")
    parser.add_argument(
        "--preset",
        default="motus-small-aloha",
        help="Motus preset giving the composite size and temporal layout (default motus-small-aloha)",
    )
    parser.add_argument("--output", required=True, help="folder to write (config.json, model.safetensors, stats.json)")
    parser.add_argument(
        "--max-minutes", type=float, default=0.0, help="stop after this much training time (0: no limit)"
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="optimisation steps (default: until --max-minutes; 1000 without it)"
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate")
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--warmup-steps", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=25, help="metrics.jsonl line every N steps")
    parser.add_argument("--video-cache-mb", type=int, default=2048, help="decoded video kept in memory")


def run_conv_idm(args: argparse.Namespace) -> int:
    from motus_model.baselines.conv_idm import ConvIDMTrainConfig, train_conv_idm

    steps = args.steps if args.steps is not None else (None if args.max_minutes else 1000)
    config = ConvIDMTrainConfig(
        dataset=args.dataset,
        preset=args.preset,
        output=args.output,
        steps=steps,
        max_minutes=args.max_minutes,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps,
        seed=args.seed,
        log_every=args.log_every,
        video_cache_mb=args.video_cache_mb,
    )
    result = train_conv_idm(config)
    print(json.dumps(result))
    return 0


def idm_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``motus idm-eval``."""
    parser.add_argument("--dataset", required=True, help="held-out LeRobot dataset")
    parser.add_argument("--motus", help="Motus checkpoint folder (MotusEngine.from_pretrained); omit to skip Motus")
    parser.add_argument("--conv-idm", help="ConvIDM folder (motus train-conv-idm); omit to skip it")
    parser.add_argument("--samples", type=int, default=200, help="(episode, condition) samples to draw")
    parser.add_argument("--seed", type=int, default=0, help="sample-drawing seed; Motus noise seeds derive from it")
    parser.add_argument("--steps", type=int, default=None, help="Motus Euler steps (default: the checkpoint config's)")
    parser.add_argument("--device", default="cpu", help="device for both models")
    parser.add_argument("--out", help="write the JSON report here too")


def run_idm_eval(args: argparse.Namespace) -> int:
    from motus_model.baselines.idm_eval import IDMEvalConfig, evaluate_idm

    report: dict[str, Any] = evaluate_idm(
        IDMEvalConfig(
            dataset=args.dataset,
            motus=args.motus,
            conv_idm=args.conv_idm,
            samples=args.samples,
            seed=args.seed,
            steps=args.steps,
            device=args.device,
            out=args.out,
        )
    )
    print(json.dumps(report))
    return 0


def __getattr__(name: str) -> Any:  # lazy re-exports: `from motus_model.baselines import ConvIDM`
    if name in ("ConvIDM", "ConvIDMConfig", "ConvIDMPredictor", "ConvIDMTrainConfig", "train_conv_idm"):
        from motus_model.baselines import conv_idm

        return getattr(conv_idm, name)
    if name in ("IDMEvalConfig", "evaluate_idm"):
        from motus_model.baselines import idm_eval

        return getattr(idm_eval, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
