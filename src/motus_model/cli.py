"""The ``motus`` command: a small argparse dispatcher, one function per subcommand.

    motus train --stage 3 --preset motus-tiny --dataset DIR --output DIR --steps N [--resume]
    motus latent-actions --dataset DIR --vae DIR [--out DIR]      label episodes with latent actions
    motus train-latent-vae --labelled DIR ... --unlabelled DIR ... --output DIR --steps N
    motus convert-bag --profile YAML --output DIR --fps 50 --task "..." BAG [BAG ...]   rosbag2 folders / .mcap / .db3
    motus convert-hdf5 --output DIR --fps 50 --task "..." [--profile YAML] FILE.hdf5 [...]   ACT/ALOHA or RoboTwin
    motus stats --dataset DIR                                     (re)compute meta/stats.json
    motus generate-demos --task transfer_cube --episodes 50 --seed 0 --out DIR   scripted demonstrations
    motus eval --checkpoint DIR --episodes 50 --out DIR          closed-loop success rate (gym-aloha)
    motus convert-latents --checkpoint DIR --codec DIR --out DIR  a pixel_patch checkpoint onto PCA latents

Input a user can fix (``motus_model.data.errors.DataInputError``: a bad bag or HDF5 file, a wrong profile, an
existing output folder) is reported as one line, ``motus: error: ...``, with exit status 2 and no traceback.

Other modules add subcommands with ``register_command(name, help, add_arguments, run)``; ``run``
gets the parsed ``argparse.Namespace`` and returns an exit status.
Multi-GPU: ``accelerate launch --config_file config/training/accelerate_multi_gpu.yaml -m motus_model.cli train ...``
or ``torchrun --nproc_per_node N -m motus_model.cli train ...``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


_COMMANDS: dict[str, Command] = {}


def register_command(
    name: str,
    help: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], int],
) -> None:
    """Add a subcommand (a name already taken is an error)."""
    if name in _COMMANDS:
        raise ValueError(f"motus subcommand {name!r} is already registered")
    _COMMANDS[name] = Command(name, help, add_arguments, run)


@contextlib.contextmanager
def written_atomically(out: Path) -> Iterator[Path]:
    """A hidden folder beside ``out`` to write into: renamed to ``out`` when the block ends, removed if it raises,
    so an interrupted command leaves no half-written ``out``."""
    staging = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        yield staging
        os.rename(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# motus train
# ---------------------------------------------------------------------------------------------


def _train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--stage", type=int, choices=(1, 2, 3), required=True, help="training stage (config/training/stageN.yaml)"
    )
    parser.add_argument("--config", help="a training config YAML/JSON used instead of the stage preset")
    parser.add_argument(
        "--preset", help="model preset when starting from scratch (e.g. motus-tiny, motus-small, motus-8b)"
    )
    parser.add_argument("--init-from", help="checkpoint of the previous stage to start from")
    parser.add_argument("--dataset", help="LeRobot dataset folder")
    parser.add_argument("--mixture", help="data-pyramid mixture YAML (instead of --dataset)")
    parser.add_argument("--eval-dataset", help="held-out LeRobot dataset for per-mode evaluation")
    parser.add_argument(
        "--cameras",
        type=lambda text: [role.strip() for role in text.split(",") if role.strip()],
        help="the composite's camera roles in order, 1 to 4, e.g. high or high,low,left_wrist,right_wrist "
        "(default: the dataset's cameras, the head first); saved in the checkpoint",
    )
    parser.add_argument(
        "--camera-tiling",
        choices=("grid", "head_row"),
        help="how the views share the composite (default: grid for 1-2 cameras, head_row for 3-4)",
    )
    parser.add_argument("--output", help="run folder (checkpoints, metrics.jsonl); default: the --config's output")
    parser.add_argument("--steps", type=int, help="total optimisation steps")
    parser.add_argument("--max-minutes", type=float, help="stop (and save) after this much training time")
    parser.add_argument("--video-loss-weight", type=float, help="override the video loss weight (0: action-only)")
    parser.add_argument("--action-loss-weight", type=float, help="override the action loss weight")
    parser.add_argument(
        "--state-noise-std",
        type=float,
        help="Gaussian noise on the normalised state during training, in state stds (default 0)",
    )
    parser.add_argument(
        "--state-dropout",
        type=float,
        help="fraction of training samples whose state is replaced by the mean state (default 0)",
    )
    parser.add_argument(
        "--episode-start-fraction",
        type=float,
        help="fraction of samples drawn from the first --episode-start-rows rows of an episode (default 0)",
    )
    parser.add_argument("--episode-start-rows", type=int, help="rows counted as an episode's start (default 64)")
    parser.add_argument(
        "--mode-mix",
        help="share of each mode among training samples, e.g. joint=0.3,vla=0.3,world_model=0.15,idm=0.15,"
        "video_generation=0.1; 'off' for independent shifted sigmas only (default: the stage preset's)",
    )
    parser.add_argument(
        "--normalization-stats",
        choices=("per_dataset", "pooled", "init"),
        help="a mixture's statistics: each dataset its own (default), pooled over all, or --init-from's",
    )
    parser.add_argument(
        "--action-modulation",
        action="store_true",
        default=None,
        help="the actions also modulate the video tokens of the frames they lead to (a path the world model "
        "cannot ignore; off in the Motus release); over an --init-from checkpoint without it, it starts at zero",
    )
    parser.add_argument(
        "--action-modulation-clean-only",
        action="store_true",
        default=None,
        help="--action-modulation only where the actions are given clean (the world model): the VLA, joint, IDM "
        "and video-generation modes compute as without the path",
    )
    parser.add_argument(
        "--train-video-outputs-only",
        action="store_true",
        default=None,
        help="train only the parameters the action outputs never depend on (video head, last layer's video "
        "side, a clean-only action path): the policy and IDM stay bit-identical to --init-from's",
    )
    parser.add_argument("--batch-size", type=int, help="global batch size")
    parser.add_argument("--gradient-accumulation", type=int)
    parser.add_argument("--lr", type=float, dest="learning_rate")
    parser.add_argument("--warmup-steps", type=int)
    parser.add_argument(
        "--lr-cycle-steps",
        type=int,
        help="steps over which the lr factor decays linearly to --lr-min-factor (counted from step 0)",
    )
    parser.add_argument(
        "--lr-min-factor", type=float, dest="lr_f_min", help="floor of the lr factor (0.4 in the reference)"
    )
    parser.add_argument("--seed", type=int)
    parser.add_argument("--checkpoint-every", type=int)
    parser.add_argument("--eval-every", type=int)
    parser.add_argument("--log-every", type=int)
    parser.add_argument("--text-encoder", dest="text_encoder_path", help="umT5 folder (required for motus-8b)")
    parser.add_argument("--vlm", dest="vlm_path", help="Qwen3-VL folder (required for motus-8b)")
    parser.add_argument("--video-vae", dest="video_vae_path", help="Wan2.2 VAE folder (wan_vae latents)")
    parser.add_argument("--mixed-precision", choices=("auto", "bf16", "no"))
    parser.add_argument("--num-workers", type=int, help="data-loader workers preparing steps ahead")
    parser.add_argument("--truncate-instructions", action="store_true", default=None)
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from the run folder's latest checkpoint, with the run's saved training_config.json "
        "(or --config) and the flags given on top",
    )


def _parse_mode_mix(text: str) -> dict[str, float]:
    """'joint=0.3,vla=0.3' -> {"joint": 0.3, "vla": 0.3}; 'off' -> {} (stored as null)."""
    if text.strip().lower() in ("off", "none", "null"):
        return {}
    mix = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        try:
            mix[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"--mode-mix: expected mode=share pairs like joint=0.3,vla=0.3, got {part!r}") from None
    return mix


def _train(args: argparse.Namespace) -> int:
    from motus_model.training.config import TrainingConfig
    from motus_model.training.trainer import train

    overrides = {
        key: getattr(args, key)
        for key in (
            "preset",
            "dataset",
            "mixture",
            "eval_dataset",
            "cameras",
            "camera_tiling",
            "output",
            "steps",
            "max_minutes",
            "batch_size",
            "gradient_accumulation",
            "learning_rate",
            "warmup_steps",
            "lr_cycle_steps",
            "lr_f_min",
            "seed",
            "checkpoint_every",
            "eval_every",
            "log_every",
            "text_encoder_path",
            "vlm_path",
            "video_vae_path",
            "mixed_precision",
            "truncate_instructions",
            "num_workers",
            "video_loss_weight",
            "action_loss_weight",
            "state_noise_std",
            "state_dropout",
            "episode_start_fraction",
            "episode_start_rows",
            "normalization_stats",
            "action_modulation",
            "action_modulation_clean_only",
            "train_video_outputs_only",
        )
    }
    overrides["init_from"] = args.init_from
    if args.mode_mix is not None:
        overrides["mode_mix"] = _parse_mode_mix(args.mode_mix)
    # --resume without --config continues the run as it was configured (its saved training_config.json)
    run_config = Path(args.output) / "training_config.json" if args.output else None
    base = args.config or (run_config if args.resume and run_config is not None and run_config.is_file() else None)
    if base:
        config = TrainingConfig.load(base)
        config = TrainingConfig.from_dict({**config.to_dict(), **{k: v for k, v in overrides.items() if v is not None}})
        if config.stage != args.stage:
            raise ValueError(f"{base} is a stage {config.stage} config, --stage says {args.stage}")
    elif args.output:
        config = TrainingConfig.for_stage(args.stage, **overrides)
    else:
        raise ValueError("motus train needs --output (or a --config that names its output folder)")
    result = train(config, resume=args.resume)
    if int(os.environ.get("RANK", "0")) != 0:  # one summary line per job, from the main process
        return 0
    print(
        json.dumps(
            {
                "step": result.step,
                "checkpoint": str(result.last_checkpoint),
                "final_loss": result.history[-1]["loss"] if result.history else None,
            }
        )
    )
    return 0


# ---------------------------------------------------------------------------------------------
# latent actions
# ---------------------------------------------------------------------------------------------


def _latent_actions_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="LeRobot dataset to label")
    parser.add_argument("--vae", required=True, help="latent-action VAE folder (config.json + model.safetensors)")
    parser.add_argument("--out", help="write a labelled copy here instead of labelling the dataset in place")
    parser.add_argument("--column", default="latent_action", help="name of the new column")
    parser.add_argument("--flow", help="flow estimator (default: the VAE config's): opencv, raft, dpflow, ...")
    parser.add_argument("--flow-weights", help="local weights for a learned flow estimator")
    parser.add_argument("--batch-size", type=int, default=64)
    # The VAE fixes both; giving them checks that the VAE is the one meant (a mismatch is refused).
    parser.add_argument("--stride", type=int, help="expected frame stride (must equal the VAE's)")
    parser.add_argument("--camera", help="expected camera: a key, a role (high, left_wrist, right_wrist) or composite")


def _latent_actions(args: argparse.Namespace) -> int:
    from motus_model.latent_actions import LatentActionVAE, label_dataset, make_flow_estimator
    from motus_model.latent_actions.model import CAMERA_ROLE_KEYS

    dataset = Path(args.dataset)
    if not (dataset / "meta" / "info.json").is_file():
        raise FileNotFoundError(f"--dataset {dataset} is not a LeRobot dataset (no meta/info.json)")
    if not (Path(args.vae) / "config.json").is_file():
        raise FileNotFoundError(f"--vae {args.vae} is not a latent-action VAE folder (no config.json)")
    model = LatentActionVAE.from_pretrained(args.vae)
    config = model.config
    if args.stride is not None and args.stride != config.frame_stride:
        raise ValueError(
            f"--stride {args.stride} but the VAE at {args.vae} was trained with stride {config.frame_stride}"
        )
    if args.camera is not None and CAMERA_ROLE_KEYS.get(args.camera, args.camera) != config.camera_key:
        raise ValueError(f"--camera {args.camera} but the VAE at {args.vae} was trained on {config.camera_key}")
    estimator = make_flow_estimator(args.flow or config.flow_estimator, args.flow_weights)
    if not args.out:
        stats = label_dataset(dataset, model, estimator, column=args.column, batch_size=args.batch_size)
    else:
        out = Path(args.out)
        if out.exists():
            raise FileExistsError(f"--out {out} already exists")
        with written_atomically(out) as staging:  # an interrupted run leaves no half-labelled --out
            shutil.copytree(dataset, staging)
            stats = label_dataset(staging, model, estimator, column=args.column, batch_size=args.batch_size)
        dataset = out
    print(json.dumps({"dataset": str(dataset), "column": args.column, "mean": stats["mean"]}))
    return 0


def _train_latent_vae_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--labelled", nargs="*", default=[], help="datasets whose real actions align the latent space")
    parser.add_argument("--unlabelled", nargs="*", default=[], help="datasets used for flow reconstruction only")
    parser.add_argument("--output", required=True, help="VAE folder to write")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--max-minutes", type=float, help="stop training (and save) after this many minutes")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument(
        "--shape",
        choices=("tiny", "published"),
        default="published",
        help="tiny (tests/CPU) or the paper's 4x512-token DC-AE",
    )
    parser.add_argument("--config", help="a LatentActionVAEConfig JSON instead of --shape")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--every", type=int, default=1, help="use every n-th row of each episode (flow pairs are kept in memory)"
    )
    parser.add_argument("--stride", type=int, help="frames between the two frames of a flow pair (default 4)")
    parser.add_argument(
        "--camera", help="view whose flow is encoded: a key, a role (high, left_wrist, right_wrist) or composite"
    )
    parser.add_argument(
        "--flow-percentile",
        type=float,
        help="percentile of the training flows' magnitudes coded at the colour wheel's edge (default 99)",
    )
    parser.add_argument(
        "--flow-max-radius", type=float, help="a fixed flow scale in pixels instead of the data's percentile"
    )
    parser.add_argument(
        "--align",
        choices=("action_delta", "state_delta", "action"),
        help="alignment target on labelled rows (default action_delta: the action change over the stride)",
    )
    parser.add_argument(
        "--holdout",
        type=float,
        default=0.2,
        help="fraction of labelled episodes held out for the R^2 probe (0: no probe)",
    )


def _train_latent_vae(args: argparse.Namespace) -> int:
    import dataclasses

    from motus_model.latent_actions import LatentActionVAEConfig
    from motus_model.latent_actions.train import fit_latent_action_vae

    if args.config:
        config = LatentActionVAEConfig.from_dict(json.loads(Path(args.config).read_text()))
    else:
        config = LatentActionVAEConfig() if args.shape == "tiny" else LatentActionVAEConfig.published()
    changes = {
        "frame_stride": args.stride,
        "camera_key": args.camera,
        "flow_scale_percentile": args.flow_percentile,
        "alignment_target": args.align,
    }
    changes = {key: value for key, value in changes.items() if value is not None}
    if args.flow_max_radius is not None:  # a fixed scale: no percentile (None is a real value here)
        changes.update(flow_max_radius=args.flow_max_radius, flow_scale_percentile=None)
    if args.config:
        clashes = [
            f"--{flag} {value} vs {getattr(config, field)}"
            for flag, field, value in (("stride", "frame_stride", args.stride), ("camera", "camera_key", args.camera))
            if value is not None
            and getattr(dataclasses.replace(config, **{field: value}), field) != getattr(config, field)
        ]
        if clashes:
            raise ValueError(f"options contradict --config {args.config}: {', '.join(clashes)}")
    config = dataclasses.replace(config, **changes)
    metrics = fit_latent_action_vae(
        config,
        args.labelled,
        args.unlabelled,
        args.output,
        args.steps,
        args.batch_size,
        args.lr,
        args.seed,
        args.every,
        args.holdout,
        args.max_minutes,
    )
    probe = metrics["probe"]
    print(
        json.dumps(
            {
                "output": args.output,
                "probe_r2": probe["r2"] if probe else None,
                "flow_max_radius": metrics["flow_max_radius"],
                "near_white_share": metrics["near_white_share"],
                "final": metrics["final_losses"],
            }
        )
    )
    return 0


# ---------------------------------------------------------------------------------------------
# datasets
# ---------------------------------------------------------------------------------------------


def _convert_bag_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "bags", nargs="+", help="rosbag2 folders (metadata.yaml + *.mcap/*.db3) or .mcap/.db3 files, one episode each"
    )
    parser.add_argument(
        "--profile", required=True, help="robot profile: a name (config/robots/<name>.yaml) or a path to a profile YAML"
    )
    parser.add_argument("--output", required=True, help="new LeRobot dataset folder (or an existing one with --append)")
    parser.add_argument("--fps", type=float, help="control rate (default: the profile's control_rate_hz)")
    parser.add_argument("--task", required=True, help="instruction for every episode")
    parser.add_argument(
        "--time-source",
        choices=("log", "header"),
        default="log",
        help="stamp messages by receive time (log) or header stamps (header)",
    )
    parser.add_argument("--robot-type", default="aloha")
    parser.add_argument("--append", action="store_true", help="add the episodes to the dataset at --output")


def _profile(name_or_path: str):
    """--profile: a robot profile name (config/robots/<name>.yaml) or a YAML path; a bad one is the user's to fix."""
    from motus_model.data.errors import DataInputError
    from motus_model.embodiment import load_profile

    try:
        return load_profile(name_or_path)
    except ValueError as error:
        raise DataInputError(f"--profile {name_or_path}: {error}") from None


def _as_input_error(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Converters: a ValueError or a missing/existing path is the user's to fix: report it as one line."""

    def wrapped(args: argparse.Namespace) -> int:
        from motus_model.data.errors import DataInputError

        try:
            return run(args)
        except DataInputError:
            raise
        except (ValueError, FileExistsError, FileNotFoundError) as error:
            raise DataInputError(str(error)) from None

    return wrapped


def _convert_bag(args: argparse.Namespace) -> int:
    from motus_model.data.bag_converter import convert_bags

    profile = _profile(args.profile)
    fps = args.fps or profile.control_rate_hz
    root = convert_bags(
        args.bags,
        profile,
        args.output,
        float(fps),
        args.task,
        args.time_source,
        args.robot_type,
        append=args.append,
        show_progress=True,
    )
    print(json.dumps({"dataset": str(root), "episodes": len(args.bags)}))
    return 0


def _convert_hdf5_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", help="ACT/ALOHA or RoboTwin episode .hdf5 files, one episode each")
    parser.add_argument("--output", required=True, help="new LeRobot dataset folder (or an existing one with --append)")
    parser.add_argument("--task", required=True, help="instruction for every episode")
    parser.add_argument(
        "--fps", type=float, help="frame rate of the files (default: the profile's control_rate_hz, else 50)"
    )
    parser.add_argument(
        "--profile",
        help="robot profile (a name or a YAML path): its camera roles are kept and its joint count is checked",
    )
    parser.add_argument(
        "--camera",
        action="append",
        default=[],
        metavar="ROLE=NAME",
        help="map a camera role to the file's camera name (e.g. high=cam_high); repeatable",
    )
    parser.add_argument("--robot-type", default="aloha")
    parser.add_argument("--append", action="store_true", help="add the episodes to the dataset at --output")


def _convert_hdf5(args: argparse.Namespace) -> int:
    from motus_model.data.hdf5_converter import convert_hdf5

    profile = _profile(args.profile).to_dict() if args.profile else None
    cameras = None
    if args.camera:
        pairs = [item.split("=", 1) for item in args.camera]
        if any(len(pair) != 2 or not all(pair) for pair in pairs):
            raise ValueError(f"--camera takes ROLE=NAME (e.g. high=cam_high), got {args.camera}")
        cameras = dict(pairs)
    fps = args.fps or (profile or {}).get("control_rate_hz") or 50.0
    root = convert_hdf5(
        args.files,
        args.output,
        float(fps),
        args.task,
        profile,
        cameras,
        args.robot_type,
        append=args.append,
        show_progress=True,
    )
    print(json.dumps({"dataset": str(root), "episodes": len(args.files)}))
    return 0


def _stats_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="LeRobot dataset folder")


def _stats(args: argparse.Namespace) -> int:
    from motus_model.data.lerobot import write_stats

    stats = write_stats(args.dataset)
    summary = {name: {"mean": values["mean"], "std": values["std"]} for name, values in stats.items()}
    print(json.dumps(summary))
    return 0


register_command("train", "train Motus (stage 1, 2 or 3)", _train_arguments, _train)
register_command(
    "latent-actions",
    "label a dataset with latent actions (stage-2 pseudo-actions)",
    _latent_actions_arguments,
    _as_input_error(_latent_actions),
)
register_command(
    "train-latent-vae",
    "train the latent-action VAE on flow images",
    _train_latent_vae_arguments,
    _as_input_error(_train_latent_vae),
)
register_command(
    "convert-bag",
    "convert ROS 2 bags (rosbag2 folders, MCAP, sqlite3) into a LeRobot dataset",
    _convert_bag_arguments,
    _as_input_error(_convert_bag),
)
register_command(
    "convert-hdf5",
    "convert ACT/ALOHA or RoboTwin HDF5 episodes into a LeRobot dataset",
    _convert_hdf5_arguments,
    _as_input_error(_convert_hdf5),
)
register_command("stats", "(re)compute a dataset's meta/stats.json", _stats_arguments, _as_input_error(_stats))


def _generate_demos_arguments(parser: argparse.ArgumentParser) -> None:
    from motus_sim.record import build_parser

    build_parser(parser)


def _generate_demos(args: argparse.Namespace) -> int:
    from motus_sim.record import run

    return run(args)


register_command(
    "generate-demos",
    "scripted ALOHA demonstrations (gym-aloha) as a LeRobot dataset",
    _generate_demos_arguments,
    _generate_demos,
)


def _eval_arguments(parser: argparse.ArgumentParser) -> None:
    from motus_sim.closed_loop import add_arguments

    add_arguments(parser)


def _eval(args: argparse.Namespace) -> int:
    from motus_sim.closed_loop import run

    return run(args)


register_command("eval", "closed-loop success rate in the gym-aloha scenes (in-process)", _eval_arguments, _eval)

from motus_model.baselines import conv_idm_arguments, idm_eval_arguments, run_conv_idm, run_idm_eval  # noqa: E402

register_command("train-conv-idm", "train the small convolutional IDM baseline", conv_idm_arguments, run_conv_idm)
register_command(
    "idm-eval", "held-out IDM comparison: Motus IDM mode vs conv IDM vs hold-state", idm_eval_arguments, run_idm_eval
)


def _eval_generative_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="Motus checkpoint folder (finetune, real actions)")
    parser.add_argument("--dataset", required=True, help="held-out LeRobot dataset (e.g. generate-demos --seed 1000)")
    parser.add_argument("--samples", type=int, default=8, help="(episode, condition) samples, drawn as idm-eval does")
    parser.add_argument("--seed", type=int, default=0, help="sample-drawing seed; noise seeds derive from it")
    parser.add_argument("--steps", type=int, help="Euler steps (default: the checkpoint's)")
    parser.add_argument("--conv-idm", help="ConvIDM folder (motus train-conv-idm) for the IDM comparison")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", help="write the JSON report here too")
    parser.add_argument("--strip", help="write a PNG of live vs imagined frames of the first sample here")


def _eval_generative(args: argparse.Namespace) -> int:
    from motus_model.training.generative_eval import GenerativeEvalConfig, evaluate_generative, generative_markdown

    report = evaluate_generative(
        GenerativeEvalConfig(
            checkpoint=args.checkpoint,
            dataset=args.dataset,
            samples=args.samples,
            seed=args.seed,
            steps=args.steps,
            conv_idm=args.conv_idm,
            device=args.device,
            out=args.out,
            strip=args.strip,
        )
    )
    print(json.dumps(report))
    print(generative_markdown(report))
    return 0


register_command(
    "eval-generative",
    "world model, video generation and IDM on held-out episodes vs repeat-last, hold-still and the conv IDM",
    _eval_generative_arguments,
    _eval_generative,
)


def _convert_latents_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="a pixel_patch Motus checkpoint (e.g. the shipped one)")
    parser.add_argument(
        "--codec", required=True, help="a PatchPCACodec folder (python -m motus_model.video_latents fit-pca)"
    )
    parser.add_argument("--out", required=True, help="checkpoint folder to write (must not exist)")


def _convert_latents(args: argparse.Namespace) -> int:
    from motus_model.convert_checkpoints import pixel_patch_to_patch_pca
    from motus_model.data.errors import DataInputError
    from motus_model.pipeline_motus import MotusPipeline
    from motus_model.video_latents import PatchPCACodec

    out = Path(args.out)
    if out.exists():
        raise DataInputError(f"--out {out} already exists; choose a new folder")
    try:
        codec = PatchPCACodec.from_pretrained(args.codec)
    except FileNotFoundError as error:
        raise DataInputError(str(error)) from None
    try:
        pipeline = MotusPipeline.from_pretrained(args.checkpoint)
    except (FileNotFoundError, ValueError) as error:  # a missing or refused file: the user's to fix
        raise DataInputError(f"--checkpoint {args.checkpoint}: {error}") from None
    try:
        model = pixel_patch_to_patch_pca(pipeline.model, codec)
    except ValueError as error:
        raise DataInputError(f"{args.checkpoint}: {error}") from None
    converted = MotusPipeline(model, codec, pipeline.normalizer, pipeline.text, pipeline.vlm)
    with written_atomically(out) as staging:  # an interrupted run leaves no half checkpoint
        converted.save_pretrained(staging)
    print(json.dumps({"checkpoint": str(out), "latents": "patch_pca", "channels": codec.latent_channels}))
    return 0


register_command(
    "convert-latents",
    "move a pixel_patch checkpoint onto a fitted patch PCA codec (patch embedding composed with the decoder)",
    _convert_latents_arguments,
    _convert_latents,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="motus", description="Motus training and data tools")
    parser.add_argument("--log-level", default="INFO")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command in _COMMANDS.values():
        command.add_arguments(subparsers.add_parser(command.name, help=command.help))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from motus_model.data.errors import DataInputError

    try:
        return _COMMANDS[args.command].run(args)
    except DataInputError as error:
        parser.exit(2, f"motus: error: {error}\n")  # the user's to fix: one line, no traceback


if __name__ == "__main__":
    sys.exit(main())
