"""Record scripted ALOHA demonstrations as a LeRobot-format dataset, and the command line that does it.

    python -m motus_sim --task transfer_cube --episodes 50 --seed 0 --out outputs/demos/transfer_cube

Episode i uses the object pose drawn from seed + i, so a run is reproducible from (task, seed, episodes).
Besides the LeRobot files (see ``motus_model.data.lerobot``), the dataset's ``meta/`` holds
``expert_episodes.json`` (per-episode seed, object pose, max reward and success; the writer has no
per-episode metadata field) and ``demo_generation.json`` (the list of configs that produced it).

DART-style data (``--command-noise``, see ``CommandNoise``) can be appended to a clean dataset, so that
one dataset, with one set of statistics, holds both::

    python -m motus_sim --episodes 60 --seed 100 --command-noise 0.05 --only-successful \
        --append --workers 2 --out outputs/demos/transfer_cube_dart
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from motus_model.data.lerobot import LeRobotDatasetWriter
from motus_sim.scripted_expert import (
    ARM_COLUMNS,
    CAMERA_NAMES,
    RANDOM_MOTION_INSTRUCTION,
    RANDOM_MOTION_TASK,
    TASKS,
    CommandNoise,
    ExpertEpisode,
    RandomMotionConfig,
    action_envelope,
    get_task,
    run_expert_episode,
)

# What the action column holds with command noise (DemoRecordingConfig.recorded_actions).
RECORDED_ACTIONS = ("plan", "sent")
logger = logging.getLogger(__name__)

EXPERT_EPISODES_FILE = "expert_episodes.json"
# What `generate-demos --task` records: the scripted tasks, and task-agnostic random motions (no goal, no expert).
RECORDING_TASKS = (*sorted(TASKS), RANDOM_MOTION_TASK)
GENERATION_CONFIG_FILE = "demo_generation.json"


@dataclass
class DemoRecordingConfig:
    """What to record.

    Args:
        task: "transfer_cube", "insertion", or "random_motion" (task-agnostic: random, reachable,
            collision-free joint-space motions in the transfer-cube scene; see ``plan_random_motion``).
        episodes: number of expert episodes to run (recorded: all, or the successful ones).
        seed: episode i uses the object pose of seed + i.
        out: dataset folder (must not hold a dataset yet, unless ``append``).
        image_height, image_width: recorded camera size (even numbers; mp4/yuv420p needs them).
        only_successful: keep only episodes whose replay reached the task's max reward.
        num_steps: steps per episode; None = the task's length (400). Shorter cannot finish the task.
        command_noise: std (rad) of the DART perturbation of the replayed arm commands; 0 = clean
            demonstrations.
        recorded_actions: with command noise, what the action column holds: "plan", the clean plan (DART: a
            policy learns to lead back from wherever the noise pushed the arm), or "sent", the perturbed
            commands the arms were given (world-model and IDM data: the actions then say where the arms go,
            which the scene alone does not).
        motion_envelope: random_motion only: a LeRobot dataset whose action range (per joint, min to max)
            bounds the random waypoints instead of the default box, so that the motions stay inside what a
            checkpoint's action statistics cover (world-model data for a fine-tune that keeps them).
        append: add the episodes to the dataset already at ``out`` (same image size).
        workers: episodes simulated and rendered in parallel processes (rendering is the slow part).
    """

    task: str = "transfer_cube"
    episodes: int = 50
    seed: int = 0
    out: str = "outputs/demos/transfer_cube"
    image_height: int = 120
    image_width: int = 160
    only_successful: bool = False
    num_steps: int | None = None
    command_noise: float = 0.0
    recorded_actions: str = "plan"
    motion_envelope: str | None = None
    append: bool = False
    workers: int = 1

    def __post_init__(self) -> None:
        if self.task != RANDOM_MOTION_TASK:
            get_task(self.task)
        elif self.command_noise > 0:
            raise ValueError("--command-noise perturbs an expert's plan; random_motion has none")
        CommandNoise(std=self.command_noise)
        if self.motion_envelope and self.task != RANDOM_MOTION_TASK:
            raise ValueError("--motion-envelope bounds random motions: use it with --task random_motion")
        self.random_motion()  # a bad envelope dataset fails here, not in a worker
        if self.recorded_actions not in RECORDED_ACTIONS:
            raise ValueError(f"recorded_actions must be one of {RECORDED_ACTIONS}, got {self.recorded_actions!r}")
        if self.recorded_actions == "sent" and self.command_noise <= 0:
            raise ValueError("--actions sent records the perturbed commands: give --command-noise too")
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")
        if self.episodes <= 0:
            raise ValueError(f"episodes must be positive, got {self.episodes}")
        for name, value in (("image_height", self.image_height), ("image_width", self.image_width)):
            if value <= 0 or value % 2:
                raise ValueError(f"{name} must be a positive even number (yuv420p video), got {value}")
        if self.num_steps is not None and self.num_steps <= 0:
            raise ValueError(f"num_steps must be positive, got {self.num_steps}")

    def random_motion(self) -> RandomMotionConfig:
        """How random motions are drawn: within ``motion_envelope``'s action range when given."""
        return RandomMotionConfig(box=action_envelope(self.motion_envelope) if self.motion_envelope else None)


def record_demonstrations(config: DemoRecordingConfig, show_progress: bool = True) -> dict:
    """Run the scripted expert ``config.episodes`` times and write the dataset; returns the summary.

    The summary holds: task, episodes_run, successes (ACT's criterion: the max reward was reached),
    success_rate, successes_at_end (still reached on the last frame), episodes_recorded (by this run),
    dataset_episodes (in the dataset now), seconds, seconds_per_episode, out.
    """
    instruction = RANDOM_MOTION_INSTRUCTION if config.task == RANDOM_MOTION_TASK else get_task(config.task).instruction
    root = Path(config.out)
    meta = root / "meta"
    writer = LeRobotDatasetWriter(root, fps=50, camera_keys=tuple(CAMERA_NAMES), append=config.append)
    appending = writer.num_episodes > 0  # a finalized dataset always holds at least one episode
    for key, shape in writer.frame_shapes.items():
        if shape[:2] != (config.image_height, config.image_width):
            raise ValueError(
                f"{root} holds {shape[0]}x{shape[1]} {key} images; record with --image-size {shape[0]}x{shape[1]}"
            )
    previous_records = json.loads((meta / EXPERT_EPISODES_FILE).read_text()) if appending else []
    previous_configs = json.loads((meta / GENERATION_CONFIG_FILE).read_text()) if appending else []
    if isinstance(previous_configs, dict):  # written before appending existed: one config
        previous_configs = [previous_configs]
    records = []
    start = time.perf_counter()
    seeds = [config.seed + offset for offset in range(config.episodes)]
    random_motion = config.random_motion()  # the envelope's statistics read once, not per episode
    jobs = [(config, seed, random_motion) for seed in seeds]
    pool = multiprocessing.get_context("spawn").Pool(config.workers) if config.workers > 1 else None
    try:
        episodes = pool.imap(_record_episode, jobs) if pool else map(_record_episode, jobs)
        progress = tqdm(episodes, total=len(jobs), desc=f"{config.task} demos", unit="ep", disable=not show_progress)
        for episode in progress:
            record = {
                "seed": episode.seed,
                "success": episode.success,
                "success_at_end": episode.success_at_end,
                "max_reward": float(episode.rewards.max()),
                "final_reward": float(episode.rewards[-1]),
                "task_max_reward": episode.max_reward,
                "object_pose": episode.object_pose.tolist(),
                "command_noise_rms": float(np.sqrt(np.mean(episode.command_offsets[:, ARM_COLUMNS] ** 2))),
                "episode_index": None,
            }
            if episode.success or not config.only_successful:
                record["episode_index"] = writer.add_episode(
                    episode.frames, episode.states, episode.actions, instruction
                )
            records.append(record)
            successes = sum(r["success"] for r in records)
            progress.set_postfix(success=f"{successes}/{len(records)}")
    finally:
        if pool:
            pool.terminate()
    recorded = sum(r["episode_index"] is not None for r in records)
    if recorded == 0:
        raise RuntimeError(f"no episode succeeded out of {config.episodes}; nothing to write with --only-successful")
    writer.finalize()
    seconds = time.perf_counter() - start
    successes = sum(r["success"] for r in records)
    successes_at_end = sum(r["success_at_end"] for r in records)
    (meta / EXPERT_EPISODES_FILE).write_text(json.dumps(previous_records + records, indent=2))
    (meta / GENERATION_CONFIG_FILE).write_text(json.dumps(previous_configs + [asdict(config)], indent=2))
    return {
        "task": config.task,
        "episodes_run": config.episodes,
        "successes": successes,
        "success_rate": successes / config.episodes,
        "successes_at_end": successes_at_end,
        "episodes_recorded": recorded,
        "dataset_episodes": writer.num_episodes,
        "seconds": seconds,
        "seconds_per_episode": seconds / config.episodes,
        "out": str(root),
    }


def _record_episode(job: tuple[DemoRecordingConfig, int, RandomMotionConfig]) -> ExpertEpisode:
    """One rendered expert episode (module level so that worker processes can run it)."""
    config, seed, random_motion = job
    noise = CommandNoise(std=config.command_noise) if config.command_noise > 0 else None
    return run_expert_episode(
        config.task,
        seed,
        image_size=(config.image_height, config.image_width),
        num_steps=config.num_steps,
        command_noise=noise,
        record_sent_commands=config.recorded_actions == "sent",
        random_motion=random_motion,
    )


def _image_size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"image size must look like HEIGHTxWIDTH (e.g. 120x160), got {text!r}"
        ) from error
    return height, width


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The command's arguments (added to ``parser`` if given, e.g. a ``motus`` subcommand parser)."""
    parser = parser or argparse.ArgumentParser(
        prog="python -m motus_sim", description="Record scripted gym-aloha demonstrations as a LeRobot dataset."
    )
    parser.add_argument(
        "--task",
        choices=RECORDING_TASKS,
        default="transfer_cube",
        help="a scripted task, or random_motion: task-agnostic, collision-free random joint motions",
    )
    parser.add_argument("--episodes", type=int, default=50, help="expert episodes to run")
    parser.add_argument("--seed", type=int, default=0, help="episode i uses the object pose of seed + i")
    parser.add_argument(
        "--out", required=True, help="dataset folder to create (keep it out of git, e.g. under outputs/)"
    )
    parser.add_argument("--image-size", type=_image_size, default=(120, 160), help="recorded camera HEIGHTxWIDTH")
    parser.add_argument("--only-successful", action="store_true", help="record only episodes that reach the max reward")
    parser.add_argument("--num-steps", type=int, default=None, help="steps per episode (default: the task's 400)")
    parser.add_argument(
        "--command-noise",
        type=float,
        default=0.0,
        help="DART: std (rad) of a smooth offset added to the replayed arm commands; "
        "the recorded actions stay the plan (see --actions)",
    )
    parser.add_argument(
        "--actions",
        choices=RECORDED_ACTIONS,
        default="plan",
        dest="recorded_actions",
        help="with --command-noise, the action column: the clean plan (DART, for the policy; default) or the "
        "perturbed commands sent to the arms (for the world model and the IDM: the actions then carry what the "
        "scene does not)",
    )
    parser.add_argument(
        "--motion-envelope",
        metavar="DATASET",
        help="random_motion only: draw the waypoints within this LeRobot dataset's action range (per joint, "
        "min to max) instead of the default box, e.g. the task's demonstrations",
    )
    parser.add_argument("--append", action="store_true", help="add the episodes to the dataset already at --out")
    parser.add_argument("--workers", type=int, default=1, help="episodes rendered in parallel processes")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m motus_sim`` (and ``motus generate-demos``)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run(args)


def run(args: argparse.Namespace) -> int:
    """Record from parsed arguments (``build_parser``'s); prints the summary line, returns the exit code 0."""
    config = DemoRecordingConfig(
        task=args.task,
        episodes=args.episodes,
        seed=args.seed,
        out=args.out,
        image_height=args.image_size[0],
        image_width=args.image_size[1],
        only_successful=args.only_successful,
        num_steps=args.num_steps,
        command_noise=args.command_noise,
        recorded_actions=args.recorded_actions,
        motion_envelope=args.motion_envelope,
        append=args.append,
        workers=args.workers,
    )
    summary = record_demonstrations(config)
    print(
        f"{summary['task']}: expert success {summary['successes']}/{summary['episodes_run']} "
        f"({100 * summary['success_rate']:.0f}%; {summary['successes_at_end']} still done at the end), "
        f"recorded {summary['episodes_recorded']} episodes to {summary['out']} "
        f"(now {summary['dataset_episodes']}) "
        f"in {summary['seconds']:.0f} s ({summary['seconds_per_episode']:.1f} s/episode)"
    )
    return 0
