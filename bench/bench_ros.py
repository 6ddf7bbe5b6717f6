"""ROS overhead of the Motus server (not a test; prints JSON).

1. Service latency: the same PredictActions request (explicit observation, fixed seed) timed end to end through
   ROS (client call -> motus_server -> response) and on an in-process MotusEngine of the same preset; the ratio is
   the ROS overhead (serialisation, executor, conversions, composite preprocessing of the message images).
2. Command-rate jitter: a RunPolicy goal drives stand-in sensor streams; the periods between commands arriving on
   the robot's command topic while chunks are inferred.
3. What the preview costs (`--preview-cost`, on by default): the same run on a second server with the policy node's
   `preview` on (each chunk also sent to the world model); its chunk latency and holding beside run 2's.

    tools/env.sh python bench/bench_ros.py [--preset motus-small] [--repeats 10] [--run-s 8]
        [--out bench/results/ros.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from bench_report import emit

ROOT = Path(__file__).resolve().parents[1]
READY = "MOTUS SERVER READY"


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else float("nan")


def summary_ms(values_s: list[float]) -> dict:
    values = [v * 1e3 for v in values_s]
    return (
        {
            "n": len(values),
            "mean_ms": round(statistics.fmean(values), 2),
            "median_ms": round(statistics.median(values), 2),
            "p90_ms": round(percentile(values, 90), 2),
            "max_ms": round(max(values), 2),
        }
        if values
        else {"n": 0}
    )


def start_server(preset: str, steps: int, preview: bool = False) -> subprocess.Popen:
    import tempfile

    import yaml

    from motus_ros.server import PARAMETER_SECTIONS

    values = {
        "preset": preset,
        "default_steps": steps,
        "max_age_s": 1.0,
        "max_skew_s": 0.5,
        "chunk_request_threshold": 10,
        "preview": preview,
    }
    sections = {f"/**/{name}": {"ros__parameters": dict(values)} for name in PARAMETER_SECTIONS}
    params = tempfile.NamedTemporaryFile("w", prefix="motus_bench_", suffix=".yaml", delete=False)
    with params:
        yaml.safe_dump(sections, params)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "motus_ros.server",
            "--preset",
            preset,
            "--ros-args",
            "--params-file",
            str(ROOT / "config" / "motus_server.yaml"),
            "--params-file",
            params.name,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        for line in process.stdout:
            lines.append(line)
            if READY in line:
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    process.params_file = params.name  # type: ignore[attr-defined]
    if not ready.wait(180) or process.poll() is not None:
        process.kill()
        raise RuntimeError("motus_server did not start:\n" + "".join(lines[-30:]))
    return process


class Sensors:
    """Publishes the profile's cameras and joint state at `rate_hz` from a background thread."""

    def __init__(self, profile, rate_hz: float = 15.0) -> None:
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Image, JointState

        from motus_ros.conversions import numpy_to_image

        self.profile = profile
        self.node = Node("bench_sensors")
        self.frames = {
            c.role: np.full((c.height, c.width, 3), 60 + 40 * i, np.uint8) for i, c in enumerate(profile.cameras)
        }
        self.position = np.clip(np.zeros(len(profile.joint_names)), profile.lower_limits, profile.upper_limits)
        image_pubs = {
            c.role: self.node.create_publisher(Image, c.topic, qos_profile_sensor_data) for c in profile.cameras
        }
        joint_pub = self.node.create_publisher(JointState, profile.joint_state_topics[0], qos_profile_sensor_data)

        def publish() -> None:
            stamp = self.node.get_clock().now().to_msg()
            for camera in profile.cameras:
                image_pubs[camera.role].publish(
                    numpy_to_image(self.frames[camera.role], stamp, camera.role, camera.encoding)
                )
            message = JointState(name=list(profile.joint_names), position=self.position.tolist())
            message.header.stamp = stamp
            joint_pub.publish(message)

        self.node.create_timer(1.0 / rate_hz, publish)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self._stop = threading.Event()
        self.thread = threading.Thread(
            target=lambda: [self.executor.spin_once(timeout_sec=0.05) for _ in iter(lambda: self._stop.is_set(), True)],
            daemon=True,
        )
        self.thread.start()

    def observation(self):
        from sensor_msgs.msg import JointState

        from motus_msgs.msg import Observation
        from motus_ros.conversions import numpy_to_image

        stamp = self.node.get_clock().now().to_msg()
        message = Observation(camera_names=[c.role for c in self.profile.cameras])
        message.images = [numpy_to_image(self.frames[c.role], stamp, c.role, c.encoding) for c in self.profile.cameras]
        message.joint_state = JointState(name=list(self.profile.joint_names), position=self.position.tolist())
        return message

    def close(self) -> None:
        self._stop.set()
        self.thread.join(5)
        self.node.destroy_node()


def bench_service(client, sensors, preset: str, steps: int, repeats: int, instruction: str) -> dict:
    """The same request through ROS and on an in-process engine."""
    from motus_model.engine import MotusEngine, MotusRequest

    ros_s, node_total_s, engine_stage_s = [], [], []
    observation = sensors.observation()
    client.predict_actions(instruction, observation=observation, steps=steps, seed=0)  # warm-up
    for _ in range(repeats):
        start = time.perf_counter()
        response = client.predict_actions(instruction, observation=observation, steps=steps, seed=0)
        ros_s.append(time.perf_counter() - start)
        if response.error.code != 0:
            raise RuntimeError(f"predict_actions failed: {response.error.message}")
        node_total_s.append(response.timing.total_ms / 1e3)
        t = response.timing
        engine_stage_s.append((t.queue_ms + t.preprocess_ms + t.conditioning_ms + t.sampling_ms + t.decode_ms) / 1e3)

    engine = MotusEngine.from_preset(preset, seed=0)
    images = dict(sensors.frames)
    state = sensors.profile.robot_to_model(sensors.position)
    request = lambda: MotusRequest(
        mode="vla", images=images, state=state, instruction=instruction, steps=steps, seed=0, decode_video=False
    )  # noqa: E731
    engine.infer(request())
    direct_s = []
    for _ in range(repeats):
        start = time.perf_counter()
        engine.infer(request())
        direct_s.append(time.perf_counter() - start)
    engine.close()
    ros, direct = statistics.median(ros_s), statistics.median(direct_s)
    return {
        "request": {
            "mode": "vla",
            "preset": preset,
            "steps": steps,
            "image_size": list(next(iter(images.values())).shape),
        },
        "ros_end_to_end": summary_ms(ros_s),
        "node_internal_total": summary_ms(node_total_s),
        "engine_stages_in_server": summary_ms(engine_stage_s),
        "engine_in_process": summary_ms(direct_s),
        "ros_overhead_ratio_median": round(ros / direct, 3),
        "ros_overhead_ms_median": round((ros - direct) * 1e3, 2),
    }


def bench_command_jitter(client, profile, run_s: float, instruction: str) -> dict:
    """Command arrival periods while the policy runs (chunks are inferred concurrently)."""
    from std_msgs.msg import Float64MultiArray

    arrivals: list[float] = []
    client.node.create_subscription(
        Float64MultiArray, profile.command_topics[0], lambda _: arrivals.append(time.perf_counter()), 100
    )
    if not client.run_policy(instruction, max_duration_s=run_s):
        raise RuntimeError("RunPolicy rejected")
    while not client.is_task_complete(0.05):
        pass
    result = client.get_result()
    client.spin(0.2)
    periods = np.diff(np.asarray(arrivals))
    target = 1.0 / profile.control_rate_hz
    feedback = client.policy_task.feedback
    return {
        "run_s": run_s,
        "termination": result.termination,
        "chunks": int(result.chunks),
        "commands": len(arrivals),
        "target_period_ms": round(target * 1e3, 2),
        "rate_hz": round(len(arrivals) / max(arrivals[-1] - arrivals[0], 1e-9), 2) if len(arrivals) > 1 else 0.0,
        "period_ms": summary_ms(periods.tolist()),
        "period_std_ms": round(float(periods.std() * 1e3), 3) if len(periods) else None,
        "jitter_abs_mean_ms": round(float(np.abs(periods - target).mean() * 1e3), 3) if len(periods) else None,
        "late_periods_over_2x": int((periods > 2 * target).sum()),
        "holding_fraction": round(sum(f.holding for f in feedback) / max(len(feedback), 1), 3),
        "inference_ms_median": round(
            statistics.median([f.last_inference_ms for f in feedback if f.last_inference_ms > 0] or [0.0]), 1
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="motus-small")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--run-s", type=float, default=8.0)
    parser.add_argument("--instruction", default="pick")
    parser.add_argument("--no-preview-cost", action="store_true", help="skip run 3 (the preview's cost)")
    parser.add_argument("--out", help="also write the JSON here (e.g. bench/results/ros.json)")
    options = parser.parse_args()

    import rclpy

    from motus_ros.client import MotusClient
    from motus_ros.profiles import load_profile

    profile = load_profile("aloha_sim")
    server = start_server(options.preset, options.steps)
    rclpy.init()
    client = MotusClient(node_name="bench_ros_client")
    sensors = Sensors(profile)
    try:
        if not client.wait_for_server(60):
            raise RuntimeError("server interfaces did not appear")
        client.spin(2.0)
        report = {
            "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
            "service_latency": bench_service(
                client, sensors, options.preset, options.steps, options.repeats, options.instruction
            ),
            "command_rate": bench_command_jitter(client, profile, options.run_s, options.instruction),
        }
        if not options.no_preview_cost:
            stop_server(server)
            server = start_server(options.preset, options.steps, preview=True)
            if not client.wait_for_server(60):
                raise RuntimeError("the preview server's interfaces did not appear")
            client.spin(2.0)
            with_preview = bench_command_jitter(client, profile, options.run_s, options.instruction)
            without = report["command_rate"]
            report["preview_cost"] = {
                "with_preview": with_preview,
                "inference_ms_median_ratio": round(
                    with_preview["inference_ms_median"] / max(without["inference_ms_median"], 1e-9), 2
                ),
                "holding_fraction_without": without["holding_fraction"],
                "holding_fraction_with": with_preview["holding_fraction"],
            }
    finally:
        sensors.close()
        client.destroy()
        rclpy.try_shutdown()
        stop_server(server)
    emit(report, options.out)


def stop_server(server: subprocess.Popen) -> None:
    server.terminate()
    server.wait(30)
    Path(server.params_file).unlink(missing_ok=True)


if __name__ == "__main__":
    main()
