"""The simulated ALOHA, ROS-free: gym-aloha scenes, scripted experts, demonstrations and closed-loop evaluation.

``scripted_expert`` holds the tasks (and the one place that seeds gym-aloha's object poses), plans in the mocap
scene and replays the joint trajectory in the joint-space scene; ``record`` writes the episodes as LeRobot-format
datasets and holds the command line (``python -m motus_sim``); ``closed_loop`` evaluates a checkpoint through the
policy runtime (``motus eval``). The `motus` CLI and the ROS simulator driver (`motus_sim` executable) use it; the
pure model package (`motus_model`) never imports it.
"""

from motus_sim.record import DemoRecordingConfig, build_parser, main, record_demonstrations, run
from motus_sim.scripted_expert import (
    CAMERA_NAMES,
    TASKS,
    ExpertEpisode,
    plan_joint_trajectory,
    replay_joint_trajectory,
    run_expert_episode,
)

__all__ = [
    "CAMERA_NAMES",
    "TASKS",
    "DemoRecordingConfig",
    "ExpertEpisode",
    "build_parser",
    "main",
    "plan_joint_trajectory",
    "record_demonstrations",
    "replay_joint_trajectory",
    "run",
    "run_expert_episode",
]
