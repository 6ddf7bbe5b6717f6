"""MotusClient: a thin Python façade over the Motus server's services and actions (nav2 simple-commander style).

    rclpy.init()
    client = MotusClient()
    client.wait_for_server()
    response = client.predict_actions("pick up the cube")            # latest observation, VLA mode
    result = client.predict_future(trajectory)                       # world model, waits for the result
    task = client.start_imagine("open the drawer", publish=True)     # long requests: a GoalTask to poll/cancel
    client.run_policy("transfer the cube", max_duration_s=20)
    while not client.is_task_complete():
        print(client.get_feedback())
    print(client.get_result())
    client.destroy()

Each call spins the client's own node until its answer arrives (or the timeout passes: TimeoutError). Failures of
the request itself come back in the response's `error` (motus_msgs/ErrorCode), never as exceptions.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import rclpy
from rclpy.action import ActionClient
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_srvs.srv import SetBool
from trajectory_msgs.msg import JointTrajectory

from motus_msgs.action import Imagine, PredictFuture, RecordEpisode, RunPolicy
from motus_msgs.msg import Observation
from motus_msgs.srv import InferActions, PredictActions

# Deep request/response queues (as the server's): many requests in flight from one client all get their answer.
REQUEST_QOS = QoSProfile(depth=1000, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
ACTION_QOS = {
    "goal_service_qos_profile": REQUEST_QOS,
    "result_service_qos_profile": REQUEST_QOS,
    "cancel_service_qos_profile": REQUEST_QOS,
}

GOAL_STATUS_SUCCEEDED = 4
GOAL_STATUS_CANCELED = 5
GOAL_STATUS_ABORTED = 6


class GoalTask:
    """One goal sent to an action server: its feedback, cancel and result."""

    def __init__(self, client: MotusClient, action_client: ActionClient, goal: Any, timeout_s: float) -> None:
        self._client = client
        self.feedback: list[Any] = []
        send = action_client.send_goal_async(
            goal, feedback_callback=lambda message: self.feedback.append(message.feedback)
        )
        self.handle = client.spin_until(send, timeout_s)
        if not self.handle.accepted:
            raise RuntimeError(f"the server rejected the {type(goal).__name__}")
        self._result_future = self.handle.get_result_async()

    @property
    def last_feedback(self) -> Any | None:
        return self.feedback[-1] if self.feedback else None

    def done(self, spin_s: float = 0.0) -> bool:
        if spin_s > 0 and not self._result_future.done():
            self._client.executor.spin_until_future_complete(self._result_future, timeout_sec=spin_s)
        return self._result_future.done()

    def wait_for_feedback(self, count: int = 1, timeout_s: float = 30.0) -> bool:
        """Spin until `count` feedback messages arrived (False on timeout or when the goal ended first)."""
        deadline = time.monotonic() + timeout_s
        while len(self.feedback) < count and time.monotonic() < deadline and not self._result_future.done():
            self._client.executor.spin_once(timeout_sec=0.02)
        return len(self.feedback) >= count

    def cancel(self, timeout_s: float = 10.0) -> Any:
        return self._client.spin_until(self.handle.cancel_goal_async(), timeout_s)

    def result(self, timeout_s: float = 60.0) -> Any:
        """The action's Result message (`status` is on `self.status` afterwards)."""
        wrapped = self._client.spin_until(self._result_future, timeout_s)
        self.status = wrapped.status
        return wrapped.result


class MotusClient:
    """Calls the Motus nodes of one server: `policy`, `world_model`, `idm`, `imagination` (under `namespace`)."""

    def __init__(self, node_name: str = "motus_client", namespace: str = "", server_timeout_s: float = 30.0) -> None:
        if not rclpy.ok():
            raise RuntimeError("MotusClient needs rclpy.init() first")
        self.node = Node(node_name)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        prefix = f"{namespace.rstrip('/')}/" if namespace else ""
        self._predict_actions = self.node.create_client(
            PredictActions, f"{prefix}policy/predict_actions", qos_profile=REQUEST_QOS
        )
        self._infer_actions = self.node.create_client(
            InferActions, f"{prefix}idm/infer_actions", qos_profile=REQUEST_QOS
        )
        self._estop = self.node.create_client(SetBool, f"{prefix}policy/estop", qos_profile=REQUEST_QOS)
        self._predict_future = ActionClient(
            self.node, PredictFuture, f"{prefix}world_model/predict_future", **ACTION_QOS
        )
        self._imagine = ActionClient(self.node, Imagine, f"{prefix}imagination/imagine", **ACTION_QOS)
        self._run_policy = ActionClient(self.node, RunPolicy, f"{prefix}policy/run_policy", **ACTION_QOS)
        self._record_episode = ActionClient(self.node, RecordEpisode, f"{prefix}recorder/record_episode", **ACTION_QOS)
        self.server_timeout_s = server_timeout_s
        self._policy_task: GoalTask | None = None

    # --- plumbing ---------------------------------------------------------------------------------------------

    def spin_until(self, future: Any, timeout_s: float) -> Any:
        """Spin the client's node until `future` is done; its result, or TimeoutError."""
        self.executor.spin_until_future_complete(future, timeout_sec=timeout_s)
        if not future.done():
            raise TimeoutError(f"no answer from the Motus server within {timeout_s} s")
        return future.result()

    def wait_for_server(self, timeout_s: float | None = None) -> bool:
        """True once every service and action server of the four nodes is reachable."""
        timeout_s = self.server_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s
        for client in (self._predict_actions, self._infer_actions, self._estop):
            if not client.wait_for_service(timeout_sec=max(0.0, deadline - time.monotonic())):
                return False
        for action in (self._predict_future, self._imagine, self._run_policy):
            if not action.wait_for_server(timeout_sec=max(0.0, deadline - time.monotonic())):
                return False
        return True

    def _call(self, client: Any, request: Any, timeout_s: float) -> Any:
        if not client.wait_for_service(timeout_sec=self.server_timeout_s):
            raise TimeoutError(f"service {client.srv_name} is not available")
        return self.spin_until(client.call_async(request), timeout_s)

    @staticmethod
    def _observation(observation: Observation | None) -> Observation:
        return Observation() if observation is None else observation

    # --- one-shot calls --------------------------------------------------------------------------------------------

    def predict_actions(
        self,
        instruction: str,
        observation: Observation | None = None,
        mode: str = "vla",
        steps: int = 0,
        seed: int = -1,
        return_frames: bool = False,
        timeout_s: float = 60.0,
    ) -> PredictActions.Response:
        """Policy query p(a | o, l) (mode "vla") or p(o', a | o, l) (mode "joint"); no observation = the latest."""
        modes = {"vla": PredictActions.Request.MODE_VLA, "joint": PredictActions.Request.MODE_JOINT}
        if mode not in modes:
            raise ValueError(f"mode must be one of {sorted(modes)}, got {mode!r}")
        request = PredictActions.Request(
            observation=self._observation(observation),
            instruction=instruction,
            mode=modes[mode],
            steps=steps,
            seed=seed,
            return_frames=return_frames,
        )
        return self._call(self._predict_actions, request, timeout_s)

    def infer_actions(
        self,
        future_observations: Sequence[Observation],
        observation: Observation | None = None,
        steps: int = 0,
        seed: int = -1,
        timeout_s: float = 60.0,
    ) -> InferActions.Response:
        """Inverse dynamics p(a | o, o'): the actions between the current and the future frames."""
        request = InferActions.Request(
            observation=self._observation(observation),
            future_observations=list(future_observations),
            steps=steps,
            seed=seed,
        )
        return self._call(self._infer_actions, request, timeout_s)

    def estop(self, engage: bool = True, timeout_s: float = 10.0) -> SetBool.Response:
        """Engage (True) or release (False) the policy node's e-stop."""
        return self._call(self._estop, SetBool.Request(data=engage), timeout_s)

    # --- actions -----------------------------------------------------------------------------------------------------

    def start_predict_future(
        self,
        actions: JointTrajectory | np.ndarray,
        joint_names: Sequence[str] | None = None,
        observation: Observation | None = None,
        steps: int = 0,
        seed: int = -1,
        publish: bool = False,
        timeout_s: float = 30.0,
    ) -> GoalTask:
        """Send a world-model goal; `actions` is a JointTrajectory, or [N, D] positions with their joint names."""
        goal = PredictFuture.Goal(
            observation=self._observation(observation),
            actions=self._trajectory(actions, joint_names),
            steps=steps,
            seed=seed,
            publish=publish,
        )
        return GoalTask(self, self._predict_future, goal, timeout_s)

    def predict_future(
        self,
        actions: JointTrajectory | np.ndarray,
        joint_names: Sequence[str] | None = None,
        timeout_s: float = 120.0,
        **kwargs: Any,
    ) -> PredictFuture.Result:
        """World model p(o' | o, a): the predicted frames per camera (waits for the result)."""
        return self.start_predict_future(actions, joint_names, **kwargs).result(timeout_s)

    def start_imagine(
        self,
        instruction: str,
        observation: Observation | None = None,
        with_actions: bool = False,
        steps: int = 0,
        seed: int = -1,
        publish: bool = False,
        timeout_s: float = 30.0,
    ) -> GoalTask:
        """Send a video-generation (or joint, with_actions) goal."""
        goal = Imagine.Goal(
            observation=self._observation(observation),
            instruction=instruction,
            with_actions=with_actions,
            steps=steps,
            seed=seed,
            publish=publish,
        )
        return GoalTask(self, self._imagine, goal, timeout_s)

    def imagine(self, instruction: str, timeout_s: float = 120.0, **kwargs: Any) -> Imagine.Result:
        """Video generation p(o' | o, l) (or joint mode with with_actions=True); waits for the result."""
        return self.start_imagine(instruction, **kwargs).result(timeout_s)

    def start_record_episode(
        self,
        instruction: str,
        dataset: str = "",
        max_duration_s: float = 0.0,
        fps: float = 0.0,
        discard_on_cancel: bool = False,
        timeout_s: float = 30.0,
    ) -> GoalTask:
        """Start recording one episode into a LeRobot dataset (the recorder node); `task.cancel()` stops it and
        saves it (unless discard_on_cancel), `task.result()` says where it went."""
        goal = RecordEpisode.Goal(
            instruction=instruction,
            dataset=str(dataset),
            max_duration_s=float(max_duration_s),
            fps=float(fps),
            discard_on_cancel=bool(discard_on_cancel),
        )
        return GoalTask(self, self._record_episode, goal, timeout_s)

    def _trajectory(self, actions: JointTrajectory | np.ndarray, joint_names: Sequence[str] | None) -> JointTrajectory:
        if isinstance(actions, JointTrajectory):
            return actions
        if joint_names is None:
            raise ValueError("joint_names are required when actions is an array")
        from motus_ros.conversions import actions_to_trajectory

        return actions_to_trajectory(
            np.asarray(actions, dtype=np.float64), list(joint_names), 0.02, self.node.get_clock().now().to_msg()
        )

    # --- the policy task (nav2 style) --------------------------------------------------------------------------

    def run_policy(
        self, instruction: str, max_duration_s: float = 0.0, max_steps: int = 0, timeout_s: float = 30.0
    ) -> bool:
        """Start driving the robot with the policy; poll is_task_complete / get_feedback, stop with cancel_task."""
        goal = RunPolicy.Goal(instruction=instruction, max_duration_s=float(max_duration_s), max_steps=int(max_steps))
        try:
            self._policy_task = GoalTask(self, self._run_policy, goal, timeout_s)
        except RuntimeError:
            self._policy_task = None
            return False
        return True

    def is_task_complete(self, spin_s: float = 0.1) -> bool:
        """True once the running policy goal has ended (or when there is none)."""
        if self._policy_task is None:
            return True
        return self._policy_task.done(spin_s)

    def get_feedback(self) -> RunPolicy.Feedback | None:
        return None if self._policy_task is None else self._policy_task.last_feedback

    def get_result(self, timeout_s: float = 30.0) -> RunPolicy.Result | None:
        return None if self._policy_task is None else self._policy_task.result(timeout_s)

    def cancel_task(self, timeout_s: float = 10.0) -> bool:
        """Cancel the running policy goal (the robot holds)."""
        if self._policy_task is None:
            return False
        response = self._policy_task.cancel(timeout_s)
        return len(response.goals_canceling) > 0

    @property
    def policy_task(self) -> GoalTask | None:
        return self._policy_task

    def spin(self, duration_s: float, until: Callable[[], bool] | None = None) -> None:
        """Process callbacks for `duration_s` (or until `until()`)."""
        deadline = time.monotonic() + duration_s
        while time.monotonic() < deadline and not (until is not None and until()):
            self.executor.spin_once(timeout_sec=0.02)

    def destroy(self) -> None:
        for action in (self._predict_future, self._imagine, self._run_policy, self._record_episode):
            action.destroy()
        self.executor.remove_node(self.node)
        self.node.destroy_node()
