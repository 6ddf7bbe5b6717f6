"""Fault suite (issue 15): the real motus_server under hostile input and faults.

- a hostile-input fuzzer on the robot-side topics (NaN/inf/huge/out-of-limit/stale/future-stamped joint states,
  bad images, silence) with random goal starts, cancels, preemptions and e-stops: EVERY published command is
  checked against the profile's joint limits and per-step delta limits relative to the previous command;
- bursts: 100 concurrent requests on every interface get 100 answers (BUSY beyond --max-waiting-requests);
- lifecycle churn: 50 random transitions across the four nodes while requests run never end the process;
- driver loss (simulator SIGKILL): test_faults_driver.py (its own module: it needs the topics to itself).

The exact logic (staleness in control periods, future stamps, references) is pinned by the unit tests in
test_safety.py and test_observation_buffer.py; these are the end-to-end checks through the real processes.
No wall-clock assertions: counts and ordering only.
"""

from __future__ import annotations

import random
import threading
import time

import numpy as np
import pytest
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.action import ActionClient
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from ros_helpers import (
    Spinner,
    camera_frame,
    image_msg,
    server_command,
    start_process,
    stop_process,
    wait_until_serving,
)
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import SetBool

from motus_msgs.action import Imagine, PredictFuture, RunPolicy
from motus_msgs.msg import ErrorCode, Observation
from motus_msgs.srv import InferActions, PredictActions
from motus_ros.client import ACTION_QOS, REQUEST_QOS, MotusClient
from motus_ros.conversions import to_stamp
from motus_ros.profiles import load_profile

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]

PROFILE = load_profile("aloha_sim")
LOWER, UPPER = np.asarray(PROFILE.lower_limits), np.asarray(PROFILE.upper_limits)
MAX_DELTA = np.asarray(PROFILE.max_delta_per_step)
COMMAND_TOPIC = PROFILE.command_topics[0]
MAX_WAITING = 4
# motus-small with 1 denoising step: chunks (16 control steps) arrive in time, so the fuzzer sees moving commands.
FUZZ_SERVER = {
    "preset": "motus-small",
    "default_steps": 1,
    "chunk_request_threshold": 10,
    "stamp_source": "header",
    "joint_state_max_age_periods": 10.0,
}


class CommandLog:
    """Every command on the robot's command topic, in arrival order."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.commands: list[np.ndarray] = []

    def __call__(self, message: Float64MultiArray) -> None:
        with self.lock:
            self.commands.append(np.asarray(message.data, dtype=np.float64))

    def array(self, start: int = 0) -> np.ndarray:
        with self.lock:
            return np.array(self.commands[start:], dtype=np.float64).reshape(-1, len(PROFILE.joint_names))

    def __len__(self) -> int:
        with self.lock:
            return len(self.commands)


def check_commands(commands: np.ndarray) -> None:
    """Every command inside the joint limits; every step within the per-step delta of the previous command."""
    assert len(commands) > 0
    outside = np.nonzero(np.any((commands < LOWER - 1e-9) | (commands > UPPER + 1e-9), axis=1))[0]
    assert outside.size == 0, f"{outside.size} commands left the joint limits, first #{outside[:1]}"
    steps = np.abs(np.diff(commands, axis=0))
    violations = np.nonzero(np.any(steps > MAX_DELTA + 1e-9, axis=1))[0]
    assert violations.size == 0, (
        f"{violations.size} of {len(commands)} commands exceeded the per-step delta; first at #{violations[0] + 1}: "
        f"{commands[violations[0]]} -> {commands[violations[0] + 1]}"
        if violations.size
        else ""
    )


class HostileDrivers:
    """The robot's drivers gone wrong: cameras and joint states from this process with a fault mode that changes
    every episode. Modes: ok, nan, inf, huge (1e30), beyond (10 rad), stale (stamped 5 s ago), future (30 s
    ahead), silent (nothing), bad_image (wrong encoding and size)."""

    MODES = ("ok", "ok", "ok", "nan", "inf", "huge", "beyond", "stale", "future", "silent", "bad_image")

    def __init__(self, node: Node, rate_hz: float = 25.0) -> None:
        self.node = node
        self.mode = "ok"
        self.rng = np.random.default_rng(15)
        self.position = np.clip(np.full(14, 0.2), LOWER, UPPER)
        self.images = {c.role: node.create_publisher(Image, c.topic, qos_profile_sensor_data) for c in PROFILE.cameras}
        self.joints = node.create_publisher(JointState, PROFILE.joint_state_topics[0], qos_profile_sensor_data)
        self.step = 0
        self.timer = node.create_timer(1.0 / rate_hz, self.publish)

    def publish(self) -> None:
        mode = self.mode
        if mode == "silent":
            return
        self.step += 1
        now = self.node.get_clock().now().nanoseconds * 1e-9
        stamp_s = now - 5.0 if mode == "stale" else now + 30.0 if mode == "future" else now
        stamp = to_stamp(stamp_s)
        for camera in PROFILE.cameras:
            if mode == "bad_image":
                msg = image_msg(camera_frame(camera.role, 10, 12, self.step), stamp, encoding="bgr8")
            else:
                msg = image_msg(
                    camera_frame(camera.role, camera.height, camera.width, self.step), stamp, camera.encoding
                )
            self.images[camera.role].publish(msg)
        q = self.position.copy()
        joint = int(self.rng.integers(14))
        if mode == "nan":
            q[joint] = np.nan
        elif mode == "inf":
            q[joint] = -np.inf
        elif mode == "huge":
            q[joint] = -1e30
        elif mode == "beyond":
            q[joint] = 10.0
        message = JointState(name=list(PROFILE.joint_names), position=q.tolist())
        message.header.stamp = stamp
        self.joints.publish(message)


@pytest.fixture(scope="module")
def fuzz_rig(ros_context):
    server = start_process(
        server_command("--max-waiting-requests", str(MAX_WAITING), **FUZZ_SERVER), "MOTUS SERVER READY"
    )
    spinner = Spinner("hostile_drivers")
    drivers = HostileDrivers(spinner.node)
    log = CommandLog()
    spinner.node.create_subscription(Float64MultiArray, COMMAND_TOPIC, log, 10000)
    client = MotusClient(node_name="fault_client")
    try:
        assert client.wait_for_server(60)
        deadline = time.monotonic() + 60
        while client.predict_actions("pick", steps=1).error.code != ErrorCode.NONE:
            assert time.monotonic() < deadline, "the server never had a usable observation"
            client.spin(0.3)
        yield server, drivers, log, client
    finally:
        client.destroy()
        spinner.close()
        stop_process(server)


def test_hostile_input_fuzzer_never_violates_limits_or_deltas(fuzz_rig):
    """~2,000 commands through random fault episodes and random goal starts, cancels, preemptions, e-stops and
    invalid goals: zero commands outside the limits, zero steps beyond the per-step delta (goal starts, holds,
    stale and future-stamped input included)."""
    server, drivers, log, client = fuzz_rig
    rng = random.Random(15)
    start = len(log)
    episodes: dict[str, int] = {}
    estopped = False
    target = 3000  # commands to check; at least `minimum` within the time box (a loaded machine runs fewer goals)
    minimum = 1000
    deadline = time.monotonic() + 180
    while len(log) - start < target and time.monotonic() < deadline:
        drivers.mode = rng.choice(HostileDrivers.MODES)
        episodes[drivers.mode] = episodes.get(drivers.mode, 0) + 1
        if rng.random() < 0.3:
            drivers.position = np.clip(
                drivers.position + np.random.default_rng(rng.randrange(1000)).normal(0, 0.3, 14), LOWER, UPPER
            )
        action = rng.random()
        if action < 0.35:  # a new goal: preempts the running one, or is refused (invalid) and must not preempt
            instruction = "pick" if rng.random() < 0.8 else "x" * 200
            duration = rng.choice([0.0, 0.0, 5.0, -1.0, float("nan")])
            client.run_policy(instruction, max_duration_s=duration, max_steps=rng.choice([0, 0, 30, 300]))
        elif action < 0.42 and client.policy_task is not None:
            client.cancel_task()
        elif action < 0.5 or estopped:
            estopped = not estopped
            client.estop(estopped)
        client.spin(rng.uniform(0.2, 0.8))
    if estopped:
        client.estop(False)
    drivers.mode = "ok"
    client.spin(0.5)
    commands = log.array(start)
    print(f"fuzzer: {len(commands)} commands checked, episodes {episodes}")
    check_commands(commands)
    assert len(commands) >= minimum, f"only {len(commands)} commands in the fuzzing time"
    assert server.poll() is None, "the server died under hostile input"


def _wait_all(node: Node, futures: list, timeout_s: float) -> int:
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and not all(f.done() for f in futures):
            executor.spin_once(timeout_sec=0.05)
    finally:
        executor.remove_node(node)
    return sum(f.done() for f in futures)


def test_a_burst_of_100_requests_on_every_interface_gets_100_answers(fuzz_rig):
    """100 simultaneous calls on each of the six interfaces: every one answered (BUSY beyond the waiting bound)."""
    server, drivers, _, client = fuzz_rig
    drivers.mode = "ok"
    wait_until_serving(client, 60.0)
    node = Node("burst_client")
    burst = 100
    try:
        services = {
            "predict_actions": (
                node.create_client(PredictActions, "/policy/predict_actions", qos_profile=REQUEST_QOS),
                lambda: PredictActions.Request(instruction="pick", steps=1, seed=-1),
            ),
            "infer_actions": (
                node.create_client(InferActions, "/idm/infer_actions", qos_profile=REQUEST_QOS),
                lambda: InferActions.Request(steps=1, seed=-1),
            ),
            "estop": (
                node.create_client(SetBool, "/policy/estop", qos_profile=REQUEST_QOS),
                lambda: SetBool.Request(data=True),
            ),
        }
        answers: dict[str, list] = {}
        for name, (service, make) in services.items():
            assert service.wait_for_service(timeout_sec=30)
            futures = [service.call_async(make()) for _ in range(burst)]
            assert _wait_all(node, futures, 120) == burst, f"{name}: not every request was answered"
            answers[name] = [f.result() for f in futures]
        assert all(a.success for a in answers["estop"])
        release = services["estop"][0].call_async(SetBool.Request(data=False))
        assert _wait_all(node, [release], 30) == 1
        codes = [a.error.code for a in answers["predict_actions"]]
        assert codes.count(ErrorCode.BUSY) > 0 and codes.count(ErrorCode.NONE) >= 1, codes
        from motus_model.config import MotusConfig

        chunk = MotusConfig.preset(FUZZ_SERVER["preset"]).temporal.action_chunk  # the world model's chunk length
        trajectory = client._trajectory(np.tile(drivers.position, (chunk, 1)), PROFILE.joint_names)
        actions = {
            "run_policy": (
                ActionClient(node, RunPolicy, "/policy/run_policy", **ACTION_QOS),
                lambda: RunPolicy.Goal(instruction="pick", max_steps=5),
            ),
            "predict_future": (
                ActionClient(node, PredictFuture, "/world_model/predict_future", **ACTION_QOS),
                lambda: PredictFuture.Goal(observation=Observation(), actions=trajectory, steps=1, seed=-1),
            ),
            "imagine": (
                ActionClient(node, Imagine, "/imagination/imagine", **ACTION_QOS),
                lambda: Imagine.Goal(observation=Observation(), instruction="pick", steps=1, seed=-1),
            ),
        }
        for name, (action, make) in actions.items():
            assert action.wait_for_server(timeout_sec=30)
            sent = [action.send_goal_async(make()) for _ in range(burst)]
            assert _wait_all(node, sent, 120) == burst, f"{name}: not every goal got a goal response"
            handles = [f.result() for f in sent]
            assert all(h.accepted for h in handles)
            results = [h.get_result_async() for h in handles]
            assert _wait_all(node, results, 240) == burst, f"{name}: not every goal got a result"
            codes = [f.result().result.error.code for f in results]
            if name != "run_policy":  # (RunPolicy goals preempt each other instead)
                assert codes.count(ErrorCode.BUSY) > 0 and codes.count(ErrorCode.NONE) >= 1, f"{name}: {codes}"
        assert server.poll() is None
    finally:
        node.destroy_node()


def _lifecycle_state(node: Node, get_state, timeout_s: float = 30.0) -> str:
    future = get_state.call_async(GetState.Request())
    assert _wait_all(node, [future], timeout_s) == 1, "no answer from get_state"
    return future.result().current_state.label


def test_lifecycle_churn_while_requests_run_never_ends_the_server(fuzz_rig):
    """50 random valid transitions (configure / activate / deactivate / cleanup) across the four nodes while
    another thread keeps sending requests and goals: the process survives and serves again afterwards."""
    server, drivers, log, client = fuzz_rig
    drivers.mode = "ok"
    wait_until_serving(client, 60.0)
    node = Node("churn_client")
    names = ["policy", "world_model", "idm", "imagination"]
    change = {n: node.create_client(ChangeState, f"/{n}/change_state") for n in names}
    get = {n: node.create_client(GetState, f"/{n}/get_state") for n in names}
    transitions = {
        "unconfigured": [Transition.TRANSITION_CONFIGURE],
        "inactive": [Transition.TRANSITION_ACTIVATE, Transition.TRANSITION_CLEANUP],
        "active": [Transition.TRANSITION_DEACTIVATE],
    }
    stop = threading.Event()
    requests = {"sent": 0}

    def load() -> None:  # requests on every interface while the nodes churn (answers of any code are fine)
        worker = MotusClient(node_name="churn_load")
        rng = random.Random(3)
        try:
            while not stop.is_set():
                choice = rng.random()
                try:
                    if choice < 0.4:
                        worker.predict_actions("pick", steps=1, timeout_s=30)
                    elif choice < 0.7:
                        worker.run_policy("pick", max_steps=20)
                        worker.spin(0.3)
                    else:
                        worker.start_imagine("pick", steps=1).result(60)
                except (TimeoutError, RuntimeError):
                    pass
                requests["sent"] += 1
        finally:
            worker.destroy()

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    rng = random.Random(50)
    done = []
    try:
        for service in (*change.values(), *get.values()):
            assert service.wait_for_service(timeout_sec=30)
        while len(done) < 50:
            name = rng.choice(names)
            state = _lifecycle_state(node, get[name])
            assert state in transitions, f"{name} is {state!r} after {done}: the server is ending (a crash?)"
            transition = rng.choice(transitions[state])
            future = change[name].call_async(ChangeState.Request(transition=Transition(id=transition)))
            assert _wait_all(node, [future], 120) == 1, f"{name}: no answer to transition {transition} from {state}"
            done.append((name, state, transition, future.result().success))
            assert server.poll() is None, f"the server died after transitions {done}"
            time.sleep(rng.uniform(0.0, 0.3))
        # Everything back to active: the server serves again.
        for name in names:
            for _ in range(3):
                state = _lifecycle_state(node, get[name])
                if state == "active":
                    break
                transition = (
                    Transition.TRANSITION_CONFIGURE if state == "unconfigured" else Transition.TRANSITION_ACTIVATE
                )
                future = change[name].call_async(ChangeState.Request(transition=Transition(id=transition)))
                assert _wait_all(node, [future], 120) == 1
            assert _lifecycle_state(node, get[name]) == "active", name
    finally:
        stop.set()
        thread.join(timeout=120)
        node.destroy_node()
    assert server.poll() is None, "the server died during lifecycle churn"
    print(f"churn: {len(done)} transitions, {sum(ok for *_, ok in done)} succeeded, {requests['sent']} requests")
    assert requests["sent"] > 0
    check_commands(log.array())  # every command of the module so far, churn included
    wait_until_serving(client, 60.0)  # serves again after the churn
