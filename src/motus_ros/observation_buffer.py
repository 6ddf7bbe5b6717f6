"""The latest synchronised observation of the robot: one image per camera and the joint state.

Keep-latest, never a backlog: each source holds only its newest sample, so a slow consumer always
sees the present (a depth-10 queue behind a slow callback serves old frames: opendr-eu/opendr issue 275).
An observation is usable only when every camera and the joint state have arrived, the oldest of them
is at most `max_age_s` old, the joint state at most `max_state_age_s` old (its own, tighter bound: joint
states arrive at the control rate, so a driver loss must hold within a few control periods, not after the
cameras' `max_age_s`), no stamp lies more than `future_tolerance_s` ahead of the clock (a future stamp
would otherwise look fresh for as long as it leads), and the newest and oldest are at most `max_skew_s`
apart; otherwise `status()` says which source is missing, stale, in the future or out of sync. Samples
stamped in the future are refused on arrival when the caller passes their arrival time.

Where `message_filters` imports (a full ROS 2 install), `SynchronizedObservationBuffer` matches the
sources with its ApproximateTimeSynchronizer (slop = max_skew_s) instead, with the same interface and
the same missing/stale answers. `make_observation_buffer` picks it there and this one elsewhere. No
rclpy here: stamps are plain seconds.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from motus_ros.safety import DEFAULT_FUTURE_TOLERANCE_S

logger = logging.getLogger(__name__)

JOINT_STATE = "joint_state"  # the name the joint state goes by in reasons


@dataclass
class SyncedObservation:
    """One usable observation. images: role -> uint8 RGB [H, W, 3]; state: [D] robot units.

    stamp_s is the OLDEST stamp of its parts: the observation is no newer than its oldest sample.
    """

    images: dict[str, np.ndarray]
    state: np.ndarray
    stamp_s: float


class ObservationBuffer:
    """Thread-safe keep-latest buffer of one image per camera role plus the joint state."""

    def __init__(
        self,
        roles: Sequence[str],
        max_skew_s: float,
        max_age_s: float,
        max_state_age_s: float | None = None,
        future_tolerance_s: float = DEFAULT_FUTURE_TOLERANCE_S,
    ) -> None:
        roles = list(roles)
        if not roles or len(set(roles)) != len(roles):
            raise ValueError(f"roles must be a non-empty list of unique camera roles, got {roles}")
        if not max_skew_s > 0 or not max_age_s > 0:
            raise ValueError(f"max_skew_s and max_age_s must be > 0, got {max_skew_s} and {max_age_s}")
        max_state_age_s = max_age_s if max_state_age_s is None else max_state_age_s
        if not max_state_age_s > 0 or not future_tolerance_s >= 0:
            raise ValueError(
                f"max_state_age_s must be > 0 and future_tolerance_s >= 0, got {max_state_age_s} "
                f"and {future_tolerance_s}"
            )
        self.roles = roles
        self.max_skew_s = float(max_skew_s)
        self.max_age_s = float(max_age_s)
        self.max_state_age_s = float(max_state_age_s)
        self.future_tolerance_s = float(future_tolerance_s)
        self._lock = threading.Lock()
        self._images: dict[str, tuple[np.ndarray, float]] = {}
        self._state: tuple[np.ndarray, float] | None = None

    # --- inputs --------------------------------------------------------------------------------------
    def _check_stamp(self, what: str, stamp_s: float, received_s: float | None) -> float:
        stamp_s = float(stamp_s)
        if not np.isfinite(stamp_s):
            raise ValueError(f"{what}: stamp must be finite, got {stamp_s}")
        if received_s is not None and stamp_s - float(received_s) > self.future_tolerance_s:
            raise ValueError(
                f"{what}: stamped {stamp_s - float(received_s):.3f} s in the future (tolerance "
                f"{self.future_tolerance_s:g} s): check the robot's clock"
            )
        return stamp_s

    def update_image(self, role: str, image: np.ndarray, stamp_s: float, received_s: float | None = None) -> None:
        """Keep `image` as the newest of `role`. received_s (arrival time, same clock as status()): refuse a stamp
        further in the future than future_tolerance_s (ValueError; the previous sample stays and ages)."""
        if role not in self.roles:
            raise ValueError(f"unknown camera role {role!r}; expected one of {self.roles}")
        stamp_s = self._check_stamp(f"camera {role}", stamp_s, received_s)
        with self._lock:
            self._images[role] = (image, stamp_s)

    def update_joint_state(self, q: np.ndarray, stamp_s: float, received_s: float | None = None) -> None:
        q = np.asarray(q, dtype=np.float64)
        if q.ndim != 1 or not np.all(np.isfinite(q)):
            raise ValueError(f"joint state must be a finite vector [D], got shape {q.shape}")
        stamp_s = self._check_stamp(JOINT_STATE, stamp_s, received_s)
        with self._lock:
            self._state = (q.copy(), stamp_s)

    def clear(self) -> None:
        with self._lock:
            self._images.clear()
            self._state = None

    # --- outputs -------------------------------------------------------------------------------------
    def latest_joint_state(self) -> np.ndarray | None:
        """The newest joint state [D] whatever its age (for holding position), or None before the first."""
        with self._lock:
            return None if self._state is None else self._state[0].copy()

    def latest_joint_state_stamped(self) -> tuple[np.ndarray, float] | None:
        """(newest joint state [D], its stamp in seconds) whatever its age, or None before the first."""
        with self._lock:
            return None if self._state is None else (self._state[0].copy(), self._state[1])

    def _snapshot(self) -> tuple[dict[str, tuple[np.ndarray, float]], tuple[np.ndarray, float] | None]:
        with self._lock:
            return dict(self._images), self._state

    def _check(self, images, state, now_s: float) -> tuple[bool, str]:
        missing = [role for role in self.roles if role not in images]
        if missing:
            return False, f"missing camera {', '.join(missing)}"
        if state is None:
            return False, f"missing {JOINT_STATE}"
        stamps = {role: images[role][1] for role in self.roles}
        stamps[JOINT_STATE] = state[1]
        oldest = min(stamps, key=stamps.get)
        newest = max(stamps, key=stamps.get)
        lead = stamps[newest] - now_s
        if lead > self.future_tolerance_s:
            return False, (
                f"future: {newest} is stamped {lead:.3f} s ahead of the clock (future_tolerance_s "
                f"{self.future_tolerance_s:g}): check the robot's clock"
            )
        state_age = now_s - state[1]
        if state_age > self.max_state_age_s:
            return False, (
                f"stale: {JOINT_STATE} is {state_age:.3f} s old (max_state_age_s "
                f"{self.max_state_age_s:g}): is the robot driver running?"
            )
        age = now_s - stamps[oldest]
        if age > self.max_age_s:
            return False, f"stale: {oldest} is {age:.3f} s old (max_age_s {self.max_age_s:g})"
        skew = stamps[newest] - stamps[oldest]
        if skew > self.max_skew_s:
            return False, (f"skew: {skew:.3f} s between {oldest} and {newest} (max_skew_s {self.max_skew_s:g})")
        return True, "ok"

    def status(self, now_s: float) -> tuple[bool, str]:
        """(ok, reason): reason names the missing, stale or out-of-sync source, or is "ok"."""
        images, state = self._snapshot()
        return self._check(images, state, float(now_s))

    def latest(self, now_s: float) -> SyncedObservation | None:
        """The newest usable observation, or None (see status() for why)."""
        images, state = self._snapshot()
        ok, _ = self._check(images, state, float(now_s))
        if not ok:
            return None
        stamp = min([images[role][1] for role in self.roles] + [state[1]])
        return SyncedObservation({role: images[role][0] for role in self.roles}, state[0].copy(), stamp)


class _Stamped:
    """What message_filters needs of a message: header.stamp (a builtin_interfaces/Time)."""

    __slots__ = ("header", "value")

    def __init__(self, value, stamp_s: float) -> None:
        from std_msgs.msg import Header

        from motus_ros.conversions import to_stamp

        self.header = Header(stamp=to_stamp(stamp_s))
        self.value = value


class SynchronizedObservationBuffer(ObservationBuffer):
    """ObservationBuffer whose samples are matched by message_filters.ApproximateTimeSynchronizer.

    Each update also feeds the synchronizer; when it emits a matched set (all stamps within
    max_skew_s), that set becomes the latest observation. status() first applies the fallback's checks
    to the newest sample of each source (same missing / stale / skew answers), then requires a matched
    set that is not stale; before the first match it reads "no synchronised set yet".
    """

    def __init__(
        self,
        roles: Sequence[str],
        max_skew_s: float,
        max_age_s: float,
        max_state_age_s: float | None = None,
        future_tolerance_s: float = DEFAULT_FUTURE_TOLERANCE_S,
        queue_size: int = 4,
    ) -> None:
        super().__init__(roles, max_skew_s, max_age_s, max_state_age_s, future_tolerance_s)
        import message_filters  # a full ROS 2 install only; make_observation_buffer checks first

        self._inputs = {name: message_filters.SimpleFilter() for name in [*self.roles, JOINT_STATE]}
        self._synchronizer = message_filters.ApproximateTimeSynchronizer(
            list(self._inputs.values()), queue_size, self.max_skew_s
        )
        self._synchronizer.registerCallback(self._on_matched)
        self._matched: SyncedObservation | None = None

    def _on_matched(self, *samples: _Stamped) -> None:
        from motus_ros.conversions import stamp_to_seconds

        stamps = [stamp_to_seconds(s.header.stamp) for s in samples]
        images = {role: sample.value for role, sample in zip(self.roles, samples)}
        with self._lock:
            self._matched = SyncedObservation(images, np.asarray(samples[-1].value), min(stamps))

    def update_image(self, role: str, image: np.ndarray, stamp_s: float, received_s: float | None = None) -> None:
        super().update_image(role, image, stamp_s, received_s)
        self._inputs[role].signalMessage(_Stamped(image, stamp_s))

    def update_joint_state(self, q: np.ndarray, stamp_s: float, received_s: float | None = None) -> None:
        super().update_joint_state(q, stamp_s, received_s)
        self._inputs[JOINT_STATE].signalMessage(_Stamped(np.asarray(q, dtype=np.float64).copy(), stamp_s))

    def clear(self) -> None:
        super().clear()
        with self._lock:
            self._matched = None

    def status(self, now_s: float) -> tuple[bool, str]:
        images, state = self._snapshot()
        ok, reason = self._check(images, state, float(now_s))
        if not ok:
            return ok, reason  # missing / stale / skewed newest samples: the same answer as the fallback
        with self._lock:
            matched = self._matched
        if matched is None:
            return False, f"no synchronised set yet (max_skew_s {self.max_skew_s:g})"
        age = float(now_s) - matched.stamp_s
        if age > self.max_age_s:
            return False, f"stale: the last synchronised set is {age:.3f} s old (max_age_s {self.max_age_s:g})"
        return True, "ok"

    def latest(self, now_s: float) -> SyncedObservation | None:
        if not self.status(now_s)[0]:
            return None
        with self._lock:
            return self._matched


def message_filters_available() -> bool:
    try:
        import message_filters  # noqa: F401
    except ImportError:
        return False
    return True


def make_observation_buffer(
    roles: Sequence[str],
    max_skew_s: float,
    max_age_s: float,
    use_message_filters: bool | None = None,
    max_state_age_s: float | None = None,
    future_tolerance_s: float = DEFAULT_FUTURE_TOLERANCE_S,
) -> ObservationBuffer:
    """SynchronizedObservationBuffer where message_filters imports (or when asked), else ObservationBuffer."""
    if use_message_filters is None:
        use_message_filters = message_filters_available()
    cls = SynchronizedObservationBuffer if use_message_filters else ObservationBuffer
    return cls(roles, max_skew_s, max_age_s, max_state_age_s=max_state_age_s, future_tolerance_s=future_tolerance_s)
