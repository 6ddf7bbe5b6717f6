"""Publishing model-made frames (predicted, imagined, previewed) for rviz and remote viewers: the one home.

`FramePublisher(node, roles, prefix)` owns, per camera role, a sensor_msgs/Image publisher on `<prefix>/<role>`
and a sensor_msgs/CompressedImage (jpeg) publisher on `<prefix>/<role>/compressed`: image_transport's names, so
rviz, `ros2 topic hz` and `image_transport republish` see the usual pair. Two ways to publish:

- `publish(views, stamp)`: one frame (every camera) now, stamped `stamp`;
- `replay(frames, start_stamp, fps)`: a clip at its video frame rate, frame i stamped `start_stamp + i / fps`
  (the time it predicts), the first at once and then one per timer tick (node clock, so sim time is honoured).
  A new replay replaces the one in progress; `loop=True` repeats the clip (same stamps) until the next one.

The world-model and imagination nodes replay through it (before, the world model published its frames back to
back and rviz only ever showed the last one); a policy-node preview can use it the same way with
`prefix="~/preview"`. Messages are built when the clip arrives (on the caller's thread), so a tick only publishes.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CompressedImage, Image

from motus_ros import conversions


def video_frame_rate(control_rate_hz: float, temporal: Any) -> float:
    """Frames per second of the model's video: the control rate over the control steps between two frames
    (downsample_rate control steps per action, video_action_ratio actions per frame)."""
    return float(control_rate_hz) / float(int(temporal.downsample_rate) * int(temporal.video_action_ratio))


def replay_start_stamp(observation: Any, received_s: float, fps: float) -> float:
    """The time (s, node clock) the first predicted frame shows: one video frame after the observation it was
    predicted from. A request's own observation (motus_msgs/Observation with images) counts from its header stamp
    when set; "use the latest" counts from when the request arrived (the latest is at most max_age_s older)."""
    observed_s = float(received_s)
    if observation is not None and len(observation.images):
        stamp = observation.header.stamp
        if stamp.sec or stamp.nanosec:
            observed_s = conversions.stamp_to_seconds(stamp)
    return observed_s + 1.0 / float(fps)


def _stamp_ns(stamp: Time | float | int) -> int:
    time = conversions.to_stamp(stamp)
    return int(time.sec) * 1_000_000_000 + int(time.nanosec)


def _time_of(nanoseconds: int) -> Time:
    return Time(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


class FramePublisher:
    """Per-camera Image + CompressedImage publishers on `<prefix>/<role>` and `<prefix>/<role>/compressed`."""

    def __init__(
        self,
        node: Any,
        roles: Sequence[str],
        prefix: str = "~/imagined",
        *,
        compressed: bool = True,
        jpeg_quality: int = 90,
        callback_group: Any = None,
        depth: int = 5,
    ) -> None:
        self.node = node
        self.prefix = prefix.rstrip("/")
        self.frame_id_prefix = self.prefix.rsplit("/", 1)[-1].lstrip("~")  # "imagined" -> frame "imagined_high"
        self.jpeg_quality = int(jpeg_quality)
        self.callback_group = callback_group
        self.raw = {role: node.create_publisher(Image, f"{self.prefix}/{role}", depth) for role in roles}
        self.compressed = (
            {role: node.create_publisher(CompressedImage, f"{self.prefix}/{role}/compressed", depth) for role in roles}
            if compressed
            else {}
        )
        self.published = 0  # frames (all cameras of one time step) published so far
        self._lock = threading.Lock()  # the replay queue, and publishing in order
        self._queue: collections.deque[list[tuple[Any, Any]]] = collections.deque()
        self._clip: list[list[tuple[Any, Any]]] = []
        self._loop = False
        self._timer = None
        self._period_s = 0.0

    # --- one frame ---------------------------------------------------------------------------------------------
    def messages(self, views: dict[str, np.ndarray], stamp: Time | float | int) -> list[tuple[Any, Any]]:
        """(publisher, message) pairs of one frame: raw and compressed per camera role this publisher has."""
        stamp = conversions.to_stamp(stamp)
        pairs = []
        for role, view in views.items():
            if role not in self.raw:
                continue
            frame_id = f"{self.frame_id_prefix}_{role}"
            pairs.append((self.raw[role], conversions.numpy_to_image(view, stamp, frame_id)))
            if role in self.compressed:
                message = conversions.numpy_to_compressed(view, stamp, frame_id, "jpeg", self.jpeg_quality)
                pairs.append((self.compressed[role], message))
        return pairs

    def publish(self, views: dict[str, np.ndarray], stamp: Time | float | int) -> None:
        """Publish one frame (camera role -> uint8 RGB [H, W, 3]) now, stamped `stamp` (a Time or seconds)."""
        pairs = self.messages(views, stamp)
        with self._lock:
            self._send(pairs)

    def _send(self, pairs: list[tuple[Any, Any]]) -> None:
        for publisher, message in pairs:
            publisher.publish(message)
        self.published += 1

    # --- a clip at its frame rate ------------------------------------------------------------------------------
    def replay(
        self,
        frames: Sequence[dict[str, np.ndarray]],
        start_stamp: Time | float | int,
        fps: float,
        loop: bool = False,
    ) -> None:
        """Publish `frames` (each camera role -> uint8 RGB view) one per 1/fps of the node's clock, frame i stamped
        start_stamp + i / fps; the first goes out at once. Replaces a replay in progress."""
        if not fps > 0:
            raise ValueError(f"replay fps must be > 0, got {fps}")
        start_ns = _stamp_ns(start_stamp)
        clip = [self.messages(views, _time_of(start_ns + round(i * 1e9 / fps))) for i, views in enumerate(frames)]
        with self._lock:
            self._queue.clear()
            self._queue.extend(clip)
            self._clip, self._loop = clip, bool(loop)
            if not self._queue:
                return
            self._send(self._queue.popleft())
            self._arm_timer(1.0 / float(fps))

    def _arm_timer(self, period_s: float) -> None:
        """Start (or restart) the replay timer: its next tick is one period from now. Called with the lock held."""
        if self._timer is not None and abs(self._period_s - period_s) > 1e-9:
            self.node.destroy_timer(self._timer)
            self._timer = None
        if self._timer is None:
            self._timer = self.node.create_timer(period_s, self._tick, callback_group=self.callback_group)
            self._period_s = period_s
        else:
            self._timer.reset()

    def _tick(self) -> None:
        with self._lock:
            if not self._queue and self._loop and self._clip:
                self._queue.extend(self._clip)
            if not self._queue:
                if self._timer is not None:
                    self._timer.cancel()  # idle until the next replay: no wake-ups for nothing
                return
            self._send(self._queue.popleft())

    @property
    def pending(self) -> int:
        """Frames of the current replay not published yet."""
        with self._lock:
            return len(self._queue)

    def stop_replay(self) -> None:
        """Drop the rest of the replay (and the loop)."""
        with self._lock:
            self._queue.clear()
            self._clip, self._loop = [], False
            if self._timer is not None:
                self._timer.cancel()

    def destroy(self) -> None:
        self.stop_replay()
        with self._lock:
            if self._timer is not None:
                self.node.destroy_timer(self._timer)
                self._timer = None
            for publisher in [*self.raw.values(), *self.compressed.values()]:
                self.node.destroy_publisher(publisher)
            self.raw, self.compressed = {}, {}
