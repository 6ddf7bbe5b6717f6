"""Where the right gripper is relative to the cube, policy vs scripted expert (transfer cube; a diagnostic).

For each seed, the scripted expert and the checkpoint's policy (whole chunks, as `motus eval` runs it) each drive
one episode; at the given control steps the point between the right gripper's fingers minus the cube's position
is printed in cm (x, y, z), one JSON line per seed. docs/results.md, "Where it still fails", was measured with:

    python tools/reach_error.py --checkpoint models/motus-small-aloha-transfer-cube --seeds 11,2,10,15,5
"""

from __future__ import annotations

import argparse
import json

from motus_model.engine import MotusEngine
from motus_model.policy import MotusPolicy, PolicyConfig
from motus_sim.closed_loop import model_views
from motus_sim.scripted_expert import get_task, make_joint_environment, plan_joint_trajectory

FINGERS = ("vx300s_right/left_finger_link", "vx300s_right/right_finger_link")
CUBE_QPOS = slice(16, 19)  # the free cube's position, after the two arms' 16 qpos entries


def gripper_minus_cube_cm(environment) -> list[float]:
    positions = environment.physics.named.data.xpos
    gripper = 0.5 * (positions[FINGERS[0]] + positions[FINGERS[1]])
    return [round(float(v), 2) for v in 100.0 * (gripper - environment.physics.data.qpos[CUBE_QPOS])]


def run(
    engine: MotusEngine | None, seed: int, check_steps: list[int], inference_steps: int
) -> tuple[dict[int, list[float]], float]:
    """One episode driven by the policy runtime (engine) or the expert (None): offsets at check_steps, highest
    reward."""
    spec = get_task("transfer_cube")
    pose = spec.sample_object_pose(seed)
    environment = make_joint_environment("transfer_cube", pose)
    observation = environment.reset().observation
    last = max(check_steps)
    expert_plan = plan_joint_trajectory("transfer_cube", pose) if engine is None else None
    policy = None
    if engine is not None:  # whole chunks, as `motus eval` runs them
        policy = MotusPolicy(engine, PolicyConfig(chunk_request_threshold=0, steps=inference_steps, synchronous=True))
        policy.reset(spec.instruction, seed=1000 * seed)
    offsets, highest = {}, 0.0
    for step in range(last + 1):
        if step in check_steps:
            offsets[step] = gripper_minus_cube_cm(environment)
        if policy is None:
            action = expert_plan[step]
        else:
            if policy.wants_observation(step):
                policy.observe(step, model_views(environment.physics, (120, 160)), observation["qpos"])
            action = policy.action_for(step).action
        time_step = environment.step(action)
        observation, highest = time_step.observation, max(highest, float(time_step.reward or 0.0))
    return offsets, highest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--seeds", required=True, help="comma-separated object-pose seeds")
    parser.add_argument("--check-steps", default="64,96,128,160,192")
    parser.add_argument("--inference-steps", type=int, default=10)
    args = parser.parse_args()
    check_steps = [int(s) for s in args.check_steps.split(",")]
    engine = MotusEngine.from_pretrained(args.checkpoint)
    for seed in (int(s) for s in args.seeds.split(",")):
        policy, policy_reward = run(engine, seed, check_steps, args.inference_steps)
        expert, expert_reward = run(None, seed, check_steps, args.inference_steps)
        pose = get_task("transfer_cube").sample_object_pose(seed)
        print(
            json.dumps(
                {
                    "seed": seed,
                    "cube_xy": [round(float(v), 3) for v in pose[:2]],
                    "policy_cm": policy,
                    "expert_cm": expert,
                    "highest_reward": {"policy": policy_reward, "expert": expert_reward},
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
