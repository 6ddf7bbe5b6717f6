"""The world-model node: `~/predict_future` (PredictFuture action), the world-model mode p(o' | o, a).

Given an action chunk (a JointTrajectory in the profile's joint order) and an observation (or the latest one),
it returns the predicted future frames split per camera, sends feedback after every denoising step and honours
cancel requests between denoising steps (result CANCELLED). With `publish` set, the frames are also replayed at the
video frame rate on `~/imagined/<camera_role>` (sensor_msgs/Image) and `~/imagined/<camera_role>/compressed`
(jpeg) for rviz, each stamped with the time it predicts (motus_ros.frame_publishing).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from rclpy.action import ActionServer, CancelResponse, GoalResponse

from motus_msgs.action import PredictFuture
from motus_msgs.msg import ErrorCode
from motus_ros import conversions
from motus_ros.frame_publishing import FramePublisher, replay_start_stamp, video_frame_rate
from motus_ros.lifecycle_base import MotusLifecycleNode
from motus_ros.parameters import float_descriptor
from motus_ros.requests import RequestError, action_server_options
from motus_ros.server_context import ServerContext


def feedback_publisher(goal_handle, feedback_type, started: float):
    """A progress(step, total) callback for the engine that publishes action feedback (engine worker thread)."""

    def progress(step: int, total: int) -> None:
        feedback = feedback_type()
        feedback.step, feedback.total_steps = int(step), int(total)
        feedback.elapsed_ms = float((time.monotonic() - started) * 1e3)
        goal_handle.publish_feedback(feedback)

    return progress


def replay_fps(node: MotusLifecycleNode) -> float:
    """The node's `replay_fps` parameter, or the model's video frame rate when it is 0."""
    configured = float(node.param("replay_fps"))
    if configured > 0:
        return configured
    return video_frame_rate(node.profile.control_rate_hz, node.engine.config.temporal)


REPLAY_FPS_DESCRIPTION = "replay rate of ~/imagined/<camera> frames; 0 = the model's video frame rate"


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
        self.declare_parameter("replay_fps", 0.0, float_descriptor(REPLAY_FPS_DESCRIPTION, 0.0, 120.0))
        self.images: FramePublisher | None = None
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
        self.images = FramePublisher(self, self.camera_roles(), "~/imagined", callback_group=self.timer_group)

    def _on_deactivated(self) -> None:
        if self.images is not None:
            self.images.stop_replay()

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
        received_s = self.now_s()
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
                fps = replay_fps(self)
                start = replay_start_stamp(goal.observation, received_s, fps)
                self.images.replay(self.split_frames(output.frames), start, fps)
            result.timing = self.timing_of(output, (time.monotonic() - started) * 1e3)
            result.error = ErrorCode(code=ErrorCode.NONE, message="")
        except Exception as exc:
            result.error = self.error_of(exc)
        return finish_goal(goal_handle, result)
