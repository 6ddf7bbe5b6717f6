"""Publish one 14-d joint command (robot units, profile order) in the robot driver's own message format.

One adapter per `RobotProfile.command_interface`:
- joint_trajectory: trajectory_msgs/JointTrajectory with one point at time_from_start = 1 / control rate,
  for a ros2_control JointTrajectoryController's `~/joint_trajectory` topic (one topic or one per arm).
  header.stamp is left at zero: the JTC then starts the point on receipt, whatever the clock offset
  between this machine and the controller's (joint_trajectory_controller/doc/userdoc.rst).
- forward_command: std_msgs/Float64MultiArray on a forward_command_controller's `~/commands`; the
  controller's `joints` parameter must list the joints in the profile's command_joint_names order.
- joint_state_per_arm: sensor_msgs/JointState per arm (AgileX Cobot Magic `/joint_{left,right}_states`,
  Piper `joint_ctrl_single`).
- interbotix: interbotix_xs_msgs JointGroupCommand "arm" on each command topic `<robot>/commands/joint_group`
  and JointSingleCommand "gripper" on its sibling `<robot>/commands/joint_single` (Interbotix/aloha
  real_env.py); needs interbotix_xs_msgs.

With dry_run the adapter creates no publisher on the robot's topics and publishes nothing (`suppressed`
counts what it would have sent); the server publishes the plan elsewhere. The safety filter runs
before send(): adapters only format and publish.
"""

from __future__ import annotations

import logging

import numpy as np
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, MultiArrayDimension
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from motus_model.embodiment import RobotProfile, interbotix_single_topic
from motus_ros.conversions import seconds_to_duration, to_stamp

logger = logging.getLogger(__name__)

# Commands: reliable, a short queue (depth 1-10, the usual ROS 2 choice for command topics; sensors are best effort).
COMMAND_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def import_interbotix_msgs():
    """interbotix_xs_msgs.msg (JointGroupCommand, JointSingleCommand), or ImportError saying where it comes from."""
    try:
        from interbotix_xs_msgs.msg import JointGroupCommand, JointSingleCommand
    except ImportError as error:
        raise ImportError(
            "the 'interbotix' command interface needs the interbotix_xs_msgs package (Interbotix/interbotix_ros_core, "
            "built in your ROS 2 workspace); it is not installed here. Use another command_interface or install it."
        ) from error
    return JointGroupCommand, JointSingleCommand


class CommandAdapter:
    """Base: validates the command, counts, and leaves the message format to subclasses."""

    interface = ""

    def __init__(self, node: Node, profile: RobotProfile, dry_run: bool) -> None:
        self.node = node
        self.profile = profile
        self.dry_run = bool(dry_run)
        self.published = 0  # commands published to the robot
        self.suppressed = 0  # commands withheld by dry_run
        self.last_command: np.ndarray | None = None
        self._publishers: list = []
        if not self.dry_run:
            self._create_publishers()

    @property
    def topics(self) -> list[str]:
        """The topics this adapter publishes on (empty in dry run)."""
        return [publisher.topic_name for publisher in self._publishers]

    @classmethod
    def message_types(cls, profile: RobotProfile) -> dict[str, type]:
        """Topic -> message class of everything this interface publishes (what a recorder listens to)."""
        raise NotImplementedError

    def _create_publishers(self) -> None:
        raise NotImplementedError

    def _publish(self, command: np.ndarray, stamp) -> None:
        raise NotImplementedError

    def send(self, command_14: np.ndarray, stamp=None) -> None:
        """Publish one command [D] (robot units, profile order). stamp: builtin_interfaces/Time or seconds
        (None = the node clock's now)."""
        command = np.asarray(command_14, dtype=np.float64)
        if command.shape != (self.profile.action_dim,):
            raise ValueError(
                f"command must have shape ({self.profile.action_dim},) for profile "
                f"{self.profile.name!r}, got {command.shape}"
            )
        if not np.all(np.isfinite(command)):
            raise ValueError("command must be finite, got NaN/inf")
        self.last_command = command.copy()
        if self.dry_run:
            self.suppressed += 1
            return
        stamp = self.node.get_clock().now().to_msg() if stamp is None else to_stamp(stamp)
        self._publish(command, stamp)
        self.published += 1

    def wait_for_delivery(self, timeout_s: float = 0.5) -> bool:
        """Wait until every reliable subscriber has acknowledged what was sent. A hold sent as the process shuts
        down must not be lost in the writer's queue; False when some subscriber did not acknowledge in time."""
        timeout = Duration(seconds=timeout_s)
        return all(publisher.wait_for_all_acked(timeout) for publisher in self._publishers)

    def destroy(self) -> None:
        for publisher in self._publishers:
            self.node.destroy_publisher(publisher)
        self._publishers = []


class JointTrajectoryAdapter(CommandAdapter):
    interface = "joint_trajectory"

    @classmethod
    def message_types(cls, profile: RobotProfile) -> dict[str, type]:
        return {topic: JointTrajectory for topic in profile.command_topics}

    def _create_publishers(self) -> None:
        self._publishers = [
            self.node.create_publisher(JointTrajectory, topic, COMMAND_QOS) for topic in self.profile.command_topics
        ]

    def _publish(self, command: np.ndarray, stamp) -> None:
        period = seconds_to_duration(1.0 / self.profile.control_rate_hz)
        for publisher, group, names in zip(
            self._publishers, self.profile.command_joint_groups, self.profile.command_joint_names
        ):
            msg = JointTrajectory()  # header.stamp = 0: start on receipt (see the module docstring)
            msg.joint_names = list(names)
            msg.points = [JointTrajectoryPoint(positions=command[group].tolist(), time_from_start=period)]
            publisher.publish(msg)


class ForwardCommandAdapter(CommandAdapter):
    interface = "forward_command"

    @classmethod
    def message_types(cls, profile: RobotProfile) -> dict[str, type]:
        return {profile.command_topics[0]: Float64MultiArray}

    def _create_publishers(self) -> None:
        self._publishers = [self.node.create_publisher(Float64MultiArray, self.profile.command_topics[0], COMMAND_QOS)]

    def _publish(self, command: np.ndarray, stamp) -> None:
        msg = Float64MultiArray()
        group = self.profile.command_joint_groups[0]
        msg.layout.dim = [MultiArrayDimension(label="joints", size=len(group), stride=len(group))]
        msg.data = command[group].tolist()
        self._publishers[0].publish(msg)


class JointStatePerArmAdapter(CommandAdapter):
    interface = "joint_state_per_arm"

    @classmethod
    def message_types(cls, profile: RobotProfile) -> dict[str, type]:
        return {topic: JointState for topic in profile.command_topics}

    def _create_publishers(self) -> None:
        self._publishers = [
            self.node.create_publisher(JointState, topic, COMMAND_QOS) for topic in self.profile.command_topics
        ]

    def _publish(self, command: np.ndarray, stamp) -> None:
        for publisher, group, names in zip(
            self._publishers, self.profile.command_joint_groups, self.profile.command_joint_names
        ):
            msg = JointState()
            msg.header.stamp = stamp
            msg.name = list(names)
            msg.position = command[group].tolist()
            publisher.publish(msg)


class InterbotixAdapter(CommandAdapter):
    """Per arm: the non-gripper joints as JointGroupCommand "arm", the gripper as JointSingleCommand "gripper"."""

    interface = "interbotix"
    GROUP_NAME = "arm"  # interbotix_xsarm_control groups: "arm" (the 6 joints), single joint "gripper"
    GRIPPER_NAME = "gripper"

    def __init__(self, node: Node, profile: RobotProfile, dry_run: bool) -> None:
        # Publishing needs interbotix_xs_msgs: fail at construction (clear ImportError). A dry run publishes
        # nothing, so it works without the package (e.g. to watch the plan on a machine without the driver).
        if not dry_run:
            self._group_cls, self._single_cls = import_interbotix_msgs()
        super().__init__(node, profile, dry_run)

    @classmethod
    def message_types(cls, profile: RobotProfile) -> dict[str, type]:
        group_cls, single_cls = import_interbotix_msgs()
        types: dict[str, type] = {}
        for topic in profile.command_topics:
            types[topic] = group_cls
            types[interbotix_single_topic(topic)] = single_cls
        return types

    def _create_publishers(self) -> None:
        self._arm_publishers = []
        for topic in self.profile.command_topics:  # <robot>/commands/joint_group (checked by the profile)
            group = self.node.create_publisher(self._group_cls, topic, COMMAND_QOS)
            single = self.node.create_publisher(self._single_cls, interbotix_single_topic(topic), COMMAND_QOS)
            self._arm_publishers.append((group, single))
            self._publishers += [group, single]

    def _publish(self, command: np.ndarray, stamp) -> None:
        grippers = set(self.profile.gripper_indices)
        for (group_pub, single_pub), indices in zip(self._arm_publishers, self.profile.command_joint_groups):
            arm = [i for i in indices if i not in grippers]
            gripper = next(i for i in indices if i in grippers)
            group_pub.publish(self._group_cls(name=self.GROUP_NAME, cmd=[float(command[i]) for i in arm]))
            single_pub.publish(self._single_cls(name=self.GRIPPER_NAME, cmd=float(command[gripper])))


ADAPTERS: dict[str, type[CommandAdapter]] = {
    cls.interface: cls
    for cls in (JointTrajectoryAdapter, ForwardCommandAdapter, JointStatePerArmAdapter, InterbotixAdapter)
}


def adapter_class(profile: RobotProfile) -> type[CommandAdapter]:
    """The adapter class of profile.command_interface (ValueError naming the known ones otherwise)."""
    try:
        return ADAPTERS[profile.command_interface]
    except KeyError:
        raise ValueError(
            f"unknown command_interface {profile.command_interface!r}; expected one of {sorted(ADAPTERS)}"
        ) from None


def command_message_types(profile: RobotProfile) -> dict[str, type]:
    """Topic -> message class of every topic the profile's command interface publishes on (ValueError for an
    unknown interface, ImportError when its message package is missing)."""
    return adapter_class(profile).message_types(profile)


def make_command_adapter(node: Node, profile: RobotProfile, dry_run: bool) -> CommandAdapter:
    """The adapter for profile.command_interface (ValueError for an unknown one, ImportError when its
    message package is missing)."""
    cls = adapter_class(profile)
    adapter = cls(node, profile, dry_run)
    node.get_logger().info(
        f"command adapter {cls.interface} for {profile.name!r}: "
        + ("DRY RUN, nothing is published to the robot" if adapter.dry_run else f"publishing on {adapter.topics}")
    )
    return adapter
