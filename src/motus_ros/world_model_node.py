"""The world-model node: `~/predict_future` (PredictFuture action), the world-model mode p(o' | o, a).

Given an action chunk (a JointTrajectory in the profile's joint order) and an observation (or the latest one),
it returns the predicted future frames split per camera, sends feedback after every denoising step and honours
cancel requests between denoising steps (result CANCELLED). With `publish` set, the frames are also published as
sensor_msgs/Image on `~/imagined/<camera_role>` for rviz.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from sensor_msgs.msg import Image

from motus_msgs.action import PredictFuture
from motus_msgs.msg import ErrorCode
from motus_ros import conversions
from motus_ros.lifecycle_base import MotusLifecycleNode
from motus_ros.requests import RequestError, action_server_options
from motus_ros.server_context import ServerContext


class ImagePublishers:
    """One sensor_msgs/Image publisher per camera role on `~/imagined/<role>`."""

    def __init__(self, node: MotusLifecycleNode, roles: list[str]) -> None:
        self.node = node
        self.publishers = {role: node.create_publisher(Image, f"~/imagined/{role}", 5) for role in roles}
        self.published = 0

    def publish(self, views: dict[str, np.ndarray]) -> None:
        stamp = self.node.get_clock().now().to_msg()
        for role, view in views.items():
            publisher = self.publishers.get(role)
            if publisher is not None:
                publisher.publish(conversions.numpy_to_image(view, stamp, f"imagined_{role}"))
        self.published += 1

    def destroy(self) -> None:
        for publisher in self.publishers.values():
            self.node.destroy_publisher(publisher)
        self.publishers = {}


def feedback_publisher(goal_handle, feedback_type, started: float):
    """A progress(step, total) callback for the engine that publishes action feedback (engine worker thread)."""

    def progress(step: int, total: int) -> None:
        feedback = feedback_type()
        feedback.step, feedback.total_steps = int(step), int(total)
        feedback.elapsed_ms = float((time.monotonic() - started) * 1e3)
        goal_handle.publish_feedback(feedback)

    return progress


def finish_goal(goal_handle, result: Any) -> Any:
    """Set the goal's terminal state from result.error.code."""
    if result.error.code == ErrorCode.NONE:
        goal_handle.succeed()
    elif result.error.code == ErrorCode.CANCELLED and goal_handle.is_cancel_requested:
        goal_handle.canceled()
    else:
        goal_handle.abort()
    return result


class WorldModelNode(MotusLifecycleNode):
    """Lifecycle node `world_model`: PredictFuture action + imagined frame topics."""

    def __init__(self, context: ServerContext, node_name: str = "world_model", **kwargs: Any) -> None:
        super().__init__(node_name, context, **kwargs)
        self.images: ImagePublishers | None = None
        self._action_server = ActionServer(
            self,
            PredictFuture,
            "~/predict_future",
            self._execute,
            goal_callback=lambda goal: GoalResponse.ACCEPT,
            cancel_callback=lambda handle: CancelResponse.ACCEPT,
            **action_server_options(self.request_group),
        )

    def _setup(self) -> None:
        self.images = ImagePublishers(self, self.camera_roles())

    def _teardown(self) -> None:
        if self.images is not None:
            self.images.destroy()
            self.images = None

    def chunk_from_trajectory(self, trajectory) -> np.ndarray:
        """JointTrajectory -> [chunk, action_dim] model-space actions (gripper mapping applied).

        The model's chunk has `action_chunk` actions spaced `downsample_rate` control steps apart. A trajectory
        with that many points is used as is; one with a point per control step (action_chunk * downsample_rate
        points, as predict_actions and infer_actions return) is subsampled to the model's spacing."""
        try:
            actions_robot = conversions.trajectory_to_actions(trajectory, self.profile.joint_names)
        except ValueError as exc:
            raise RequestError(ErrorCode.INVALID_REQUEST, f"bad action chunk: {exc}") from exc
        temporal = self.engine.config.temporal
        chunk, rate = int(temporal.action_chunk), int(temporal.downsample_rate)
        if rate > 1 and actions_robot.shape[0] == chunk * rate:
            actions_robot = actions_robot[rate - 1 :: rate]
        if actions_robot.shape[0] != chunk:
            raise RequestError(
                ErrorCode.INVALID_REQUEST,
                f"the action chunk must have {chunk} points (the model's chunk)"
                + (f" or {chunk * rate} (one per control step)" if rate > 1 else "")
                + f", got {actions_robot.shape[0]}",
            )
        return np.stack([self.profile.robot_to_model(row) for row in actions_robot])

    def _execute(self, goal_handle) -> PredictFuture.Result:
        """Predict the frames that follow the goal's action chunk."""
        from motus_model.engine import MotusRequest
        from motus_model.flow_matching import Mode

        started = time.monotonic()
        goal = goal_handle.request
        result = PredictFuture.Result()
        try:
            self.require_active()
            images, state = self.observation_inputs(goal.observation)
            actions = self.chunk_from_trajectory(goal.actions)
            request = MotusRequest(
                mode=Mode.WORLD_MODEL,
                images=images,
                state=self.profile.robot_to_model(state),
                actions=actions,
                steps=self.steps_for(goal.steps),
                seed=self.seed_for(goal.seed),
                decode_video=True,
            )
            output = self.run_request(
                request,
                progress=feedback_publisher(goal_handle, PredictFuture.Feedback, started),
                should_cancel=lambda: goal_handle.is_cancel_requested,
            )
            result.frames = self.frames_to_observations(output.frames)
            if goal.publish and self.images is not None:
                for views in self.split_frames(output.frames):
                    self.images.publish(views)
            result.timing = self.timing_of(output, (time.monotonic() - started) * 1e3)
            result.error = ErrorCode(code=ErrorCode.NONE, message="")
        except Exception as exc:
            result.error = self.error_of(exc)
        return finish_goal(goal_handle, result)
