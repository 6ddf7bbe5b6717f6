"""Closed-loop evaluation in the gym-aloha scenes (``motus eval``), in-process and synchronous.

The physics waits for the model: at each replanning step the checkpoint's cameras (``config.cameras``: the three
views by default) are rendered (as the demonstrations were recorded: ``top`` as the high camera, both wrists,
120x160), the checkpoint predicts a
chunk in VLA mode, and the chunk is executed step by step (linearly upsampled to the 50 Hz control rate,
by the policy runtime the policy node drives, `motus_model.policy.MotusPolicy`) until the next replanning
step. So the success rate measures the model, not the CPU's speed; ``motus eval-ros`` measures the same through
the ROS suite, in real time.

Episode i uses the object pose of seed ``first_seed + i`` (gym_aloha's sampling). The demonstrations used
seeds 0..49, so the default evaluation seeds start at 1000. Success is ACT's criterion (the episode's highest
reward reached the task's maximum); ``success_at_end`` (still done on the last step) is reported too.

Per run, the output folder holds ``results.json`` (config, per-episode results, the summary),
``rollout_XXX.mp4`` for the first ``videos`` episodes (the views side by side, 25 fps) and, for the
first ``imagine`` episodes, the world model's prediction of every executed chunk next to what happened:
``imagined_vs_actual_XXX.mp4`` (actual | imagined composites) and the per-frame errors in results.json
(beside the error of the "repeat the last frame" baseline).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from motus_model.action_chunks import MODES as BLENDING_MODES
from motus_model.action_chunks import ChunkBlender
from motus_model.data.torch_dataset import camera_role
from motus_sim.scripted_expert import (
    CAMERA_NAMES,
    get_task,
    make_joint_environment,
    plan_joint_trajectory,
    render_views,
    run_expert_episode,
)

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.json"
POLICIES = ("motus", "expert")
# The model's camera role -> the LeRobot camera key the scene renders it as (as the demonstrations are recorded).
_KEYS = {camera_role(key): key for key in CAMERA_NAMES}


@dataclass
class ClosedLoopConfig:
    """One evaluation run.

    Args:
        checkpoint: Motus checkpoint folder (policy "motus").
        policy: "motus" or "expert" (the scripted expert on the same seeds: the reference row).
        task: "transfer_cube" or "insertion".
        episodes: number of episodes; episode i uses seed first_seed + i.
        first_seed: seed of the first episode's object pose.
        max_steps: control steps per episode (50 Hz). gym-aloha stops at 300, but the scripted
            demonstrations finish at steps 279-394, so 400 (ACT's episode length) is the default.
        execute_steps: control steps executed from each chunk before replanning (None: the whole chunk,
            action_chunk * downsample_rate steps).
        blending: how overlapping chunks combine, as in the policy node: "replace" (the newest chunk alone)
            or "temporal_ensemble" (ACT's: every chunk covering the step votes, weighted exp(-decay * age
            order)). Chunks overlap only when execute_steps is shorter than the chunk.
        ensemble_decay: the temporal-ensembling weight decay (ACT's 0.01).
        inference_steps: Euler steps per chunk (None: the checkpoint's default).
        image_height, image_width: rendered view size (the demonstrations' 120x160).
        videos: episodes (the first ones) written as rollout mp4s.
        imagine: episodes (the first ones) whose executed chunks are also predicted by the world model.
        noise_seed: base of the per-request noise seeds (request k of episode i uses noise_seed + 1000 i + k).
        expert_steps: the scripted expert drives the first N control steps, then the policy takes over
            (a diagnostic: how much of the failure lies in the start; 0 = the policy drives throughout).
        out: output folder.
    """

    checkpoint: str = ""
    policy: str = "motus"
    task: str = "transfer_cube"
    episodes: int = 50
    first_seed: int = 1000
    max_steps: int = 400
    execute_steps: int | None = None
    blending: str = "replace"
    ensemble_decay: float = 0.01
    inference_steps: int | None = None
    image_height: int = 120
    image_width: int = 160
    videos: int = 2
    imagine: int = 2
    noise_seed: int = 0
    expert_steps: int = 0
    out: str = "outputs/eval/transfer_cube"

    def __post_init__(self) -> None:
        get_task(self.task)
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {self.policy!r}")
        if self.policy == "motus" and not self.checkpoint:
            raise ValueError("policy 'motus' needs a checkpoint folder")
        if self.episodes <= 0 or self.max_steps <= 0:
            raise ValueError(f"episodes and max_steps must be positive, got {self.episodes}, {self.max_steps}")
        if self.execute_steps is not None and self.execute_steps <= 0:
            raise ValueError(f"execute_steps must be positive (or None), got {self.execute_steps}")
        ChunkBlender(self.blending, self.ensemble_decay)  # checks both (the blender the rollout will build)
        if not 0 <= self.expert_steps <= self.max_steps:
            raise ValueError(f"expert_steps must be in [0, max_steps={self.max_steps}], got {self.expert_steps}")
        if min(self.videos, self.imagine) < 0:
            raise ValueError(f"videos and imagine must be >= 0, got {self.videos}, {self.imagine}")


@dataclass
class EpisodeResult:
    """One episode: ACT's success, the stricter success at the end, the rewards and the model's timing."""

    seed: int
    success: bool
    success_at_end: bool
    max_reward: float
    final_reward: float
    steps: int
    chunks: int = 0
    inference_ms_mean: float = 0.0
    # world model vs what happened (mean squared error of [0, 1] pixels over the composite), per executed chunk
    imagined_mse: list[float] = field(default_factory=list)
    repeat_last_frame_mse: list[float] = field(default_factory=list)


def wilson_interval(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a success rate (sound at 0 and n successes, unlike the normal one)."""
    if trials <= 0:
        raise ValueError(f"trials must be positive, got {trials}")
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def summarize(episodes: list[EpisodeResult]) -> dict[str, Any]:
    """Success rate with its 95% interval, the stricter rate, mean rewards, world-model errors."""
    count = len(episodes)
    successes = sum(e.success for e in episodes)
    low, high = wilson_interval(successes, count)
    summary: dict[str, Any] = {
        "episodes": count,
        "successes": successes,
        "success_rate": successes / count,
        "success_rate_ci95": [round(low, 4), round(high, 4)],
        "success_at_end_rate": sum(e.success_at_end for e in episodes) / count,
        "mean_max_reward": float(np.mean([e.max_reward for e in episodes])),
    }
    timed = [e.inference_ms_mean for e in episodes if e.chunks]
    if timed:
        summary["inference_ms_mean"] = float(np.mean(timed))
    imagined = [x for e in episodes for x in e.imagined_mse]
    if imagined:
        summary["world_model_mse"] = float(np.mean(imagined))
        summary["repeat_last_frame_mse"] = float(np.mean([x for e in episodes for x in e.repeat_last_frame_mse]))
    return summary


def model_views(physics: Any, size: tuple[int, int], roles: Sequence[str]) -> dict[str, np.ndarray]:
    """The checkpoint's camera roles (in its order) -> uint8 [H, W, 3], rendered as the demonstrations were."""
    unknown = [role for role in roles if role not in _KEYS]
    if unknown:
        raise ValueError(f"the checkpoint's cameras {list(roles)}: the scene renders only {sorted(_KEYS)}")
    rendered = render_views(physics, size, tuple(_KEYS[role] for role in roles))
    return {role: rendered[_KEYS[role]] for role in roles}


def _side_by_side(views: dict[str, np.ndarray]) -> np.ndarray:
    """The views left to right along the width axis: one frame [H, W, 3] or a clip [T, H, W, 3]."""
    return np.concatenate(list(views.values()), axis=-2)


def _mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((a.astype(np.float32) / 255.0 - b.astype(np.float32) / 255.0) ** 2))


class MotusRollout:
    """Runs the checkpoint in the joint-space scene through the policy runtime the robot uses (`MotusPolicy`),
    synchronously: the physics waits for each chunk (see the module docstring)."""

    def __init__(self, config: ClosedLoopConfig, engine: Any | None = None) -> None:
        from motus_model.engine import MotusEngine
        from motus_model.policy import MotusPolicy, PolicyConfig
        from motus_model.preprocessing import CompositeLayout

        self.config = config
        self.engine = engine if engine is not None else MotusEngine.from_pretrained(config.checkpoint)
        temporal = self.engine.config.temporal
        rate = int(temporal.downsample_rate)
        chunk_steps = int(temporal.action_chunk) * rate
        self.frame_steps = int(temporal.video_action_ratio) * rate  # control steps between predicted frames
        self.execute_steps = min(config.execute_steps or chunk_steps, chunk_steps)
        self.whole_chunks = self.execute_steps == chunk_steps
        self.layout = CompositeLayout.from_config(self.engine.config)
        self.instruction = get_task(config.task).instruction
        # Re-plan after execute_steps: request when chunk_steps - execute_steps planned steps remain.
        self.policy = MotusPolicy(
            self.engine,
            PolicyConfig(
                blending=config.blending,
                ensemble_decay=config.ensemble_decay,
                chunk_request_threshold=chunk_steps - self.execute_steps,
                steps=config.inference_steps,
                synchronous=True,
            ),
        )

    def _imagine(self, views: dict[str, np.ndarray], state: np.ndarray, actions: np.ndarray, seed: int) -> np.ndarray:
        """The world model's frames for the chunk about to be executed."""
        from motus_model.engine import MotusRequest

        request = MotusRequest(
            mode="world_model",
            images=views,
            state=state,
            instruction=self.instruction,
            actions=actions,
            steps=self.config.inference_steps,
            seed=seed,
        )
        return self.engine.infer(request).frames

    def run(self, index: int) -> tuple[EpisodeResult, np.ndarray | None, np.ndarray | None]:
        """Episode ``index``: its result, its rollout video frames and its imagined-vs-actual frames (or None)."""
        from motus_model.preprocessing import compose_views

        config = self.config
        policy = self.policy
        seed = config.first_seed + index
        spec = get_task(config.task)
        object_pose = spec.sample_object_pose(seed)
        environment = make_joint_environment(config.task, object_pose)
        expert_plan = (
            plan_joint_trajectory(config.task, object_pose, config.expert_steps) if config.expert_steps else None
        )
        observation = environment.reset().observation
        physics = environment.physics
        size = (config.image_height, config.image_width)
        record_video, imagine = index < config.videos, index < config.imagine
        video: list[np.ndarray] = []
        comparison: list[np.ndarray] = []
        rewards: list[float] = []
        result = EpisodeResult(seed, False, False, 0.0, 0.0, 0)
        policy.reset(self.instruction, seed=config.noise_seed + 1000 * index)
        pending: list[tuple[int, np.ndarray]] = []  # (control step, imagined composite) still to be compared
        last_condition: np.ndarray | None = None
        for step in range(config.max_steps):
            expert_drives = step < config.expert_steps
            needs_plan = not expert_drives and policy.wants_observation(step)
            compare_now = bool(pending) and pending[0][0] == step
            render = needs_plan or compare_now or (record_video and step % 2 == 0)
            views = model_views(physics, size, self.layout.roles) if render else None
            if compare_now:
                _, imagined = pending.pop(0)
                actual = compose_views(views, self.layout)
                result.imagined_mse.append(_mse(imagined, actual))
                result.repeat_last_frame_mse.append(_mse(last_condition, actual))
                comparison.append(np.concatenate([actual, imagined], axis=1))
            if needs_plan:
                state = np.asarray(observation["qpos"], dtype=np.float64)
                policy.observe(step, views, state)  # synchronous: the chunk is in the blender on return
                if imagine and self.whole_chunks:
                    # The world model, given the chunk about to be executed: its frames are compared with the
                    # rendered ones at the same control steps (only when whole chunks are executed).
                    seed_wm = config.noise_seed + 1000 * index + 500 + policy.stats.chunks
                    predicted = self._imagine(views, state, policy.last_chunk.actions_model, seed_wm)
                    last_condition = compose_views(views, self.layout)
                    pending = [(step + (k + 1) * self.frame_steps, frame) for k, frame in enumerate(predicted)]
            if record_video and step % 2 == 0:
                video.append(_side_by_side(views))
            if expert_drives:
                command = expert_plan[step]
            else:
                decision = policy.action_for(step)
                if decision.action is None:  # cannot happen synchronously; never step the physics with a guess
                    raise RuntimeError(f"episode {index}, step {step}: no action ({decision.hold_reason})")
                command = decision.action
            time_step = environment.step(command)
            observation = time_step.observation
            rewards.append(float(time_step.reward or 0.0))
        max_reward = float(environment.task.max_reward)
        result.max_reward, result.final_reward, result.steps = max(rewards), rewards[-1], len(rewards)
        result.success, result.success_at_end = result.max_reward >= max_reward, result.final_reward >= max_reward
        result.chunks = policy.stats.chunks
        latencies = policy.stats.inference_ms
        result.inference_ms_mean = float(np.mean(latencies)) if latencies else 0.0
        return result, (np.stack(video) if video else None), (np.stack(comparison) if comparison else None)


def _expert_episode(config: ClosedLoopConfig, index: int) -> tuple[EpisodeResult, np.ndarray | None, None]:
    seed = config.first_seed + index
    size = (config.image_height, config.image_width) if index < config.videos else None
    episode = run_expert_episode(config.task, seed, image_size=size, num_steps=config.max_steps)
    result = EpisodeResult(
        seed,
        episode.success,
        episode.success_at_end,
        float(episode.rewards.max()),
        float(episode.rewards[-1]),
        episode.length,
    )
    video = None
    if size is not None:
        video = _side_by_side({camera_role(key): frames[::2] for key, frames in episode.frames.items()})
    return result, video, None


def evaluate(config: ClosedLoopConfig, engine: Any | None = None, show_progress: bool = True) -> dict[str, Any]:
    """Run every episode; write results.json and the videos into ``config.out``; return the results."""
    from motus_model.data.video import write_video

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    if config.policy == "motus":
        rollout = MotusRollout(config, engine)
        run_episode: Callable[[int], tuple] = rollout.run
    else:
        run_episode = lambda index: _expert_episode(config, index)  # noqa: E731
    episodes: list[EpisodeResult] = []
    started = time.perf_counter()
    progress = tqdm(range(config.episodes), desc=f"eval {config.policy} {config.task}", disable=not show_progress)
    for index in progress:
        result, video, comparison = run_episode(index)
        episodes.append(result)
        if video is not None:
            write_video(out / f"rollout_{index:03d}.mp4", video, fps=25)
        if comparison is not None:
            write_video(out / f"imagined_vs_actual_{index:03d}.mp4", comparison, fps=2)
        successes = sum(e.success for e in episodes)
        progress.set_postfix(success=f"{successes}/{len(episodes)}")
        logger.info(
            "episode %d (seed %d): success=%s max_reward=%g", index, result.seed, result.success, result.max_reward
        )
    results = {
        "config": asdict(config),
        "summary": summarize(episodes),
        "wall_clock_s": round(time.perf_counter() - started, 1),
        "episodes": [asdict(e) for e in episodes],
    }
    (out / RESULTS_FILE).write_text(json.dumps(results, indent=2) + "\n")
    return results


# ---------------------------------------------------------------------------------------------
# motus eval
# ---------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = argparse.Namespace(**{f.name: f.default for f in fields(ClosedLoopConfig)})
    parser.add_argument("--checkpoint", default="", help="Motus checkpoint folder (policy motus)")
    parser.add_argument(
        "--policy", choices=POLICIES, default=defaults.policy, help="motus, or the scripted expert on the same seeds"
    )
    parser.add_argument("--task", default=defaults.task, help="transfer_cube or insertion")
    parser.add_argument("--episodes", type=int, default=defaults.episodes)
    parser.add_argument(
        "--first-seed", type=int, default=defaults.first_seed, help="episode i uses seed first_seed + i"
    )
    parser.add_argument("--max-steps", type=int, default=defaults.max_steps, help="control steps per episode (50 Hz)")
    parser.add_argument("--execute-steps", type=int, help="control steps executed per chunk (default: the whole chunk)")
    parser.add_argument(
        "--blending",
        choices=BLENDING_MODES,
        default=defaults.blending,
        help="how overlapping chunks combine (they overlap when --execute-steps is shorter than a chunk)",
    )
    parser.add_argument(
        "--ensemble-decay",
        type=float,
        default=defaults.ensemble_decay,
        help="temporal-ensembling weight decay exp(-decay * age order) (ACT: 0.01)",
    )
    parser.add_argument("--inference-steps", type=int, help="Euler steps per chunk (default: the checkpoint's)")
    parser.add_argument("--videos", type=int, default=defaults.videos, help="rollout mp4s for the first N episodes")
    parser.add_argument(
        "--imagine",
        type=int,
        default=defaults.imagine,
        help="imagined-vs-actual frames for the first N episodes (a world-model request per chunk)",
    )
    parser.add_argument("--noise-seed", type=int, default=defaults.noise_seed)
    parser.add_argument(
        "--expert-steps",
        type=int,
        default=defaults.expert_steps,
        help="the scripted expert drives the first N control steps (diagnostic; default 0)",
    )
    parser.add_argument("--out", default=defaults.out, help="output folder (results.json, mp4s)")


def run(args: argparse.Namespace) -> int:
    config = ClosedLoopConfig(
        checkpoint=args.checkpoint,
        policy=args.policy,
        task=args.task,
        episodes=args.episodes,
        first_seed=args.first_seed,
        max_steps=args.max_steps,
        execute_steps=args.execute_steps,
        blending=args.blending,
        ensemble_decay=args.ensemble_decay,
        inference_steps=args.inference_steps,
        videos=args.videos,
        imagine=args.imagine,
        noise_seed=args.noise_seed,
        expert_steps=args.expert_steps,
        out=args.out,
    )
    results = evaluate(config)
    print(json.dumps({"out": config.out, **results["summary"]}, indent=2))
    return 0
