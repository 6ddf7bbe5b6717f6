"""Drive an already running Motus graph (e.g. `ros2 launch motus_ros aloha.launch.py sim:=true`) and report.

    tools/env.sh python tools/drive_running.py --goals 3 --duration 8 [--seed 1000]

Per goal: when the simulator is up (/aloha_sim), its seed is set and the episode reset; then one RunPolicy goal
runs for `--duration` seconds. Every feedback message is counted (holding or moving), the result's honest fields
(termination, held_fraction, moving_steps, hold_reasons) are kept, and so is the sim's highest reward. Prints one
JSON object: what `ros2 launch` did to the robot, measured from outside the launch.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import rclpy
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from std_msgs.msg import Float64
from std_srvs.srv import Trigger

from motus_ros.client import MotusClient


def _reset_sim(client: MotusClient, seed: int) -> bool:
    """Seed and reset the simulator if one is running; False when there is none."""
    node = client.node
    set_params = node.create_client(SetParameters, "/aloha_sim/set_parameters")
    reset = node.create_client(Trigger, "/aloha_sim/reset")
    if not set_params.wait_for_service(timeout_sec=5.0):
        return False
    value = ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=seed)
    request = SetParameters.Request(parameters=[Parameter(name="seed", value=value)])
    client.spin_until(set_params.call_async(request), 10)
    reset.wait_for_service(timeout_sec=5.0)
    client.spin_until(reset.call_async(Trigger.Request()), 30)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--goals", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per RunPolicy goal")
    parser.add_argument("--seed", type=int, default=1000, help="first episode's seed (goal i uses seed + i)")
    parser.add_argument("--instruction", default="transfer the cube to the other arm")
    parser.add_argument("--server-timeout", type=float, default=120.0)
    args = parser.parse_args(argv)

    rclpy.init()
    client = MotusClient("drive_running", server_timeout_s=args.server_timeout)
    rewards: list[float] = []
    client.node.create_subscription(Float64, "/aloha_sim/reward", lambda msg: rewards.append(float(msg.data)), 10)
    if not client.wait_for_server():
        print("drive_running: error: no Motus server answered; start it first (ros2 launch motus_ros ...)")
        return 2
    goals = []
    for index in range(args.goals):
        sim = _reset_sim(client, args.seed + index)
        client.spin(1.0)  # let the cameras publish frames of the reset scene
        rewards.clear()
        if not client.run_policy(args.instruction, max_duration_s=args.duration):
            print("drive_running: error: the RunPolicy goal was not accepted")
            return 1
        started = time.monotonic()
        while not client.is_task_complete(spin_s=0.05):
            pass
        feedback = client.policy_task.feedback
        feedback = {"samples": len(feedback), "holding": sum(int(message.holding) for message in feedback)}
        result = client.get_result()
        goals.append(
            {
                "seed": args.seed + index if sim else None,
                "wall_s": round(time.monotonic() - started, 2),
                "termination": result.termination,
                "steps": result.steps,
                "moving_steps": result.moving_steps,
                "held_fraction": round(float(result.held_fraction), 3),
                "hold_reasons": list(result.hold_reasons),
                "chunks": result.chunks,
                "feedback_samples": feedback["samples"],
                "feedback_holding": feedback["holding"],
                "highest_reward": max(rewards) if rewards else None,
            }
        )
    samples = sum(goal["feedback_samples"] for goal in goals)
    holding = sum(goal["feedback_holding"] for goal in goals)
    print(
        json.dumps(
            {
                "goals": goals,
                "feedback_samples": samples,
                "feedback_holding": holding,
                "feedback_holding_share": round(holding / samples, 3) if samples else None,
            },
            indent=2,
        )
    )
    client.destroy()
    rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
