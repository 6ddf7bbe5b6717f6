"""The last gate before a command reaches the robot: joint limits, per-step delta limits, an e-stop latch.

Pure numpy, no ROS. Everything is in robot units and the profile's joint order.

Every command the filter lets through, holds included, is bounded against a REFERENCE: the last command it
sent, or, before the first, a measured joint state that is fresh, finite, not stamped in the future and inside
the joint limits (within one step's delta of them). The filter remembers what it sent itself, so no caller can
make it bound a command against anything else (e.g. a stale or absurd measured position at a goal's start). When
there is no usable reference it refuses: nothing is sent, and `refusal` says why.

The joint limits always win: a command never leaves [lower, upper].
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from motus_model.embodiment import RobotProfile

logger = logging.getLogger(__name__)

# A measured stamp may lead the local clock by this much (clock skew between machines) before it counts as
# "in the future": such a stamp would otherwise look fresh for as long as it leads.
DEFAULT_FUTURE_TOLERANCE_S = 0.05


@dataclass(frozen=True)
class MeasuredState:
    """A measured joint position [D] (robot units) and its age in seconds at the time of use (< 0: in the future)."""

    position: np.ndarray
    age_s: float


def physical_range(profile: RobotProfile) -> tuple[np.ndarray, np.ndarray]:
    """(low, high): the joint values a robot of this profile can physically report, generously: the joint limits
    widened by one full joint span on each side. Anything beyond (e.g. 1e30) is bad input, not a position."""
    lower = np.asarray(profile.lower_limits, dtype=np.float64)
    upper = np.asarray(profile.upper_limits, dtype=np.float64)
    span = upper - lower
    return lower - span, upper + span


def physical_range_problem(profile: RobotProfile, position: np.ndarray) -> str:
    """ "" when `position` [D] is finite and inside the profile's physical range, else a one-line reason."""
    q = np.asarray(position, dtype=np.float64)
    if q.shape != (len(profile.joint_names),):
        return (
            f"joint state must have {len(profile.joint_names)} values for profile {profile.name!r}, got shape {q.shape}"
        )
    bad = np.nonzero(~np.isfinite(q))[0]
    if bad.size:
        return f"joint state is not finite at {[profile.joint_names[i] for i in bad.tolist()]}"
    low, high = physical_range(profile)
    out = np.nonzero((q < low) | (q > high))[0]
    if out.size:
        i = int(out[0])
        return (
            f"joint state out of the profile's physical range: {profile.joint_names[i]} = {q[i]:g} "
            f"(limits [{profile.lower_limits[i]:g}, {profile.upper_limits[i]:g}]"
            f"{f' and {out.size - 1} more joints' if out.size > 1 else ''})"
        )
    return ""


class SafetyFilter:
    """Clamp targets to the profile's limits against the last command sent; latch an e-stop that holds.

    Args:
        profile: the robot profile (limits, per-step deltas).
        send: called with every command the filter lets through (the command adapter); None = the caller sends
            what apply()/hold() return (unit tests). Either way the returned command is the new reference.
        max_state_age_s: a measured state older than this is no reference (the joint-state staleness bound).
        future_tolerance_s: a measured state stamped further ahead than this is no reference.
        last_command: the last command an earlier filter of the same robot sent (a node reconfigured): the
            reference survives, so a reconfigure never lets the next command jump.
    """

    def __init__(
        self,
        profile: RobotProfile,
        send: Callable[[np.ndarray], None] | None = None,
        max_state_age_s: float = float("inf"),
        future_tolerance_s: float = DEFAULT_FUTURE_TOLERANCE_S,
        last_command: np.ndarray | None = None,
    ) -> None:
        self.profile = profile
        self.lower = np.asarray(profile.lower_limits, dtype=np.float64)
        self.upper = np.asarray(profile.upper_limits, dtype=np.float64)
        self.max_delta = np.asarray(profile.max_delta_per_step, dtype=np.float64)
        self.max_state_age_s = float(max_state_age_s)
        self.future_tolerance_s = float(future_tolerance_s)
        self._send = send
        self._lock = threading.RLock()
        self._engaged = False
        self._last_command: np.ndarray | None = None
        if last_command is not None:
            self._last_command = np.clip(self._vector(last_command, "last_command"), self.lower, self.upper)
        self.estop_reason = ""
        self.refusal = ""  # why the last apply()/hold() sent nothing ("" after one that sent)
        self.clamp_count = 0  # commands that differed from their target (diagnostics)
        self.refusal_count = 0

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

    # --- references ----------------------------------------------------------------------------------
    @property
    def last_command(self) -> np.ndarray | None:
        """The last command sent (a copy), or None before the first."""
        with self._lock:
            return None if self._last_command is None else self._last_command.copy()

    def state_problem(self, position: np.ndarray) -> str:
        """ "" when `position` [D] may serve as a reference / policy input, else why not (wrong shape, non-finite,
        outside the joint limits by more than one step's delta)."""
        q = np.asarray(position, dtype=np.float64)
        if q.shape != self.lower.shape:
            return f"joint state must have shape {self.lower.shape} for profile {self.profile.name!r}, got {q.shape}"
        bad = np.nonzero(~np.isfinite(q))[0]
        if bad.size:
            return f"joint state is not finite at {[self.profile.joint_names[i] for i in bad.tolist()]}"
        # One step of slack: encoders read a little past a limit; the reference is clipped into the limits.
        out = np.nonzero((q < self.lower - self.max_delta) | (q > self.upper + self.max_delta))[0]
        if out.size:
            i = int(out[0])
            return (
                f"joint state out of limits: {self.profile.joint_names[i]} = {q[i]:g} outside "
                f"[{self.lower[i]:g}, {self.upper[i]:g}]{f' (and {out.size - 1} more)' if out.size > 1 else ''}"
            )
        return ""

    def measured_problem(self, measured: MeasuredState | None) -> str:
        """ "" when `measured` is a usable reference (fresh, not in the future, finite, in limits), else why not."""
        if measured is None:
            return "no joint state yet"
        if not np.isfinite(measured.age_s):
            return "joint state has no valid stamp"
        if measured.age_s < -self.future_tolerance_s:
            return (
                f"joint state stamped {-measured.age_s:.3f} s in the future (tolerance {self.future_tolerance_s:g} s)"
            )
        if measured.age_s > self.max_state_age_s:
            return f"joint state is stale: {measured.age_s:.3f} s old (max {self.max_state_age_s:g} s)"
        return self.state_problem(measured.position)

    def _reference(self, measured: MeasuredState | None) -> np.ndarray | None:
        """The last command sent, else the measured state clipped into the limits; None (and self.refusal) when
        neither is usable. Called with the lock held."""
        if self._last_command is not None:
            return self._last_command
        problem = self.measured_problem(measured)
        if problem:
            self.refusal = f"no command sent yet and no usable joint state to start from: {problem}"
            return None
        return np.clip(np.asarray(measured.position, dtype=np.float64), self.lower, self.upper)

    # --- commands ------------------------------------------------------------------------------------
    def _vector(self, x: np.ndarray, name: str) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.shape != self.lower.shape:
            raise ValueError(
                f"{name} must have shape {self.lower.shape} for profile {self.profile.name!r}, got {x.shape}"
            )
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{name} must be finite, got NaN/inf at indices {np.nonzero(~np.isfinite(x))[0].tolist()}")
        return x

    def _emit(self, command: np.ndarray) -> np.ndarray:
        # Belt and braces: whatever the code above did, the command is inside the limits and one step from the
        # reference, or it is not sent.
        command = np.clip(command, self.lower, self.upper)
        if self._last_command is not None and np.any(np.abs(command - self._last_command) > self.max_delta + 1e-12):
            raise AssertionError("safety filter: a command exceeded the per-step delta (a bug; nothing sent)")
        if self._send is not None:
            self._send(command.copy())  # raises -> not recorded as sent
        self._last_command = command.copy()
        self.refusal = ""
        return command

    def hold(self, measured: MeasuredState | None = None) -> np.ndarray | None:
        """Send (and return) the command that holds position: the last command sent, or, before the first, the
        measured state clipped into the limits when it is usable. None (nothing sent, see `refusal`) otherwise."""
        with self._lock:
            reference = self._reference(measured)
            if reference is None:
                self.refusal_count += 1
                return None
            return self._emit(reference.copy())

    def apply(self, target: np.ndarray, measured: MeasuredState | None = None) -> tuple[np.ndarray | None, bool]:
        """(command, clamped): target limited to reference +- max_delta_per_step, then to the joint limits; sent.

        target: [D] robot units. measured: the robot's measured state, used only before the first command.
        With the e-stop engaged the command holds and clamped is True. With no usable reference the command is
        None (nothing sent; see `refusal`). A non-finite target raises ValueError (never commanded).
        """
        target = self._vector(target, "target")
        with self._lock:
            if self._engaged:
                return self.hold(measured), True
            reference = self._reference(measured)
            if reference is None:
                self.refusal_count += 1
                return None, True
            command = np.clip(target, reference - self.max_delta, reference + self.max_delta)
            command = np.clip(command, self.lower, self.upper)  # limits last: they win over the delta window
            clamped = bool(np.any(np.abs(command - target) > 1e-12))
            if clamped:
                self.clamp_count += 1
            return self._emit(command), clamped
