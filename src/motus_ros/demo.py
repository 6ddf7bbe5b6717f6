"""The Motus demo (`make demo`, `python -m motus_ros.demo`): the simulated ALOHA driven by the Motus server.

1. starts `motus_sim` (gym-aloha transfer cube, MuJoCo) and `motus_server` as child processes;
2. runs a RunPolicy goal for a bounded time while counting the commands that reach the robot's command topic;
3. asks the world model to predict the future of the robot holding still, and the imagination node to imagine
   the task (both replayed on ~/imagined/<camera> for rviz);
4. prints what happened (commands, control rate, inference latency, imagined frames, the episode's outcome) and
   stops the children.

Without a checkpoint the server runs a preset with random weights: the arms move, but not towards the cube.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

READY_SERVER = "MOTUS SERVER READY"
READY_SIM = "MOTUS_SIM READY"


class Child:
    """A child process whose output is collected (and echoed with a prefix when `verbose`)."""

    def __init__(self, name: str, command: list[str], ready_line: str, verbose: bool) -> None:
        self.name, self.ready_line = name, ready_line
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        threading.Thread(target=self._read, args=(verbose,), daemon=True).start()

    def _read(self, verbose: bool) -> None:
        for line in self.process.stdout:
            self.lines.append(line)
            if verbose:
                print(f"[{self.name}] {line}", end="", flush=True)
            if self.ready_line in line:
                self.ready.set()

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.ready.wait(0.1):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start; its output:\n{''.join(self.lines[-40:])}")

    def stop(self, timeout_s: float = 20.0) -> int | None:
        """SIGINT first (the server deactivates its nodes and holds the robot), SIGKILL if it hangs."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def executable(console_script: str, module: str) -> list[str]:
    """The installed console script where it is on PATH, else `python -m module` (source tree)."""
    found = shutil.which(console_script)
    return [found] if found else [sys.executable, "-m", module]


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="motus_ros.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds the policy drives the robot")
    parser.add_argument("--instruction", default="transfer the cube", help="the policy's task instruction")
    parser.add_argument("--checkpoint", default="", help="checkpoint folder; empty = a preset with random weights")
    parser.add_argument("--preset", default="motus-small", help="preset used without a checkpoint")
    parser.add_argument("--steps", type=int, default=2, help="denoising steps per request (few keep CPU inference fast)")
    parser.add_argument("--profile", default="aloha_sim", help="robot profile of the simulated robot")
    parser.add_argument("--camera-rate", type=float, default=5.0,
                        help="simulated camera rate (Hz); CPU rendering competes with inference for the 2 cores")
    parser.add_argument("--task", default="transfer_cube", help="gym-aloha task: transfer_cube or insertion")
    parser.add_argument("--verbose", action="store_true", help="echo the children's logs")
    return parser.parse_args(argv)


def server_config() -> Path:
    """config/motus_server.yaml from the source tree, else from the installed share/motus_ros."""
    source = Path(__file__).resolve().parents[2] / "config" / "motus_server.yaml"
    if source.is_file():
        return source
    from ament_index_python.packages import get_package_share_directory

    return Path(get_package_share_directory("motus_ros")) / "config" / "motus_server.yaml"


def demo_parameters(options: argparse.Namespace) -> str:
    """A params file with the demo's settings for every node. Node sections (not global `-p`): node-specific
    entries of config/motus_server.yaml would win over global overrides. The simulator renders its cameras on the
    CPU (~150 ms for the three) and falls behind under load, so the demo tolerates older and less synchronised frames."""
    import tempfile

    import yaml

    values = {"default_steps": options.steps, "max_age_s": 1.0, "max_skew_s": 0.6, "chunk_request_threshold": 10}
    sections = {f"/**/{name}": {"ros__parameters": dict(values)} for name in ("policy", "world_model", "idm", "imagination")}
    handle = tempfile.NamedTemporaryFile("w", prefix="motus_demo_", suffix=".yaml", delete=False)
    with handle:
        yaml.safe_dump(sections, handle)
    return handle.name


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_arguments(argv)
    config = server_config()
    server_args = ["--preset", options.preset, "--profile", options.profile]
    if options.checkpoint:
        server_args += ["--checkpoint", options.checkpoint]
    demo_params = demo_parameters(options)
    ros_args = ["--ros-args", "--params-file", str(config), "--params-file", demo_params]
    if "ROS_DOMAIN_ID" not in os.environ:
        # A private DDS domain: two demos (or a demo and a test run) on one machine must not drive each other.
        os.environ["ROS_DOMAIN_ID"] = str(random.randint(1, 101))
    print(f"ROS_DOMAIN_ID={os.environ['ROS_DOMAIN_ID']} (export it to watch with rviz2 / ros2 topic)", flush=True)
    model = options.checkpoint or f"{options.preset} with RANDOM weights (no trained checkpoint given: the arms move, but not to the task)"
    print(f"motus demo: simulated ALOHA ({options.task}) + motus_server ({model}), policy for {options.duration:g} s", flush=True)
    children: list[Child] = []
    report: dict = {}
    try:
        sim = Child("sim", [*executable("motus_sim", "motus_ros.sim.aloha_sim_node"), "--ros-args", "-p", f"profile:={options.profile}", "-p", f"task:={options.task}",
                                 "-p", f"camera_rate_hz:={float(options.camera_rate)!r}"], READY_SIM, options.verbose)
        children.append(sim)
        server = Child("server", [*executable("motus_server", "motus_ros.server"), *server_args, *ros_args], READY_SERVER, options.verbose)
        children.append(server)
        sim.wait_ready(120)
        server.wait_ready(180)
        print("simulator and server are up", flush=True)
        report = run_demo(options)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        return 130
    except Exception as exc:
        print(f"demo failed: {exc}", flush=True)
        return 1
    finally:
        exit_codes = {child.name: child.stop() for child in reversed(children)}
        Path(demo_params).unlink(missing_ok=True)
        if report:
            report["children_exit_codes"] = exit_codes
            print_report(report)
    return 0 if report.get("policy", {}).get("termination") == "completed" else 1


def run_demo(options: argparse.Namespace) -> dict:
    """Drive the robot, query the world model and the imagination node; returns what happened."""
    import numpy as np
    import rclpy
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import Bool, Float64

    from motus_ros.client import MotusClient
    from motus_ros.profiles import load_profile

    profile = load_profile(options.profile)
    rclpy.init()
    client = MotusClient(node_name="motus_demo")
    counts = {"commands": 0, "imagined_frames": 0, "predicted_frames": 0}
    outcome = {"success": False, "max_reward": 0.0}
    latest_state: list = []
    try:
        node = client.node
        command_type = _command_message_type(profile)
        for topic in profile.command_topics:
            node.create_subscription(command_type, topic, lambda _: counts.__setitem__("commands", counts["commands"] + 1), 100)
        node.create_subscription(Image, "/imagination/imagined/high", lambda _: counts.__setitem__("imagined_frames", counts["imagined_frames"] + 1), 10)
        node.create_subscription(Image, "/world_model/imagined/high", lambda _: counts.__setitem__("predicted_frames", counts["predicted_frames"] + 1), 10)
        node.create_subscription(Bool, "/aloha_sim/success", lambda m: outcome.__setitem__("success", outcome["success"] or m.data), 10)
        node.create_subscription(Float64, "/aloha_sim/reward", lambda m: outcome.__setitem__("max_reward", max(outcome["max_reward"], m.data)), 10)
        node.create_subscription(JointState, profile.joint_state_topics[0], lambda m: latest_state.append(m), 10)
        if not client.wait_for_server(60):
            raise RuntimeError("the server's interfaces did not appear")
        client.spin(3.0, until=lambda: len(latest_state) > 5)

        # 1. The policy drives the robot.
        counts["commands"] = 0
        start = time.monotonic()
        if not client.run_policy(options.instruction, max_duration_s=options.duration):
            raise RuntimeError("the RunPolicy goal was rejected")
        rates, latencies, next_print = [], [], time.monotonic() + 2.0
        while not client.is_task_complete(0.05):
            feedback = client.get_feedback()
            if feedback is not None and time.monotonic() >= next_print:
                next_print += 2.0
                rates.append(feedback.control_rate_hz)
                latencies.append(feedback.last_inference_ms)
                hold = f", holding ({feedback.hold_reason})" if feedback.holding else ""
                print(f"  step {feedback.step:5d}  chunks {feedback.chunks:3d}  rate {feedback.control_rate_hz:5.1f} Hz  "
                      f"inference {feedback.last_inference_ms:6.1f} ms{hold}", flush=True)
        elapsed = time.monotonic() - start
        result = client.get_result()
        client.spin(0.3)
        policy = {
            "termination": result.termination, "error": result.error.message, "steps": int(result.steps),
            "chunks": int(result.chunks), "duration_s": round(float(result.duration_s), 2),
            "commands_received_on_robot_topics": counts["commands"],
            "command_rate_hz": round(counts["commands"] / elapsed, 1),
            "target_control_rate_hz": profile.control_rate_hz,
            "feedback_control_rate_hz_median": round(float(np.median(rates)), 1) if rates else None,
            "inference_latency_ms_median": round(float(np.median([x for x in latencies if x > 0] or [0.0])), 1),
        }

        # 2. The world model: what executing the policy's next chunk would look like.
        plan = _retry(client, lambda: client.predict_actions(options.instruction, steps=options.steps))
        if plan.error.code != 0:
            raise RuntimeError(f"predict_actions failed: {plan.error.message}")
        future = _retry(client, lambda: client.predict_future(plan.trajectory, steps=options.steps, publish=True))
        # 3. Imagination (joint mode: frames and actions).
        imagined = _retry(client, lambda: client.imagine(options.instruction, with_actions=True, steps=options.steps, publish=True))
        client.spin(3.0, until=lambda: counts["imagined_frames"] >= len(imagined.frames) and counts["predicted_frames"] >= len(future.frames))
        return {
            "policy": policy,
            "world_model": {"error": future.error.message or "ok", "frames": len(future.frames),
                            "cameras": list(future.frames[0].camera_names) if future.frames else [],
                            "total_ms": round(future.timing.total_ms, 1), "published_frames_seen": counts["predicted_frames"]},
            "imagination": {"error": imagined.error.message or "ok", "frames": len(imagined.frames),
                            "trajectory_points": len(imagined.trajectory.points), "total_ms": round(imagined.timing.total_ms, 1),
                            "replayed_frames_seen": counts["imagined_frames"]},
            "episode": {"success": bool(outcome["success"]), "max_reward": outcome["max_reward"]},
        }
    finally:
        client.destroy()
        rclpy.try_shutdown()


def _retry(client, call, attempts: int = 5):
    """Call again while the server has no fresh observation yet (a loaded CPU delays the sim's cameras)."""
    from motus_msgs.msg import ErrorCode

    for _ in range(attempts - 1):
        result = call()
        if result.error.code != ErrorCode.NO_OBSERVATION:
            return result
        client.spin(0.5)
    return call()


def _command_message_type(profile):
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray
    from trajectory_msgs.msg import JointTrajectory

    types = {"forward_command": Float64MultiArray, "joint_trajectory": JointTrajectory, "joint_state_per_arm": JointState}
    if profile.command_interface not in types:
        raise ValueError(f"the demo counts commands of {sorted(types)}, not {profile.command_interface!r}")
    return types[profile.command_interface]


def print_report(report: dict) -> None:
    policy, episode = report["policy"], report["episode"]
    print("\n=== motus demo report ===")
    print(f"policy:        {policy['termination']} after {policy['duration_s']} s: {policy['steps']} control steps, "
          f"{policy['chunks']} chunks")
    print(f"commands:      {policy['commands_received_on_robot_topics']} reached the robot at {policy['command_rate_hz']} Hz "
          f"(target {policy['target_control_rate_hz']:g} Hz)")
    print(f"inference:     {policy['inference_latency_ms_median']} ms median per chunk")
    print(f"world model:   {report['world_model']['frames']} predicted frames per camera, "
          f"{report['world_model']['published_frames_seen']} published")
    print(f"imagination:   {report['imagination']['frames']} imagined frames, {report['imagination']['trajectory_points']} "
          f"action points, {report['imagination']['replayed_frames_seen']} replayed on ~/imagined/high")
    print(f"episode:       success={episode['success']} max_reward={episode['max_reward']}")
    print(json.dumps(report, indent=2), flush=True)


if __name__ == "__main__":
    sys.exit(main())
