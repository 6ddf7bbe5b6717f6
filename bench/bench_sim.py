"""Publishing rates of motus_sim (not a test; prints JSON): joint states per second (the physics step rate, 50 Hz
expected) and camera frames per second per role, measured over a window once every stream flows. The tests only
count (test/ros/test_sim.py); the rates live here because they depend on the machine's load.

    tools/env.sh python bench/bench_sim.py [--seconds 5] [--camera-rate 4] [--out bench/results/sim_rates.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

from bench_report import emit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "test" / "ros"))  # sim_command / start_process


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--camera-rate", type=float, default=4.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from ros_helpers import sim_command, spin_until, start_process, stop_process
    from sensor_msgs.msg import Image, JointState

    from motus_ros.profiles import load_profile

    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    profile = load_profile("aloha_sim")
    sim = start_process(sim_command("-p", f"camera_rate_hz:={args.camera_rate}"), "MOTUS_SIM READY")
    rclpy.init()
    node = rclpy.create_node("bench_sim")
    counts = {"joint_states": 0, **{camera.role: 0 for camera in profile.cameras}}

    def count(key: str):
        def callback(_) -> None:
            counts[key] += 1

        return callback

    node.create_subscription(JointState, profile.joint_state_topics[0], count("joint_states"), 100)
    for camera in profile.cameras:
        node.create_subscription(Image, camera.topic, count(camera.role), qos_profile_sensor_data)
    try:
        assert spin_until(node, lambda: all(counts.values()), 60), f"not every stream flows: {counts}"
        for key in counts:
            counts[key] = 0
        start = time.monotonic()
        spin_until(node, lambda: False, args.seconds)
        elapsed = time.monotonic() - start
        report = {
            "benchmark": "sim_rates",
            "seconds": round(elapsed, 2),
            "joint_state_hz": round(counts["joint_states"] / elapsed, 1),
            "camera_hz": {camera.role: round(counts[camera.role] / elapsed, 1) for camera in profile.cameras},
            "camera_rate_setting_hz": args.camera_rate,
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        }
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        stop_process(sim)
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
