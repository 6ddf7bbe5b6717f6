"""The process harness of the simulated suite: `motus_sim` and `motus_server` as child processes, and a client's
view of the simulated robot. Used by the demo (motus_ros.demo) and by `motus eval-ros` (motus_ros.evaluation).

- `Suite` starts both children (the installed console scripts, else `python -m`), waits for their READY lines,
  and stops them (SIGINT, the server first: it holds the robot; SIGKILL if one hangs);
- the children get the params files of the launch file's plan for `sim:=true` (motus_ros.launch_config, with
  config/sim_realtime.yaml); `use_private_domain` keeps two runs apart;
- `SimMonitor` resets episodes (seed + ~/reset), waits for fresh camera frames, tracks reward and success and
  keeps camera frames for a video (the high camera's, or every camera's for the demo);
- `policy_timing` summarises a RunPolicy goal's feedback (control rate, inference latency, holding share).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from motus_ros.launch_config import config_dir, make_plan, realtime_settings, write_parameter_files

# The lines motus_server (motus_ros.server.READY_LINE) and motus_sim (aloha_sim_node.READY_LINE) print once up;
# copied, not imported, so the harness starts without importing torch or MuJoCo.
READY_SERVER = "MOTUS SERVER READY"
READY_SIM = "MOTUS_SIM READY"
SIM_NODE = "/aloha_sim"
SIM_NODE_NAME = "aloha_sim"

# Real-time settings of the simulated loop on a small CPU: config/sim_realtime.yaml, the file `ros2 launch
# motus_ros aloha.launch.py sim:=true` applies too (its comments say why each value). A motus-small-aloha chunk
# spans 16 actions x downsample_rate 2 = 32 control steps = 0.64 s at 50 Hz; with one request in flight the robot
# never waits while inference stays under the threshold's 16 steps (0.32 s).
REALTIME = realtime_settings()
DEFAULT_STEPS = REALTIME.steps
CHUNK_REQUEST_THRESHOLD = REALTIME.chunk_request_threshold
DEFAULT_CAMERA_RATE_HZ = REALTIME.camera_rate_hz
DEFAULT_TORCH_THREADS = REALTIME.torch_threads


class Child:
    """A child process whose output is collected (and echoed with a prefix when `verbose`)."""

    def __init__(self, name: str, command: list[str], ready_line: str, verbose: bool) -> None:
        self.name, self.ready_line = name, ready_line
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        self._reader = threading.Thread(target=self._read, args=(verbose,), daemon=True)
        self._reader.start()

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
                if self.process.poll() is not None:
                    self._reader.join(timeout=2.0)  # the last lines of a child that died are the useful ones
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

    def __init__(
        self,
        *,
        checkpoint: str,
        preset: str,
        profile: str = "aloha_sim",
        task: str = "transfer_cube",
        seed: int = 0,
        camera_rate_hz: float = DEFAULT_CAMERA_RATE_HZ,
        steps: int = DEFAULT_STEPS,
        chunk_request_threshold: int = CHUNK_REQUEST_THRESHOLD,
        torch_threads: int = DEFAULT_TORCH_THREADS,
        preview: bool = False,
        verbose: bool = False,
    ) -> None:
        self.preview = preview  # the policy node's preview before acting (world-model frames of each chunk)
        self.checkpoint, self.preset, self.profile, self.task, self.seed = checkpoint, preset, profile, task, seed
        self.camera_rate_hz, self.steps, self.chunk_request_threshold = camera_rate_hz, steps, chunk_request_threshold
        self.torch_threads, self.verbose = torch_threads, verbose
        self.children: list[Child] = []
        self.params_files: list[str] = []
        self.exit_codes: dict[str, int | None] = {}

    def start(self, sim_timeout_s: float = 120.0, server_timeout_s: float = 180.0) -> None:
        # The launch file's plan for `sim:=true` with these knobs: the same params files, the same precedence.
        arguments = {
            "sim": "true",
            "profile": self.profile,
            "steps": str(int(self.steps)),
            "torch_threads": str(int(self.torch_threads)),
            "camera_rate": repr(float(self.camera_rate_hz)),
        }
        if self.checkpoint:
            arguments["checkpoint"] = self.checkpoint
        plan = make_plan(arguments, config_dir())
        server_params = [
            *plan.server_parameters,
            {"/**": {"ros__parameters": {"preset": self.preset}}},
            {
                "/**/policy": {
                    "ros__parameters": {
                        "chunk_request_threshold": int(self.chunk_request_threshold),
                        "preview": bool(self.preview),
                    }
                }
            },
        ]
        sim_params = [
            *plan.sim_parameters,
            {SIM_NODE_NAME: {"ros__parameters": {"task": self.task, "seed": int(self.seed)}}},
        ]
        server_files = write_parameter_files(server_params, prefix="motus_demo_")
        sim_files = write_parameter_files(sim_params, prefix="motus_demo_")
        self.params_files = [path for path in server_files + sim_files if Path(path).name.startswith("motus_demo_")]
        sim = Child(
            "sim",
            [
                *executable("motus_sim", "motus_ros.sim.aloha_sim_node"),
                "--ros-args",
                *[argument for path in sim_files for argument in ("--params-file", path)],
            ],
            READY_SIM,
            self.verbose,
        )
        self.children.append(sim)
        server = Child(
            "server",
            [
                *executable("motus_server", "motus_ros.server"),
                *plan.server_arguments,
                "--ros-args",
                *[argument for path in server_files for argument in ("--params-file", path)],
            ],
            READY_SERVER,
            self.verbose,
        )
        self.children.append(server)
        sim.wait_ready(sim_timeout_s)
        server.wait_ready(server_timeout_s)

    def stop(self) -> dict[str, int | None]:
        """Stop the server first (it holds the robot), then the sim; returns their exit codes."""
        for child in reversed(self.children):
            self.exit_codes[child.name] = child.stop()
        self.children.clear()
        for path in self.params_files:
            Path(path).unlink(missing_ok=True)
        self.params_files = []
        return dict(self.exit_codes)

    def __enter__(self) -> Suite:
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
    the client's executor) to receive them. `record_roles` (default: the video role) are the cameras kept while
    recording, each frame as (stamp, uint8 RGB) in `recordings[role]`, subsampled by `record_stride` in both
    directions (the demo keeps half-size frames: a few MB a second instead of tens)."""

    def __init__(
        self,
        client: Any,
        profile: Any,
        sim_node: str = SIM_NODE,
        video_role: str = "high",
        record_roles: Sequence[str] | None = None,
        record_stride: int = 1,
    ) -> None:
        from rcl_interfaces.srv import SetParameters
        from sensor_msgs.msg import CompressedImage, Image
        from std_msgs.msg import Bool, Float64
        from std_srvs.srv import Trigger

        self.client, self.node = client, client.node
        self.video_role = video_role
        self.roles = [camera.role for camera in profile.cameras]
        self.latest_stamp: dict[str, float] = {}
        self.recording = False
        self.record_roles = list(record_roles) if record_roles else [video_role]
        self.record_stride = max(1, int(record_stride))
        self.recordings: dict[str, list[tuple[float, Any]]] = {role: [] for role in self.record_roles}
        self.active = False
        self.rewards: list[float] = []
        self.success_seen = False
        for camera in profile.cameras:  # its own transport: raw Image, or CompressedImage on <topic>/compressed
            kind = CompressedImage if camera.transport == "compressed" else Image
            self.node.create_subscription(
                kind, camera.transport_topic, lambda m, role=camera.role: self._on_image(role, m), 10
            )
        self.node.create_subscription(Float64, f"{sim_node}/reward", self._on_reward, 10)
        self.node.create_subscription(Bool, f"{sim_node}/success", self._on_success, 10)
        self._reset = self.node.create_client(Trigger, f"{sim_node}/reset")
        self._set_parameters = self.node.create_client(SetParameters, f"{sim_node}/set_parameters")
        self._trigger_type = Trigger

    def _on_image(self, role: str, message: Any) -> None:
        from motus_ros import conversions

        stamp = conversions.stamp_to_seconds(message.header.stamp)
        self.latest_stamp[role] = stamp
        if self.recording and role in self.recordings:
            if hasattr(message, "format"):  # CompressedImage
                image = conversions.compressed_to_numpy(message)
            else:
                image = conversions.image_to_numpy_fallback(message)
            stride = self.record_stride
            self.recordings[role].append((stamp, image[::stride, ::stride] if stride > 1 else image))

    @property
    def frames(self) -> list[Any]:
        """The video role's recorded frames, in arrival order."""
        return [image for _, image in self.recordings.get(self.video_role, [])]

    def recorded_views(self) -> list[dict[str, Any]]:
        """The recorded frames grouped by stamp (the simulator renders every camera of one instant together), in
        time order; instants that miss a camera are left out."""
        by_stamp: dict[float, dict[str, Any]] = {}
        for role, frames in self.recordings.items():
            for stamp, image in frames:
                by_stamp.setdefault(stamp, {})[role] = image
        return [views for _, views in sorted(by_stamp.items()) if len(views) == len(self.recordings)]

    def _on_reward(self, message: Any) -> None:
        if self.active:
            self.rewards.append(float(message.data))

    def _on_success(self, message: Any) -> None:
        if self.active:
            self.success_seen = self.success_seen or bool(message.data)

    def now_s(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def wait_for_sim(self, timeout_s: float = 30.0) -> bool:
        return self._reset.wait_for_service(timeout_sec=timeout_s) and self._set_parameters.wait_for_service(
            timeout_sec=timeout_s
        )

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
        self.rewards, self.success_seen = [], False
        self.recordings = {role: [] for role in self.record_roles}
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


def retry_without_observation(client: Any, call: Callable[[], Any], attempts: int = 5) -> Any:
    """Call again while the server has no fresh observation yet (a loaded CPU delays the sim's cameras)."""
    from motus_msgs.msg import ErrorCode

    for _ in range(attempts - 1):
        result = call()
        if result.error.code != ErrorCode.NO_OBSERVATION:
            return result
        client.spin(0.5)
    return call()


def command_message_type(profile: Any) -> type:
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray
    from trajectory_msgs.msg import JointTrajectory

    types = {
        "forward_command": Float64MultiArray,
        "joint_trajectory": JointTrajectory,
        "joint_state_per_arm": JointState,
    }
    if profile.command_interface not in types:
        raise ValueError(f"the harness counts commands of {sorted(types)}, not {profile.command_interface!r}")
    return types[profile.command_interface]
