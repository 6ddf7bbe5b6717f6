"""A separate process for the recording test: the scripted expert driving the simulated ALOHA through ROS.

Plans the transfer-cube expert's joint targets for the object pose of `--seed` (the pose motus_sim starts with for
the same seed; motus_sim.scripted_expert.plan_joint_trajectory, the targets the demonstrations replay) and publishes
them on the aloha_sim profile's forward-command topic at its control rate, one per tick, then plays the plan backwards
and forwards again (ping-pong: the arms keep moving smoothly, whenever a recording starts).
Usage: scripted_expert_driver.py [--seed N] [--steps N]
"""

import argparse

import numpy as np
import rclpy
from peer_main import spin_peer
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from std_msgs.msg import Float64MultiArray

from motus_ros.command_adapters import COMMAND_QOS
from motus_ros.profiles import load_profile
from motus_sim.scripted_expert import get_task, plan_joint_trajectory


class ScriptedExpertDriver(Node):
    def __init__(self, plan: np.ndarray) -> None:
        super().__init__("scripted_expert_driver")
        self.profile = load_profile("aloha_sim")
        self.plan = plan
        self.step = 0
        self.publisher = self.create_publisher(Float64MultiArray, self.profile.command_topics[0], COMMAND_QOS)
        self.create_timer(1.0 / self.profile.control_rate_hz, self.publish_command)

    def publish_command(self) -> None:
        period = 2 * (len(self.plan) - 1)
        phase = self.step % period
        row = self.plan[phase if phase < len(self.plan) else period - phase]
        self.publisher.publish(Float64MultiArray(data=row.tolist()))
        self.step += 1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=200)
    options = parser.parse_args()
    task = get_task("transfer_cube")
    plan = plan_joint_trajectory("transfer_cube", task.sample_object_pose(options.seed), options.steps)
    rclpy.init()
    spin_peer(ScriptedExpertDriver(plan), SingleThreadedExecutor(), f"SCRIPTED EXPERT READY: {len(plan)} planned steps")


if __name__ == "__main__":
    main()
