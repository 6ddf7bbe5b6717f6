"""motus_server: one process, one MotusEngine, five lifecycle nodes (policy, world_model, idm, imagination, and
recorder: episodes into a LeRobot dataset, recorder_node.py) and one sensor intake (node `sensors`,
server_context.py) that subscribes the robot's cameras and joint states for all.

    motus_server [--profile NAME|PATH] [--checkpoint DIR|NAME] [--preset NAME] [--device DEV] [--no-autostart]
                 [--max-waiting-requests N] [--torch-threads N] [--ros-args --params-file config/motus_server.yaml ...]

The shorthand options become global ROS parameters (`-p profile:=...`), which every node declares; params files
set the rest (config/motus_server.yaml documents every parameter). Note the ROS precedence rule: a node section
of a params file (`/**/policy: dry_run: true`) wins over a global `-p`, so per-node settings belong in a second
params file. The model loads once, on the first node's `configure`, and the others attach to it. With
`autostart` (the default) every node is configured and activated at start-up, so the server works without the
`ros2 lifecycle` CLI; the line `MOTUS SERVER READY` is printed on stdout once all nodes are active (tests and
the demo wait for it). SIGINT/SIGTERM deactivate the nodes (the policy node holds the robot) before exiting.

Threads: a MultiThreadedExecutor runs the node callbacks. Sensor callbacks, the control timer and the
services/actions sit in separate callback groups (see lifecycle_base), and the model runs on the engine's own
worker thread, so camera and joint-state callbacks never wait on inference. At most `--max-waiting-requests`
service/action callbacks wait on the model at once (more are answered BUSY), so executor threads stay free.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.signals import SignalHandlerOptions

from motus_ros.checkpoints import resolve_checkpoint, shipped_models
from motus_ros.idm_node import IdmNode
from motus_ros.imagination_node import ImaginationNode
from motus_ros.lifecycle_base import MotusLifecycleNode
from motus_ros.policy_node import PolicyNode
from motus_ros.process_signals import ignore_signals_while_exiting, stop_on_signals
from motus_ros.recorder_node import RecorderNode
from motus_ros.server_context import ModelSpec, SensorIntake, ServerContext, SharedModel
from motus_ros.world_model_node import WorldModelNode

logger = logging.getLogger(__name__)

READY_LINE = "MOTUS SERVER READY"
NODE_NAMES = ("policy", "world_model", "idm", "imagination", "recorder")
# Every node of the server, for params files with one section per node.
PARAMETER_SECTIONS = ("sensors", *NODE_NAMES)


def build_engine(spec: ModelSpec) -> Any:
    """The MotusEngine for `spec`: from a checkpoint folder or a shipped model name (motus_ros.checkpoints), or a
    preset with seeded random weights (with a loud warning: such a model drives the robot with noise and exists for
    development and tests only). No checkpoint never means a shipped model: those are trained in simulation."""
    from motus_model.engine import MotusEngine

    if spec.checkpoint:
        path = Path(resolve_checkpoint(spec.checkpoint))  # a folder, or a shipped model name (models/<name>)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"checkpoint {str(path)!r}: expected a folder with config.json + model.safetensors")
        logger.info("loading the Motus checkpoint %s on %s", path, spec.device)
        try:
            return MotusEngine.from_pretrained(str(path), device=spec.device, max_batch=spec.max_batch)
        except Exception as exc:  # one clear line naming the checkpoint: the server then exits non-zero, never READY
            raise ValueError(f"checkpoint {str(path)!r} refused: {type(exc).__name__}: {exc}") from exc
    logging.getLogger("motus_server").warning(
        "NO CHECKPOINT: running preset %r with RANDOM weights (seed %d). The actions and frames are noise; "
        "set `checkpoint` (or --checkpoint DIR|NAME) to a trained model folder or a shipped model (%s).",
        spec.preset,
        spec.seed,
        ", ".join(shipped_models()) or "none found",
    )
    return MotusEngine.from_preset(spec.preset, seed=spec.seed, device=spec.device, max_batch=spec.max_batch)


def parse_arguments(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """Split our shorthand options from the ROS arguments; the shorthands become global `-p name:=value`."""
    parser = argparse.ArgumentParser(prog="motus_server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", help="robot profile name (config/robots/<name>.yaml) or path")
    parser.add_argument(
        "--checkpoint",
        help="checkpoint folder (config.json + model.safetensors) or a shipped model name "
        "(models/<name>, e.g. motus-small-aloha-transfer-cube); none = --preset with random weights",
    )
    parser.add_argument("--preset", help="model preset with random weights when no checkpoint is given")
    parser.add_argument("--device", help="torch device, e.g. cpu or cuda:0")
    parser.add_argument(
        "--no-autostart", action="store_true", help="leave the nodes unconfigured (drive them with ros2 lifecycle)"
    )
    parser.add_argument(
        "--max-waiting-requests",
        type=int,
        default=4,
        help="requests that may wait on the model at once (more get BUSY)",
    )
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=0,
        help="torch intra-op threads of the model (0 = torch's default, one per core); 1 suits a small "
        "CPU shared with the simulator",
    )
    if "--ros-args" in argv:
        split = list(argv).index("--ros-args")
        own, ros = list(argv[:split]), list(argv[split:])
    else:
        own, ros = list(argv), []
    options = parser.parse_args(own)
    overrides = []
    for name in ("profile", "checkpoint", "preset", "device"):
        value = getattr(options, name)
        if value is not None:
            overrides += ["-p", f"{name}:={value}"]
    if options.no_autostart:
        overrides += ["-p", "autostart:=false"]
    if overrides:
        ros = (ros or ["--ros-args"]) + overrides
    return options, ros


def create_nodes(context: ServerContext) -> list[MotusLifecycleNode]:
    return [
        PolicyNode(context),
        WorldModelNode(context),
        IdmNode(context),
        ImaginationNode(context),
        RecorderNode(context),
    ]


def start_nodes(nodes: Sequence[MotusLifecycleNode]) -> bool:
    """Configure then activate every node."""
    from rclpy.lifecycle import TransitionCallbackReturn

    for node in nodes:
        if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            node.get_logger().error("configure failed (see above)")
            return False
    for node in nodes:
        if node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
            node.get_logger().error("activate failed (see above)")
            return False
    return True


def spin_once_safely(executor: MultiThreadedExecutor, timeout_sec: float) -> None:
    """executor.spin_once, surviving entities destroyed under it.

    A lifecycle cleanup destroys its timers, subscriptions and publishers from the thread that serves the
    transition, while the executor's wait set (or a callback on another thread) may still hold one of them:
    rclpy then raises InvalidHandle ("destruction was requested") from spin_once, which ended the process after
    a few deactivate/cleanup/configure/activate cycles. The entity is gone by then, so the next spin_once builds
    a wait set without it: the error is harmless and is only logged."""
    from rclpy._rclpy_pybind11 import InvalidHandle

    try:
        executor.spin_once(timeout_sec=timeout_sec)
    except InvalidHandle as exc:
        logger.debug("an entity was destroyed while the executor used it (lifecycle cleanup): %s", exc)


def main(args: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] [%(name)s]: %(message)s")
    argv = list(sys.argv[1:] if args is None else args)
    options, ros_args = parse_arguments(argv)
    # The control timer shares the GIL with the model's Python code on the engine thread. With CPython's default
    # 5 ms switch interval, each of the several GIL hand-overs of one 20 ms control tick can wait that long while
    # inference runs; 0.5 ms keeps the command rate steady (seen here: 22 Hz instead of 50 Hz during warm-up).
    sys.setswitchinterval(0.0005)
    if options.torch_threads > 0:
        # On a CPU shared with other busy processes (the simulator's rendering), intra-op threads that wait on
        # each other are far slower than one: seen on 2 cores, 4.4 s instead of 0.4 s per chunk.
        import torch

        torch.set_num_threads(options.torch_threads)
    # Our own SIGINT/SIGTERM handling: rclpy's would shut the context down at once, before the policy node
    # could publish its hold command. Here a signal only ends the spin loop; the nodes then shut down in order.
    rclpy.init(args=["motus_server", *ros_args], signal_handler_options=SignalHandlerOptions.NO)
    stop = stop_on_signals()
    context = ServerContext(model=SharedModel(build_engine), max_waiting_requests=max(1, options.max_waiting_requests))
    nodes: list[MotusLifecycleNode] = []
    sensors: SensorIntake | None = None
    executor: MultiThreadedExecutor | None = None
    exit_code = 0
    try:
        # The sensors first: they load the robot profile and feed every node's observation.
        sensors = SensorIntake(context)
        nodes = create_nodes(context)
        # Threads: the waiting requests, a running RunPolicy goal, and the timers and sensor callbacks.
        executor = MultiThreadedExecutor(num_threads=context.max_waiting_requests + 1 + 4)
        executor.add_node(sensors)
        for node in nodes:
            executor.add_node(node)
        if bool(nodes[0].param("autostart")):
            if not start_nodes(nodes):
                reason = next((node.last_error for node in nodes if node.last_error), "see the log")
                print(f"MOTUS SERVER FAILED: a node did not configure/activate: {reason}", flush=True)
                return 1
            print(f"{READY_LINE}: nodes {', '.join(NODE_NAMES)} active", flush=True)
        else:
            print(f"{READY_LINE}: nodes {', '.join(NODE_NAMES)} unconfigured (autostart false)", flush=True)
        while not stop.is_set() and rclpy.ok():
            spin_once_safely(executor, 0.1)
        logger.info("shutting down: deactivating the nodes (the policy node holds the robot)")
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        logger.exception("motus_server failed")
        exit_code = 1
    finally:
        ignore_signals_while_exiting()
        # Order matters: waiting requests give up, the nodes deactivate (the policy node holds the robot) while
        # the context still works, the engine stops between denoising steps, then the executor threads end.
        context.closing.set()
        for node in nodes:
            try:
                node.trigger_shutdown()
            except Exception as exc:  # e.g. the node is already finalized
                logger.debug("shutdown of %s: %s", node.get_name(), exc)
        if executor is not None and rclpy.ok():
            # Keep spinning a moment so the final results of the goals that just ended reach their clients.
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                spin_once_safely(executor, 0.05)
        context.model.close()
        if executor is not None:
            executor.shutdown(timeout_sec=10.0)
        for node in nodes:
            node.destroy_node()
        if sensors is not None:
            sensors.destroy_node()
        rclpy.try_shutdown()
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
