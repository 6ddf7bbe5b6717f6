"""The Motus demo (`make demo`, `python -m motus_ros.demo`): the simulated ALOHA driven by the Motus server.

1. starts `motus_sim` (gym-aloha transfer cube, MuJoCo) and `motus_server` with the shipped checkpoint
   models/motus-small-aloha-transfer-cube (trained on the scripted transfer-cube demonstrations) as child processes;
2. resets the simulated episode (the cube at the pose of `--seed`, the arms at their start pose), then runs a
   RunPolicy goal for one episode while counting the commands that reach the robot's command topic;
3. asks the world model to predict the future of the robot's next chunk, and the imagination node to imagine
   the task (both replayed on ~/imagined/<camera> for rviz);
4. prints what happened (which checkpoint, commands, control rate, inference latency, imagined frames, the
   episode's outcome) and stops the children.

`--random-weights` runs the preset with random weights instead: the arms move, but not towards the cube.

The process helpers here (Child, executable, server_config, suite_parameters, Suite, SimMonitor, policy_timing)
are shared with `motus eval-ros` (motus_ros.evaluation).
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
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from motus_ros.checkpoints import DEFAULT_SIM_CHECKPOINT, DEFAULT_SIM_INSTRUCTION, resolve_checkpoint

READY_SERVER = "MOTUS SERVER READY"
READY_SIM = "MOTUS_SIM READY"
SIM_NODE = "/aloha_sim"

# Real-time settings of the simulated loop on a small CPU. A motus-small-aloha chunk spans 16 actions x
# downsample_rate 2 = 32 control steps = 0.64 s at 50 Hz.
# One request is in flight at a time and a chunk's actions start at its observation, so a chunk arriving L steps
# after its request covers 32 - L more steps and the next one arrives L steps later at the earliest: the robot never
# waits when L <= 16 steps (0.32 s). The next chunk is therefore requested when 16 planned steps remain (earlier
# requests would only add CPU load; with slower inference the policy replans continuously, chunks ensembled).
DEFAULT_STEPS = 2  # Euler steps per chunk (the model's default is 10): ~0.1 s in-process, 0.2-0.35 s in the server here
CHUNK_REQUEST_THRESHOLD = 16
# The sim renders the three cameras on its own thread as close to this rate as the CPU allows. At 5 Hz the images
# were up to 0.2 s older than the joint state, and the shipped policy scored 1/10 through ROS against 5/10 at 25 Hz
# (same seeds; inference time and the 50 Hz control rate unchanged; docs/results.md).
DEFAULT_CAMERA_RATE_HZ = 25.0
# torch intra-op threads of the server: rendering takes most of a core of the 2, and two threads waiting on each
# other made a chunk take 4.4 s instead of 0.4 s (measured with other jobs running).
DEFAULT_TORCH_THREADS = 1


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


def server_config() -> Path:
    """config/motus_server.yaml from the source tree, else from the installed share/motus_ros."""
    source = Path(__file__).resolve().parents[2] / "config" / "motus_server.yaml"
    if source.is_file():
        return source
    from ament_index_python.packages import get_package_share_directory

    return Path(get_package_share_directory("motus_ros")) / "config" / "motus_server.yaml"


def suite_parameters(steps: int, chunk_request_threshold: int = CHUNK_REQUEST_THRESHOLD) -> str:
    """A params file with the simulated loop's settings for every node. Node sections (not global `-p`):
    node-specific entries of config/motus_server.yaml would win over global overrides. The simulator renders its
    cameras on the CPU (~150 ms for the three) and falls behind under load, so older and less synchronised frames
    are tolerated."""
    from motus_ros.server import PARAMETER_SECTIONS
    import yaml

    values = {"default_steps": int(steps), "max_age_s": 1.0, "max_skew_s": 0.6,
              "chunk_request_threshold": int(chunk_request_threshold)}
    sections = {f"/**/{name}": {"ros__parameters": dict(values)} for name in PARAMETER_SECTIONS}
    handle = tempfile.NamedTemporaryFile("w", prefix="motus_demo_", suffix=".yaml", delete=False)
    with handle:
        yaml.safe_dump(sections, handle)
    return handle.name


def use_private_domain() -> str:
    """A private DDS domain unless ROS_DOMAIN_ID is set: two demos or evaluations (or a test run) on one machine
    must not drive each other."""
    if "ROS_DOMAIN_ID" not in os.environ:
        os.environ["ROS_DOMAIN_ID"] = str(random.randint(1, 101))
    return os.environ["ROS_DOMAIN_ID"]


def model_description(checkpoint: str, preset: str) -> str:
    return checkpoint or f"{preset} with RANDOM weights (the arms move, but not to the task)"


class Suite:
    """motus_sim + motus_server as child processes (the simulated robot and the model server).

    checkpoint: a resolved checkpoint folder, or "" for `preset` with random weights."""

    def __init__(self, *, checkpoint: str, preset: str, profile: str = "aloha_sim", task: str = "transfer_cube",
                 seed: int = 0, camera_rate_hz: float = DEFAULT_CAMERA_RATE_HZ, steps: int = DEFAULT_STEPS,
                 chunk_request_threshold: int = CHUNK_REQUEST_THRESHOLD, torch_threads: int = DEFAULT_TORCH_THREADS,
                 verbose: bool = False) -> None:
        self.checkpoint, self.preset, self.profile, self.task, self.seed = checkpoint, preset, profile, task, seed
        self.camera_rate_hz, self.steps, self.chunk_request_threshold = camera_rate_hz, steps, chunk_request_threshold
        self.torch_threads, self.verbose = torch_threads, verbose
        self.children: list[Child] = []
        self.params_file = ""
        self.exit_codes: dict[str, int | None] = {}

    def start(self, sim_timeout_s: float = 120.0, server_timeout_s: float = 180.0) -> None:
        self.params_file = suite_parameters(self.steps, self.chunk_request_threshold)
        server_args = ["--preset", self.preset, "--profile", self.profile, "--torch-threads", str(int(self.torch_threads))]
        if self.checkpoint:
            server_args += ["--checkpoint", self.checkpoint]
        ros_args = ["--ros-args", "--params-file", str(server_config()), "--params-file", self.params_file]
        sim = Child("sim", [*executable("motus_sim", "motus_ros.sim.aloha_sim_node"), "--ros-args",
                            "-p", f"profile:={self.profile}", "-p", f"task:={self.task}", "-p", f"seed:={int(self.seed)}",
                            "-p", f"camera_rate_hz:={float(self.camera_rate_hz)!r}"], READY_SIM, self.verbose)
        self.children.append(sim)
        server = Child("server", [*executable("motus_server", "motus_ros.server"), *server_args, *ros_args], READY_SERVER, self.verbose)
        self.children.append(server)
        sim.wait_ready(sim_timeout_s)
        server.wait_ready(server_timeout_s)

    def stop(self) -> dict[str, int | None]:
        """Stop the server first (it holds the robot), then the sim; returns their exit codes."""
        for child in reversed(self.children):
            self.exit_codes[child.name] = child.stop()
        self.children.clear()
        if self.params_file:
            Path(self.params_file).unlink(missing_ok=True)
            self.params_file = ""
        return dict(self.exit_codes)

    def __enter__(self) -> "Suite":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class SimMonitor:
    """The simulated robot seen from a client node: episode resets (`seed` parameter + ~/reset), fresh camera
    frames, the reward and success of the current episode, and the high camera's frames kept for a video.

    Rewards and frames count only between begin_episode() and end_episode(); call `client.spin` (or any spin of
    the client's executor) to receive them."""

    def __init__(self, client: Any, profile: Any, sim_node: str = SIM_NODE, video_role: str = "high") -> None:
        from rcl_interfaces.srv import SetParameters
        from sensor_msgs.msg import Image
        from std_msgs.msg import Bool, Float64
        from std_srvs.srv import Trigger

        self.client, self.node = client, client.node
        self.video_role = video_role
        self.roles = [camera.role for camera in profile.cameras]
        self.latest_stamp: dict[str, float] = {}
        self.recording = False
        self.frames: list[Any] = []
        self.active = False
        self.rewards: list[float] = []
        self.success_seen = False
        for camera in profile.cameras:
            self.node.create_subscription(Image, camera.topic, lambda m, role=camera.role: self._on_image(role, m), 10)
        self.node.create_subscription(Float64, f"{sim_node}/reward", self._on_reward, 10)
        self.node.create_subscription(Bool, f"{sim_node}/success", self._on_success, 10)
        self._reset = self.node.create_client(Trigger, f"{sim_node}/reset")
        self._set_parameters = self.node.create_client(SetParameters, f"{sim_node}/set_parameters")
        self._trigger_type = Trigger

    def _on_image(self, role: str, message: Any) -> None:
        from motus_ros.conversions import stamp_to_seconds

        self.latest_stamp[role] = stamp_to_seconds(message.header.stamp)
        if self.recording and role == self.video_role:
            from motus_ros.conversions import image_to_numpy_fallback

            self.frames.append(image_to_numpy_fallback(message))

    def _on_reward(self, message: Any) -> None:
        if self.active:
            self.rewards.append(float(message.data))

    def _on_success(self, message: Any) -> None:
        if self.active:
            self.success_seen = self.success_seen or bool(message.data)

    def now_s(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def wait_for_sim(self, timeout_s: float = 30.0) -> bool:
        return self._reset.wait_for_service(timeout_sec=timeout_s) and self._set_parameters.wait_for_service(timeout_sec=timeout_s)

    def set_seed(self, seed: int, timeout_s: float = 10.0) -> None:
        """Set the sim's `seed` parameter (the object pose of the next ~/reset)."""
        from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
        from rcl_interfaces.srv import SetParameters

        value = ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=int(seed))
        request = SetParameters.Request(parameters=[Parameter(name="seed", value=value)])
        response = self.client.spin_until(self._set_parameters.call_async(request), timeout_s)
        if not response.results or not response.results[0].successful:
            reason = response.results[0].reason if response.results else "no result"
            raise RuntimeError(f"the simulator refused seed {seed}: {reason}")

    def reset(self, seed: int | None = None, timeout_s: float = 10.0, fresh_frames_timeout_s: float = 15.0) -> float:
        """Start a new episode: optionally set the seed, call ~/reset, then wait until every camera has published a
        frame rendered after the reset (so the policy's first observation shows the new episode). Returns the
        reset time (node clock, s)."""
        if seed is not None:
            self.set_seed(seed, timeout_s)
        response = self.client.spin_until(self._reset.call_async(self._trigger_type.Request()), timeout_s)
        if not response.success:
            raise RuntimeError(f"the simulator's reset failed: {response.message}")
        reset_s = self.now_s()
        fresh = lambda: all(self.latest_stamp.get(role, 0.0) > reset_s for role in self.roles)  # noqa: E731
        self.client.spin(fresh_frames_timeout_s, until=fresh)
        if not fresh():
            raise RuntimeError(f"no camera frames after the reset within {fresh_frames_timeout_s:g} s")
        return reset_s

    def begin_episode(self, record: bool = False) -> None:
        self.rewards, self.success_seen, self.frames = [], False, []
        self.active, self.recording = True, record

    def end_episode(self) -> None:
        self.active, self.recording = False, False

    @property
    def max_reward(self) -> float:
        return max(self.rewards, default=0.0)

    @property
    def final_reward(self) -> float:
        return self.rewards[-1] if self.rewards else 0.0


def policy_timing(feedback: Sequence[Any]) -> dict[str, Any]:
    """Medians of a RunPolicy goal's feedback: the measured control rate (after its first second, the rate's
    window), the inference latency of each chunk (read when the chunk count grows) and the share of feedback
    messages in which the policy held the robot."""
    import numpy as np

    rates = [float(f.control_rate_hz) for f in feedback if f.step > 50]
    latencies, chunks = [], 0
    for message in feedback:
        if message.chunks > chunks and message.last_inference_ms > 0:
            latencies.append(float(message.last_inference_ms))
        chunks = max(chunks, int(message.chunks))
    return {
        "control_rate_hz_median": round(float(np.median(rates)), 1) if rates else None,
        "inference_ms_median": round(float(np.median(latencies)), 1) if latencies else None,
        "inference_ms_mean": round(float(np.mean(latencies)), 1) if latencies else None,
        "inference_samples": len(latencies),
        "holding_fraction": round(sum(bool(f.holding) for f in feedback) / len(feedback), 3) if feedback else None,
    }


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="motus_ros.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds the policy drives the robot (one episode)")
    parser.add_argument("--instruction", default=DEFAULT_SIM_INSTRUCTION, help="the policy's task instruction")
    parser.add_argument("--checkpoint", default=DEFAULT_SIM_CHECKPOINT,
                        help="checkpoint folder or shipped model name (default: the shipped transfer-cube model)")
    parser.add_argument("--random-weights", action="store_true", help="ignore --checkpoint: run --preset with random weights")
    parser.add_argument("--preset", default="motus-small-aloha", help="preset used with --random-weights")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                        help="Euler steps per request (few keep CPU inference inside a chunk's 0.64 s)")
    parser.add_argument("--chunk-request-threshold", type=int, default=CHUNK_REQUEST_THRESHOLD,
                        help="request the next chunk when this many planned control steps remain")
    parser.add_argument("--torch-threads", type=int, default=DEFAULT_TORCH_THREADS, help="the server's torch threads (0: torch's default)")
    parser.add_argument("--seed", type=int, default=1000, help="object pose of the episode (the demonstrations used 0-49)")
    parser.add_argument("--profile", default="aloha_sim", help="robot profile of the simulated robot")
    parser.add_argument("--camera-rate", type=float, default=DEFAULT_CAMERA_RATE_HZ,
                        help="simulated camera rate (Hz); CPU rendering competes with inference for the 2 cores")
    parser.add_argument("--task", default="transfer_cube", help="gym-aloha task: transfer_cube or insertion")
    parser.add_argument("--verbose", action="store_true", help="echo the children's logs")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_arguments(argv)
    started = time.monotonic()
    checkpoint = ""
    if not options.random_weights:
        try:
            checkpoint = resolve_checkpoint(options.checkpoint)
        except (FileNotFoundError, ValueError) as exc:
            print(f"demo failed: {exc}\n(--random-weights runs the preset with random weights instead)", flush=True)
            return 1
    print(f"ROS_DOMAIN_ID={use_private_domain()} (export it to watch with rviz2 / ros2 topic)", flush=True)
    model = model_description(checkpoint, options.preset)
    print(f"motus demo: simulated ALOHA ({options.task}, seed {options.seed}) + motus_server ({model}), "
          f"policy for {options.duration:g} s with {options.steps} Euler steps per chunk", flush=True)
    suite = Suite(checkpoint=checkpoint, preset=options.preset, profile=options.profile, task=options.task,
                  seed=options.seed, camera_rate_hz=options.camera_rate, steps=options.steps,
                  chunk_request_threshold=options.chunk_request_threshold, torch_threads=options.torch_threads,
                  verbose=options.verbose)
    report: dict = {}
    try:
        suite.start()
        print("simulator and server are up", flush=True)
        report = run_demo(options)
        report["model"] = {"checkpoint": checkpoint or None, "preset": None if checkpoint else options.preset,
                           "random_weights": not checkpoint, "steps": options.steps}
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        return 130
    except Exception as exc:
        print(f"demo failed: {exc}", flush=True)
        return 1
    finally:
        exit_codes = suite.stop()
        if report:
            report["children_exit_codes"] = exit_codes
            report["wall_time_s"] = round(time.monotonic() - started, 1)
            print_report(report)
    return 0 if report.get("policy", {}).get("termination") == "completed" else 1


def run_demo(options: argparse.Namespace) -> dict:
    """Reset the episode, drive the robot, query the world model and the imagination node; returns what happened."""
    import rclpy
    from sensor_msgs.msg import Image, JointState

    from motus_ros.client import MotusClient
    from motus_ros.profiles import load_profile

    profile = load_profile(options.profile)
    rclpy.init()
    client = MotusClient(node_name="motus_demo")
    counts = {"commands": 0, "imagined_frames": 0, "predicted_frames": 0}
    latest_state: list = []
    try:
        node = client.node
        command_type = _command_message_type(profile)
        for topic in profile.command_topics:
            node.create_subscription(command_type, topic, lambda _: counts.__setitem__("commands", counts["commands"] + 1), 100)
        node.create_subscription(Image, "/imagination/imagined/high", lambda _: counts.__setitem__("imagined_frames", counts["imagined_frames"] + 1), 10)
        node.create_subscription(Image, "/world_model/imagined/high", lambda _: counts.__setitem__("predicted_frames", counts["predicted_frames"] + 1), 10)
        node.create_subscription(JointState, profile.joint_state_topics[0], lambda m: latest_state.append(m), 10)
        sim = SimMonitor(client, profile)
        if not client.wait_for_server(60) or not sim.wait_for_sim(30):
            raise RuntimeError("the server's or the simulator's interfaces did not appear")
        client.spin(3.0, until=lambda: len(latest_state) > 5)

        # 1. A fresh episode: the cube at the seed's pose, the arms at their start pose; then the policy drives.
        sim.reset(options.seed)
        sim.begin_episode()
        counts["commands"] = 0
        start = time.monotonic()
        if not client.run_policy(options.instruction, max_duration_s=options.duration):
            raise RuntimeError("the RunPolicy goal was rejected")
        next_print = time.monotonic() + 2.0
        while not client.is_task_complete(0.05):
            feedback = client.get_feedback()
            if feedback is not None and time.monotonic() >= next_print:
                next_print += 2.0
                hold = f", holding ({feedback.hold_reason})" if feedback.holding else ""
                print(f"  step {feedback.step:5d}  chunks {feedback.chunks:3d}  rate {feedback.control_rate_hz:5.1f} Hz  "
                      f"inference {feedback.last_inference_ms:6.1f} ms  reward {sim.max_reward:g}{hold}", flush=True)
        elapsed = time.monotonic() - start
        sim.end_episode()
        result = client.get_result()
        client.spin(0.3)
        timing = policy_timing(client.policy_task.feedback)
        policy = {
            "termination": result.termination, "error": result.error.message, "steps": int(result.steps),
            "chunks": int(result.chunks), "duration_s": round(float(result.duration_s), 2),
            "commands_received_on_robot_topics": counts["commands"],
            "command_rate_hz": round(counts["commands"] / elapsed, 1),
            "target_control_rate_hz": profile.control_rate_hz,
            "feedback_control_rate_hz_median": timing["control_rate_hz_median"],
            "inference_latency_ms_median": timing["inference_ms_median"],
            "holding_fraction": timing["holding_fraction"],
        }
        episode = {"seed": options.seed, "success": bool(sim.success_seen), "max_reward": sim.max_reward,
                   "final_reward": sim.final_reward}

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
            "episode": episode,
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
    policy, episode, model = report["policy"], report["episode"], report.get("model", {})
    print("\n=== motus demo report ===")
    if model:
        which = model["checkpoint"] or f"preset {model['preset']} with RANDOM weights"
        print(f"model:         {which} ({model['steps']} Euler steps per chunk)")
    print(f"policy:        {policy['termination']} after {policy['duration_s']} s: {policy['steps']} control steps, "
          f"{policy['chunks']} chunks")
    print(f"commands:      {policy['commands_received_on_robot_topics']} reached the robot at {policy['command_rate_hz']} Hz "
          f"(target {policy['target_control_rate_hz']:g} Hz)")
    print(f"inference:     {policy['inference_latency_ms_median']} ms median per chunk; control rate "
          f"{policy['feedback_control_rate_hz_median']} Hz median; holding {policy['holding_fraction']} of the time")
    print(f"world model:   {report['world_model']['frames']} predicted frames per camera, "
          f"{report['world_model']['published_frames_seen']} published")
    print(f"imagination:   {report['imagination']['frames']} imagined frames, {report['imagination']['trajectory_points']} "
          f"action points, {report['imagination']['replayed_frames_seen']} replayed on ~/imagined/high")
    print(f"episode:       seed {episode['seed']}: success={episode['success']} max_reward={episode['max_reward']} "
          f"final_reward={episode['final_reward']}")
    if "wall_time_s" in report:
        print(f"wall time:     {report['wall_time_s']} s")
    print(json.dumps(report, indent=2), flush=True)


if __name__ == "__main__":
    sys.exit(main())
