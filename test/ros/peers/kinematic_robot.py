"""A separate process for the driver-loss test: a kinematic stand-in for the aloha_sim robot's drivers.

Joint states at the control rate (50 Hz) from a position that follows every forward command at once, and the
profile's three cameras at 10 Hz (synthetic frames: no rendering, so the test does not depend on how fast a loaded
CPU renders MuJoCo). Killing this process is a driver loss.
"""

import sys
from pathlib import Path

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # ros_helpers

from peer_main import spin_peer  # noqa: E402
from ros_helpers import camera_frame, image_msg  # noqa: E402

from motus_ros.profiles import load_profile  # noqa: E402


class KinematicRobot(Node):
    def __init__(self) -> None:
        super().__init__("kinematic_robot")
        self.profile = load_profile("aloha_sim")
        lower, upper = np.asarray(self.profile.lower_limits), np.asarray(self.profile.upper_limits)
        self.position = np.clip(np.full(len(self.profile.joint_names), 0.2), lower, upper)
        self.frames = 0
        # Reliable, as the simulator and real drivers publish: best-effort and reliable readers both match it.
        self.joints = self.create_publisher(JointState, self.profile.joint_state_topics[0], 10)
        self.cameras = [(camera, self.create_publisher(Image, camera.topic, 1)) for camera in self.profile.cameras]
        self.create_subscription(Float64MultiArray, self.profile.command_topics[0], self.on_command, 100)
        self.create_timer(1.0 / self.profile.control_rate_hz, self.publish_joints)
        self.create_timer(0.1, self.publish_cameras)

    def on_command(self, message: Float64MultiArray) -> None:
        if len(message.data) == self.position.size:
            self.position = np.asarray(message.data, dtype=np.float64)

    def publish_joints(self) -> None:
        message = JointState(name=list(self.profile.joint_names), position=self.position.tolist())
        message.header.stamp = self.get_clock().now().to_msg()
        self.joints.publish(message)

    def publish_cameras(self) -> None:
        self.frames += 1
        stamp = self.get_clock().now().to_msg()
        for camera, publisher in self.cameras:
            publisher.publish(image_msg(camera_frame(camera.role, camera.height, camera.width, self.frames), stamp))


def main() -> None:
    rclpy.init()
    spin_peer(KinematicRobot(), SingleThreadedExecutor(), "KINEMATIC ROBOT READY")


if __name__ == "__main__":
    main()
