"""The workspace's middleware works across processes: a topic, a motus_msgs service, a motus_msgs action.

The peer runs in a separate Python process (test/ros/peers/middleware_peer.py); this process is the client.
"""

from pathlib import Path

import pytest
import rclpy
from rclpy.action import ActionClient
from ros_helpers import spin_until, wait_future
from std_msgs.msg import String

from motus_msgs.action import Imagine, PredictFuture, RunPolicy
from motus_msgs.msg import ErrorCode, Observation, Timing
from motus_msgs.srv import InferActions, PredictActions

PEERS = Path(__file__).parent / "peers"

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def peer(spawn_process):
    return spawn_process([str(PEERS / "middleware_peer.py")], ready_line="PEER READY")


def test_generated_interfaces_have_their_fields_and_constants():
    request = PredictActions.Request()
    assert {PredictActions.Request.MODE_VLA, PredictActions.Request.MODE_JOINT} == {0, 1}
    assert hasattr(request, "observation") and isinstance(request.observation, Observation)
    assert isinstance(PredictActions.Response().timing, Timing)
    assert ErrorCode.NONE == 0 and ErrorCode.CANCELLED != ErrorCode.INVALID_REQUEST
    assert "future_observations" in InferActions.Request.get_fields_and_field_types()
    assert PredictFuture.Feedback.get_fields_and_field_types()["total_steps"] == "uint16"
    assert Imagine.Result.get_fields_and_field_types()["trajectory"] == "trajectory_msgs/JointTrajectory"
    assert RunPolicy.Goal.get_fields_and_field_types()["instruction"] == "string"


def test_topic_service_and_action_across_processes(ros_context, peer):
    node = rclpy.create_node("middleware_client")
    try:
        # Topic.
        received: list[str] = []
        node.create_subscription(String, "peer/chatter", lambda msg: received.append(msg.data), 10)
        assert spin_until(node, lambda: len(received) >= 3, 20), "no messages from the peer process"
        assert received[0].startswith("hello ")

        # Service: a valid request round-trips, a bad one gets an error code (and the peer stays up).
        client = node.create_client(PredictActions, "peer/predict_actions")
        assert client.wait_for_service(timeout_sec=20)
        request = PredictActions.Request(instruction="pick up the cube", steps=7)
        request.observation.joint_state.name = ["a", "b"]
        response = wait_future(node, client.call_async(request), 20)
        assert response.error.code == ErrorCode.NONE
        assert response.trajectory.joint_names == ["a", "b"]
        assert list(response.trajectory.points[0].positions) == [16.0, 16.0]
        assert response.timing.denoising_steps == 7
        bad = wait_future(node, client.call_async(PredictActions.Request()), 20)
        assert bad.error.code == ErrorCode.INVALID_REQUEST and "empty" in bad.error.message

        # Action with feedback, to completion.
        action = ActionClient(node, RunPolicy, "peer/run_policy")
        assert action.wait_for_server(timeout_sec=20)
        feedback: list[int] = []
        goal = RunPolicy.Goal(instruction="wave", max_steps=4)
        handle = wait_future(
            node, action.send_goal_async(goal, feedback_callback=lambda f: feedback.append(f.feedback.step)), 20
        )
        assert handle.accepted
        result = wait_future(node, handle.get_result_async(), 20).result
        assert result.termination == "completed" and result.steps == 4
        assert feedback and feedback == sorted(feedback) and feedback[-1] <= 4

        # Action cancelled mid-run.
        feedback.clear()
        handle = wait_future(
            node,
            action.send_goal_async(
                RunPolicy.Goal(max_steps=400), feedback_callback=lambda f: feedback.append(f.feedback.step)
            ),
            20,
        )
        assert spin_until(node, lambda: len(feedback) >= 2, 20)
        wait_future(node, handle.cancel_goal_async(), 20)
        wrapped = wait_future(node, handle.get_result_async(), 20)
        assert wrapped.status == 5  # action_msgs/GoalStatus.STATUS_CANCELED
        assert wrapped.result.termination == "cancelled" and 0 < wrapped.result.steps < 400
        assert peer.poll() is None, "the peer process died"
    finally:
        node.destroy_node()
