"""The Motus demo (`make demo`, `python -m motus_ros.demo`): the simulated ALOHA driven by the Motus server.

1. starts `motus_sim` (gym-aloha transfer cube, MuJoCo) and `motus_server` with the shipped checkpoint
   models/motus-small-aloha-transfer-cube (trained on the scripted transfer-cube demonstrations) as child processes;
2. resets the simulated episode (the cube at the pose of `--seed`, the arms at their start pose), then runs a
   RunPolicy goal for one episode while counting the commands that reach the robot's command topic;
3. asks the world model to predict the future of the robot's next chunk, and the imagination node to imagine
   the task (both replayed on ~/imagined/<camera> for rviz);
4. writes an mp4 (`--video`, default outputs/demo/motus_demo.mp4): the live cameras during the episode, then the
   last live view beside the world model's predicted frames and the imagined ones, one row per camera;
5. prints what happened (which checkpoint, commands, control rate, inference latency, imagined frames, the
   episode's outcome, the video's path) and stops the children.

`--random-weights` runs the preset with random weights instead: the arms move, but not towards the cube.

The processes, the episode resets and the timing summary come from motus_ros.harness (shared with
`motus eval-ros`); this script only strings them together and reports.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from motus_ros.checkpoints import DEFAULT_SIM_CHECKPOINT, DEFAULT_SIM_INSTRUCTION, resolve_checkpoint
from motus_ros.harness import (
    CHUNK_REQUEST_THRESHOLD,
    DEFAULT_CAMERA_RATE_HZ,
    DEFAULT_STEPS,
    DEFAULT_TORCH_THREADS,
    SimMonitor,
    Suite,
    command_message_type,
    model_description,
    policy_timing,
    retry_without_observation,
    use_private_domain,
)


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="motus_ros.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds the policy drives the robot (one episode)"
    )
    parser.add_argument("--instruction", default=DEFAULT_SIM_INSTRUCTION, help="the policy's task instruction")
    parser.add_argument(
        "--checkpoint",
        default=DEFAULT_SIM_CHECKPOINT,
        help="checkpoint folder or shipped model name (default: the shipped transfer-cube model)",
    )
    parser.add_argument(
        "--random-weights", action="store_true", help="ignore --checkpoint: run --preset with random weights"
    )
    parser.add_argument("--preset", default="motus-small-aloha", help="preset used with --random-weights")
    parser.add_argument(
        "--steps",
        type=int,
        default=DEFAULT_STEPS,
        help="Euler steps per request (few keep CPU inference inside a chunk's 0.64 s)",
    )
    parser.add_argument(
        "--chunk-request-threshold",
        type=int,
        default=CHUNK_REQUEST_THRESHOLD,
        help="request the next chunk when this many planned control steps remain",
    )
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=DEFAULT_TORCH_THREADS,
        help="the server's torch threads (0: torch's default)",
    )
    parser.add_argument(
        "--seed", type=int, default=1000, help="object pose of the episode (the demonstrations used 0-49)"
    )
    parser.add_argument("--profile", default="aloha_sim", help="robot profile of the simulated robot")
    parser.add_argument(
        "--camera-rate",
        type=float,
        default=DEFAULT_CAMERA_RATE_HZ,
        help="simulated camera rate (Hz); CPU rendering competes with inference for the 2 cores",
    )
    parser.add_argument("--task", default="transfer_cube", help="gym-aloha task: transfer_cube or insertion")
    parser.add_argument(
        "--video",
        default="outputs/demo/motus_demo.mp4",
        help="mp4 of the live cameras beside the predicted and imagined frames ('' or --no-video: none)",
    )
    parser.add_argument("--no-video", action="store_true", help="write no mp4")
    parser.add_argument(
        "--preview",
        action="store_true",
        help="preview before acting: the world model's frames of each chunk on /policy/preview/<camera> "
        "(costs inference time on a CPU)",
    )
    parser.add_argument("--verbose", action="store_true", help="echo the children's logs")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_arguments(argv)
    started = time.monotonic()
    checkpoint = ""
    if not options.random_weights:
        try:
            checkpoint = resolve_checkpoint(options.checkpoint)
        except (FileNotFoundError, ValueError) as exc:
            print(f"demo failed: {exc}\n(--random-weights runs the preset with random weights instead)", flush=True)
            return 1
    print(f"ROS_DOMAIN_ID={use_private_domain()} (export it to watch with rviz2 / ros2 topic)", flush=True)
    model = model_description(checkpoint, options.preset)
    print(
        f"motus demo: simulated ALOHA ({options.task}, seed {options.seed}) + motus_server ({model}), "
        f"policy for {options.duration:g} s with {options.steps} Euler steps per chunk",
        flush=True,
    )
    suite = Suite(
        checkpoint=checkpoint,
        preset=options.preset,
        profile=options.profile,
        task=options.task,
        seed=options.seed,
        camera_rate_hz=options.camera_rate,
        steps=options.steps,
        chunk_request_threshold=options.chunk_request_threshold,
        torch_threads=options.torch_threads,
        preview=options.preview,
        verbose=options.verbose,
    )
    report: dict = {}
    try:
        suite.start()
        print("simulator and server are up", flush=True)
        report = run_demo(options)
        report["model"] = {
            "checkpoint": checkpoint or None,
            "preset": None if checkpoint else options.preset,
            "random_weights": not checkpoint,
            "steps": options.steps,
        }
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        return 130
    except Exception as exc:
        print(f"demo failed: {exc}", flush=True)
        return 1
    finally:
        exit_codes = suite.stop()
        if report:
            report["children_exit_codes"] = exit_codes
            report["wall_time_s"] = round(time.monotonic() - started, 1)
            print_report(report)
    return 0 if report.get("policy", {}).get("termination") == "completed" else 1


def run_demo(options: argparse.Namespace) -> dict:
    """Reset the episode, drive the robot, query the world model and the imagination node; returns what happened."""
    import rclpy
    from sensor_msgs.msg import CompressedImage, Image, JointState

    from motus_ros.client import MotusClient
    from motus_ros.conversions import stamp_to_seconds
    from motus_ros.profiles import load_profile

    profile = load_profile(options.profile)
    rclpy.init()
    client = MotusClient(node_name="motus_demo")
    counts = {"commands": 0, "imagined_frames": 0, "predicted_frames": 0, "compressed_frames": 0, "preview_frames": 0}
    predicted_stamps: list[float] = []
    latest_state: list = []
    record = bool(options.video) and not options.no_video
    try:
        node = client.node
        command_type = command_message_type(profile)
        for topic in profile.command_topics:
            node.create_subscription(
                command_type, topic, lambda _: counts.__setitem__("commands", counts["commands"] + 1), 100
            )
        node.create_subscription(
            Image,
            "/imagination/imagined/high",
            lambda _: counts.__setitem__("imagined_frames", counts["imagined_frames"] + 1),
            10,
        )

        def on_predicted(message: Any) -> None:
            counts["predicted_frames"] += 1
            predicted_stamps.append(stamp_to_seconds(message.header.stamp))

        node.create_subscription(Image, "/world_model/imagined/high", on_predicted, 10)
        node.create_subscription(
            CompressedImage,
            "/world_model/imagined/high/compressed",
            lambda _: counts.__setitem__("compressed_frames", counts["compressed_frames"] + 1),
            10,
        )
        node.create_subscription(
            Image,
            f"/policy/preview/{profile.camera_roles[0]}",
            lambda _: counts.__setitem__("preview_frames", counts["preview_frames"] + 1),
            10,
        )
        node.create_subscription(JointState, profile.joint_state_topics[0], lambda m: latest_state.append(m), 10)
        # Every camera at half size for the video (the demo's cameras are 240x320: 10 s is ~15 MB at 25 Hz).
        sim = SimMonitor(client, profile, record_roles=profile.camera_roles, record_stride=2)
        if not client.wait_for_server(60) or not sim.wait_for_sim(30):
            raise RuntimeError("the server's or the simulator's interfaces did not appear")
        client.spin(3.0, until=lambda: len(latest_state) > 5)

        # 1. A fresh episode: the cube at the seed's pose, the arms at their start pose; then the policy drives.
        sim.reset(options.seed)
        sim.begin_episode(record=record)
        counts["commands"] = 0
        start = time.monotonic()
        if not client.run_policy(options.instruction, max_duration_s=options.duration):
            raise RuntimeError("the RunPolicy goal was rejected")
        next_print = time.monotonic() + 2.0
        while not client.is_task_complete(0.05):
            feedback = client.get_feedback()
            if feedback is not None and time.monotonic() >= next_print:
                next_print += 2.0
                hold = f", holding ({feedback.hold_reason})" if feedback.holding else ""
                print(
                    f"  step {feedback.step:5d}  chunks {feedback.chunks:3d}  rate {feedback.control_rate_hz:5.1f} Hz  "
                    f"inference {feedback.last_inference_ms:6.1f} ms  reward {sim.max_reward:g}{hold}",
                    flush=True,
                )
        elapsed = time.monotonic() - start
        sim.end_episode()
        result = client.get_result()
        client.spin(0.3)
        timing = policy_timing(client.policy_task.feedback)
        policy = {
            "termination": result.termination,
            "error": result.error.message,
            "steps": int(result.steps),
            "chunks": int(result.chunks),
            "duration_s": round(float(result.duration_s), 2),
            "commands_received_on_robot_topics": counts["commands"],
            "command_rate_hz": round(counts["commands"] / elapsed, 1),
            "target_control_rate_hz": profile.control_rate_hz,
            "feedback_control_rate_hz_median": timing["control_rate_hz_median"],
            "inference_latency_ms_median": timing["inference_ms_median"],
            "holding_fraction": timing["holding_fraction"],
            "preview_frames_seen": counts["preview_frames"] if options.preview else None,
        }
        episode = {
            "seed": options.seed,
            "success": bool(sim.success_seen),
            "max_reward": sim.max_reward,
            "final_reward": sim.final_reward,
        }

        # 2. The world model: what executing the policy's next chunk would look like.
        plan = retry_without_observation(
            client, lambda: client.predict_actions(options.instruction, steps=options.steps)
        )
        if plan.error.code != 0:
            raise RuntimeError(f"predict_actions failed: {plan.error.message}")
        future = retry_without_observation(
            client, lambda: client.predict_future(plan.trajectory, steps=options.steps, publish=True)
        )
        # 3. Imagination (joint mode: frames and actions).
        imagined = retry_without_observation(
            client, lambda: client.imagine(options.instruction, with_actions=True, steps=options.steps, publish=True)
        )
        client.spin(
            3.0,
            until=lambda: (
                counts["imagined_frames"] >= len(imagined.frames) and counts["predicted_frames"] >= len(future.frames)
            ),
        )
        # The replay's own stamps give the model's video frame rate (frame i stamped start + i / fps).
        intervals = np.diff(predicted_stamps[: len(future.frames)])
        model_fps = float(1.0 / np.median(intervals)) if len(intervals) and np.median(intervals) > 0 else 0.0
        video = {"path": None}
        if record:
            live = sim.recorded_views()
            live_fps = max(1, round(len(live) / max(elapsed, 1e-3)))
            try:
                video = write_demo_video(
                    Path(options.video),
                    live,
                    [observation_views(o) for o in future.frames],
                    [observation_views(o) for o in imagined.frames],
                    profile.camera_roles,
                    live_fps,
                    model_fps or 2.0,
                )
            except (OSError, ValueError, RuntimeError) as exc:  # the report still comes; the video says why not
                video = {"path": None, "error": f"no video written: {exc}"}
        return {
            "policy": policy,
            "world_model": {
                "error": future.error.message or "ok",
                "frames": len(future.frames),
                "cameras": list(future.frames[0].camera_names) if future.frames else [],
                "total_ms": round(future.timing.total_ms, 1),
                "published_frames_seen": counts["predicted_frames"],
                "compressed_frames_seen": counts["compressed_frames"],
                "replay_fps_from_stamps": round(model_fps, 2),
            },
            "imagination": {
                "error": imagined.error.message or "ok",
                "frames": len(imagined.frames),
                "trajectory_points": len(imagined.trajectory.points),
                "total_ms": round(imagined.timing.total_ms, 1),
                "replayed_frames_seen": counts["imagined_frames"],
            },
            "episode": episode,
            "video": video,
        }
    finally:
        client.destroy()
        rclpy.try_shutdown()


# --------------------------------------------------------------------------------------------------------------
# The demo video: live cameras beside the predicted (world model) and imagined frames
VIDEO_COLUMNS = ("live", "world model", "imagination")
CELL = (120, 160)  # (height, width) of one view in the video: the sim's 240x320 cameras at half size
HEADER = 20  # rows of the label strip


def observation_views(observation: Any) -> dict[str, np.ndarray]:
    """motus_msgs/Observation -> camera role -> uint8 RGB."""
    from motus_ros.conversions import image_to_numpy

    return {role: image_to_numpy(image) for role, image in zip(observation.camera_names, observation.images)}


def _cell(view: np.ndarray | None, label: str = "") -> np.ndarray:
    import cv2

    if view is None:  # nothing to show in this column yet
        cell = np.full((*CELL, 3), 32, dtype=np.uint8)
        if label:
            cv2.putText(cell, label, (8, CELL[0] // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (160, 160, 160), 1)
        return cell
    return cv2.resize(np.ascontiguousarray(view), (CELL[1], CELL[0]), interpolation=cv2.INTER_AREA)


def _grid(roles: Sequence[str], columns: Sequence[dict[str, np.ndarray] | None], placeholder: str = "") -> np.ndarray:
    """One video frame: a label strip, then one row per camera role and one column per source."""
    import cv2

    header = np.zeros((HEADER, CELL[1] * len(columns), 3), dtype=np.uint8)
    for index, label in enumerate(VIDEO_COLUMNS[: len(columns)]):
        cv2.putText(header, label, (index * CELL[1] + 6, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
    rows = [
        np.concatenate([_cell(None if views is None else views.get(role), placeholder) for views in columns], axis=1)
        for role in roles
    ]
    return np.concatenate([header, *rows], axis=0)


def demo_video_frames(
    live: Sequence[dict[str, np.ndarray]],
    predicted: Sequence[dict[str, np.ndarray]],
    imagined: Sequence[dict[str, np.ndarray]],
    roles: Sequence[str],
    live_fps: float,
    model_fps: float,
    loops: int = 3,
) -> np.ndarray:
    """[T, H, W, 3] uint8: first the episode (live cameras; the model columns wait), then the last live view beside
    predicted frame k and imagined frame k, each held for 1/model_fps of video time, the clip shown `loops` times.
    Columns: live | world model | imagination; rows: the camera roles."""
    frames = [_grid(roles, [views, None, None], "after the episode") for views in live]
    hold = max(1, round(float(live_fps) / float(model_fps))) if model_fps > 0 else 1
    last = live[-1] if live else None
    for _ in range(loops):
        for k in range(max(len(predicted), len(imagined))):
            columns = [
                last,
                predicted[k] if k < len(predicted) else None,
                imagined[k] if k < len(imagined) else None,
            ]
            frames.extend([_grid(roles, columns)] * hold)
    if not frames:
        raise ValueError("no frames for the demo video: nothing was recorded or imagined")
    return np.stack(frames)


def write_demo_video(
    path: Path,
    live: Sequence[dict[str, np.ndarray]],
    predicted: Sequence[dict[str, np.ndarray]],
    imagined: Sequence[dict[str, np.ndarray]],
    roles: Sequence[str],
    live_fps: float,
    model_fps: float,
) -> dict[str, Any]:
    """Encode the demo video with the project's writer (motus_model.data.video); an interrupted write leaves no
    half file (written beside, then renamed)."""
    from motus_model.data.video import write_video

    frames = demo_video_frames(live, predicted, imagined, roles, live_fps, model_fps)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.{os.getpid()}.partial.mp4")
    try:
        write_video(partial, frames, fps=live_fps)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return {
        "path": str(path.resolve()),
        "frames": int(frames.shape[0]),
        "fps": live_fps,
        "live_frames": len(live),
        "layout": f"{' | '.join(VIDEO_COLUMNS)} x {', '.join(roles)}",
    }


def print_report(report: dict) -> None:
    policy, episode, model = report["policy"], report["episode"], report.get("model", {})
    print("\n=== motus demo report ===")
    if model:
        which = model["checkpoint"] or f"preset {model['preset']} with RANDOM weights"
        print(f"model:         {which} ({model['steps']} Euler steps per chunk)")
    print(
        f"policy:        {policy['termination']} after {policy['duration_s']} s: {policy['steps']} control steps, "
        f"{policy['chunks']} chunks"
    )
    print(
        f"commands:      {policy['commands_received_on_robot_topics']} reached the robot at "
        f"{policy['command_rate_hz']} Hz (target {policy['target_control_rate_hz']:g} Hz)"
    )
    print(
        f"inference:     {policy['inference_latency_ms_median']} ms median per chunk; control rate "
        f"{policy['feedback_control_rate_hz_median']} Hz median; holding {policy['holding_fraction']} of the time"
    )
    if policy.get("preview_frames_seen") is not None:
        print(f"preview:       {policy['preview_frames_seen']} frames of chunk previews on /policy/preview/high")
    world_model = report["world_model"]
    print(
        f"world model:   {world_model['frames']} predicted frames per camera, {world_model['published_frames_seen']} "
        f"replayed on ~/imagined/high ({world_model.get('compressed_frames_seen', 0)} on .../compressed) at "
        f"{world_model.get('replay_fps_from_stamps', 0)} frames/s of predicted time"
    )
    print(
        f"imagination:   {report['imagination']['frames']} imagined frames, "
        f"{report['imagination']['trajectory_points']} action points, "
        f"{report['imagination']['replayed_frames_seen']} replayed on ~/imagined/high"
    )
    print(
        f"episode:       seed {episode['seed']}: success={episode['success']} max_reward={episode['max_reward']} "
        f"final_reward={episode['final_reward']}"
    )
    video = report.get("video") or {}
    if video.get("path"):
        print(f"video:         {video['path']} ({video['frames']} frames at {video['fps']} fps: {video['layout']})")
    elif video.get("error"):
        print(f"video:         {video['error']}")
    if "wall_time_s" in report:
        print(f"wall time:     {report['wall_time_s']} s")
    print(json.dumps(report, indent=2), flush=True)


if __name__ == "__main__":
    sys.exit(main())
