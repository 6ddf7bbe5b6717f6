"""The lifecycle base of the four Motus nodes: transitions, and the parameters every node declares.

`MotusLifecycleNode` is a `LifecycleNode` that asks subclasses for `_setup()` (raises on failure), `_teardown()`
(copes with partial state), `_on_activated()` / `_on_deactivated()`. It logs tracebacks itself because rclpy
swallows exceptions raised in transition callbacks, attaches to the server's shared model and profile
(`server_context`) on configure, and answers requests only while active (NOT_READY otherwise). The request helpers
(validation, the engine call, messages <-> engine inputs and outputs) come from `requests.ModelRequests`.

Threading: services and actions run in a `ReentrantCallbackGroup` (`self.request_group`) and only submit to the
engine and wait on futures; the engine's single worker thread runs the model. Periodic publishing has its own
mutually exclusive group (`self.timer_group`); the sensors are the server's `SensorIntake`, never waiting behind
inference.
"""

from __future__ import annotations

import logging
import threading
import traceback
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter

from motus_model.embodiment import RobotProfile
from motus_msgs.msg import ErrorCode
from motus_ros.parameters import COMMON_PARAMETERS
from motus_ros.requests import ModelRequests, RequestError
from motus_ros.server_context import ModelSpec, ServerContext

logger = logging.getLogger(__name__)


class MotusLifecycleNode(ModelRequests, LifecycleNode):
    """A managed node of the Motus server. Subclasses implement `_setup`, `_teardown` and optionally the
    `_on_activated` / `_on_deactivated` hooks; they answer requests only while active (NOT_READY otherwise)."""

    def __init__(self, node_name: str, context: ServerContext, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.shared = context
        self.profile: RobotProfile | None = None  # set by configure
        self.engine: Any = None
        self._active = threading.Event()
        self.last_error = ""  # the reason of the last failed transition (the server prints it when it gives up)
        self.request_group = ReentrantCallbackGroup()  # services/actions: submit + wait on engine futures
        self.timer_group = MutuallyExclusiveCallbackGroup()  # periodic publishing
        for name, (default, descriptor) in COMMON_PARAMETERS.items():
            self.declare_parameter(name, default, descriptor)
        # Every node reports its health on /diagnostics while active. The timer lives as long as the node, so
        # lifecycle transitions never create or destroy it.
        self._diagnostics_publisher = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diagnostics_timer = self.create_timer(
            1.0 / float(self.param("diagnostics_rate_hz")), self._publish_diagnostics, callback_group=self.timer_group
        )

    # --- lifecycle -------------------------------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Attach to the shared model, validate the profile, create resources -> inactive (or unconfigured on
        failure)."""
        try:
            if int(self.param("default_steps")) > int(self.param("max_denoising_steps")):
                raise ValueError(
                    f"default_steps ({self.param('default_steps')}) exceeds max_denoising_steps "
                    f"({self.param('max_denoising_steps')}): lower default_steps or raise the cap"
                )
            self.profile = self.shared.profile.attach(str(self.param("profile")))
            self.engine = self.shared.model.attach(self.model_spec(), self.profile)
            self._setup()
        except Exception as exc:  # rclpy would swallow it: log the reason and the traceback, then undo
            self.last_error = f"{self.get_name()}: configure failed: {exc}"
            self.get_logger().error(f"configure failed: {exc}\n{traceback.format_exc()}")
            self._safe_teardown()
            self.engine = None
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info("configured")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Start publishing and answering requests -> active."""
        try:
            self._on_activated()
        except Exception as exc:
            self.last_error = f"{self.get_name()}: activate failed: {exc}"
            self.get_logger().error(f"activate failed: {exc}\n{traceback.format_exc()}")
            return TransitionCallbackReturn.FAILURE
        self._active.set()
        self.get_logger().info("active")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop answering requests; the policy node holds the robot -> inactive."""
        self._active.clear()
        try:
            self._on_deactivated()
        except Exception as exc:
            self.get_logger().error(f"deactivate failed: {exc}\n{traceback.format_exc()}")
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info("inactive")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release what configure created -> unconfigured."""
        self._active.clear()
        self._safe_teardown()
        self.engine = None
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release everything -> finalized."""
        if self._active.is_set():
            self._active.clear()
            try:
                self._on_deactivated()
            except Exception as exc:
                self.get_logger().error(f"deactivate during shutdown failed: {exc}")
        self._safe_teardown()
        self.engine = None
        return super().on_shutdown(state)

    def _safe_teardown(self) -> None:
        try:
            self._teardown()
        except Exception as exc:
            self.get_logger().error(f"teardown failed: {exc}\n{traceback.format_exc()}")

    # Hooks for subclasses.
    def _setup(self) -> None:
        """Create subscriptions/publishers/timers and validate parameters; raise on any failure."""

    def _teardown(self) -> None:
        """Destroy what `_setup` created; must cope with `_setup` having failed half-way."""

    def _on_activated(self) -> None:
        """Called on activate, before requests are accepted."""

    def _on_deactivated(self) -> None:
        """Called on deactivate and shutdown, after requests stop being accepted."""

    # --- diagnostics -----------------------------------------------------------------------------------------------

    def diagnostic_status(self) -> DiagnosticStatus:
        """This node's health: the model it serves, the engine's pending requests, the last request's latency.
        Subclasses add their own values (and may change the level and message)."""
        status = DiagnosticStatus(name=f"motus_server: {self.get_name()}", hardware_id=self.profile.name)
        status.level, status.message = DiagnosticStatus.OK, "active"
        stats = self.engine.stats if self.engine is not None else {}
        finished = sum(stats.get(name, 0) for name in ("completed", "failed", "cancelled"))
        pending = stats.get("requests", 0) - finished
        values = {
            "model": self.model_spec().describe(),
            "engine_pending_requests": str(max(pending, 0)),
            "engine_completed_requests": str(stats.get("completed", 0)),
            "waiting_requests_limit": str(self.shared.max_waiting_requests),
            "last_request_latency_ms": f"{self.last_request_ms:.1f}",
        }
        status.values = [KeyValue(key=key, value=value) for key, value in values.items()]
        return status

    def _publish_diagnostics(self) -> None:
        if not self.is_active or self.profile is None:
            return
        message = DiagnosticArray(status=[self.diagnostic_status()])
        message.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics_publisher.publish(message)

    @property
    def is_active(self) -> bool:
        return self._active.is_set()

    # --- parameters --------------------------------------------------------------------------------------------

    def model_spec(self) -> ModelSpec:
        return ModelSpec(
            checkpoint=str(self.get_parameter("checkpoint").value),
            preset=str(self.get_parameter("preset").value),
            device=str(self.get_parameter("device").value),
            seed=int(self.get_parameter("seed").value),
            max_batch=int(self.get_parameter("max_batch").value),
        )

    def param(self, name: str) -> Any:
        return self.get_parameter(name).value

    def declare_optional_bool(self, name: str, description: str) -> None:
        """A bool parameter whose absence means "use the default from the robot profile"."""
        self.declare_parameter(name, Parameter.Type.BOOL, ParameterDescriptor(description=description))

    def optional_param(self, name: str, default: Any) -> Any:
        from rclpy.exceptions import ParameterUninitializedException

        try:
            value = self.get_parameter(name).value
        except ParameterUninitializedException:
            return default
        return default if value is None else value

    # --- requests --------------------------------------------------------------------------------------------

    def now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def require_active(self) -> None:
        if not self.is_active or self.engine is None:
            raise RequestError(
                ErrorCode.NOT_READY, f"node {self.get_name()} is not active (configure and activate it first)"
            )
