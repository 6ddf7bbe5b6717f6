"""Closed-loop evaluation through the ROS suite, in real time (`motus eval-ros`).

`motus eval` (motus_sim.closed_loop) runs the checkpoint in-process: the physics waits for the model,
so it measures the model. This command measures the deployed system instead: `motus_sim` steps gym-aloha's physics
at wall-clock 50 Hz while `motus_server`'s policy node infers chunks asynchronously from the sim's camera and joint
state topics and streams commands back, exactly as on a robot. On a small CPU, inference latency, the cameras' rate
and the CPU shared with rendering all count, so the success rate is expected to be lower than `motus eval`'s.

Per episode i (seed first_seed + i, the same object poses as `motus eval`):
  1. the sim's `seed` parameter is set (rcl_interfaces/SetParameters on /aloha_sim) and /aloha_sim/reset called;
  2. once every camera has published a frame rendered after the reset, a RunPolicy goal with the instruction runs
     for `duration_s` (8 s = 400 control steps, the episode length of `motus eval`);
  3. /aloha_sim/reward is tracked during the goal: success = the highest reward reached the task's maximum (ACT's
     criterion, as `motus eval`), success_at_end = the last reward did; steps = the policy's control steps;
  4. the policy's feedback gives its median control rate and per-chunk inference latency;
  5. for the first `videos` episodes, the high camera's images as received are written to rollout_XXX.mp4.

The output folder holds results.json in closed_loop's schema (config, summary from closed_loop.summarize with the
ROS timing added, episodes as closed_loop.EpisodeResult) plus a "ros" section with each episode's timing.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from motus_ros.checkpoints import DEFAULT_SIM_CHECKPOINT
from motus_ros.harness import (
    CHUNK_REQUEST_THRESHOLD,
    DEFAULT_CAMERA_RATE_HZ,
    SimMonitor,
    Suite,
    policy_timing,
    use_private_domain,
)

PROFILE = "aloha_sim"
# gym-aloha's top reward per task (TransferCubeTask / InsertionTask max_reward): the success threshold.
TASK_MAX_REWARD = {"transfer_cube": 4.0, "insertion": 4.0}


@dataclass
class RosEvalConfig:
    """One `motus eval-ros` run.

    Args:
        checkpoint: checkpoint folder or shipped model name (resolved by the server).
        task: gym-aloha task of the sim: transfer_cube or insertion.
        instruction: the policy's instruction ("" = the task's, as in the demonstrations).
        episodes: number of episodes; episode i uses seed first_seed + i.
        first_seed: seed of the first episode's object pose (`motus eval`'s default: 1000).
        duration_s: seconds each RunPolicy goal drives the robot (8 s = 400 steps at 50 Hz).
        inference_steps: Euler steps per chunk (0: the checkpoint's default).
        chunk_request_threshold: the next chunk is requested when this many planned control steps remain.
        camera_rate_hz: the sim's camera rate.
        videos: episodes (the first ones) whose high-camera images are written as mp4.
        out: output folder.
    """

    checkpoint: str = DEFAULT_SIM_CHECKPOINT
    task: str = "transfer_cube"
    instruction: str = ""
    episodes: int = 50
    first_seed: int = 1000
    duration_s: float = 8.0
    inference_steps: int = 0
    chunk_request_threshold: int = CHUNK_REQUEST_THRESHOLD
    camera_rate_hz: float = DEFAULT_CAMERA_RATE_HZ
    videos: int = 2
    out: str = "outputs/eval_ros/transfer_cube"
    evaluator: str = "ros"

    def __post_init__(self) -> None:
        if self.task not in TASK_MAX_REWARD:
            raise ValueError(f"task must be one of {sorted(TASK_MAX_REWARD)}, got {self.task!r}")
        if self.episodes <= 0 or self.duration_s <= 0:
            raise ValueError(f"episodes and duration must be positive, got {self.episodes}, {self.duration_s}")
        if self.inference_steps < 0 or self.videos < 0 or self.camera_rate_hz <= 0:
            raise ValueError("steps and videos must be >= 0 and the camera rate > 0")
        if not self.instruction:  # the demonstrations' instruction (dm_control is imported only here)
            from motus_sim.scripted_expert import get_task

            self.instruction = get_task(self.task).instruction


def evaluate(config: RosEvalConfig, verbose: bool = False) -> dict[str, Any]:
    """Start the sim and the server, run every episode, write results.json and the videos; return the results."""
    from motus_ros.checkpoints import resolve_checkpoint

    checkpoint = resolve_checkpoint(config.checkpoint)  # fail here, with the shipped names, not in the server
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    domain = use_private_domain()
    print(
        f"motus eval-ros: {config.episodes} episodes of {config.duration_s:g} s, {config.task} with {checkpoint} "
        f"(ROS_DOMAIN_ID={domain})",
        flush=True,
    )
    started = time.perf_counter()
    with Suite(
        checkpoint=checkpoint,
        preset="motus-small-aloha",
        profile=PROFILE,
        task=config.task,
        seed=config.first_seed,
        camera_rate_hz=config.camera_rate_hz,
        steps=config.inference_steps,
        chunk_request_threshold=config.chunk_request_threshold,
        verbose=verbose,
    ):
        print(f"simulator and server are up ({time.perf_counter() - started:.0f} s)", flush=True)
        episodes, timings = _run_episodes(config, out)
    from motus_sim.closed_loop import summarize

    summary = summarize(episodes)
    summary.update(_timing_summary(timings))
    results = {
        "config": {**asdict(config), "checkpoint_path": checkpoint},
        "summary": summary,
        "wall_clock_s": round(time.perf_counter() - started, 1),
        "episodes": [asdict(e) for e in episodes],
        "ros": {"episodes": timings},
    }
    from motus_sim.closed_loop import RESULTS_FILE

    (out / RESULTS_FILE).write_text(json.dumps(results, indent=2) + "\n")
    return results


def _run_episodes(config: RosEvalConfig, out: Path) -> tuple[list[Any], list[dict[str, Any]]]:
    import numpy as np
    import rclpy

    from motus_model.data.video import write_video
    from motus_ros.client import MotusClient
    from motus_ros.profiles import load_profile
    from motus_sim.closed_loop import EpisodeResult

    max_reward = TASK_MAX_REWARD[config.task]
    episodes: list[EpisodeResult] = []
    timings: list[dict[str, Any]] = []
    rclpy.init()
    client = MotusClient(node_name="motus_eval_ros")
    try:
        sim = SimMonitor(client, load_profile(PROFILE))
        if not client.wait_for_server(60) or not sim.wait_for_sim(30):
            raise RuntimeError("the server's or the simulator's interfaces did not appear")
        for index in range(config.episodes):
            seed = config.first_seed + index
            record = index < config.videos
            sim.reset(seed)
            sim.begin_episode(record=record)
            if not client.run_policy(config.instruction, max_duration_s=config.duration_s):
                raise RuntimeError("the RunPolicy goal was rejected")
            while not client.is_task_complete(0.05):
                pass
            sim.end_episode()
            result = client.get_result()
            # A run that held throughout is a failed episode, not a broken evaluation; anything else is.
            if result.termination not in ("completed", "held_throughout", "no_observation"):
                raise RuntimeError(
                    f"episode {index}: the policy ended with {result.termination!r}: {result.error.message}"
                )
            timing = policy_timing(client.policy_task.feedback)
            episode = EpisodeResult(
                seed=seed,
                success=sim.max_reward >= max_reward or sim.success_seen,
                success_at_end=sim.final_reward >= max_reward,
                max_reward=sim.max_reward,
                final_reward=sim.final_reward,
                steps=int(result.steps),
                chunks=int(result.chunks),
                inference_ms_mean=float(timing["inference_ms_mean"] or 0.0),
            )
            episodes.append(episode)
            timings.append(
                {
                    "seed": seed,
                    "duration_s": round(float(result.duration_s), 2),
                    **timing,
                    "reward_samples": len(sim.rewards),
                }
            )
            video = ""
            if record and sim.frames:
                path = out / f"rollout_{index:03d}.mp4"
                # The frames as they arrived: on a loaded CPU the sim renders below camera_rate_hz, so the file's
                # rate is the received one (the video plays in real time).
                fps = max(1, round(len(sim.frames) / max(float(result.duration_s), 1e-3)))
                write_video(path, np.stack(sim.frames), fps=fps)
                video = f", video {path} ({len(sim.frames)} frames at {fps} fps)"
            successes = sum(e.success for e in episodes)
            print(
                f"episode {index} (seed {seed}): success={episode.success} max_reward={episode.max_reward:g} "
                f"final_reward={episode.final_reward:g} steps={episode.steps} chunks={episode.chunks} "
                f"rate={timing['control_rate_hz_median']} Hz inference={timing['inference_ms_median']} ms "
                f"holding={timing['holding_fraction']}{video} [{successes}/{len(episodes)}]",
                flush=True,
            )
    finally:
        client.destroy()
        rclpy.try_shutdown()
    return episodes, timings


def _timing_summary(timings: list[dict[str, Any]]) -> dict[str, Any]:
    import numpy as np

    def median(key: str) -> float | None:
        values = [t[key] for t in timings if t.get(key) is not None]
        return round(float(np.median(values)), 1) if values else None

    holding = [t["holding_fraction"] for t in timings if t.get("holding_fraction") is not None]
    return {
        "control_rate_hz_median": median("control_rate_hz_median"),
        "inference_ms_median": median("inference_ms_median"),
        "holding_fraction_mean": round(float(np.mean(holding)), 3) if holding else None,
    }


# ---------------------------------------------------------------------------------------------
# motus eval-ros
# ---------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = {f.name: f.default for f in fields(RosEvalConfig)}
    parser.add_argument("--checkpoint", default=defaults["checkpoint"], help="checkpoint folder or shipped model name")
    parser.add_argument("--task", default=defaults["task"], choices=sorted(TASK_MAX_REWARD), help="gym-aloha task")
    parser.add_argument("--instruction", default="", help="policy instruction (default: the task's)")
    parser.add_argument("--episodes", type=int, default=defaults["episodes"])
    parser.add_argument(
        "--first-seed", type=int, default=defaults["first_seed"], help="episode i uses seed first_seed + i"
    )
    parser.add_argument(
        "--duration", type=float, default=defaults["duration_s"], help="seconds per episode (50 control steps/s)"
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=defaults["inference_steps"],
        help="Euler steps per chunk (0: the checkpoint's default)",
    )
    parser.add_argument(
        "--chunk-request-threshold",
        type=int,
        default=defaults["chunk_request_threshold"],
        help="request the next chunk when this many planned control steps remain",
    )
    parser.add_argument(
        "--camera-rate", type=float, default=defaults["camera_rate_hz"], help="simulated camera rate (Hz)"
    )
    parser.add_argument(
        "--videos", type=int, default=defaults["videos"], help="high-camera mp4s for the first N episodes"
    )
    parser.add_argument("--out", default=defaults["out"], help="output folder (results.json, mp4s)")
    parser.add_argument("--verbose", action="store_true", help="echo the sim's and the server's logs")


def run(args: argparse.Namespace) -> int:
    config = RosEvalConfig(
        checkpoint=args.checkpoint,
        task=args.task,
        instruction=args.instruction,
        episodes=args.episodes,
        first_seed=args.first_seed,
        duration_s=args.duration,
        inference_steps=args.steps,
        chunk_request_threshold=args.chunk_request_threshold,
        camera_rate_hz=args.camera_rate,
        videos=args.videos,
        out=args.out,
    )
    results = evaluate(config, verbose=args.verbose)
    print(json.dumps({"out": config.out, **results["summary"]}, indent=2), flush=True)
    return 0
