"""The simulated ALOHA driver: gym-aloha (MuJoCo bimanual ViperX) behind the real robots' ROS interfaces.

What it owns:
- physics: steps gym-aloha's dm_control physics at 50 Hz wall time (gym_aloha DT = 0.02 s per step),
  holding the latest command (robot units of the aloha_sim profile = gym-aloha's action: 6 joints in rad +
  a normalised gripper per arm);
- joint states: sensor_msgs/JointState with the profile's joint names on its joint state topic, every step;
- cameras: the profile's cameras rendered from the MuJoCo cameras `top`, `left_wrist`, `right_wrist`
  (sensor_msgs/Image in the camera's encoding at the profile's size, or, for a camera declared
  `transport: compressed`, a jpeg sensor_msgs/CompressedImage on `<topic>/compressed` as image_transport's
  compressed plugin publishes it) at `camera_rate_hz`, on a render thread with its own MjData copy, so slow
  CPU rendering never stalls the physics;
- commands: every command interface at once, the latest message wins:
  Float64MultiArray (forward_command_controller), JointTrajectory (JTC: executed over its time_from_start,
  interpolated), per-arm JointState (AgileX style), and Interbotix JointGroupCommand/JointSingleCommand where
  interbotix_xs_msgs imports;
- `~/reset` (std_srvs/Trigger, box pose from the `seed` parameter), `~/success` (std_msgs/Bool) and
  `~/reward` (std_msgs/Float64, gym-aloha's 0..4 task reward) at `status_rate_hz`.

Stamps are the node clock's time when the state was captured (honours use_sim_time), so the server's
staleness checks compare like with like. gym-aloha's own env.step()/reset() render three 480x640 images
per call (about 0.1 s each on a CPU), so this node drives the same physics and task objects directly
instead, exactly as dm_control's Environment.step does minus the observation.

Run: `motus_sim` (defaults from config/sim.yaml), e.g. `motus_sim --ros-args -p task:=insertion`.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rclpy
from rcl_interfaces.msg import FloatingPointRange, ParameterDescriptor
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Bool, Float64, Float64MultiArray
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from motus_model.embodiment import RobotProfile
from motus_ros.conversions import duration_to_seconds, numpy_to_compressed, numpy_to_image, stamp_to_seconds
from motus_ros.process_signals import ignore_signals_while_exiting, stop_on_signals
from motus_ros.profiles import load_profile

logger = logging.getLogger(__name__)

READY_LINE = "MOTUS_SIM READY"
NODE_NAME = "aloha_sim"
TASKS = ("transfer_cube", "insertion")


@dataclass(frozen=True)
class Param:
    name: str
    default: object
    description: str
    rate: bool = False  # a rate in Hz: must be > 0 (FloatingPointRange)


# The node's parameters; config/sim.yaml holds the same defaults (a test checks they agree).
PARAMETERS = (
    Param("profile", "aloha_sim", "robot profile name or YAML path: cameras, topics, joint names, limits"),
    Param("task", "transfer_cube", "gym-aloha task: transfer_cube or insertion"),
    Param("seed", 0, "seed of the object pose sampled at start-up and by ~/reset"),
    Param("camera_rate_hz", 10.0, "camera publishing rate (each publish renders every camera)", rate=True),
    Param("status_rate_hz", 10.0, "rate of ~/success and ~/reward", rate=True),
    Param(
        "mujoco_cameras",
        ["top", "left_wrist", "right_wrist"],
        "MuJoCo camera rendered for each profile camera, in the profile's camera order",
    ),
    Param(
        "forward_command_topic",
        "/arms_controller/commands",
        "std_msgs/Float64MultiArray with all joints in profile order (forward_command_controller)",
    ),
    Param(
        "trajectory_topics",
        ["/arms_controller/joint_trajectory"],
        "trajectory_msgs/JointTrajectory topics (JointTrajectoryController style), any subset of the joints",
    ),
    Param(
        "joint_state_command_topics",
        ["/joint_left_states", "/joint_right_states"],
        "sensor_msgs/JointState command topics (AgileX style), any subset of the joints by name",
    ),
    Param(
        "interbotix_namespaces",
        ["/follower_left/commands", "/follower_right/commands"],
        "per-arm Interbotix command namespaces (<ns>/joint_group, <ns>/joint_single), left arm first",
    ),
)

COMMAND_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
IMAGE_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)  # reliable: best-effort readers match too


def default_config_path() -> Path | None:
    """config/sim.yaml from the source tree, else from share/motus_ros (installed)."""
    source = Path(__file__).resolve().parents[3] / "config" / "sim.yaml"
    if source.is_file():
        return source
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        installed = Path(get_package_share_directory("motus_ros")) / "config" / "sim.yaml"
        return installed if installed.is_file() else None
    except (ImportError, PackageNotFoundError):
        return None


class _Trajectory:
    """A JointTrajectory being executed: linear interpolation from the target at receipt through its points."""

    def __init__(
        self, indices: list[int], start_values: np.ndarray, times: np.ndarray, positions: np.ndarray, start_s: float
    ) -> None:
        self.indices = indices
        self.times = np.concatenate([[0.0], times])  # [P + 1]
        self.positions = np.vstack([start_values[None], positions])  # [P + 1, J]
        self.start_s = start_s

    def sample(self, now_s: float) -> np.ndarray | None:
        elapsed = now_s - self.start_s
        if elapsed < 0:
            return None  # scheduled in the future (header.stamp ahead): keep the current target
        return np.array([np.interp(elapsed, self.times, self.positions[:, j]) for j in range(len(self.indices))])


class AlohaSimNode(Node):
    """gym-aloha physics + cameras + joint states + every command interface (see the module docstring)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        for param in PARAMETERS:
            descriptor = ParameterDescriptor(description=param.description)
            if param.rate:
                descriptor.floating_point_range = [FloatingPointRange(from_value=0.1, to_value=1000.0)]
            self.declare_parameter(param.name, param.default, descriptor)
        self.profile: RobotProfile = load_profile(self.get_parameter("profile").value)
        task = self.get_parameter("task").value
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        mujoco_cameras = list(self.get_parameter("mujoco_cameras").value)
        if len(mujoco_cameras) != len(self.profile.cameras):
            raise ValueError(
                f"mujoco_cameras must name one MuJoCo camera per profile camera "
                f"({len(self.profile.cameras)}: {self.profile.camera_roles}), got {mujoco_cameras}"
            )
        if self.profile.action_dim != 14:
            raise ValueError(
                f"the ALOHA sim needs a 14-joint profile, {self.profile.name!r} has {self.profile.action_dim}"
            )

        # 1. Physics: gym-aloha's env object, driven without its rendering step()/reset().
        from gym_aloha.env import AlohaEnv

        self.env = AlohaEnv(task=task, obs_type="pixels_agent_pos")
        self.physics = self.env._env.physics
        self.task = self.env._env.task
        self.n_sub_steps = self.env._env._n_sub_steps
        self.dt = self.n_sub_steps * self.physics.timestep()  # gym_aloha DT = 0.02 s
        self.lower = np.asarray(self.profile.lower_limits)
        self.upper = np.asarray(self.profile.upper_limits)
        self._lock = threading.Lock()  # physics, target and trajectories
        self._trajectories: list[_Trajectory] = []
        self.steps = 0
        self.commands_received = 0
        self.reset_episode(int(self.get_parameter("seed").value))

        # 2. Publishers.
        self.joint_state_pub = self.create_publisher(JointState, self.profile.joint_state_topics[0], 10)
        self.image_pubs = [
            self.create_publisher(
                CompressedImage if camera.transport == "compressed" else Image, camera.transport_topic, IMAGE_QOS
            )
            for camera in self.profile.cameras
        ]
        self.success_pub = self.create_publisher(Bool, "~/success", 10)
        self.reward_pub = self.create_publisher(Float64, "~/reward", 10)

        # 3. Every command interface.
        self._name_index = {name: i for i, name in enumerate(self.profile.joint_names)}
        self.create_subscription(
            Float64MultiArray, self.get_parameter("forward_command_topic").value, self._on_forward_command, COMMAND_QOS
        )
        for topic in self.get_parameter("trajectory_topics").value:
            self.create_subscription(JointTrajectory, topic, self._on_trajectory, COMMAND_QOS)
        for topic in self.get_parameter("joint_state_command_topics").value:
            self.create_subscription(JointState, topic, self._on_joint_state_command, COMMAND_QOS)
        self.interbotix = self._subscribe_interbotix(list(self.get_parameter("interbotix_namespaces").value))
        self.create_service(Trigger, "~/reset", self._on_reset)

        # 4. Timers: physics at 1 / DT, status; cameras on their own thread.
        self.create_timer(self.dt, self._step)
        self.create_timer(1.0 / float(self.get_parameter("status_rate_hz").value), self._publish_status)
        self._stop = threading.Event()
        self._render_ready = threading.Event()
        self._render_error: BaseException | None = None
        self._render_thread = threading.Thread(target=self._render_loop, name="aloha_sim_render", daemon=True)
        self._render_thread.start()
        self.get_logger().info(
            f"gym-aloha {task} with profile {self.profile.name!r}: physics {1 / self.dt:g} Hz, cameras "
            f"{self.profile.camera_roles} at {self.get_parameter('camera_rate_hz').value:g} Hz, "
            f"interbotix commands {'on' if self.interbotix else 'off (interbotix_xs_msgs missing)'}"
        )

    # --- episode -------------------------------------------------------------------------------------
    def reset_episode(self, seed: int) -> None:
        """gym-aloha's AlohaEnv.reset, minus its rendering: seed, sample the object pose, initialise."""
        from gym_aloha.tasks.sim import BOX_POSE

        from motus_sim.scripted_expert import get_task

        with self._lock:
            self.task.random.seed(seed)
            self.task._random = np.random.RandomState(seed)
            BOX_POSE[0] = get_task(self.env.task).sample_object_pose(seed)  # the one home of the pose sampling
            self.task.initialize_episode(self.physics)
            self.target = np.clip(self.task.get_qpos(self.physics), self.lower, self.upper)  # hold the start pose
            self._trajectories.clear()
            self.seed = seed

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        seed = int(self.get_parameter("seed").value)
        self.reset_episode(seed)
        response.success = True
        response.message = f"reset {self.env.task} with seed {seed}"
        return response

    # --- physics -------------------------------------------------------------------------------------
    def now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _step(self) -> None:
        now = self.now_s()
        with self._lock:
            for trajectory in self._trajectories:
                values = trajectory.sample(now)
                if values is not None:
                    self.target[trajectory.indices] = values
            action = np.clip(self.target, self.lower, self.upper)
            # dm_control Environment.step without the observation (and its 480x640 renders).
            self.task.before_step(action, self.physics)
            self.physics.step(self.n_sub_steps)
            self.task.after_step(self.physics)
            qpos = self.task.get_qpos(self.physics)
            qvel = self.task.get_qvel(self.physics)
            self.steps += 1
        msg = JointState()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.name = list(self.profile.joint_names)
        msg.position = qpos.tolist()
        msg.velocity = qvel.tolist()
        self.joint_state_pub.publish(msg)

    def _publish_status(self) -> None:
        with self._lock:
            reward = float(self.task.get_reward(self.physics))
        self.reward_pub.publish(Float64(data=reward))
        self.success_pub.publish(Bool(data=bool(reward >= self.task.max_reward)))

    # --- cameras -------------------------------------------------------------------------------------
    def _render_loop(self) -> None:
        """Own MjData + one mujoco.Renderer per image size, created here: a GL context belongs to its thread."""
        import mujoco

        renderers: dict[tuple[int, int], mujoco.Renderer] = {}
        try:
            model = self.physics.model.ptr
            data = mujoco.MjData(model)
            for camera in self.profile.cameras:
                size = (camera.height, camera.width)
                if size not in renderers:
                    renderers[size] = mujoco.Renderer(model, height=camera.height, width=camera.width)
            mujoco_cameras = list(self.get_parameter("mujoco_cameras").value)
            period = 1.0 / float(self.get_parameter("camera_rate_hz").value)
            self._render_ready.set()
            next_time = time.monotonic()
            while not self._stop.is_set():
                with self._lock:  # a consistent snapshot of the state, then render without the lock
                    data.qpos[:] = self.physics.data.qpos
                    data.time = self.physics.data.time
                stamp = self.get_clock().now().to_msg()
                mujoco.mj_kinematics(model, data)  # positions of bodies and cameras from qpos
                mujoco.mj_camlight(model, data)
                for camera, mujoco_camera, publisher in zip(self.profile.cameras, mujoco_cameras, self.image_pubs):
                    renderer = renderers[(camera.height, camera.width)]
                    renderer.update_scene(data, camera=mujoco_camera)
                    image = renderer.render()
                    if self._stop.is_set() or not self.context.ok():
                        return  # shutting down: the publishers are going away
                    if camera.transport == "compressed":
                        message = numpy_to_compressed(image, stamp, frame_id=camera.role)
                    else:
                        message = numpy_to_image(image, stamp, frame_id=camera.role, encoding=camera.encoding)
                    publisher.publish(message)
                next_time += period
                delay = next_time - time.monotonic()
                if delay < 0:  # rendering is slower than the rate: skip, never build a backlog
                    next_time = time.monotonic()
                self._stop.wait(max(delay, 0.0))
        except BaseException as error:  # surfaced by main() / the ready check rather than lost in a thread
            if self._stop.is_set() or not self.context.ok():
                return  # a publish raced the shutdown: nothing is wrong
            self._render_error = error
            self._render_ready.set()
            logger.exception("camera rendering failed")
        finally:
            for renderer in renderers.values():
                renderer.close()

    # --- commands ------------------------------------------------------------------------------------
    def _indices(self, names, source: str) -> list[int] | None:
        unknown = [name for name in names if name not in self._name_index]
        if unknown or len(set(names)) != len(names):
            self.get_logger().warning(
                f"ignored a {source} command: unknown or repeated joint names {unknown or list(names)}; "
                f"expected names from {self.profile.joint_names}",
                throttle_duration_sec=2.0,
            )
            return None
        return [self._name_index[name] for name in names]

    def _set_target(self, indices: list[int], values, source: str) -> None:
        values = np.asarray(values, dtype=np.float64)
        if values.shape != (len(indices),) or not np.all(np.isfinite(values)):
            self.get_logger().warning(
                f"ignored a {source} command: expected {len(indices)} finite values, got {values.shape}",
                throttle_duration_sec=2.0,
            )
            return
        with self._lock:
            # A direct command supersedes any trajectory on the same joints.
            self._trajectories = [t for t in self._trajectories if not set(t.indices) & set(indices)]
            self.target[indices] = values
            self.commands_received += 1

    def _on_forward_command(self, msg: Float64MultiArray) -> None:
        self._set_target(list(range(self.profile.action_dim)), msg.data, "forward_command")

    def _on_joint_state_command(self, msg: JointState) -> None:
        indices = self._indices(list(msg.name), "JointState")
        if indices is not None:
            self._set_target(indices, msg.position, "JointState")

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        indices = self._indices(list(msg.joint_names), "JointTrajectory")
        if indices is None:
            return
        if not msg.points or any(len(p.positions) != len(indices) for p in msg.points):
            self.get_logger().warning(
                "ignored a JointTrajectory: no points, or points without one position per joint",
                throttle_duration_sec=2.0,
            )
            return
        times = np.array([duration_to_seconds(p.time_from_start) for p in msg.points])
        positions = np.array([p.positions for p in msg.points], dtype=np.float64)
        if np.any(np.diff(times) <= 0) or times[0] < 0 or not np.all(np.isfinite(positions)):
            self.get_logger().warning(
                "ignored a JointTrajectory: time_from_start must increase and positions be finite",
                throttle_duration_sec=2.0,
            )
            return
        stamp = stamp_to_seconds(msg.header.stamp)
        start = stamp if stamp > 0 else self.now_s()  # JTC: a zero stamp starts on receipt
        with self._lock:
            self._trajectories = [t for t in self._trajectories if not set(t.indices) & set(indices)]
            self._trajectories.append(_Trajectory(indices, self.target[indices].copy(), times, positions, start))
            self.commands_received += 1

    def _subscribe_interbotix(self, namespaces: list[str]) -> bool:
        try:
            from interbotix_xs_msgs.msg import JointGroupCommand, JointSingleCommand
        except ImportError:
            return False
        grippers = set(self.profile.gripper_indices)
        arms = [[i for i in range(0, 7)], [i for i in range(7, 14)]]  # [left 7, right 7] (profile layout)
        for namespace, arm in zip(namespaces, arms):
            joints = [i for i in arm if i not in grippers]
            gripper = [i for i in arm if i in grippers]

            def on_group(msg, joints=joints):
                if msg.name == "arm":
                    self._set_target(joints, msg.cmd, "Interbotix joint_group")

            def on_single(msg, gripper=gripper):
                if msg.name == "gripper":
                    self._set_target(gripper, [msg.cmd], "Interbotix joint_single")

            namespace = namespace.rstrip("/")
            self.create_subscription(JointGroupCommand, f"{namespace}/joint_group", on_group, COMMAND_QOS)
            self.create_subscription(JointSingleCommand, f"{namespace}/joint_single", on_single, COMMAND_QOS)
        return True

    def wait_until_rendering(self, timeout: float = 60.0) -> None:
        if not self._render_ready.wait(timeout):
            raise RuntimeError(f"the camera renderer did not start within {timeout} s")
        if self._render_error is not None:
            raise RuntimeError(f"camera rendering failed: {self._render_error!r}") from self._render_error

    def destroy_node(self) -> None:
        self._stop.set()
        if self._render_thread.is_alive():
            self._render_thread.join(timeout=5.0)
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    """Console script `motus_sim`: config/sim.yaml as defaults, then the command line's --ros-args.

    args: the command-line arguments without the program name (None = sys.argv[1:]).
    """
    os.environ.setdefault("MUJOCO_GL", "egl")  # headless; osmesa failed on the project's CPU machines
    logging.basicConfig(level=logging.INFO)
    argv = ["motus_sim", *(sys.argv[1:] if args is None else args)]
    config = default_config_path()
    if config is not None:  # defaults first: later --params-file / -p on the command line win
        argv = argv[:1] + ["--ros-args", "--params-file", str(config)] + argv[1:]
    # Our own SIGINT/SIGTERM handling: a signal only ends the spin loop, and a second one (launch forwards SIGINT on
    # top of the one a terminal sends to the process group) cannot interrupt the shutdown half-way, while the render
    # thread still publishes through a context rclpy's handler would already have torn down.
    rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
    stop = stop_on_signals()
    node = None
    try:
        node = AlohaSimNode()
        node.wait_until_rendering()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        print(READY_LINE, flush=True)
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
    except ExternalShutdownException:
        pass
    finally:
        ignore_signals_while_exiting()
        if node is not None:
            node.destroy_node()  # stops and joins the render thread before the publishers go
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
