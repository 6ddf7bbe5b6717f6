"""Command adapters: each interface publishes the right message on the right topic (seen by a subscriber over
the middleware), dry run publishes nothing, the Interbotix path fails clearly where its messages are missing."""

import dataclasses
import time
import uuid

import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory

from motus_ros.command_adapters import ADAPTERS, make_command_adapter
from motus_ros.profiles import load_profile

pytestmark = pytest.mark.timeout(90)

COMMAND = np.arange(14, dtype=float) / 10.0  # distinct values, so a wrong index shows


def have_interbotix() -> bool:
    try:
        import interbotix_xs_msgs.msg  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture
def nodes(ros_context):
    suffix = uuid.uuid4().hex[:8]
    sender = rclpy.create_node(f"adapter_sender_{suffix}")
    listener = rclpy.create_node(f"adapter_listener_{suffix}")
    executor = SingleThreadedExecutor()
    executor.add_node(sender)
    executor.add_node(listener)
    yield sender, listener, executor, suffix
    executor.shutdown()
    sender.destroy_node()
    listener.destroy_node()


def sim_profile(interface: str, topics: list[str], groups: list[list[int]]):
    base = load_profile("aloha_sim")
    return dataclasses.replace(
        base, command_interface=interface, command_topics=topics, command_joint_groups=groups, command_joint_names=[]
    )  # re-derived in __post_init__


def collect(listener, msg_type, topic: str, box: list) -> None:
    listener.create_subscription(msg_type, topic, box.append, 10)


def send_until_received(executor, adapter, boxes: list[list], timeout: float = 15.0) -> None:
    """Publish repeatedly until every subscriber got something (discovery takes a moment)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(boxes):
        adapter.send(COMMAND, 1.5)
        executor.spin_once(timeout_sec=0.05)
    for _ in range(5):
        executor.spin_once(timeout_sec=0.01)
    assert all(boxes), f"no command arrived on some topics: {[len(b) for b in boxes]}"


def forward_command_rig(nodes):
    """A forward_command adapter for all 14 joints and a listener that has received from it: (executor,
    adapter, received messages)."""
    sender, listener, executor, suffix = nodes
    topic = f"/arms_{suffix}/commands"
    box = []
    collect(listener, Float64MultiArray, topic, box)
    adapter = make_command_adapter(sender, sim_profile("forward_command", [topic], [list(range(14))]), dry_run=False)
    send_until_received(executor, adapter, [box])
    return executor, adapter, box


def test_joint_trajectory_one_point_per_arm(nodes):
    sender, listener, executor, suffix = nodes
    topics = [f"/left_{suffix}/joint_trajectory", f"/right_{suffix}/joint_trajectory"]
    profile = sim_profile("joint_trajectory", topics, [list(range(7)), list(range(7, 14))])
    left, right = [], []
    collect(listener, JointTrajectory, topics[0], left)
    collect(listener, JointTrajectory, topics[1], right)
    adapter = make_command_adapter(sender, profile, dry_run=False)
    assert adapter.topics == topics
    send_until_received(executor, adapter, [left, right])
    for box, group in ((left, slice(0, 7)), (right, slice(7, 14))):
        msg = box[-1]
        assert list(msg.joint_names) == profile.joint_names[group]
        assert len(msg.points) == 1
        np.testing.assert_allclose(msg.points[0].positions, COMMAND[group])
        t = msg.points[0].time_from_start
        assert t.sec + t.nanosec * 1e-9 == pytest.approx(1.0 / profile.control_rate_hz)
        assert msg.header.stamp.sec == 0 and msg.header.stamp.nanosec == 0  # JTC: start on receipt
    assert adapter.published >= 1 and adapter.suppressed == 0


def test_a_command_sent_last_is_acknowledged_before_the_adapter_goes(nodes):
    """wait_for_delivery: the hold sent on deactivation reaches a reliable subscriber even if the process exits
    right after (the server's SIGTERM path); the last command is received once it returns True."""
    executor, adapter, box = forward_command_rig(nodes)  # discovery done
    last = COMMAND + 0.01
    adapter.send(last, 2.0)
    assert adapter.wait_for_delivery(5.0)
    adapter.destroy()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not np.allclose(box[-1].data, last):
        executor.spin_once(timeout_sec=0.05)
    np.testing.assert_allclose(box[-1].data, last)


def test_forward_command_float64_multiarray(nodes):
    _, _, box = forward_command_rig(nodes)
    np.testing.assert_allclose(box[-1].data, COMMAND)
    assert box[-1].layout.dim[0].size == 14


def test_joint_state_per_arm_uses_each_arms_names(nodes):
    sender, listener, executor, suffix = nodes
    base = load_profile("agilex_aloha2")
    topics = [f"/joint_left_states_{suffix}", f"/joint_right_states_{suffix}"]
    profile = dataclasses.replace(base, command_topics=topics)
    left, right = [], []
    collect(listener, JointState, topics[0], left)
    collect(listener, JointState, topics[1], right)
    adapter = make_command_adapter(sender, profile, dry_run=False)
    send_until_received(executor, adapter, [left, right])
    assert list(left[-1].name) == [f"joint{i}" for i in range(7)] == list(right[-1].name)
    np.testing.assert_allclose(left[-1].position, COMMAND[:7])
    np.testing.assert_allclose(right[-1].position, COMMAND[7:])
    assert left[-1].header.stamp.sec == 1 and left[-1].header.stamp.nanosec == 500_000_000


def test_dry_run_publishes_nothing(nodes):
    sender, listener, executor, suffix = nodes
    topic = f"/arms_{suffix}/commands"
    profile = sim_profile("forward_command", [topic], [list(range(14))])
    box = []
    collect(listener, Float64MultiArray, topic, box)
    adapter = make_command_adapter(sender, profile, dry_run=True)
    assert adapter.topics == [] and sender.count_publishers(topic) == 0
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        adapter.send(COMMAND, 0.0)
        executor.spin_once(timeout_sec=0.05)
    assert box == [] and adapter.published == 0 and adapter.suppressed > 0
    np.testing.assert_array_equal(adapter.last_command, COMMAND)


def test_bad_command_rejected(nodes):
    sender, _, _, suffix = nodes
    profile = sim_profile("forward_command", [f"/arms_{suffix}/commands"], [list(range(14))])
    adapter = make_command_adapter(sender, profile, dry_run=False)
    with pytest.raises(ValueError, match=r"shape \(14,\)"):
        adapter.send(np.zeros(7))
    with pytest.raises(ValueError, match="finite"):
        adapter.send(np.full(14, np.inf))
    assert adapter.published == 0
    assert set(ADAPTERS) == {"joint_trajectory", "forward_command", "joint_state_per_arm", "interbotix"}


@pytest.mark.skipif(have_interbotix(), reason="interbotix_xs_msgs is installed: the missing-package error cannot occur")
def test_interbotix_without_its_messages_fails_clearly(nodes):
    sender = nodes[0]
    with pytest.raises(ImportError, match="needs the interbotix_xs_msgs package"):
        make_command_adapter(sender, load_profile("interbotix_aloha"), dry_run=False)
    # A dry run publishes nothing, so it needs no Interbotix messages.
    adapter = make_command_adapter(sender, load_profile("interbotix_aloha"), dry_run=True)
    adapter.send(np.full(14, 1.0))
    assert adapter.published == 0 and adapter.suppressed == 1


@pytest.mark.skipif(
    not have_interbotix(), reason="interbotix_xs_msgs is not installed (Interbotix ROS 2 workspace only)"
)
def test_interbotix_group_and_single_commands(nodes):
    from interbotix_xs_msgs.msg import JointGroupCommand, JointSingleCommand

    sender, listener, executor, suffix = nodes
    namespaces = [f"/follower_left_{suffix}/commands", f"/follower_right_{suffix}/commands"]
    profile = dataclasses.replace(
        load_profile("interbotix_aloha"), command_topics=[n + "/joint_group" for n in namespaces]
    )
    boxes = {key: [] for key in ("lg", "ls", "rg", "rs")}
    collect(listener, JointGroupCommand, namespaces[0] + "/joint_group", boxes["lg"])
    collect(listener, JointSingleCommand, namespaces[0] + "/joint_single", boxes["ls"])
    collect(listener, JointGroupCommand, namespaces[1] + "/joint_group", boxes["rg"])
    collect(listener, JointSingleCommand, namespaces[1] + "/joint_single", boxes["rs"])
    adapter = make_command_adapter(sender, profile, dry_run=False)
    send_until_received(executor, adapter, list(boxes.values()))
    assert boxes["lg"][-1].name == "arm" and np.allclose(boxes["lg"][-1].cmd, COMMAND[:6])
    assert boxes["ls"][-1].name == "gripper" and boxes["ls"][-1].cmd == pytest.approx(COMMAND[6])
    assert np.allclose(boxes["rg"][-1].cmd, COMMAND[7:13]) and boxes["rs"][-1].cmd == pytest.approx(COMMAND[13])
