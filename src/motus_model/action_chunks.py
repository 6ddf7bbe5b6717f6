"""Turn a stream of action chunks into one action per control step (used by the policy node and `motus eval`).

A chunk is predicted from the observation taken at control step `obs_step`; its action i is meant for
step `obs_step + 1 + i`. The chunk arrives later (inference takes time): the actions whose step has
already been executed are dropped on arrival, which is how the inference delay is accounted for.

Two modes:
- "temporal_ensemble": ACT's temporal ensembling (tonyzhaozh/act imitate_episodes.py): every chunk
  that covers the step votes, weighted exp(-decay * i) with i = 0 for the OLDEST chunk (ACT's k = 0.01).
- "replace": the newest chunk alone decides (the previous one is discarded when a new one arrives).

The caller asks for the next chunk early, asynchronously, when `remaining(step)` falls under its
threshold, so the robot never waits between chunks. Pure numpy, no ROS.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

MODES = ("temporal_ensemble", "replace")


@dataclass
class _Chunk:
    start_step: int  # the control step of actions[0]
    actions: np.ndarray  # [N, D]

    @property
    def end_step(self) -> int:  # one past the last covered step
        return self.start_step + len(self.actions)


class ChunkBlender:
    """Blend or replace action chunks; `action_for(step)` gives the action for one control step."""

    def __init__(
        self, mode: str = "temporal_ensemble", ensemble_decay: float = 0.01, horizon: int | None = None
    ) -> None:
        """horizon: use only the first `horizon` actions of each chunk (None = all of them)."""
        if mode not in MODES:
            raise ValueError(f"blending mode must be one of {MODES}, got {mode!r}")
        if not ensemble_decay >= 0:
            raise ValueError(f"ensemble_decay must be >= 0, got {ensemble_decay}")
        if horizon is not None and horizon <= 0:
            raise ValueError(f"horizon must be > 0 or None, got {horizon}")
        self.mode = mode
        self.ensemble_decay = float(ensemble_decay)
        self.horizon = horizon
        self._chunks: list[_Chunk] = []  # oldest first
        self._last_step: int | None = None  # the latest step action_for was asked for (executed)
        self.dropped_actions = 0  # actions that arrived too late (diagnostics)

    def reset(self) -> None:
        self._chunks.clear()
        self._last_step = None
        self.dropped_actions = 0

    def add_chunk(self, actions: np.ndarray, obs_step: int) -> int:
        """Add a chunk [N, D] predicted from the observation of step obs_step; returns how many actions were kept.

        Action i is for step obs_step + 1 + i; those for steps already executed (<= the last step
        action_for was called with) are dropped.
        """
        actions = np.asarray(actions, dtype=np.float64)
        if actions.ndim != 2 or actions.shape[0] == 0:
            raise ValueError(f"a chunk must have shape [N, D] with N >= 1, got {actions.shape}")
        if not np.all(np.isfinite(actions)):
            raise ValueError("a chunk must be finite, got NaN/inf")
        if self._chunks and actions.shape[1] != self._chunks[-1].actions.shape[1]:
            raise ValueError(f"chunk action dim must stay {self._chunks[-1].actions.shape[1]}, got {actions.shape[1]}")
        if self.horizon is not None:
            actions = actions[: self.horizon]
        start = int(obs_step) + 1
        if self._last_step is not None and start <= self._last_step:
            late = min(self._last_step - start + 1, len(actions))
            self.dropped_actions += late
            actions, start = actions[late:], start + late
        if len(actions) == 0:
            logger.warning("chunk from step %d arrived after all of its actions were due; dropped", obs_step)
            return 0
        chunk = _Chunk(start, actions.copy())
        if self.mode == "replace":
            self._chunks = [chunk]
        else:
            self._chunks.append(chunk)
        return len(actions)

    def action_for(self, step: int) -> np.ndarray | None:
        """The action [D] for control step `step`, or None when no chunk covers it. Marks `step` executed."""
        step = int(step)
        self._last_step = step if self._last_step is None else max(self._last_step, step)
        self._chunks = [c for c in self._chunks if c.end_step > self._last_step]  # forget the past
        covering = [c.actions[step - c.start_step] for c in self._chunks if c.start_step <= step < c.end_step]
        if not covering:
            return None
        if self.mode == "replace":
            return covering[-1].copy()
        # ACT: exp_weights = exp(-k * arange(n)) over the chunks oldest first, normalised.
        weights = np.exp(-self.ensemble_decay * np.arange(len(covering)))
        weights /= weights.sum()
        return (weights[:, None] * np.stack(covering)).sum(axis=0)

    def remaining(self, step: int) -> int:
        """How many consecutive steps from `step` on (inclusive) have an action."""
        ends = [c.end_step for c in self._chunks if c.start_step <= step < c.end_step]
        if not ends:
            return 0
        end = max(ends)
        # Later chunks that start inside the covered span extend it.
        for chunk in sorted(self._chunks, key=lambda c: c.start_step):
            if chunk.start_step <= end:
                end = max(end, chunk.end_step)
        return end - int(step)


def upsample_chunk(actions: np.ndarray, start: np.ndarray, rate: int) -> np.ndarray:
    """[N, D] chunk whose action i is for control step (i + 1) * rate -> [N * rate, D] actions, one per control
    step, linearly interpolated from `start` (the observed state, step 0). rate 1 returns the chunk unchanged."""
    actions = np.asarray(actions, dtype=np.float64)
    if rate <= 1:
        return actions
    knots = np.vstack([np.asarray(start, dtype=np.float64)[None], actions])  # step 0, rate, 2 rate, ...
    steps = np.arange(1, actions.shape[0] * rate + 1)
    positions = steps / rate
    lower = np.floor(positions).astype(int)
    upper = np.minimum(lower + 1, knots.shape[0] - 1)
    fraction = (positions - lower)[:, None]
    return knots[lower] * (1.0 - fraction) + knots[upper] * fraction
