"""FramePublisher (motus_ros.frame_publishing): imagined frames on `<prefix>/<role>` and `<prefix>/<role>/compressed`,
replayed one per 1/fps of the node's clock with the stamps of the times they predict. Driven by simulated time
(/clock published here), so the spacing is checked in ROS time, not by a wall-clock stopwatch."""

from __future__ import annotations

import numpy as np
import pytest
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CompressedImage, Image

from motus_ros.conversions import compressed_to_numpy, image_to_numpy, stamp_to_seconds, to_stamp
from motus_ros.frame_publishing import FramePublisher, replay_start_stamp, video_frame_rate

pytestmark = pytest.mark.timeout(60)

ROLES = ["high", "left_wrist"]
FPS = 10.0


def clip(count: int) -> list[dict[str, np.ndarray]]:
    """Frame i: every pixel 40 * i + 10 (high) or 40 * i + 20 (left_wrist), so arrival order is readable."""
    return [
        {role: np.full((16, 24, 3), 40 * i + 10 * (r + 1), dtype=np.uint8) for r, role in enumerate(ROLES)}
        for i in range(count)
    ]


class Rig:
    """A publisher node on simulated time, a /clock source and a recorder, spun by one executor."""

    def __init__(self) -> None:
        self.node = Node("frame_publisher_test", parameter_overrides=[Parameter("use_sim_time", value=True)])
        self.viewer = Node("frame_viewer_test")
        self.clock = self.viewer.create_publisher(Clock, "/clock", 10)
        self.raw: list[Image] = []
        self.compressed: list[CompressedImage] = []
        self.viewer.create_subscription(Image, "/frame_publisher_test/imagined/high", self.raw.append, 50)
        self.viewer.create_subscription(
            CompressedImage, "/frame_publisher_test/imagined/high/compressed", self.compressed.append, 50
        )
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.executor.add_node(self.viewer)
        self.frames = FramePublisher(self.node, ROLES, "~/imagined")
        self.set_time(100.0)

    def set_time(self, seconds: float) -> None:
        self.clock.publish(Clock(clock=to_stamp(seconds)))
        self.spin_until(lambda: abs(self.node.get_clock().now().nanoseconds * 1e-9 - seconds) < 1e-6)

    def spin_until(self, predicate, iterations: int = 200) -> bool:
        for _ in range(iterations):
            if predicate():
                return True
            self.executor.spin_once(timeout_sec=0.01)
        return predicate()

    def close(self) -> None:
        self.frames.destroy()
        self.executor.shutdown()
        self.node.destroy_node()
        self.viewer.destroy_node()


@pytest.fixture
def rig(ros_context):
    rig = Rig()
    assert rig.spin_until(lambda: rig.viewer.count_publishers("/clock") and rig.node.count_subscribers("/clock"))
    yield rig
    rig.close()


def test_a_clip_is_replayed_one_frame_per_period_of_ros_time_with_predicted_stamps(rig):
    rig.frames.replay(clip(4), start_stamp=100.1, fps=FPS)
    assert rig.spin_until(lambda: len(rig.raw) == 1 and len(rig.compressed) == 1), "the first frame goes out at once"
    # While the (simulated) clock stands still, nothing more is published, however long we spin.
    rig.spin_until(lambda: len(rig.raw) > 1, iterations=30)
    assert len(rig.raw) == 1 and rig.frames.pending == 3
    for k in range(1, 4):  # each 1/fps of ROS time releases exactly one more frame
        rig.set_time(100.0 + k / FPS + 1e-4)
        assert rig.spin_until(lambda k=k: len(rig.raw) == k + 1 and len(rig.compressed) == k + 1), k
        rig.spin_until(lambda k=k: len(rig.raw) > k + 1, iterations=20)
        assert len(rig.raw) == k + 1, "more than one frame per period"
    rig.set_time(101.0)
    rig.spin_until(lambda: len(rig.raw) > 4, iterations=30)
    assert len(rig.raw) == 4 and rig.frames.pending == 0 and rig.frames.published == 4
    # Frame i is stamped with the time it predicts (start + i / fps), and frames arrive in clip order.
    assert np.allclose([stamp_to_seconds(m.header.stamp) for m in rig.raw], 100.1 + np.arange(4) / FPS, atol=1e-9)
    assert [int(image_to_numpy(m)[0, 0, 0]) for m in rig.raw] == [10, 50, 90, 130]
    # The compressed twin: same stamps, jpeg, image_transport's format string, the same pixels within jpeg loss.
    assert [m.header.stamp for m in rig.compressed] == [m.header.stamp for m in rig.raw]
    assert all(m.format == "rgb8; jpeg compressed bgr8" for m in rig.compressed)
    assert [round(float(compressed_to_numpy(m).mean()) / 10) * 10 for m in rig.compressed] == [10, 50, 90, 130]
    assert rig.raw[0].header.frame_id == "imagined_high"


def test_a_new_clip_replaces_the_one_in_progress_and_loop_repeats_it(rig):
    rig.frames.replay(clip(3), start_stamp=100.0, fps=FPS)
    assert rig.spin_until(lambda: len(rig.raw) == 1)
    replacement = clip(5)[3:]  # pixels 130 and 170
    rig.frames.replay(replacement, start_stamp=200.0, fps=FPS, loop=True)
    assert rig.spin_until(lambda: len(rig.raw) == 2)
    for k in range(1, 4):
        rig.set_time(100.0 + k / FPS + 1e-4)
        assert rig.spin_until(lambda k=k: len(rig.raw) == k + 2), k
    values = [int(image_to_numpy(m)[0, 0, 0]) for m in rig.raw]
    assert values == [10, 130, 170, 130, 170], "the old clip must stop; the loop repeats the new one"
    assert [stamp_to_seconds(m.header.stamp) for m in rig.raw[1:]] == pytest.approx([200.0, 200.1, 200.0, 200.1])
    rig.frames.stop_replay()
    rig.set_time(101.0)
    rig.spin_until(lambda: len(rig.raw) > 5, iterations=30)
    assert len(rig.raw) == 5


def test_replay_timing_helpers():
    from types import SimpleNamespace

    from motus_msgs.msg import Observation

    # motus-small-aloha: 50 Hz control, 2 control steps per action, 4 actions per frame -> 6.25 frames/s
    assert video_frame_rate(50.0, SimpleNamespace(downsample_rate=2, video_action_ratio=4)) == 6.25
    assert replay_start_stamp(None, 10.0, 5.0) == pytest.approx(10.2)  # "use the latest": from the request's arrival
    observation = Observation()
    observation.images.append(Image())
    observation.header.stamp = to_stamp(7.5)
    assert replay_start_stamp(observation, 10.0, 5.0) == pytest.approx(7.7)  # its own observation: from its stamp
    with pytest.raises(ValueError, match="fps must be > 0"):
        FramePublisher.replay(None, [], 0.0, 0.0)  # type: ignore[arg-type]
