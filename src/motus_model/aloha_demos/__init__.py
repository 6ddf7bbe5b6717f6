"""Scripted gym-aloha demonstrations (transfer cube, insertion) recorded as LeRobot-format datasets.

``scripted_expert`` plans in the mocap scene and replays the joint trajectory in the joint-space scene;
``record`` writes the episodes and holds the command line (``python -m motus_model.aloha_demos``).
"""

from motus_model.aloha_demos.record import DemoRecordingConfig, build_parser, main, record_demonstrations, run
from motus_model.aloha_demos.scripted_expert import (
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
