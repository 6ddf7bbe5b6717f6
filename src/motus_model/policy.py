"""MotusPolicy: the one policy runtime, free of ROS, that the policy node and `motus eval` both drive.

It turns a stream of observations into one action per control step:

    reset(instruction)            a new episode / RunPolicy goal
    observe(step, images, state)  the observation of control step `step`; requests the next chunk when it is due
                                  (images: exactly the checkpoint's cameras, `camera_roles`)
    action_for(step)              the action for `step` in robot units, or a hold reason

and owns everything between the observation and the action: the robot transforms (robot units <-> the model's
space, applied in one place, inputs and outputs mirrored), the chunk request and its timing rule, upsampling to the
control rate, blending (temporal ensembling or replace), late-chunk accounting and the inference timings.

Timing rule (one for the robot and the evaluation). A chunk is requested from the observation of step s when fewer
than `chunk_request_threshold` planned steps remain at s. Its upsampled action j is meant for control step s + j, the
alignment the demonstrations were recorded with (the action of a frame is the command sent right after it). With
`synchronous=True` the caller waits for the chunk inside `observe` (the physics waits for the model: `motus eval`), so
action 0 is executed at step s itself. Asynchronously (the robot) the chunk arrives some steps later and the actions
whose step has passed are dropped on arrival (`dropped_actions`): that is how the inference delay is accounted for.

Not thread-safe: one caller at a time (the policy node calls it from its control tick under the run's lock).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from motus_model.action_chunks import ChunkBlender, upsample_chunk

logger = logging.getLogger(__name__)

HOLD_FIRST_CHUNK = "waiting for the first action chunk"
HOLD_NEXT_CHUNK = "waiting for the next action chunk (inference slower than the chunk)"


class RobotTransforms(Protocol):
    """Robot units <-> the model's action space (a robot profile provides both; both act on [..., D])."""

    def robot_to_model(self, q: np.ndarray) -> np.ndarray: ...

    def model_to_robot(self, a: np.ndarray) -> np.ndarray: ...


class IdentityTransforms:
    """For robots whose units are the model's (the simulated ALOHA)."""

    def robot_to_model(self, q: np.ndarray) -> np.ndarray:
        return np.asarray(q, dtype=np.float64)

    def model_to_robot(self, a: np.ndarray) -> np.ndarray:
        return np.asarray(a, dtype=np.float64)


@dataclass
class PolicyConfig:
    """How the runtime turns chunks into commands.

    Args:
        blending: "temporal_ensemble" (ACT: every chunk covering a step votes) or "replace" (the newest alone).
        ensemble_decay: temporal-ensembling weight exp(-decay * i), i = 0 for the oldest chunk (ACT: 0.01).
        chunk_request_threshold: request the next chunk when at most this many planned steps remain. 0 executes
            whole chunks; chunk_steps - k re-plans every k steps.
        steps: Euler steps per chunk (None: the model's default).
        seed: noise seed of the first chunk of an episode; chunk k uses seed + k (None: random noise).
        synchronous: wait for each chunk inside `observe` (offline evaluation) instead of running it in the
            background (the robot).
    """

    blending: str = "temporal_ensemble"
    ensemble_decay: float = 0.01
    chunk_request_threshold: int = 8
    steps: int | None = None
    seed: int | None = None
    synchronous: bool = False

    def __post_init__(self) -> None:
        ChunkBlender(self.blending, self.ensemble_decay)  # the blender's own checks
        if self.chunk_request_threshold < 0:
            raise ValueError(f"chunk_request_threshold must be >= 0, got {self.chunk_request_threshold}")
        if self.steps is not None and self.steps <= 0:
            raise ValueError(f"steps must be positive (or None for the model's default), got {self.steps}")


@dataclass
class PolicyChunk:
    """One chunk as the runtime received it."""

    obs_step: int  # the control step of the observation it was predicted from
    images: Mapping[str, np.ndarray]  # that observation's views
    state: np.ndarray  # that observation's joint state, robot units
    actions_model: np.ndarray  # [N, D] the model's chunk in model space (what the world model takes)
    actions_robot: np.ndarray  # [N * downsample_rate, D] one action per control step, robot units
    kept: int  # actions still in the future when it arrived
    inference_ms: float
    result: Any  # the engine's MotusResult


@dataclass
class PolicyAction:
    """The runtime's answer for one control step: an action (robot units), or None and why the robot holds."""

    action: np.ndarray | None
    hold_reason: str = ""


@dataclass
class _Pending:
    future: Any
    obs_step: int
    images: Mapping[str, np.ndarray]
    state: np.ndarray
    submitted_s: float


@dataclass
class PolicyStats:
    chunks: int = 0
    dropped_actions: int = 0
    last_inference_ms: float = 0.0
    inference_ms: list[float] = field(default_factory=list)


def chunk_to_robot(
    actions_model: np.ndarray, state: np.ndarray, transforms: RobotTransforms, downsample_rate: int
) -> np.ndarray:
    """[N, D] model-space chunk -> [N * downsample_rate, D] robot-unit actions, one per control step, linearly
    upsampled from `state` (robot units: the observation the chunk was predicted from). Every mode that returns
    actions (policy, joint, IDM) goes through here."""
    actions_robot = transforms.model_to_robot(np.asarray(actions_model, dtype=np.float64))
    return upsample_chunk(actions_robot, np.asarray(state, dtype=np.float64), int(downsample_rate))


class MotusPolicy:
    """The policy runtime over a `MotusEngine` (see the module docstring)."""

    def __init__(
        self,
        engine: Any,
        config: PolicyConfig | None = None,
        transforms: RobotTransforms | None = None,
        on_chunk: Callable[[PolicyChunk], None] | None = None,
    ) -> None:
        self.engine = engine
        self.config = config or PolicyConfig()
        self.transforms = transforms or IdentityTransforms()
        self.on_chunk = on_chunk
        temporal = engine.config.temporal
        self.downsample_rate = int(temporal.downsample_rate)
        self.chunk_steps = int(temporal.action_chunk) * self.downsample_rate  # control steps one chunk covers
        # The checkpoint's camera layout (config.cameras): what an observation must hold. None for a stand-in
        # engine without one (tests), which then checks nothing here.
        self.cameras = getattr(engine.config, "cameras", None)
        self.blender = ChunkBlender(self.config.blending, self.config.ensemble_decay)
        self.instruction = ""
        self.seed: int | None = self.config.seed
        self.stats = PolicyStats()
        self.last_chunk: PolicyChunk | None = None
        self.error: BaseException | None = None  # a failed chunk request: the episode cannot go on
        self._pending: _Pending | None = None

    # --- episode -------------------------------------------------------------------------------------------------

    def reset(self, instruction: str = "", seed: int | None = None) -> None:
        """Start an episode: forget chunks, cancel the request in flight, set the instruction and noise seed."""
        self.cancel()
        self.blender.reset()
        self.instruction = instruction
        self.seed = self.config.seed if seed is None else seed
        self.stats = PolicyStats()
        self.last_chunk = None
        self.error = None

    def cancel(self) -> None:
        """Drop the chunk being computed (the engine stops it between denoising steps)."""
        if self._pending is not None:
            self._pending.future.cancel()
            self._pending = None

    @property
    def camera_roles(self) -> list[str]:
        """The camera roles every observation must hold, in composite order (the checkpoint's `config.cameras`)."""
        return list(self.cameras.roles) if self.cameras is not None else []

    @property
    def pending(self) -> bool:
        return self._pending is not None

    # --- control loop ----------------------------------------------------------------------------------------------

    def wants_observation(self, step: int) -> bool:
        """True when `observe(step, ...)` would request a chunk (lets a simulator render only when needed)."""
        return (
            self.error is None
            and self._pending is None
            and self.blender.remaining(step) <= self.config.chunk_request_threshold
        )

    def observe(self, step: int, images: Mapping[str, np.ndarray], state: np.ndarray) -> bool:
        """The observation of control step `step` (state in robot units); returns True when it started a chunk
        request. Synchronous: also waits for that chunk (a failure raises)."""
        self.poll()
        if not self.wants_observation(step):
            return False
        state = np.asarray(state, dtype=np.float64)
        future = self.engine.submit(self.chunk_request(images, state))
        self._pending = _Pending(future, int(step), dict(images), state, time.monotonic())
        if self.config.synchronous:
            future.result()
            self.poll()
            if self.error is not None:
                raise self.error
        return True

    def poll(self) -> PolicyChunk | None:
        """Move a finished chunk into the blender; returns it (None when nothing arrived)."""
        pending = self._pending
        if pending is None or not pending.future.done():
            return None
        self._pending = None
        inference_ms = (time.monotonic() - pending.submitted_s) * 1e3
        self.stats.last_inference_ms = inference_ms
        self.stats.inference_ms.append(inference_ms)
        try:
            result = pending.future.result()
        except BaseException as exc:  # noqa: BLE001 - kept for the caller, who maps it to its error vocabulary
            self.error = exc
            logger.error("chunk request failed: %r", exc)
            return None
        actions_robot = self.chunk_to_robot(result.actions, pending.state)
        # Action j is for step obs_step + j: the blender's "observation step" is the one before.
        kept = self.blender.add_chunk(actions_robot, obs_step=pending.obs_step - 1)
        self.stats.chunks += 1
        self.stats.dropped_actions = self.blender.dropped_actions
        chunk = PolicyChunk(
            pending.obs_step,
            pending.images,
            pending.state,
            np.asarray(result.actions, dtype=np.float64),
            actions_robot,
            kept,
            inference_ms,
            result,
        )
        self.last_chunk = chunk
        if self.on_chunk is not None:
            self.on_chunk(chunk)
        return chunk

    def action_for(self, step: int) -> PolicyAction:
        """The action for control step `step` (robot units), or None with the reason to hold. Marks `step` executed."""
        self.poll()
        action = self.blender.action_for(step)
        if action is not None:
            return PolicyAction(action)
        return PolicyAction(None, HOLD_FIRST_CHUNK if self.stats.chunks == 0 else HOLD_NEXT_CHUNK)

    # --- one chunk --------------------------------------------------------------------------------------------------

    def chunk_request(
        self,
        images: Mapping[str, np.ndarray],
        state: np.ndarray,
        *,
        mode: str = "vla",
        steps: int | None = None,
        seed: int | None = None,
        decode_video: bool = False,
    ) -> Any:
        """The engine request for a chunk from this observation (state in robot units, mapped to the model here)."""
        from motus_model.engine import MotusRequest

        if self.cameras is not None and not isinstance(images, np.ndarray):
            # fail here, in the caller's thread, with the expected roles (not later in the engine's worker)
            self.cameras.check_roles(images, "observation")
        if seed is None and self.seed is not None:
            seed = self.seed + self.stats.chunks
        return MotusRequest(
            mode=mode,
            images=dict(images),
            state=self.transforms.robot_to_model(np.asarray(state, dtype=np.float64)),
            instruction=self.instruction,
            steps=steps or self.config.steps,
            seed=seed,
            decode_video=decode_video,
        )

    def chunk_to_robot(self, actions_model: np.ndarray, state: np.ndarray) -> np.ndarray:
        """[N, D] model-space chunk -> [N * downsample_rate, D] robot units, one action per control step."""
        return chunk_to_robot(actions_model, state, self.transforms, self.downsample_rate)

    def predict_action_chunk(self, images: Mapping[str, np.ndarray], state: np.ndarray) -> np.ndarray:
        """One chunk, synchronously, outside the control loop: [N * downsample_rate, D] robot units."""
        result = self.engine.infer(self.chunk_request(images, state))
        return self.chunk_to_robot(result.actions, state)
