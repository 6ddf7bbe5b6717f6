"""The policy node's control loop against stand-in drivers (FakeSensors in this process; the closed loop with the
simulated ALOHA is test_server_sim_loop.py): commands flow at about the control rate while chunks are computed,
never leave the joint limits, hold on stale input, and runs end by limit, cancel, preemption or e-stop; dry run
publishes the plan and no commands; diagnostics are published."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from ros_helpers import SensorThread, server_command, start_process, stop_process, wait_until_serving
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory

from motus_msgs.msg import ErrorCode
from motus_ros.client import GOAL_STATUS_ABORTED, GOAL_STATUS_CANCELED, GOAL_STATUS_SUCCEEDED, MotusClient
from motus_ros.profiles import load_profile

pytestmark = pytest.mark.timeout(240)

PROFILE = load_profile("aloha_sim")
COMMAND_TOPIC = PROFILE.command_topics[0]  # forward_command: Float64MultiArray
SMALL = {"preset": "motus-small", "default_steps": 1, "chunk_request_threshold": 10}
LOWER, UPPER = np.asarray(PROFILE.lower_limits), np.asarray(PROFILE.upper_limits)
# A run that reaches its limit: "completed" when the robot moved, "held_throughout" when every chunk arrived too
# late to use (inference slower than a chunk on a loaded CPU). Which one depends on the machine's load; these tests
# check the commands, so both are fine here (test_no_camera_* pins the honest outcome itself).
ENDED_BY_LIMIT = {(GOAL_STATUS_SUCCEEDED, "completed"), (GOAL_STATUS_ABORTED, "held_throughout")}


@pytest.fixture(scope="module")
def server():
    # motus-small: its 16-step chunk (320 ms at 50 Hz) outlasts a 2-step inference here, so chunks arrive in time.
    process = start_process(server_command("--torch-threads", "1", **SMALL), "MOTUS SERVER READY")
    yield process
    stop_process(process)


class Recorder:
    """Thread-safe list of (arrival time, message)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: list[tuple[float, object]] = []

    def __call__(self, message) -> None:
        with self.lock:
            self.items.append((time.monotonic(), message))

    def since(self, start: float) -> list[tuple[float, object]]:
        with self.lock:
            return [item for item in self.items if item[0] >= start]


@pytest.fixture(scope="module")
def rig(ros_context, server):
    drivers = SensorThread(PROFILE, node_name="policy_test_drivers")
    commands, diagnostics = Recorder(), Recorder()
    # Deep queue: a busy test process must not drop commands it is counting.
    drivers.node.create_subscription(Float64MultiArray, COMMAND_TOPIC, commands, 1000)
    drivers.node.create_subscription(DiagnosticArray, "/diagnostics", diagnostics, 10)
    client = MotusClient(node_name="policy_test_client")
    assert client.wait_for_server(60)
    client.spin(10.0, until=lambda: drivers.sensors.step > 15)
    wait_until_serving(client)
    yield client, drivers.sensors, commands, diagnostics
    client.destroy()
    drivers.close()


def command_array(items) -> np.ndarray:
    return np.array([message.data for _, message in items], dtype=np.float64).reshape(-1, len(PROFILE.joint_names))


# Cross-process timing on a 2-core machine: retried, not loosened (the stale-input test waits for the hold).
TIMING_SENSITIVE = pytest.mark.flaky(reruns=2, reruns_delay=2)


@TIMING_SENSITIVE
def test_run_sends_a_command_every_control_tick_within_limits(rig, server):
    """Counts, not rates (the measured command rate is in bench/bench_ros.py): every control tick of the run
    published one command, the commands arrived in order, inside the limits and the per-step deltas."""
    client, sensors, commands, diagnostics = rig
    sensors.reset()
    sensors.position = np.clip(np.full(14, 0.2), LOWER, UPPER)
    start = time.monotonic()
    assert client.run_policy("pick", max_duration_s=3.0)
    while not client.is_task_complete(0.1):
        pass
    result = client.get_result()
    assert (client.policy_task.status, result.termination) in ENDED_BY_LIMIT, result.error.message
    assert result.chunks >= 2, "the policy did not keep requesting chunks"
    client.spin(0.5)  # the last commands in flight
    sent = command_array(commands.since(start))
    feedback = client.policy_task.feedback
    # One command per control tick: the commands counted here match the run's own count (a deep queue: none lost),
    # and its count matches its control ticks as last reported in feedback (or more: ticks after the last feedback).
    assert abs(result.steps - len(sent)) <= 2, f"{result.steps} commands published, {len(sent)} received"
    assert feedback and result.steps >= feedback[-1].step - 1
    assert np.all(sent >= LOWER - 1e-9) and np.all(sent <= UPPER + 1e-9), "a command left the joint limits"
    steps = np.abs(np.diff(sent, axis=0))
    assert np.all(steps <= np.asarray(PROFILE.max_delta_per_step) + 1e-9), "a command exceeded the per-step delta"
    assert max(f.last_inference_ms for f in feedback) > 0 and feedback[-1].chunks >= 1
    assert any(not f.holding for f in feedback), (
        f"the policy only held: {sorted({f.hold_reason for f in feedback})}, "
        f"inference {max(f.last_inference_ms for f in feedback):.0f} ms"
    )
    # Diagnostics with the control rate and the inference latency.
    statuses = [
        status for _, message in diagnostics.since(start) for status in message.status if "policy" in status.name
    ]
    assert statuses, "no /diagnostics from the policy node"
    keys = {value.key for value in statuses[-1].values}
    assert {"control_rate_hz", "inference_latency_ms", "holding", "hold_reason", "estop", "dry_run"} <= keys


def test_no_camera_means_no_observation_not_completed(rig):
    """No camera publishes: the run reaches its limit holding throughout and says so (not "completed")."""
    client, sensors, _, _ = rig
    sensors.reset()
    sensors.skip = {camera.role for camera in PROFILE.cameras}
    try:
        client.spin(1.5)  # the last frames age past max_age_s
        assert client.run_policy("pick", max_steps=40)
        result = client.get_result(60)
        assert result.termination == "no_observation" and result.error.code == ErrorCode.NO_OBSERVATION, result
        assert result.moving_steps == 0 and result.chunks == 0 and result.held_fraction == 1.0
        assert result.hold_reasons and "ticks: " in result.hold_reasons[0]
        assert client.policy_task.status == GOAL_STATUS_ABORTED
    finally:
        sensors.reset()
        client.spin(1.0)


def test_termination_vocabulary_is_the_action_files():
    """The node terminates only with the values RunPolicy.action declares (read from the file, not the node)."""
    import re
    from pathlib import Path

    from motus_ros import policy_node

    action = (Path(__file__).resolve().parents[2] / "src" / "motus_msgs" / "action" / "RunPolicy.action").read_text()
    declared = dict(re.findall(r"^string TERMINATION_(\w+)=(\w+)", action, re.MULTILINE))
    assert set(declared.values()) == {
        "completed",
        "held_throughout",
        "no_observation",
        "cancelled",
        "estop",
        "preempted",
        "error",
    }
    used = {
        name[len("TERMINATION_") :]: value
        for name, value in vars(policy_node).items()
        if name.startswith("TERMINATION_")
    }
    assert used == declared


def test_joint_state_beyond_the_limits_holds(rig):
    """The robot reports a waist far beyond its limit: refused as input (hold with the reason), and every command
    stays inside the limits and one delta from the previous one."""
    client, sensors, commands, _ = rig
    sensors.reset()
    sensors.position = np.clip(np.full(14, 0.2), LOWER, UPPER)
    sensors.position[0] = 4.0
    client.spin(0.5)  # the absurd state reaches the server before the run starts
    start = time.monotonic()
    try:
        assert client.run_policy("pick", max_steps=60)
        client.spin(
            10.0, until=lambda: bool(client.get_feedback() and "out of limits" in client.get_feedback().hold_reason)
        )
        feedback = client.get_feedback()
        assert feedback.holding and "left_arm_waist" in feedback.hold_reason, feedback
        result = client.get_result(60)
        # Honest outcome: not "completed" when the robot never moved (no usable observation: the state was refused).
        assert result.termination == "no_observation" and result.error.code == ErrorCode.NO_OBSERVATION
        assert result.chunks == 0, "a chunk was requested from an absurd state"
        assert result.moving_steps == 0 and result.held_fraction == 1.0 and "left_arm_waist" in result.hold_reasons[0]
        assert client.policy_task.status == GOAL_STATUS_ABORTED
        sent = command_array(commands.since(start))
        assert np.all(sent >= LOWER - 1e-9) and np.all(sent <= UPPER + 1e-9)
        assert np.all(np.abs(np.diff(sent, axis=0)) <= np.asarray(PROFILE.max_delta_per_step) + 1e-9)
    finally:
        sensors.position = np.clip(np.full(14, 0.2), LOWER, UPPER)


@TIMING_SENSITIVE
def test_stale_input_holds_and_cancel_stops(rig):
    client, sensors, commands, _ = rig
    sensors.reset()
    assert client.run_policy("pick")
    client.spin(2.0)
    sensors.paused = True  # the drivers go silent: stale input
    client.spin(
        2.5,
        until=lambda: bool(
            client.get_feedback() and client.get_feedback().holding and "stale" in client.get_feedback().hold_reason
        ),
    )
    feedback = client.get_feedback()
    assert feedback.holding and "stale" in feedback.hold_reason, feedback
    hold_start = time.monotonic()
    client.spin(0.5)
    held = command_array(commands.since(hold_start))
    assert len(held) > 5, "no hold commands while the input is stale"
    assert np.allclose(held, held[0]), "hold commands moved the robot"
    assert client.cancel_task()
    result = client.get_result()
    assert client.policy_task.status == GOAL_STATUS_CANCELED and result.termination == "cancelled"
    assert result.error.code == ErrorCode.CANCELLED
    client.spin(0.3)
    after = time.monotonic()
    client.spin(0.5)
    assert len(commands.since(after)) == 0, "commands kept coming after the cancel"
    sensors.reset()


def test_new_goal_preempts_and_estop_stops(rig):
    client, sensors, _, _ = rig
    sensors.reset()
    client.spin(1.0)
    assert client.run_policy("pick")
    first = client.policy_task
    client.spin(1.0)
    assert client.run_policy("place")
    first_result = first.result(30)
    assert first.status == GOAL_STATUS_ABORTED and first_result.termination == "preempted"
    assert first_result.error.code == ErrorCode.BUSY
    client.spin(1.0)
    assert client.estop(True).success
    result = client.get_result()
    assert result.termination == "estop" and result.error.code == ErrorCode.ESTOP
    # While engaged, new runs are refused; after release they run again.
    assert client.run_policy("pick", max_steps=20)
    refused = client.get_result()
    assert refused.termination == "estop" and refused.error.code == ErrorCode.ESTOP
    assert client.estop(False).success
    assert client.run_policy("pick", max_steps=25)
    done = client.get_result(60)
    assert done.termination in ("completed", "held_throughout") and done.steps >= 20


def test_dry_run_publishes_the_plan_and_no_commands(rig, spawn_process):
    client, sensors, commands, _ = rig
    sensors.reset()
    spawn_process(
        server_command(ros_args=("-r", "__ns:=/dry"), dry_run=True, **SMALL),
        ready_line="MOTUS SERVER READY",
        timeout=120,
    )
    dry = MotusClient(node_name="dry_run_client", namespace="/dry")
    plans: list[JointTrajectory] = []
    dry.node.create_subscription(JointTrajectory, "/dry/policy/planned_trajectory", plans.append, 10)
    try:
        assert dry.wait_for_server(60)
        start = time.monotonic()
        assert dry.run_policy("pick", max_duration_s=2.5)
        while not dry.is_task_complete(0.1):
            pass
        result = dry.get_result()
        assert result.termination in ("completed", "held_throughout") and result.chunks >= 1, result.error.message
        assert plans, "no plan on ~/planned_trajectory in dry run"
        assert list(plans[-1].joint_names) == PROFILE.joint_names and len(plans[-1].points) >= 1
        assert len(commands.since(start)) == 0, "dry run sent commands to the robot"
    finally:
        dry.destroy()


def test_sigterm_during_a_run_holds_and_exits_cleanly(rig, spawn_process):
    """Regression pinned: on SIGTERM the server deactivates its nodes while the middleware still works, so the
    running goal gets its result, the robot gets a final hold command, waiting requests are cancelled, and the
    process exits 0 within seconds."""
    client, sensors, commands, _ = rig
    sensors.reset()
    process = spawn_process(
        server_command(ros_args=("-r", "__ns:=/term"), max_denoising_steps=10000),
        ready_line="MOTUS SERVER READY",
        timeout=120,
    )
    term = MotusClient(node_name="sigterm_client", namespace="/term")
    try:
        assert term.wait_for_server(60)
        deadline = time.monotonic() + 20
        while term.predict_actions("pick", steps=1).error.code != ErrorCode.NONE and time.monotonic() < deadline:
            term.spin(0.3)  # the new server needs a moment to receive the sensor streams
        assert term.run_policy("pick")
        long_request = term.start_predict_future(np.tile(sensors.position, (4, 1)), PROFILE.joint_names, steps=5000)
        assert long_request.wait_for_feedback(1, 60)
        term.spin(1.0)
        stopped = time.monotonic()
        process.terminate()
        result = term.get_result(30)
        assert result.termination == "error" and result.error.code == ErrorCode.NOT_READY, result.error.message
        assert long_request.result(30).error.code == ErrorCode.NOT_READY
        assert process.wait(timeout=30) == 0
        assert time.monotonic() - stopped < 15
        last = command_array(commands.since(stopped))
        assert len(last) >= 1, "no hold command after SIGTERM"
        assert np.all(last >= LOWER - 1e-9) and np.all(last <= UPPER + 1e-9)
    finally:
        term.destroy()
