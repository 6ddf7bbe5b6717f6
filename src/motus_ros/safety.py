"""The last gate before a command reaches the robot: joint limits, per-step delta limits, an e-stop latch.

Pure numpy, no ROS. Everything is in robot units and the profile's joint order. The joint limits
always win: a command never leaves [lower, upper], even when the measured position already has (the
command then moves back inside at once rather than following the position out).
"""
from __future__ import annotations

import logging
import threading

import numpy as np

from motus_model.embodiment import RobotProfile

logger = logging.getLogger(__name__)


class SafetyFilter:
    """Clamp targets to the profile's limits; latch an e-stop that holds position until released."""

    def __init__(self, profile: RobotProfile) -> None:
        self.profile = profile
        self.lower = np.asarray(profile.lower_limits, dtype=np.float64)
        self.upper = np.asarray(profile.upper_limits, dtype=np.float64)
        self.max_delta = np.asarray(profile.max_delta_per_step, dtype=np.float64)
        self._lock = threading.Lock()
        self._engaged = False
        self.estop_reason = ""
        self.clamp_count = 0  # commands that differed from their target (diagnostics)

    # --- e-stop latch --------------------------------------------------------------------------------
    @property
    def engaged(self) -> bool:
        return self._engaged

    def estop(self, reason: str = "e-stop") -> None:
        """Latch the e-stop: from now on apply() only holds, until release()."""
        with self._lock:
            if not self._engaged:
                logger.warning("e-stop engaged: %s", reason)
            self._engaged = True
            self.estop_reason = reason

    def release(self) -> None:
        with self._lock:
            if self._engaged:
                logger.warning("e-stop released")
            self._engaged = False
            self.estop_reason = ""

    # --- commands ------------------------------------------------------------------------------------
    def _vector(self, x: np.ndarray, name: str) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.shape != self.lower.shape:
            raise ValueError(f"{name} must have shape {self.lower.shape} for profile {self.profile.name!r}, "
                             f"got {x.shape}")
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{name} must be finite, got NaN/inf at indices {np.nonzero(~np.isfinite(x))[0].tolist()}")
        return x

    def hold(self, current: np.ndarray) -> np.ndarray:
        """The command that holds `current` (clamped into the joint limits). [D] -> [D]."""
        return np.clip(self._vector(current, "current"), self.lower, self.upper)

    def apply(self, target: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, bool]:
        """(command, clamped): target limited to current +- max_delta_per_step, then to the joint limits.

        target, current: [D] robot units (current = the measured or last commanded position).
        With the e-stop engaged the command holds `current` and clamped is True.
        Non-finite input raises ValueError (never commanded, never silently replaced).
        """
        current = self._vector(current, "current")
        target = self._vector(target, "target")
        if self._engaged:
            return self.hold(current), True
        command = np.clip(target, current - self.max_delta, current + self.max_delta)
        command = np.clip(command, self.lower, self.upper)  # limits last: they win over the delta window
        clamped = bool(np.any(np.abs(command - target) > 1e-12))
        if clamped:
            self.clamp_count += 1
        return command, clamped
