"""The inverse-dynamics node: `~/infer_actions` (InferActions service), the IDM mode p(a | o, o').

Given the current observation (or the latest) and the future frames, it returns the action chunk that takes the
robot from one to the other, as a JointTrajectory in the profile's joint order timed at the control rate.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from motus_msgs.msg import ErrorCode
from motus_msgs.srv import InferActions
from motus_ros.lifecycle_base import MotusLifecycleNode
from motus_ros.requests import REQUEST_QOS, RequestError
from motus_ros.server_context import ServerContext


class IdmNode(MotusLifecycleNode):
    """Lifecycle node `idm`: InferActions service."""

    def __init__(self, context: ServerContext, node_name: str = "idm", **kwargs: Any) -> None:
        super().__init__(node_name, context, **kwargs)
        self.create_service(
            InferActions,
            "~/infer_actions",
            self._infer_actions,
            qos_profile=REQUEST_QOS,
            callback_group=self.request_group,
        )

    def future_frames(self, observations) -> list[dict[str, np.ndarray]]:
        """The request's future observations -> per frame, camera role -> HxWx3 uint8 RGB."""
        expected = int(self.engine.config.temporal.num_video_frames)
        if len(observations) != expected:
            raise RequestError(
                ErrorCode.INVALID_REQUEST,
                f"future_observations: expected {expected} frames (the model's video frames), got {len(observations)}",
            )
        frames = [
            self.images_of(observation, f"future_observations[{index}]")
            for index, observation in enumerate(observations)
        ]
        return frames

    def _infer_actions(self, request: InferActions.Request, response: InferActions.Response) -> InferActions.Response:
        """Which actions lead from the current frames to the future frames."""
        from motus_model.engine import MotusRequest
        from motus_model.flow_matching import Mode

        started = time.monotonic()
        try:
            self.require_active()
            images, state = self.observation_inputs(request.observation)
            engine_request = MotusRequest(
                mode=Mode.IDM,
                images=images,
                state=self.profile.robot_to_model(state),
                future_frames=self.future_frames(request.future_observations),
                steps=self.steps_for(request.steps),
                seed=self.seed_for(request.seed),
                decode_video=False,
            )
            result = self.run_request(engine_request)
            actions_robot = self.chunk_to_robot(result.actions, state)
            response.trajectory = self.trajectory_of(actions_robot)
            response.timing = self.timing_of(result, (time.monotonic() - started) * 1e3)
            response.error = ErrorCode(code=ErrorCode.NONE, message="")
        except Exception as exc:
            response.error = self.error_of(exc)
        return response
