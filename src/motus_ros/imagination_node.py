"""The imagination node: `~/imagine` (Imagine action), video generation p(o' | o, l) or the joint mode
p(o', a | o, l) when `with_actions` is set.

Imagined clips are returned split per camera and, with `publish`, replayed on `~/imagined/<camera_role>` (and its
`/compressed` sibling) at the video frame rate, each frame stamped with the time it shows, so rviz shows them
beside the live cameras (motus_ros.frame_publishing, shared with the world-model node).
"""

from __future__ import annotations

import time
from typing import Any

from rclpy.action import ActionServer, CancelResponse, GoalResponse

from motus_msgs.action import Imagine
from motus_msgs.msg import ErrorCode
from motus_ros.frame_publishing import FramePublisher, replay_start_stamp
from motus_ros.lifecycle_base import MotusLifecycleNode
from motus_ros.parameters import float_descriptor, int_descriptor, text_descriptor
from motus_ros.requests import action_server_options
from motus_ros.server_context import ServerContext
from motus_ros.world_model_node import (
    REPLAY_FPS_DESCRIPTION,
    feedback_publisher,
    finish_goal,
    replay_fps,
)


class ImaginationNode(MotusLifecycleNode):
    """Lifecycle node `imagination`: Imagine action + clip replay on `~/imagined/<role>`."""

    def __init__(self, context: ServerContext, node_name: str = "imagination", **kwargs: Any) -> None:
        super().__init__(node_name, context, **kwargs)
        self.declare_parameter("replay_fps", 0.0, float_descriptor(REPLAY_FPS_DESCRIPTION, 0.0, 120.0))
        self.declare_parameter(
            "replay_loop", False, text_descriptor("replay the last imagined clip in a loop instead of once")
        )
        self.declare_parameter("max_instruction_chars", 512, int_descriptor("longest instruction accepted", 1, 100000))
        self.images: FramePublisher | None = None
        self._action_server = ActionServer(
            self,
            Imagine,
            "~/imagine",
            self._execute,
            goal_callback=lambda goal: GoalResponse.ACCEPT,
            cancel_callback=lambda handle: CancelResponse.ACCEPT,
            **action_server_options(self.request_group),
        )

    def video_fps(self) -> float:
        """Frames per second of the replay: `replay_fps`, or the model's video frame rate when it is 0."""
        return replay_fps(self)

    def _setup(self) -> None:
        self.images = FramePublisher(self, self.camera_roles(), "~/imagined", callback_group=self.timer_group)

    def _teardown(self) -> None:
        if self.images is not None:
            self.images.destroy()
            self.images = None

    def _on_deactivated(self) -> None:
        if self.images is not None:
            self.images.stop_replay()

    @property
    def frames_published(self) -> int:
        return 0 if self.images is None else self.images.published

    def _execute(self, goal_handle) -> Imagine.Result:
        """Imagine the future from the goal's (or the latest) observation and instruction."""
        from motus_model.engine import MotusRequest
        from motus_model.flow_matching import Mode

        started = time.monotonic()
        received_s = self.now_s()
        goal = goal_handle.request
        result = Imagine.Result()
        try:
            self.require_active()
            self.check_instruction(goal.instruction)
            images, state = self.observation_inputs(goal.observation)
            request = MotusRequest(
                mode=Mode.JOINT if goal.with_actions else Mode.VIDEO_GENERATION,
                images=images,
                state=self.profile.robot_to_model(state),
                instruction=goal.instruction,
                steps=self.steps_for(goal.steps),
                seed=self.seed_for(goal.seed),
                decode_video=True,
            )
            output = self.run_request(
                request,
                progress=feedback_publisher(goal_handle, Imagine.Feedback, started),
                should_cancel=lambda: goal_handle.is_cancel_requested,
            )
            result.frames = self.frames_to_observations(output.frames)
            if goal.with_actions and output.actions is not None:
                actions_robot = self.chunk_to_robot(output.actions, state)
                result.trajectory = self.trajectory_of(actions_robot)
            if goal.publish and self.images is not None:
                fps = self.video_fps()
                start = replay_start_stamp(goal.observation, received_s, fps)
                loop = bool(self.param("replay_loop"))
                self.images.replay(self.split_frames(output.frames), start, fps, loop=loop)
            result.timing = self.timing_of(output, (time.monotonic() - started) * 1e3)
            result.error = ErrorCode(code=ErrorCode.NONE, message="")
        except Exception as exc:
            result.error = self.error_of(exc)
        return finish_goal(goal_handle, result)
