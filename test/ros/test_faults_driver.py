"""Fault suite, driver loss: SIGKILL of the robot's driver mid-run holds within 3 control periods (counted in
commands, not timed), and a restarted driver is driven again, with no delta violation throughout. The driver is a
kinematic stand-in in its own process (test/ros/peers/kinematic_robot.py: joint states at 50 Hz that follow the
commands, synthetic cameras), so the test does not depend on how fast a loaded CPU renders MuJoCo. Its own module:
its topics must not be shared with the hostile drivers of test_faults.py."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from ros_helpers import Spinner, server_command
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from test_faults import COMMAND_TOPIC, PROFILE, check_commands

from motus_msgs.msg import ErrorCode
from motus_ros.client import MotusClient

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]
DRIVER = Path(__file__).resolve().parent / "peers" / "kinematic_robot.py"


def test_driver_loss_holds_within_three_control_periods_and_restart_resumes(ros_context, spawn_process):
    """SIGKILL of the driver mid-run (the default joint-state bound: 3 control periods): after the last joint
    state received here, at most 3 commands still move (one more for delivery order between the two topics), then
    the run holds with a stale joint state; a restarted driver is driven again; no delta violation throughout."""
    driver = spawn_process([str(DRIVER)], ready_line="KINEMATIC ROBOT READY", timeout=60)
    spawn_process(
        server_command(
            "--torch-threads",
            "1",
            preset="motus-small",
            default_steps=1,
            chunk_request_threshold=10,
            # Commands at 10 Hz: a chunk then spans 1.6 s, longer than inference takes even on a loaded CPU, so the
            # policy moves; the joint-state bound stays 3 periods of the profile's 50 Hz (60 ms), the driver's rate.
            control_rate_hz=10.0,
            joint_state_max_age_periods=3.0,
            max_age_s=2.0,
            max_skew_s=1.0,
        ),
        ready_line="MOTUS SERVER READY",
        timeout=120,
    )
    spinner = Spinner("driver_loss_recorder")
    events: list[tuple[str, np.ndarray | None]] = []  # ("command", q) / ("joint_state", None), in arrival order
    lock = threading.Lock()

    def on_command(message: Float64MultiArray) -> None:
        with lock:
            events.append(("command", np.asarray(message.data, dtype=np.float64)))

    def on_state(_: JointState) -> None:
        with lock:
            events.append(("joint_state", None))

    spinner.node.create_subscription(Float64MultiArray, COMMAND_TOPIC, on_command, 10000)
    spinner.node.create_subscription(JointState, PROFILE.joint_state_topics[0], on_state, 1000)
    client = MotusClient(node_name="driver_loss_client")
    try:
        assert client.wait_for_server(60)
        deadline = time.monotonic() + 60
        while client.predict_actions("pick", steps=1).error.code != ErrorCode.NONE:
            assert time.monotonic() < deadline, "the server never had a usable observation from the driver"
            client.spin(0.3)
        assert client.run_policy("pick")

        def moving() -> bool:  # the policy drives: several of the last 20 commands moved
            with lock:
                recent = [q for kind, q in events if kind == "command"][-20:]
            return len(recent) == 20 and int(np.sum(np.any(np.abs(np.diff(recent, axis=0)) > 1e-12, axis=1))) >= 5

        client.spin(90, until=moving)
        assert moving(), f"the policy never moved: {client.get_feedback()}"
        driver.kill()
        driver.wait()
        client.spin(
            20, until=lambda: bool(client.get_feedback() and "joint_state" in client.get_feedback().hold_reason)
        )
        feedback = client.get_feedback()
        assert feedback.holding and "stale: joint_state" in feedback.hold_reason, feedback
        client.spin(1.0)  # a stream of hold commands to look at
        with lock:
            snapshot = list(events)
        last_state = max(i for i, (kind, _) in enumerate(snapshot) if kind == "joint_state")
        before = [q for kind, q in snapshot[:last_state] if kind == "command"]
        after = [q for kind, q in snapshot[last_state + 1 :] if kind == "command"]
        assert before and len(after) > 10, "no hold commands after the driver loss"
        sequence = np.stack([before[-1], *after])
        moved = np.nonzero(np.any(np.abs(np.diff(sequence, axis=0)) > 1e-12, axis=1))[0]
        assert moved.size == 0 or moved.max() < 4, (
            f"commands still moved {moved.tolist()} commands after the driver loss"
        )
        assert np.allclose(sequence[-1], sequence[-5:]), "the hold moved"
        # The driver comes back: the run leaves the stale hold and drives again.
        spawn_process([str(DRIVER)], ready_line="KINEMATIC ROBOT READY", timeout=60)
        client.spin(
            60, until=lambda: bool(client.get_feedback() and "joint_state" not in client.get_feedback().hold_reason)
        )
        assert "joint_state" not in client.get_feedback().hold_reason, client.get_feedback()
        assert client.cancel_task()
        with lock:
            commands = np.stack([q for kind, q in events if kind == "command"])
        check_commands(commands)
    finally:
        client.destroy()
        spinner.close()
