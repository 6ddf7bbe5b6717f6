"""A separate process for test_middleware.py: publishes a topic, serves PredictActions and RunPolicy.

The RunPolicy server sends feedback every 50 ms for `max_steps` steps and honours cancel requests.
"""

import time

import rclpy
from peer_main import spin_peer
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectoryPoint

from motus_msgs.action import RunPolicy
from motus_msgs.msg import ErrorCode
from motus_msgs.srv import PredictActions


class Peer(Node):
    def __init__(self) -> None:
        super().__init__("middleware_peer")
        group = ReentrantCallbackGroup()
        self.publisher = self.create_publisher(String, "peer/chatter", 10)
        self.create_timer(0.05, self.publish, callback_group=group)
        self.create_service(PredictActions, "peer/predict_actions", self.predict, callback_group=group)
        self.action_server = ActionServer(
            self,
            RunPolicy,
            "peer/run_policy",
            self.execute,
            goal_callback=lambda goal: GoalResponse.ACCEPT,
            cancel_callback=lambda handle: CancelResponse.ACCEPT,
            callback_group=group,
        )
        self.count = 0

    def publish(self) -> None:
        self.count += 1
        self.publisher.publish(String(data=f"hello {self.count}"))

    def predict(self, request: PredictActions.Request, response: PredictActions.Response):
        """Echo the instruction length into a one-point trajectory so the caller can check the round trip."""
        if not request.instruction:
            response.error.code = ErrorCode.INVALID_REQUEST
            response.error.message = "instruction is empty"
            return response
        response.trajectory.joint_names = list(request.observation.joint_state.name)
        point = JointTrajectoryPoint(positions=[float(len(request.instruction))] * len(response.trajectory.joint_names))
        response.trajectory.points = [point]
        response.timing.denoising_steps = request.steps
        return response

    def execute(self, goal_handle):
        steps = goal_handle.request.max_steps
        feedback = RunPolicy.Feedback()
        for step in range(1, steps + 1):
            if goal_handle.is_cancel_requested:
                goal_handle.canceled()
                return RunPolicy.Result(termination="cancelled", steps=step - 1)
            feedback.step = step
            goal_handle.publish_feedback(feedback)
            time.sleep(0.05)
        goal_handle.succeed()
        return RunPolicy.Result(termination="completed", steps=steps)


def main() -> None:
    rclpy.init()
    spin_peer(Peer(), MultiThreadedExecutor(num_threads=4), "PEER READY")


if __name__ == "__main__":
    main()
