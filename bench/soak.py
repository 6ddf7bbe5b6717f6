"""Soak: motus_server + motus_sim for N minutes under back-to-back RunPolicy goals and world-model requests (not a
test; prints JSON).

Measures the server's resident memory over time (RSS slope in MB/min after the warm-up: flat means no leak), the
gaps between commands arriving on the robot's command topic (percentiles, ms) and the fraction of the run spent
holding (from RunPolicy feedback).

    tools/env.sh python bench/soak.py --minutes 5 [--warmup-min 1] [--preset motus-small]
        [--out bench/results/soak.json]
"""

from __future__ import annotations

import argparse
import collections
import os
import platform
import sys
import threading
import time
from pathlib import Path

import numpy as np

from bench_report import emit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "test" / "ros"))  # server_command / sim_command / start_process

READY = "MOTUS SERVER READY"


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MB (Linux /proc), NaN when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def slope_mb_per_min(samples: list[tuple[float, float]], warmup_s: float) -> float | None:
    """Least-squares slope of RSS over time after the warm-up, in MB per minute."""
    if not samples:
        return None
    t0 = samples[0][0]
    points = [(t - t0, mb) for t, mb in samples if t - t0 >= warmup_s and np.isfinite(mb)]
    if len(points) < 3:
        return None
    t, mb = np.array(points).T
    return float(np.polyfit(t / 60.0, mb, 1)[0])


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    array = np.asarray(values)
    return {f"p{q}": round(float(np.percentile(array, q)), 2) for q in (50, 90, 99)} | {
        "max": round(float(array.max()), 2)
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="soak duration")
    parser.add_argument("--warmup-min", type=float, default=1.0, help="minutes left out of the RSS slope")
    parser.add_argument("--preset", default="motus-small")
    parser.add_argument("--steps", type=int, default=1, help="denoising steps of every request")
    parser.add_argument("--goal-s", type=float, default=10.0, help="duration of each RunPolicy goal")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()

    import rclpy
    from ros_helpers import server_command, sim_command, start_process, stop_process
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray

    from motus_model.config import MotusConfig
    from motus_ros.client import MotusClient
    from motus_ros.profiles import load_profile

    profile = load_profile("aloha_sim")
    chunk = MotusConfig.preset(args.preset).temporal.action_chunk  # the world model takes one action chunk
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    sim = start_process(sim_command("-p", "camera_rate_hz:=4.0"), "MOTUS_SIM READY")
    server = start_process(
        server_command(
            "--torch-threads",
            "1",
            preset=args.preset,
            default_steps=args.steps,
            chunk_request_threshold=10,
            joint_state_max_age_periods=3.0,
        ),
        READY,
    )
    rclpy.init()
    client = MotusClient(node_name="soak_client")
    lock = threading.Lock()
    arrivals: list[float] = []
    state: dict[str, np.ndarray] = {}

    def on_command(_: Float64MultiArray) -> None:
        with lock:
            arrivals.append(time.monotonic())

    def on_state(message: JointState) -> None:
        order = [list(message.name).index(name) for name in profile.joint_names]
        state["q"] = np.asarray(message.position)[order]

    client.node.create_subscription(Float64MultiArray, profile.command_topics[0], on_command, 10000)
    client.node.create_subscription(JointState, profile.joint_state_topics[0], on_state, 10)
    rss: list[tuple[float, float]] = []
    counts = {
        "goals": 0,
        "goals_completed": 0,
        "world_model_requests": 0,
        "world_model_ok": 0,
        "feedback": 0,
        "feedback_holding": 0,
    }
    world_model_errors: collections.Counter = collections.Counter()
    terminations: collections.Counter = collections.Counter()
    try:
        assert client.wait_for_server(120), "the server's interfaces did not appear"
        started = time.monotonic()
        end = started + 60.0 * args.minutes
        next_rss = started
        while time.monotonic() < end:
            client.run_policy("pick up the cube", max_duration_s=args.goal_s)
            counts["goals"] += 1
            seen = 0
            while not client.is_task_complete(0.1):
                now = time.monotonic()
                if now >= next_rss:
                    rss.append((now, rss_mb(server.pid)))
                    next_rss = now + 5.0
                feedback = client.policy_task.feedback
                for message in feedback[seen:]:
                    counts["feedback"] += 1
                    counts["feedback_holding"] += int(message.holding)
                seen = len(feedback)
                if "q" in state and counts["goals"] % 2 == 0 and seen % 20 == 10:
                    # A world-model request while the policy runs (shares the engine with the chunk requests).
                    result = client.predict_future(
                        np.tile(state["q"], (chunk, 1)), profile.joint_names, steps=args.steps
                    )
                    counts["world_model_requests"] += 1
                    counts["world_model_ok"] += int(result.error.code == 0)
                    if result.error.code != 0:  # why, not only how many (held input, queue full, ...)
                        world_model_errors[f"{result.error.code}: {result.error.message}"] += 1
            result = client.get_result()
            counts["goals_completed"] += int(result.termination == "completed")
            terminations[result.termination] += 1
        with lock:
            gaps_ms = list(np.diff(arrivals) * 1e3) if len(arrivals) > 1 else []
        report = {
            "benchmark": "soak",
            "minutes": args.minutes,
            "preset": args.preset,
            "steps": args.steps,
            "rss_mb_start": round(rss[0][1], 1) if rss else None,
            "rss_mb_end": round(rss[-1][1], 1) if rss else None,
            "rss_slope_mb_per_min_after_warmup": slope_mb_per_min(rss, 60.0 * args.warmup_min),
            "warmup_min": args.warmup_min,
            "rss_samples": [[round(t - rss[0][0], 1), round(mb, 1)] for t, mb in rss],
            "commands": len(arrivals),
            "command_gap_ms": percentiles(gaps_ms),
            "hold_fraction": round(counts["feedback_holding"] / counts["feedback"], 3) if counts["feedback"] else None,
            **counts,
            "terminations": dict(terminations),
            "world_model_errors": dict(world_model_errors.most_common(5)),
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        }
    finally:
        client.destroy()
        rclpy.try_shutdown()
        stop_process(server)
        stop_process(sim)
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
