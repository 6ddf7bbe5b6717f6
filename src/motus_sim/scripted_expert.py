"""A scripted expert for gym-aloha's transfer-cube and insertion scenes.

How a demonstration is made (the recipe ACT used for its simulated ALOHA data):

1. **Plan in end-effector space.** The mocap variant of the scene (``gym_aloha.tasks.sim_end_effector``)
   drives each gripper link with a mocap body, so a policy only has to say where each gripper goes
   (xyz + quaternion) and how open it is (0 closed, 1 open). ``plan_transfer_cube`` and
   ``plan_insertion`` turn the object pose into timed waypoints; between waypoints the pose is
   interpolated linearly (positions) and by normalised lerp (quaternions). Where a centimetre matters
   the expert also looks at the objects (it is privileged; see ``ScriptedPolicy.observe``).
2. **Roll the plan out in the mocap scene** and keep the resulting arm joint angles (physics qpos)
   and the commanded gripper openings: that is a 14-d joint trajectory.
3. **Replay the joint trajectory in the joint-space scene** (``gym_aloha.tasks.sim``, the scene behind
   ``AlohaTransferCube-v0`` / ``AlohaInsertion-v0``) from the same object pose. Only this replay is
   recorded: its joint states, the 14-d joint targets it was commanded, its rewards and, optionally,
   the three ALOHA camera views. Success is judged here, on the replay.

Frame ``t`` of an episode pairs the observation *before* step ``t`` (state, images) with the joint
target commanded at step ``t`` (the mocap rollout's joint angles after its step ``t``) and the reward
the scene reports after that step.

Rendering needs an OpenGL backend: ``MUJOCO_GL=egl`` works on the CPU-only machines (set here if unset,
before dm_control is imported).
"""

from __future__ import annotations

import os

# dm_control picks its GL backend at import time; EGL renders on CPU-only machines, OSMesa fails there.
os.environ.setdefault("MUJOCO_GL", "egl")

import logging  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from dm_control import mujoco  # noqa: E402
from dm_control.rl import control  # noqa: E402
from dm_control.suite import base  # noqa: E402
from gym_aloha.constants import ASSETS_DIR, DT, normalize_puppet_gripper_position  # noqa: E402
from gym_aloha.tasks import sim as joint_sim  # noqa: E402
from gym_aloha.tasks.sim_end_effector import (  # noqa: E402
    InsertionEndEffectorTask,
    TransferCubeEndEffectorTask,
)
from gym_aloha.utils import sample_box_pose, sample_insertion_pose  # noqa: E402

logger = logging.getLogger(__name__)

# LeRobot camera key -> the scene's camera name (the real ALOHA's high camera is `top` in simulation).
CAMERA_NAMES: dict[str, str] = {
    "observation.images.cam_high": "top",
    "observation.images.cam_left_wrist": "left_wrist",
    "observation.images.cam_right_wrist": "right_wrist",
}
# forearm_roll and wrist_rotate (qpos = qvel indices: hinge joints come first) that the planning scene's
# posture spring holds, per task: not the left arm's in transfer cube, which must roll 90 degrees there.
_POSTURE_JOINTS = {"transfer_cube": np.array([11, 13]), "insertion": np.array([3, 5, 11, 13])}
# Stiffness (N m / rad) of the planning scene's posture spring on those joints; see plan_joint_trajectory.
POSTURE_STIFFNESS = 5.0
# Second seed word of the command-noise generator, so it never shares a stream with the pose sampling.
_COMMAND_NOISE_STREAM = 7
# Number of qpos entries of the two arms (6 joints + 2 fingers each) before the free objects.
_ROBOT_QPOS = 16


@dataclass(frozen=True)
class TaskSpec:
    """One scripted task: its scenes, instruction, length and how its objects are placed.

    Args:
        name: task id used on the command line.
        instruction: the language instruction recorded with each episode.
        episode_length: control steps per episode (50 Hz), as in ACT's scripted datasets.
        end_effector_xml, joint_xml: scene files in gym_aloha's assets folder.
        sample_object_pose: seed -> 7-d pose per free object, concatenated ([7] or [14]); the same
            sampling as gym_aloha's ``AlohaEnv.reset(seed)``, so seed s here is seed s there.
    """

    name: str
    instruction: str
    episode_length: int
    end_effector_xml: str
    joint_xml: str
    sample_object_pose: Callable[[int], np.ndarray]


def _transfer_cube_pose(seed: int) -> np.ndarray:
    return np.asarray(sample_box_pose(seed), dtype=np.float64)


def _insertion_pose(seed: int) -> np.ndarray:
    peg_pose, socket_pose = sample_insertion_pose(seed)
    return np.concatenate([peg_pose, socket_pose]).astype(np.float64)


TASKS: dict[str, TaskSpec] = {
    "transfer_cube": TaskSpec(
        name="transfer_cube",
        instruction="transfer the cube to the other arm",
        episode_length=400,
        end_effector_xml="bimanual_viperx_end_effector_transfer_cube.xml",
        joint_xml="bimanual_viperx_transfer_cube.xml",
        sample_object_pose=_transfer_cube_pose,
    ),
    "insertion": TaskSpec(
        name="insertion",
        instruction="insert the peg into the socket",
        episode_length=400,
        end_effector_xml="bimanual_viperx_end_effector_insertion.xml",
        joint_xml="bimanual_viperx_insertion.xml",
        sample_object_pose=_insertion_pose,
    ),
}


def get_task(name: str) -> TaskSpec:
    """The TaskSpec called ``name``; raises ValueError listing the known tasks otherwise."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; expected one of {sorted(TASKS)}")
    return TASKS[name]


# ---------------------------------------------------------------------------------------------
# Quaternions (w, x, y, z), MuJoCo's convention.
# ---------------------------------------------------------------------------------------------


def quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a * b of two (w, x, y, z) quaternions."""
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return np.array(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ]
    )


def quat_from_axis_angle(axis: tuple[float, float, float], degrees: float) -> np.ndarray:
    """Unit (w, x, y, z) quaternion rotating by ``degrees`` about ``axis``."""
    axis_array = np.asarray(axis, dtype=np.float64)
    axis_array = axis_array / np.linalg.norm(axis_array)
    half = np.deg2rad(degrees) / 2
    return np.concatenate([[np.cos(half)], np.sin(half) * axis_array])


# ---------------------------------------------------------------------------------------------
# Waypoint plans
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Waypoint:
    """Where one gripper should be at control step ``step``: xyz [3], quat (w, x, y, z) [4], gripper in [0, 1]."""

    step: int
    xyz: np.ndarray
    quat: np.ndarray
    gripper: float


def interpolate_waypoints(waypoints: list[Waypoint], step: int) -> np.ndarray:
    """The 8-d mocap command [xyz, quat, gripper] at ``step``, between the two surrounding waypoints.

    Positions and gripper are interpolated linearly, the quaternion by normalised lerp (the waypoints'
    rotations are less than 90 degrees apart, where nlerp is close to slerp). Past the last waypoint
    the last one holds.
    """
    if not waypoints or waypoints[0].step != 0:
        raise ValueError("a plan needs a first waypoint at step 0")
    if step >= waypoints[-1].step:
        last = waypoints[-1]
        return np.concatenate([last.xyz, last.quat, [last.gripper]])
    for current, following in zip(waypoints[:-1], waypoints[1:]):
        if current.step <= step < following.step:
            fraction = (step - current.step) / (following.step - current.step)
            xyz = current.xyz + fraction * (following.xyz - current.xyz)
            # q and -q are the same rotation; blend towards the one on the same side, else the gripper spins 360 deg.
            target_quat = following.quat if np.dot(current.quat, following.quat) >= 0 else -following.quat
            quat = current.quat + fraction * (target_quat - current.quat)
            quat = quat / np.linalg.norm(quat)
            gripper = current.gripper + fraction * (following.gripper - current.gripper)
            return np.concatenate([xyz, quat, [gripper]])
    raise ValueError(f"waypoint steps must increase, got {[w.step for w in waypoints]}")


# Where the fingertips' midpoint sits relative to the mocap body, in the mocap body's frame (metres),
# measured in the mocap scene with the arms at rest (the finger meshes' far ends, in the gripper link's
# frame, minus where the weld holds the mocap). The scene welds each mocap to its gripper link with the
# link-to-mocap offset of the reference pose qpos0 (MuJoCo's rule when a weld gives no relpose): the
# mocap point is about 13.5 cm ahead of the link, 1.9 cm short of the fingertips. For the right arm the
# mocap frame is the gripper's turned 180 degrees about z, hence the mirrored x.
TOOL_OFFSET_LEFT = np.array([0.0187, 0.0, 0.006])
TOOL_OFFSET_RIGHT = np.array([-0.0187, 0.0, 0.006])

# Grasps (tuned on seeds 0-15 of the joint-space replay): the fingertips go GRASP_DEPTH past the
# object's centre along the reach direction and stop GRASP_TIP_HEIGHT above the table.
GRASP_DEPTH = 0.01
GRASP_TIP_HEIGHT = 0.012
# The peg is only 2 cm tall: higher, the pitched pads squeeze it out upwards.
PEG_TIP_HEIGHT = 0.002
# Downward pitch of the right gripper picking the peg (degrees); the cube and socket use 60 too.
PEG_PICK_PITCH = 60.0
# ... and while carrying it to the socket (level; see plan_insertion).
PEG_CARRY_PITCH = 0.0
# Object sizes from the scene files.
CUBE_HALF_SIZE = 0.02
PEG_CENTRE_HEIGHT = 0.01
PEG_HALF_LENGTH = 0.06
SOCKET_CENTRE_HEIGHT = 0.022

# Transfer cube hand-over (see HandoverServo): the right arm reaches the meeting point at 220, carrying
# the cube level (RIGHT_MEET_PITCH; pitched down, the cube slides out of the fingertips); the left
# fingertips are servoed from HANDOVER_SERVO_STEP, wait HANDOVER_WAIT_DISTANCE before the cube, move in
# to HANDOVER_DEPTH past its centre between HANDOVER_APPROACH_START and _END, the plan closes the left
# gripper by 300, the right lets go by 320 (HANDOVER_RELEASE_STEP) and the left pulls the cube away.
RIGHT_MEET_PITCH = 0.0
HANDOVER_SERVO_STEP = 225
HANDOVER_APPROACH_START = 240
HANDOVER_APPROACH_END = 268
HANDOVER_RELEASE_STEP = 320
HANDOVER_WAIT_DISTANCE = 0.12
HANDOVER_DEPTH = 0.015
HANDOVER_SERVO_GAIN = 0.1

# Insertion: both objects are carried to the middle by CARRY_END_STEP, the peg's centre planned
# PEG_CARRY_DISTANCE from the socket's along x (generous: where each object ends up in its gripper varies
# by several centimetres). From INSERTION_SERVO_STEP an integral servo (InsertionServo) steers the peg's
# leading end onto the socket's axis INSERTION_START_DISTANCE out, then pushes it in at INSERTION_SPEED
# while it stays within INSERTION_LATERAL_TOLERANCE of the axis (the socket's walls leave 8 mm), until
# the peg's centre is INSERTION_REACH from the socket's (10 cm touches the pin).
CARRY_END_STEP = 260
PEG_CARRY_DISTANCE = 0.24
INSERTION_SERVO_STEP = 270
INSERTION_SERVO_GAIN = 0.08  # fraction of the position error added to the command per step (50 Hz)
INSERTION_TURN_GAIN = 0.03  # fraction of the peg's tilt turned away per step
INSERTION_START_DISTANCE = 0.16
INSERTION_LATERAL_TOLERANCE = 0.008
INSERTION_SPEED = 0.003  # metres per step along the socket's axis while aligned
INSERTION_REACH = 0.095


def quat_to_matrix(quat: np.ndarray) -> np.ndarray:
    """3x3 rotation matrix of a unit (w, x, y, z) quaternion."""
    w, x, y, z = np.asarray(quat, dtype=np.float64) / np.linalg.norm(quat)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def fingertips_to_mocap(fingertips_xyz: np.ndarray, quat: np.ndarray, tool_offset: np.ndarray) -> np.ndarray:
    """Mocap position that puts the fingertips' midpoint at ``fingertips_xyz`` [3] with mocap orientation ``quat``."""
    return np.asarray(fingertips_xyz, dtype=np.float64) - quat_to_matrix(quat) @ tool_offset


# Arm bases (x, y) on the table, from the scene files; each arm reaches out from its base.
LEFT_BASE_XY = np.array([-0.469, 0.5])
RIGHT_BASE_XY = np.array([0.469, 0.5])


def yaw_toward(quat: np.ndarray, base_xy: np.ndarray, target_xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Turn a grasp orientation about the world z axis so the gripper points from its base at the target.

    ``quat`` points the gripper straight along x towards the table's middle (+x for the left arm, -x for
    the right). Returns (the yawed quat, the unit horizontal reach direction [3]). Without the yaw, an
    object 5+ cm off the arm's centre line is approached at a slant and the fingertips tip it over.
    """
    reach = np.asarray(target_xy, dtype=np.float64) - base_xy
    straight = np.array([1.0 if base_xy[0] < 0 else -1.0, 0.0])
    reach_unit = reach / np.linalg.norm(reach)
    yaw = np.arctan2(reach_unit[1], reach_unit[0]) - np.arctan2(straight[1], straight[0])
    yaw = (yaw + np.pi) % (2 * np.pi) - np.pi  # the short way round: -173 deg minus 180 deg is +7 deg
    yawed = quat_multiply(quat_from_axis_angle((0, 0, 1), np.rad2deg(yaw)), quat)
    return yawed, np.array([reach_unit[0], reach_unit[1], 0.0])


def grasp_waypoints(
    object_xy: np.ndarray,
    quat: np.ndarray,
    tool_offset: np.ndarray,
    base_xy: np.ndarray,
    steps: tuple[int, int, int],
    tip_height: float = GRASP_TIP_HEIGHT,
) -> list[Waypoint]:
    """Above the object (open), down around it (open), closed: three waypoints at ``steps``.

    The gripper keeps ``quat``'s pitch but is yawed to point from its base (``base_xy``) at the object;
    its fingertips end GRASP_DEPTH past the object's centre along that direction, ``tip_height`` above
    the table.
    """
    quat, reach = yaw_toward(quat, base_xy, object_xy)
    tips = np.array([object_xy[0], object_xy[1], tip_height]) + GRASP_DEPTH * reach
    above = fingertips_to_mocap(tips + [0, 0, 0.08], quat, tool_offset)
    down = fingertips_to_mocap(tips, quat, tool_offset)
    return [
        Waypoint(steps[0], above, quat, 1.0),
        Waypoint(steps[1], down, quat, 1.0),
        Waypoint(steps[2], down, quat, 0.0),
    ]


def plan_transfer_cube(
    cube_pose: np.ndarray, left_start: np.ndarray, right_start: np.ndarray
) -> tuple[list[Waypoint], list[Waypoint]]:
    """Waypoints for the cube hand-over: the right arm picks the cube, lifts it to the middle, the left takes it.

    Args:
        cube_pose: [7] cube xyz + quat.
        left_start, right_start: [7] each gripper's mocap pose (xyz + quat) at reset.
    Returns:
        (left waypoints, right waypoints).
    """
    cube_xyz = np.asarray(cube_pose[:3], dtype=np.float64)
    # Right gripper tilted 60 degrees about y so its fingers come down on the cube from above.
    right_pick_quat = quat_multiply(right_start[3:], quat_from_axis_angle((0, 1, 0), -60))
    # Left gripper rolled 90 degrees about x so it grasps the cube across the right gripper's fingers.
    left_meet_quat = quat_from_axis_angle((1, 0, 0), 90)
    # Carried level, not pitched: with the fingers pointing down, the cube slides out of the fingertips.
    right_meet_quat = quat_multiply(right_start[3:], quat_from_axis_angle((0, 1, 0), -RIGHT_MEET_PITCH))
    meet_xyz = np.array([0.0, 0.5, 0.25])
    # Where the cube should be at the hand-over: held by the right fingertips, GRASP_DEPTH behind them.
    right_meet_tips = meet_xyz + quat_to_matrix(right_meet_quat) @ TOOL_OFFSET_RIGHT
    cube_at_meet = right_meet_tips + [GRASP_DEPTH, 0.0, CUBE_HALF_SIZE - GRASP_TIP_HEIGHT]
    # The left fingertips reach HANDOVER_DEPTH past the cube's centre: deeper and the cube hits the palm.
    left_take = fingertips_to_mocap(cube_at_meet + [HANDOVER_DEPTH, 0.0, 0.0], left_meet_quat, TOOL_OFFSET_LEFT)
    # Wait well clear: the cube arrives up to ~8 cm from this estimate (HandoverServo takes over at 225).
    left_wait = left_take - [HANDOVER_WAIT_DISTANCE + 0.08, 0.0, 0.0]
    # From HANDOVER_SERVO_STEP on, HandoverServo replaces these positions; the plan keeps the timing of the
    # gripper (open until 275, closed by 300) and the orientation.
    left = [
        Waypoint(0, left_start[:3], left_start[3:], 0.0),
        Waypoint(100, left_wait, left_meet_quat, 1.0),  # wait beside the meeting point, open
        Waypoint(275, left_take, left_meet_quat, 1.0),  # move in around the cube
        Waypoint(300, left_take, left_meet_quat, 0.0),  # close on it
        Waypoint(320, left_take, left_meet_quat, 0.0),  # hold while the right lets go
        Waypoint(360, left_wait, left_meet_quat, 0.0),  # pull it away
        Waypoint(400, left_wait, left_meet_quat, 0.0),  # hold
    ]
    right = [
        Waypoint(0, right_start[:3], right_start[3:], 0.0),
        # above the cube, open; down around it; close
        *grasp_waypoints(cube_xyz[:2], right_pick_quat, TOOL_OFFSET_RIGHT, RIGHT_BASE_XY, steps=(90, 130, 170)),
        Waypoint(200, meet_xyz + [0.05, 0, 0], right_meet_quat, 0.0),  # lift towards the middle
        Waypoint(220, meet_xyz, right_meet_quat, 0.0),  # at the meeting point
        Waypoint(300, meet_xyz, right_meet_quat, 0.0),  # keep holding while the left closes
        Waypoint(320, meet_xyz, right_meet_quat, 1.0),  # let go
        Waypoint(360, meet_xyz + [0.1, 0, 0], right_meet_quat, 1.0),  # move away
        Waypoint(400, meet_xyz + [0.1, 0, 0], right_meet_quat, 1.0),  # hold
    ]
    return left, right


def plan_insertion(
    object_pose: np.ndarray, left_start: np.ndarray, right_start: np.ndarray
) -> tuple[list[Waypoint], list[Waypoint]]:
    """Waypoints for the insertion: the left arm lifts the socket, the right the peg; they meet and the peg goes in.

    Args:
        object_pose: [14] peg pose (xyz + quat) then socket pose.
        left_start, right_start: [7] each gripper's mocap pose (xyz + quat) at reset.
    Returns:
        (left waypoints, right waypoints).
    """
    peg_xyz = np.asarray(object_pose[:3], dtype=np.float64)
    socket_xyz = np.asarray(object_pose[7:10], dtype=np.float64)
    # Both grippers tilted 60 degrees about y (mirrored) to grasp their object from above.
    left_pick_quat = quat_multiply(left_start[3:], quat_from_axis_angle((0, 1, 0), 60))
    right_pick_quat = quat_multiply(right_start[3:], quat_from_axis_angle((0, 1, 0), -PEG_PICK_PITCH))
    # Each gripper keeps the yaw it grasped with, so the peg and the socket stay parallel to x. The peg is
    # carried level (PEG_CARRY_PITCH 0): pitched down, it pivots in the fingertips and drops at the rim.
    left_quat, left_reach = yaw_toward(left_pick_quat, LEFT_BASE_XY, socket_xyz[:2])
    _, right_reach = yaw_toward(right_pick_quat, RIGHT_BASE_XY, peg_xyz[:2])
    right_carry_quat = quat_multiply(right_start[3:], quat_from_axis_angle((0, 1, 0), -PEG_CARRY_PITCH))
    right_quat, _ = yaw_toward(right_carry_quat, RIGHT_BASE_XY, peg_xyz[:2])
    # Where the socket's centre is carried to, and the peg lined up with it along x. Peg (12 cm) and
    # socket (12 cm tube around an 8 cm pin) lie along x; the peg touches the pin once its -x end is
    # 4 cm into the socket, i.e. with the peg's centre 10 cm from the socket's. The right arm's last
    # moves are steered from the observed poses (InsertionServo); these are the first guess.
    socket_meet = np.array([-0.05, 0.5, 0.15])
    peg_ready = socket_meet + [PEG_CARRY_DISTANCE, 0.0, 0.0]
    # Held objects sit GRASP_DEPTH behind the fingertips, at their resting height above the tips' height.
    left_tips_from_socket = GRASP_DEPTH * left_reach + [0.0, 0.0, GRASP_TIP_HEIGHT - SOCKET_CENTRE_HEIGHT]
    right_tips_from_peg = GRASP_DEPTH * right_reach + [0.0, 0.0, PEG_TIP_HEIGHT - PEG_CENTRE_HEIGHT]
    left_carry = fingertips_to_mocap(socket_meet + left_tips_from_socket, left_quat, TOOL_OFFSET_LEFT)
    right_ready = fingertips_to_mocap(peg_ready + right_tips_from_peg, right_quat, TOOL_OFFSET_RIGHT)
    left = [
        Waypoint(0, left_start[:3], left_start[3:], 0.0),
        # above the socket, open; down around it; close
        *grasp_waypoints(socket_xyz[:2], left_pick_quat, TOOL_OFFSET_LEFT, LEFT_BASE_XY, steps=(120, 170, 220)),
        Waypoint(CARRY_END_STEP, left_carry, left_quat, 0.0),  # carry it to the middle
        Waypoint(400, left_carry, left_quat, 0.0),  # hold it there
    ]
    right = [
        Waypoint(0, right_start[:3], right_start[3:], 0.0),
        # above the peg, open; down around it; close
        *grasp_waypoints(
            peg_xyz[:2],
            right_pick_quat,
            TOOL_OFFSET_RIGHT,
            RIGHT_BASE_XY,
            steps=(120, 170, 220),
            tip_height=PEG_TIP_HEIGHT,
        ),
        Waypoint(CARRY_END_STEP, right_ready, right_quat, 0.0),  # bring the peg near the socket's open end
        Waypoint(400, right_ready, right_quat, 0.0),  # from INSERTION_SERVO_STEP on the servo steers the peg
    ]
    return left, right


_PLANNERS = {"transfer_cube": plan_transfer_cube, "insertion": plan_insertion}


def axis_alignment_rotation(from_axis: np.ndarray, to_axis: np.ndarray, gain: float) -> np.ndarray:
    """Quaternion turning ``from_axis`` a fraction ``gain`` of the way towards ``to_axis`` (both unit [3])."""
    cross = np.cross(from_axis, to_axis)
    sine = np.linalg.norm(cross)
    if sine < 1e-9:
        return np.array([1.0, 0.0, 0.0, 0.0])
    angle = np.arctan2(sine, np.dot(from_axis, to_axis))
    return quat_from_axis_angle(tuple(cross / sine), np.rad2deg(gain * angle))


class HandoverServo:
    """Steers the left fingertips around the cube the right gripper holds (privileged: sees both).

    Where the cube sits in the right gripper varies by centimetres, and the left arm, stretched to the
    middle, holds its fingers a few centimetres off where the weld asks; the left fingers' gap leaves
    only 1.5 cm each side of the cube. So from HANDOVER_SERVO_STEP the left mocap is nudged each step by
    a fraction of the error between the fingertips' measured midpoint and their target: first
    HANDOVER_WAIT_DISTANCE before the cube, then (HANDOVER_APPROACH_START to HANDOVER_APPROACH_END)
    moving in to HANDOVER_DEPTH past its centre, where the plan closes the gripper.
    """

    def __init__(self, command_xyz: np.ndarray) -> None:
        self.command = np.asarray(command_xyz, dtype=np.float64).copy()  # left mocap xyz

    def update(self, step: int, cube_xyz: np.ndarray, left_fingertips: np.ndarray) -> np.ndarray:
        """One control step; returns the new left mocap position [3]."""
        approach = (step - HANDOVER_APPROACH_START) / (HANDOVER_APPROACH_END - HANDOVER_APPROACH_START)
        approach = min(1.0, max(0.0, approach))
        target = cube_xyz + [HANDOVER_DEPTH - (1.0 - approach) * HANDOVER_WAIT_DISTANCE, 0.0, 0.0]
        self.command = self.command + HANDOVER_SERVO_GAIN * (target - left_fingertips)
        return self.command


class InsertionServo:
    """Steers the right gripper so the held peg slides into the held socket (privileged: sees both poses).

    Each step it nudges the right mocap by a fraction of the peg's position error and turns it so the peg's
    axis comes towards x (the socket's axis once it has settled in the left gripper). The target is the
    socket's centre plus ``distance`` along x; ``distance`` starts at INSERTION_START_DISTANCE (the peg's
    end 4 cm before the socket's open end) and shrinks towards INSERTION_REACH only while the peg is
    within INSERTION_LATERAL_TOLERANCE of the socket's axis, so the peg never pushes in off-centre.
    """

    def __init__(self, command: np.ndarray) -> None:
        self.command = np.asarray(command[:7], dtype=np.float64).copy()  # right mocap xyz + quat
        self.distance = INSERTION_START_DISTANCE

    def update(self, object_state: np.ndarray) -> np.ndarray:
        """One control step from the objects' state (peg pose, socket pose); returns the new command [7]."""
        peg_xyz, peg_axis = object_state[:3], quat_to_matrix(object_state[3:7])[:, 0]
        socket_xyz = object_state[7:10]
        # Steer the peg's leading (-x) end, not its centre: a peg tilted by 20 degrees in the grip has
        # its centre on the axis and its end 2 cm off it, on the socket's rim.
        peg_end = peg_xyz - PEG_HALF_LENGTH * peg_axis
        target = socket_xyz + [self.distance - PEG_HALF_LENGTH, 0.0, 0.0]
        error = target - peg_end
        if np.linalg.norm(error[1:]) < INSERTION_LATERAL_TOLERANCE:
            self.distance = max(INSERTION_REACH, self.distance - INSERTION_SPEED)
        turn = axis_alignment_rotation(peg_axis, np.array([1.0, 0.0, 0.0]), INSERTION_TURN_GAIN)
        quat = quat_multiply(turn, self.command[3:7])
        self.command = np.concatenate([self.command[:3] + INSERTION_SERVO_GAIN * error, quat / np.linalg.norm(quat)])
        return self.command


class ScriptedPolicy:
    """End-effector policy following a waypoint plan: step -> 16-d mocap action.

    The action is [left xyz (3), left quat (4), left gripper (1), right xyz, right quat, right gripper],
    the layout of gym_aloha's end-effector tasks. The plan is made from the initial object pose; where a
    centimetre matters the expert also looks at the scene (``observe``, it may: it is privileged): the
    left fingertips are servoed onto the cube at the hand-over (HandoverServo) and the peg onto the
    socket's axis (InsertionServo), because where each object sits in its gripper, and where a stretched
    arm really holds its fingers, vary by a few centimetres.
    """

    def __init__(self, task: str, object_pose: np.ndarray, left_start: np.ndarray, right_start: np.ndarray) -> None:
        get_task(task)
        self.task = task
        self.left_plan, self.right_plan = _PLANNERS[task](
            np.asarray(object_pose), np.asarray(left_start), np.asarray(right_start)
        )
        self._handover_servo: HandoverServo | None = None
        self._insertion_servo: InsertionServo | None = None

    def observe(
        self, step: int, object_state: np.ndarray, left_fingertips: np.ndarray, right_fingertips: np.ndarray
    ) -> None:
        """See the objects' poses (qpos after the arms, 7 per object) and each gripper's fingertip
        midpoint [3] before acting at ``step``."""
        object_state = np.asarray(object_state)
        if self.task == "transfer_cube" and HANDOVER_SERVO_STEP <= step < HANDOVER_RELEASE_STEP:
            if self._handover_servo is None:
                self._handover_servo = HandoverServo(interpolate_waypoints(self.left_plan, step)[:3])
            self._handover_servo.update(step, object_state[:3], left_fingertips)
        if self.task == "insertion" and step >= INSERTION_SERVO_STEP:
            if self._insertion_servo is None:
                self._insertion_servo = InsertionServo(interpolate_waypoints(self.right_plan, step))
            self._insertion_servo.update(object_state)

    def __call__(self, step: int) -> np.ndarray:
        left = interpolate_waypoints(self.left_plan, step)
        right = interpolate_waypoints(self.right_plan, step)
        if self._handover_servo is not None:
            # Hold where the servo left the cube, then pull it away along -x as the plan's pull-away does.
            pull = min(1.0, max(0.0, (step - HANDOVER_RELEASE_STEP) / 40))
            left[:3] = self._handover_servo.command - [pull * HANDOVER_WAIT_DISTANCE, 0.0, 0.0]
        if self._insertion_servo is not None:
            right[:7] = self._insertion_servo.command
        return np.concatenate([left, right])


# ---------------------------------------------------------------------------------------------
# Scenes: gym_aloha's tasks with the object pose injected and no rendering inside step()
# ---------------------------------------------------------------------------------------------


def _set_object_pose(physics: mujoco.Physics, object_pose: np.ndarray) -> None:
    # Both scenes list the arms' 16 joints first, then one free joint (7 qpos) per object (peg before socket).
    expected = physics.data.qpos.shape[0] - _ROBOT_QPOS
    if object_pose.shape != (expected,):
        raise ValueError(f"object pose must have {expected} entries for this scene, got shape {object_pose.shape}")
    physics.data.qpos[_ROBOT_QPOS:] = object_pose


def _minimal_observation(task: base.Task, physics: mujoco.Physics) -> dict[str, np.ndarray]:
    # gym_aloha's get_observation renders three 480x640 views every step; the expert only needs qpos.
    return {"qpos": task.get_qpos(physics), "env_state": physics.data.qpos[_ROBOT_QPOS:].copy()}


def _place_mocaps_on_grippers(physics: mujoco.Physics) -> None:
    """Put each mocap body where its weld already holds the gripper in the start pose.

    gym_aloha resets the mocaps onto the gripper links' positions, which is right only if the welds hold
    the links *at* the mocaps. Under MuJoCo 3 the welds keep the links' offset of the reference pose
    qpos0 (about 13 cm), so that reset yanks both arms back against their joint limits and they later
    snap through, flinging objects in the joint-space replay. Here the mocap goes to link - R(mocap) @ offset.
    """
    physics.forward()
    weld_type = 1  # mjtEq.mjEQ_WELD
    for mocap_index, side in enumerate(("left", "right")):
        link_id = physics.model.name2id(f"vx300s_{side}/gripper_link", "body")
        welds = [
            i
            for i in np.flatnonzero(physics.model.eq_type == weld_type)
            if link_id in (physics.model.eq_obj1id[i], physics.model.eq_obj2id[i])
        ]
        if len(welds) != 1:
            raise ValueError(f"expected one weld on vx300s_{side}/gripper_link in the mocap scene, got {len(welds)}")
        # eq_data of a weld: anchor [0:3], relative position [3:6], relative quat [6:10], torque scale [10].
        relative_position = physics.model.eq_data[welds[0], 3:6]
        rotation = quat_to_matrix(physics.data.mocap_quat[mocap_index])
        physics.data.mocap_pos[mocap_index] = physics.data.xpos[link_id] - rotation @ relative_position


class _EndEffectorSceneTask(base.Task):
    """Mixin for the mocap tasks: given object pose, observation = qpos, mocap poses and gripper ctrl."""

    object_pose: np.ndarray

    def initialize_episode(self, physics: mujoco.Physics) -> None:
        self.initialize_robots(physics)
        _set_object_pose(physics, self.object_pose)
        _place_mocaps_on_grippers(physics)
        base.Task.initialize_episode(self, physics)

    def get_observation(self, physics: mujoco.Physics) -> dict[str, np.ndarray]:
        observation = _minimal_observation(self, physics)
        observation["mocap_pose_left"] = np.concatenate([physics.data.mocap_pos[0], physics.data.mocap_quat[0]])
        observation["mocap_pose_right"] = np.concatenate([physics.data.mocap_pos[1], physics.data.mocap_quat[1]])
        observation["gripper_ctrl"] = physics.data.ctrl.copy()
        return observation


class _TransferCubeEndEffector(_EndEffectorSceneTask, TransferCubeEndEffectorTask):
    pass


class _InsertionEndEffector(_EndEffectorSceneTask, InsertionEndEffectorTask):
    pass


class _JointSceneTask(base.Task):
    """Mixin for gym_aloha's joint-space tasks: their reset, control and reward, object pose given, no rendering."""

    object_pose: np.ndarray

    def initialize_episode(self, physics: mujoco.Physics) -> None:
        # gym_aloha's joint tasks read the object pose from the module-level BOX_POSE (ACT's convention).
        joint_sim.BOX_POSE[0] = self.object_pose.copy()
        super().initialize_episode(physics)

    def get_observation(self, physics: mujoco.Physics) -> dict[str, np.ndarray]:
        return _minimal_observation(self, physics)


class _TransferCubeJoint(_JointSceneTask, joint_sim.TransferCubeTask):
    pass


class _InsertionJoint(_JointSceneTask, joint_sim.InsertionTask):
    pass


_END_EFFECTOR_TASKS = {"transfer_cube": _TransferCubeEndEffector, "insertion": _InsertionEndEffector}
_JOINT_TASKS = {"transfer_cube": _TransferCubeJoint, "insertion": _InsertionJoint}


def _make_environment(xml: str, task_class: type[base.Task], object_pose: np.ndarray) -> control.Environment:
    physics = mujoco.Physics.from_xml_path(str(ASSETS_DIR / xml))
    task = task_class()
    task.object_pose = np.asarray(object_pose, dtype=np.float64)
    # Same construction as gym_aloha's AlohaEnv: 50 Hz control, time limit handled by the caller.
    return control.Environment(
        physics, task, float("inf"), control_timestep=DT, n_sub_steps=None, flat_observation=False
    )


def make_end_effector_environment(task: str, object_pose: np.ndarray) -> control.Environment:
    """The mocap (end-effector) scene of ``task`` that resets to ``object_pose``."""
    spec = get_task(task)
    return _make_environment(spec.end_effector_xml, _END_EFFECTOR_TASKS[task], object_pose)


def make_joint_environment(task: str, object_pose: np.ndarray) -> control.Environment:
    """The joint-space scene of ``task`` (the one AlohaTransferCube-v0 / AlohaInsertion-v0 use) that resets to
    ``object_pose``."""
    spec = get_task(task)
    return _make_environment(spec.joint_xml, _JOINT_TASKS[task], object_pose)


# ---------------------------------------------------------------------------------------------
# Rollouts
# ---------------------------------------------------------------------------------------------


def fingertip_midpoint(physics: mujoco.Physics, side: str) -> np.ndarray:
    """World position [3] midway between the two fingertips of the ``side`` ("left"/"right") gripper.

    A fingertip is the mean of its finger mesh's vertices within 1 cm of the mesh's far end along the
    gripper's pointing (x) axis.
    """
    link_axis = physics.named.data.xmat[f"vx300s_{side}/gripper_link"].reshape(3, 3)[:, 0]
    tips = []
    for finger in ("left", "right"):
        geom = physics.model.name2id(f"vx300s_{side}/10_{finger}_gripper_finger", "geom")
        mesh = physics.model.geom_dataid[geom]
        start, count = physics.model.mesh_vertadr[mesh], physics.model.mesh_vertnum[mesh]
        vertices = physics.model.mesh_vert[start : start + count] @ physics.data.geom_xmat[geom].reshape(3, 3).T
        vertices = vertices + physics.data.geom_xpos[geom]
        reach = vertices @ link_axis
        tips.append(vertices[reach > reach.max() - 0.01].mean(axis=0))
    return (tips[0] + tips[1]) / 2


def plan_joint_trajectory(task: str, object_pose: np.ndarray, num_steps: int | None = None) -> np.ndarray:
    """Roll the scripted plan out in the mocap scene; returns the joint targets [T, 14] it produced.

    Row t is the 14-d joint target for step t: the arm joint angles the mocap scene reached after its
    step t, with each gripper replaced by the normalised opening it was commanded at step t (the
    finger's own position lags the command, and the command is what the joint scene should be given).
    """
    spec = get_task(task)
    num_steps = spec.episode_length if num_steps is None else num_steps
    if num_steps <= 0:
        raise ValueError(f"num_steps must be positive, got {num_steps}")
    environment = make_end_effector_environment(task, object_pose)
    first = environment.reset().observation
    policy = ScriptedPolicy(task, object_pose, first["mocap_pose_left"], first["mocap_pose_right"])
    targets = np.empty((num_steps, 14), dtype=np.float64)
    observation = first
    physics = environment.physics
    for step in range(num_steps):
        policy.observe(
            step, observation["env_state"], fingertip_midpoint(physics, "left"), fingertip_midpoint(physics, "right")
        )
        # A weak spring pulling forearm roll and wrist rotate towards 0. When the wrist angle passes
        # through 0 these two joints are coaxial, the weld cannot tell them apart, and they drift to
        # +-2 rad in opposite directions, then unwind mid-carry and swing the held object. The spring
        # only picks among poses the weld allows; the joint-space replay is plain gym-aloha physics.
        posture_joints = _POSTURE_JOINTS[task]
        physics.data.qfrc_applied[posture_joints] = -POSTURE_STIFFNESS * physics.data.qpos[posture_joints]
        observation = environment.step(policy(step)).observation
        targets[step] = observation["qpos"]
        # ctrl = [left finger, -left finger, right finger, -right finger] in metres.
        targets[step, 6] = normalize_puppet_gripper_position(observation["gripper_ctrl"][0])
        targets[step, 13] = normalize_puppet_gripper_position(observation["gripper_ctrl"][2])
    return targets


# Columns of a 14-d ALOHA joint vector: six arm joints per side, then that side's gripper.
ARM_COLUMNS = np.r_[0:6, 7:13]
GRIPPER_COLUMNS = (6, 13)


@dataclass(frozen=True)
class CommandNoise:
    """DART-style perturbation of the replayed joint commands (Laskey et al., 2017).

    The arm commands sent to the scene get a smooth random offset (an Ornstein-Uhlenbeck process with
    standard deviation ``std`` rad and correlation time ``timescale_s``), while the recorded action
    stays the clean plan. The targets are absolute joint angles, so every label points back to the
    planned path from wherever the perturbation has pushed the arm: the corrections a closed-loop
    policy needs once its own small errors compound, and that clean demonstrations never show.

    The grippers are not perturbed, and the offset fades out ``quiet_before`` steps before a gripper
    starts to close until ``quiet_after`` steps after it (ramping over ``ramp`` steps), so that the
    grasp and the handover stay precise: with 0.02 rad of noise everywhere the expert itself dropped
    from 11/12 to 8-9/12 on seeds 0-11, with 0.05 rad and these quiet windows it kept 11/12.
    """

    std: float = 0.05
    timescale_s: float = 0.3
    quiet_before: int = 40
    quiet_after: int = 20
    ramp: int = 15

    def __post_init__(self) -> None:
        if self.std < 0 or self.timescale_s <= 0:
            raise ValueError(f"command noise needs std >= 0 and timescale_s > 0, got {self.std}, {self.timescale_s}")
        if min(self.quiet_before, self.quiet_after) < 0 or self.ramp < 1:
            raise ValueError("quiet_before and quiet_after must be >= 0 and ramp >= 1")

    def sample(self, joint_targets: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Offsets [T, 14] to add to ``joint_targets`` [T, 14] (zero in the gripper columns)."""
        num_steps = joint_targets.shape[0]
        decay = np.exp(-DT / self.timescale_s)
        innovation = self.std * np.sqrt(1.0 - decay**2)
        offsets = np.zeros((num_steps, 14))
        offset = rng.normal(0.0, self.std, len(ARM_COLUMNS))  # start in the stationary distribution
        for step in range(num_steps):
            offset = decay * offset + innovation * rng.normal(size=len(ARM_COLUMNS))
            offsets[step, ARM_COLUMNS] = offset
        envelope = np.ones(num_steps)
        for column in GRIPPER_COLUMNS:
            for start in np.flatnonzero(np.diff(joint_targets[:, column]) < -1e-4) + 1:
                envelope[max(0, start - self.quiet_before) : start + self.quiet_after] = 0.0
        # Box-filtered so the offset ramps in and out (also at the episode's start) instead of jumping.
        ramp = min(self.ramp, num_steps)  # "same" returns the longer of the two
        envelope = np.convolve(envelope, np.ones(ramp) / ramp, mode="same") * envelope
        return offsets * envelope[:, None]


@dataclass
class ExpertEpisode:
    """One replayed demonstration.

    Attributes:
        task: task id.
        seed: seed of the object pose.
        object_pose: [7] (cube) or [14] (peg, socket) initial object poses.
        states: [T, 14] joint state before each step (gym-aloha qpos layout, grippers normalised).
        actions: [T, 14] joint targets of the plan at each step (the recorded action).
        command_offsets: [T, 14] what ``CommandNoise`` added to ``actions`` in the replay; zeros without noise.
        rewards: [T] reward after each step.
        max_reward: the task's top reward (success).
        frames: camera key -> uint8 [T, H, W, 3], rendered before each step; empty when not rendered.
    """

    task: str
    seed: int
    object_pose: np.ndarray
    states: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    max_reward: float
    frames: dict[str, np.ndarray] = field(default_factory=dict)
    command_offsets: np.ndarray | None = None

    @property
    def success(self) -> bool:
        """ACT's criterion: the episode's highest reward reached the task's maximum."""
        return bool(self.rewards.max() >= self.max_reward)

    @property
    def success_at_end(self) -> bool:
        """Stricter: the task is still done on the last frame (cube held off the table, peg on the pin);
        ACT's criterion also counts a cube that touched the left fingers in the air and then fell."""
        return bool(self.rewards[-1] >= self.max_reward)

    @property
    def length(self) -> int:
        return int(self.states.shape[0])


def render_views(
    physics: mujoco.Physics, image_size: tuple[int, int], camera_keys: tuple[str, ...]
) -> dict[str, np.ndarray]:
    """Render the named ALOHA views: camera key -> uint8 [H, W, 3]."""
    height, width = image_size
    return {key: physics.render(height=height, width=width, camera_id=CAMERA_NAMES[key]) for key in camera_keys}


def replay_joint_trajectory(
    task: str,
    object_pose: np.ndarray,
    joint_targets: np.ndarray,
    image_size: tuple[int, int] | None = None,
    camera_keys: tuple[str, ...] = tuple(CAMERA_NAMES),
    after_step: Callable[[int, mujoco.Physics], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Command ``joint_targets`` [T, 14] in the joint-space scene (``after_step(step, physics)`` is called
    after each step, e.g. to check contacts; it may raise to stop the replay).

    Returns:
        states [T, 14] (before each step), rewards [T] (after each step) and, if ``image_size`` = (H, W)
        is given, frames: camera key -> uint8 [T, H, W, 3] rendered before each step.
    """
    joint_targets = np.asarray(joint_targets, dtype=np.float64)
    if joint_targets.ndim != 2 or joint_targets.shape[1] != 14:
        raise ValueError(f"joint_targets must be [T, 14], got {tuple(joint_targets.shape)}")
    unknown = [key for key in camera_keys if key not in CAMERA_NAMES]
    if unknown:
        raise ValueError(f"unknown camera keys {unknown}; expected some of {list(CAMERA_NAMES)}")
    environment = make_joint_environment(task, object_pose)
    observation = environment.reset().observation
    num_steps = joint_targets.shape[0]
    states = np.empty((num_steps, 14), dtype=np.float64)
    rewards = np.empty(num_steps, dtype=np.float64)
    frames: dict[str, list[np.ndarray]] = {key: [] for key in camera_keys} if image_size is not None else {}
    for step in range(num_steps):
        states[step] = observation["qpos"]
        if image_size is not None:
            for key, image in render_views(environment.physics, image_size, camera_keys).items():
                frames[key].append(image)
        time_step = environment.step(joint_targets[step])
        observation = time_step.observation
        rewards[step] = time_step.reward
        if after_step is not None:
            after_step(step, environment.physics)
    return states, rewards, {key: np.stack(images) for key, images in frames.items()}


def run_expert_episode(
    task: str,
    seed: int,
    image_size: tuple[int, int] | None = None,
    num_steps: int | None = None,
    camera_keys: tuple[str, ...] = tuple(CAMERA_NAMES),
    command_noise: CommandNoise | None = None,
    record_sent_commands: bool = False,
    random_motion: RandomMotionConfig | None = None,
) -> ExpertEpisode:
    """Plan in the mocap scene, replay in the joint scene, for the object pose drawn from ``seed``.

    Args:
        task: "transfer_cube" or "insertion".
        seed: object-pose seed (gym_aloha's sampling, as ``AlohaEnv.reset(seed=seed)``).
        image_size: (H, W) of the recorded views; None renders nothing (fast).
        num_steps: episode length; default the task's (400). Shorter episodes cannot finish the task.
        camera_keys: which views to render.
        command_noise: perturb the replayed arm commands (DART); the recorded actions stay the plan.
            The noise is drawn from ``seed``, so an episode is reproducible.
        record_sent_commands: record the perturbed commands (plan + offsets) as the actions instead of the
            plan: world-model data, where the actions must say where the arms actually go.
        random_motion: how random motions are drawn (task "random_motion" only; default ``RandomMotionConfig()``).
    """
    if task == RANDOM_MOTION_TASK:
        config = random_motion or RandomMotionConfig()
        return run_random_motion_episode(seed, image_size, num_steps, camera_keys, config)
    spec = get_task(task)
    object_pose = spec.sample_object_pose(seed)
    joint_targets = plan_joint_trajectory(task, object_pose, num_steps)
    offsets = np.zeros_like(joint_targets)
    if command_noise is not None:
        offsets = command_noise.sample(joint_targets, np.random.default_rng([seed, _COMMAND_NOISE_STREAM]))
    states, rewards, frames = replay_joint_trajectory(
        task, object_pose, joint_targets + offsets, image_size, camera_keys
    )
    return ExpertEpisode(
        task=task,
        seed=seed,
        object_pose=object_pose,
        states=states,
        actions=joint_targets + offsets if record_sent_commands else joint_targets,
        rewards=rewards,
        max_reward=float(_JOINT_TASKS[task]().max_reward),
        frames=frames,
        command_offsets=offsets,
    )


# ---------------------------------------------------------------------------------------------
# Task-agnostic data: random, reachable, collision-free joint-space motions
# ---------------------------------------------------------------------------------------------

# Not in TASKS (it has no goal, reward or expert to evaluate): only `motus generate-demos` records it.
RANDOM_MOTION_TASK = "random_motion"
RANDOM_MOTION_INSTRUCTION = "move the arms"
# The scene the motions play in: transfer cube's (table, both arms, the cube at the seed's pose).
_RANDOM_MOTION_SCENE = "transfer_cube"
# Sampling box per joint (rad; gripper normalised), per arm [waist, shoulder, elbow, forearm roll, wrist angle,
# wrist rotate, gripper]; intersected with the robot profile's joint limits. The box keeps the grippers in
# front of the robot and mostly in the high camera's view; the limits are what makes a target reachable, and
# the contact check what makes a motion collision-free.
_RANDOM_MOTION_BOX = np.array(
    [[-0.8, 0.8], [-1.3, 0.3], [-0.3, 1.3], [-1.2, 1.2], [-1.0, 1.4], [-1.5, 1.5], [0.0, 1.0]], dtype=np.float64
)
_ARM_GEOM_PREFIXES = ("vx300s_left/", "vx300s_right/")
_TABLE_GEOM = "table"


def profile_joint_limits(profile: str = "aloha_sim") -> tuple[np.ndarray, np.ndarray]:
    """(lower [14], upper [14]) joint limits of the robot profile (config/robots/<profile>.yaml)."""
    from motus_model.embodiment import load_profile

    loaded = load_profile(profile)
    return np.asarray(loaded.lower_limits, dtype=np.float64), np.asarray(loaded.upper_limits, dtype=np.float64)


def forbidden_contacts(physics: mujoco.Physics) -> list[tuple[str, str]]:
    """The current contacts between the two arms, or between an arm and the table (geom name pairs).

    Contacts inside one arm (its fingers touching each other) and with the objects are allowed.
    """
    model, found = physics.model, []
    for contact in physics.data.contact[: physics.data.ncon]:
        names = (model.id2name(contact.geom1, "geom") or "", model.id2name(contact.geom2, "geom") or "")
        sides = [next((i for i, prefix in enumerate(_ARM_GEOM_PREFIXES) if n.startswith(prefix)), None) for n in names]
        arm_arm = None not in sides and sides[0] != sides[1]
        arm_table = _TABLE_GEOM in names and any(side is not None for side in sides)
        if arm_arm or arm_table:
            found.append(names)
    return found


class CollisionError(RuntimeError):
    """A replayed motion touched what it must not (see ``forbidden_contacts``)."""


@dataclass(frozen=True)
class RandomMotionConfig:
    """How random motions are drawn: waypoints uniform in the sampling box within the joint limits, reached
    by smooth (cosine) joint-space interpolation over ``segment_steps``, held for ``hold_steps``.

    A segment whose simulation makes a forbidden contact is undone and its waypoint redrawn, up to
    ``max_tries`` times (then the arms return to their start pose, which is collision-free).
    """

    segment_steps: tuple[int, int] = (30, 80)
    hold_steps: tuple[int, int] = (0, 15)
    max_tries: int = 30
    max_replays: int = 5
    # (low [14], high [14]) in place of the default sampling box, e.g. a task's action envelope
    # (``action_envelope``): motions a checkpoint's action statistics cover, which the default box far exceeds
    box: tuple[tuple[float, ...], tuple[float, ...]] | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.segment_steps[0] <= self.segment_steps[1]:
            raise ValueError(f"segment_steps must be 1 <= low <= high, got {self.segment_steps}")
        if not 0 <= self.hold_steps[0] <= self.hold_steps[1]:
            raise ValueError(f"hold_steps must be 0 <= low <= high, got {self.hold_steps}")
        if self.box is not None:
            low, high = (np.asarray(bound, dtype=np.float64) for bound in self.box)
            if low.shape != (14,) or high.shape != (14,) or np.any(low > high):
                raise ValueError(f"box must be (low [14], high [14]) with low <= high, got {low.shape}, {high.shape}")


def action_envelope(dataset: str | Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The per-joint (min, max) of a LeRobot dataset's actions, from its statistics (``LeRobotDataset.stats``:
    ``meta/stats.json``, or LeRobot's per-episode stats combined): a box for ``RandomMotionConfig`` that keeps
    random motions inside what a task's demonstrations span."""
    from motus_model.data.lerobot import LeRobotDataset

    if not (Path(dataset) / "meta" / "info.json").is_file():
        raise FileNotFoundError(
            f"{dataset} is not a LeRobot dataset (no meta/info.json, no meta/stats.json): give a task's demonstrations"
        )
    action = LeRobotDataset(dataset, camera_keys=()).stats.get("action", {})
    if "min" not in action or "max" not in action or len(action["min"]) != 14 or len(action["max"]) != 14:
        raise ValueError(f"{dataset}: expected 14-d action min and max in its statistics (a bimanual ALOHA dataset)")
    return tuple(float(v) for v in action["min"]), tuple(float(v) for v in action["max"])


def random_motion_box(
    lower: np.ndarray, upper: np.ndarray, box: tuple[tuple[float, ...], tuple[float, ...]] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The sampling box for both arms [14] x 2 (``box``, or the default), clipped to the joint limits."""
    if box is None:
        default = np.concatenate([_RANDOM_MOTION_BOX, _RANDOM_MOTION_BOX])
        box = (default[:, 0], default[:, 1])
    low, high = np.maximum(np.asarray(box[0]), lower), np.minimum(np.asarray(box[1]), upper)
    if np.any(low > high):  # low == high holds that joint still (a joint a task's demonstrations never move)
        raise ValueError("the random-motion box lies outside the joint limits")
    return low, high


def plan_random_motion(
    seed: int, num_steps: int, config: RandomMotionConfig = RandomMotionConfig(), profile: str = "aloha_sim"
) -> tuple[np.ndarray, dict[str, int]]:
    """Joint targets [num_steps, 14] of a random collision-free motion from the start pose, and counts
    ({"segments", "rejected_segments"}). Every target lies within the profile's joint limits."""
    if num_steps <= 0:
        raise ValueError(f"num_steps must be positive, got {num_steps}")
    rng = np.random.default_rng([seed, 11])
    lower, upper = profile_joint_limits(profile)
    low, high = random_motion_box(lower, upper, config.box)
    environment = make_joint_environment(_RANDOM_MOTION_SCENE, get_task(_RANDOM_MOTION_SCENE).sample_object_pose(seed))
    start = np.clip(environment.reset().observation["qpos"].copy(), lower, upper)
    physics = environment.physics
    targets: list[np.ndarray] = []
    current = start
    counts = {"segments": 0, "rejected_segments": 0}
    while len(targets) < num_steps:
        saved = physics.get_state().copy()
        for attempt in range(config.max_tries + 1):
            waypoint = rng.uniform(low, high) if attempt < config.max_tries else start
            length = int(rng.integers(config.segment_steps[0], config.segment_steps[1] + 1))
            fraction = (1 - np.cos(np.pi * np.arange(1, length + 1) / length)) / 2  # smooth start and stop
            segment = current + fraction[:, None] * (waypoint - current)
            hold = int(rng.integers(config.hold_steps[0], config.hold_steps[1] + 1))
            segment = np.concatenate([segment, np.repeat(waypoint[None], hold, axis=0)])
            collided = False
            for target in segment:
                environment.step(target)
                if forbidden_contacts(physics):
                    collided = True
                    break
            if not collided:
                break
            counts["rejected_segments"] += 1
            with physics.reset_context():
                physics.set_state(saved)
        else:
            raise CollisionError(f"seed {seed}: even the way back to the start pose collides")
        counts["segments"] += 1
        targets.extend(segment)
        current = waypoint
    return np.clip(np.stack(targets[:num_steps]), lower, upper), counts


def run_random_motion_episode(
    seed: int,
    image_size: tuple[int, int] | None = None,
    num_steps: int | None = None,
    camera_keys: tuple[str, ...] = tuple(CAMERA_NAMES),
    config: RandomMotionConfig = RandomMotionConfig(),
) -> ExpertEpisode:
    """A random motion (``plan_random_motion``) replayed and recorded like a demonstration.

    The replay is checked for forbidden contacts at every step too (a plan simulated in pieces can differ
    slightly from one replay); a colliding replay is drawn again from the next plan seed, up to
    ``config.max_replays`` times. Rewards are zero and ``max_reward`` 0: "success" means a collision-free
    motion was recorded.
    """
    spec = get_task(_RANDOM_MOTION_SCENE)
    object_pose = spec.sample_object_pose(seed)
    num_steps = spec.episode_length if num_steps is None else num_steps

    def check(step: int, physics: mujoco.Physics) -> None:
        contacts = forbidden_contacts(physics)
        if contacts:
            raise CollisionError(f"step {step}: {contacts}")

    for replay in range(config.max_replays):
        joint_targets, _ = plan_random_motion(seed + 1_000_003 * replay, num_steps, config)
        try:
            states, _, frames = replay_joint_trajectory(
                _RANDOM_MOTION_SCENE, object_pose, joint_targets, image_size, camera_keys, after_step=check
            )
        except CollisionError as error:
            logger.info("random motion %d, replay %d collided (%s); drawing another", seed, replay, error)
            continue
        return ExpertEpisode(
            task=RANDOM_MOTION_TASK,
            seed=seed,
            object_pose=object_pose,
            states=states,
            actions=joint_targets,
            rewards=np.zeros(num_steps),
            max_reward=0.0,
            frames=frames,
            command_offsets=np.zeros_like(joint_targets),
        )
    raise CollisionError(f"seed {seed}: {config.max_replays} random motions collided on replay")
