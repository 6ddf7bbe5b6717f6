"""Conversions between ROS messages and numpy arrays: images, joint states, trajectories, observations.

Every function checks its input and raises ValueError saying what was expected and what came; none
of them guesses (an unknown encoding, a missing joint or a NaN is an error, never a silent default).
Images are returned as uint8 RGB arrays of shape [H, W, 3], whatever the wire encoding; the pixels are
decoded by motus_model.images, the decoder the bag converter uses too (one encoding set for serving and
training). cv_bridge is used where it imports and the caller asks for it; the numpy path is the default.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from builtin_interfaces.msg import Duration, Time
from sensor_msgs.msg import CompressedImage, Image, JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from motus_model.embodiment import RobotProfile
from motus_model.images import (
    check_encoding,
    check_image_layout,
    decode_compressed_image,
    decode_image,
    encode_compressed_image,
    encode_image,
)

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# Time stamps
def to_stamp(stamp: Time | float | int) -> Time:
    """builtin_interfaces/Time from a Time (returned as is) or seconds."""
    if isinstance(stamp, Time):
        return stamp
    seconds = float(stamp)
    if not np.isfinite(seconds) or seconds < 0:
        raise ValueError(f"stamp must be a finite, non-negative number of seconds, got {stamp}")
    nanoseconds = int(round(seconds * 1e9))
    return Time(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


def stamp_to_seconds(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def seconds_to_duration(seconds: float) -> Duration:
    nanoseconds = int(round(seconds * 1e9))
    return Duration(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


def duration_to_seconds(duration: Duration) -> float:
    return duration.sec + duration.nanosec * 1e-9


# --------------------------------------------------------------------------------------------------
# Images
def _cv_bridge():
    """A CvBridge where cv_bridge imports (a full ROS 2 install), else None."""
    try:
        from cv_bridge import CvBridge
    except ImportError:
        return None
    return CvBridge()


def _check_image(msg: Image, expected_encoding: str | None, expected_shape: tuple[int, int] | None) -> int:
    """Validate an Image message against the caller's expectations and its own layout; returns its channels."""
    check_encoding(msg.encoding)
    if expected_encoding is not None and msg.encoding != expected_encoding:
        raise ValueError(f"image encoding: expected {expected_encoding!r}, got {msg.encoding!r}")
    if expected_shape is not None and (msg.height, msg.width) != tuple(expected_shape):
        raise ValueError(f"image size: expected {expected_shape[0]}x{expected_shape[1]}, got {msg.height}x{msg.width}")
    return check_image_layout(msg.encoding, msg.height, msg.width, msg.step, len(msg.data))


def image_to_numpy_fallback(msg: Image) -> np.ndarray:
    """The numpy conversion (no cv_bridge): an Image -> uint8 RGB [H, W, 3] (a copy, never the message's buffer)."""
    return decode_image(msg.data, msg.encoding, msg.height, msg.width, msg.step)


def image_to_numpy(
    msg: Image,
    expected_encoding: str | None = None,
    expected_shape: tuple[int, int] | None = None,
    use_cv_bridge: bool | None = False,
) -> np.ndarray:
    """sensor_msgs/Image (any of motus_model.images.IMAGE_ENCODINGS) -> uint8 RGB array [H, W, 3].

    expected_encoding / expected_shape (height, width): reject anything else with a ValueError.
    use_cv_bridge: False (default) = the numpy path, the decoder training uses; None = cv_bridge where it
    imports; True = require it.
    """
    _check_image(msg, expected_encoding, expected_shape)
    bridge = None
    if use_cv_bridge is not False:
        bridge = _cv_bridge()
        if bridge is None and use_cv_bridge:
            raise ImportError("use_cv_bridge=True but cv_bridge is not importable (it comes with a full ROS 2 install)")
    if bridge is None:
        return image_to_numpy_fallback(msg)
    return np.ascontiguousarray(bridge.imgmsg_to_cv2(msg, desired_encoding="rgb8"))


def numpy_to_image(array: np.ndarray, stamp: Time | float, frame_id: str = "", encoding: str = "rgb8") -> Image:
    """uint8 RGB [H, W, 3] (or [H, W] / [H, W, 1] for mono8) -> sensor_msgs/Image in `encoding`.

    For bgr8/bgra8 the RGB array is reordered on the wire (alpha opaque), so image_to_numpy gives it back.
    """
    array = np.asarray(array)
    data, step = encode_image(array, encoding)
    msg = Image()
    msg.header.stamp = to_stamp(stamp)
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(array.shape[0]), int(array.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = step
    msg.data = data
    return msg


def compressed_to_numpy(msg: CompressedImage, expected_shape: tuple[int, int] | None = None) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg/png, image_transport's compressed plugin) -> uint8 RGB [H, W, 3].

    expected_shape (height, width): reject any other size. Unknown formats and undecodable data are ValueErrors.
    """
    return decode_compressed_image(msg.data, msg.format, expected_shape)


def numpy_to_compressed(
    array: np.ndarray, stamp: Time | float, frame_id: str = "", codec: str = "jpeg", jpeg_quality: int = 90
) -> CompressedImage:
    """uint8 RGB [H, W, 3] -> sensor_msgs/CompressedImage as image_transport's compressed plugin publishes it."""
    data, fmt = encode_compressed_image(np.asarray(array), codec, jpeg_quality)
    msg = CompressedImage()
    msg.header.stamp = to_stamp(stamp)
    msg.header.frame_id = frame_id
    msg.format = fmt
    msg.data = data
    return msg


# --------------------------------------------------------------------------------------------------
# Joint states
def joint_state_to_vector(
    msg_or_msgs: JointState | Sequence[JointState],
    joint_names: Sequence[str],
    prefixes: Sequence[str] | None = None,
    allow_extra: bool = True,
) -> np.ndarray:
    """One or several JointState messages -> positions [len(joint_names)] in joint_names order (float64).

    prefixes: one per message; message k's names are read as prefixes[k] + name (per-arm drivers that
    publish the same names on both arms; see RobotProfile.joint_name_prefixes).
    allow_extra: names the messages carry beyond joint_names are ignored (drivers publish finger joints
    too); False rejects them. Missing names, duplicated names and non-finite positions raise ValueError.
    """
    msgs = [msg_or_msgs] if isinstance(msg_or_msgs, JointState) else list(msg_or_msgs)
    if not msgs:
        raise ValueError("expected at least one JointState message, got none")
    if prefixes is None:
        prefixes = [""] * len(msgs)
    if len(prefixes) != len(msgs):
        raise ValueError(f"expected one prefix per JointState message ({len(msgs)}), got {len(prefixes)}")
    positions: dict[str, float] = {}
    for msg, prefix in zip(msgs, prefixes):
        if len(msg.name) != len(msg.position):
            raise ValueError(
                f"JointState must have one position per name: {len(msg.name)} names, {len(msg.position)} positions"
            )
        for name, position in zip(msg.name, msg.position):
            key = prefix + name
            if key in positions:
                raise ValueError(
                    f"joint {key!r} appears in more than one JointState message; give per-message "
                    "prefixes (RobotProfile.joint_name_prefixes)"
                )
            positions[key] = position
    missing = [name for name in joint_names if name not in positions]
    if missing:
        raise ValueError(
            f"JointState is missing joints {missing}; expected {list(joint_names)}, got {sorted(positions)}"
        )
    if not allow_extra:
        unknown = sorted(set(positions) - set(joint_names))
        if unknown:
            raise ValueError(f"unknown joint names {unknown}; expected only {list(joint_names)}")
    vector = np.array([positions[name] for name in joint_names], dtype=np.float64)
    bad = [name for name, value in zip(joint_names, vector) if not np.isfinite(value)]
    if bad:
        raise ValueError(f"JointState positions must be finite, got NaN/inf for {bad}")
    return vector


def vector_to_joint_state(positions: np.ndarray, joint_names: Sequence[str], stamp: Time | float) -> JointState:
    """positions [D] -> sensor_msgs/JointState with joint_names."""
    positions = np.asarray(positions, dtype=np.float64)
    if positions.shape != (len(joint_names),):
        raise ValueError(
            f"positions must have shape ({len(joint_names)},) for {len(joint_names)} joints, got {positions.shape}"
        )
    msg = JointState()
    msg.header.stamp = to_stamp(stamp)
    msg.name = list(joint_names)
    msg.position = positions.tolist()
    return msg


# --------------------------------------------------------------------------------------------------
# Trajectories
def actions_to_trajectory(
    actions: np.ndarray, joint_names: Sequence[str], dt: float, stamp: Time | float
) -> JointTrajectory:
    """Action chunk [N, D] -> JointTrajectory with N points, point i at time_from_start = (i + 1) * dt.

    Action i of a chunk is meant for the control step after the observation plus i (see motus_model.action_chunks),
    so the first point lies one control period after `stamp` (the observation's time).
    """
    actions = np.asarray(actions, dtype=np.float64)
    if actions.ndim != 2 or actions.shape[1] != len(joint_names):
        raise ValueError(
            f"actions must have shape [N, {len(joint_names)}] for {len(joint_names)} joints, got {actions.shape}"
        )
    if not np.all(np.isfinite(actions)):
        raise ValueError("actions must be finite, got NaN/inf")
    if not dt > 0:
        raise ValueError(f"dt must be > 0 seconds, got {dt}")
    msg = JointTrajectory()
    msg.header.stamp = to_stamp(stamp)
    msg.joint_names = list(joint_names)
    msg.points = [
        JointTrajectoryPoint(positions=row.tolist(), time_from_start=seconds_to_duration((i + 1) * dt))
        for i, row in enumerate(actions)
    ]
    return msg


def trajectory_to_actions(traj: JointTrajectory, joint_names: Sequence[str]) -> np.ndarray:
    """JointTrajectory -> positions [N, len(joint_names)], columns reordered to joint_names."""
    index = {name: i for i, name in enumerate(traj.joint_names)}
    if len(index) != len(traj.joint_names):
        raise ValueError(f"trajectory joint_names must be unique, got {list(traj.joint_names)}")
    missing = [name for name in joint_names if name not in index]
    if missing:
        raise ValueError(
            f"trajectory is missing joints {missing}; expected {list(joint_names)}, got {list(traj.joint_names)}"
        )
    unknown = sorted(set(traj.joint_names) - set(joint_names))
    if unknown:
        raise ValueError(f"trajectory has unknown joint names {unknown}; expected {list(joint_names)}")
    if not traj.points:
        raise ValueError("trajectory has no points")
    columns = [index[name] for name in joint_names]
    rows = []
    for i, point in enumerate(traj.points):
        if len(point.positions) != len(traj.joint_names):
            raise ValueError(
                f"trajectory point {i} must have {len(traj.joint_names)} positions, got {len(point.positions)}"
            )
        rows.append(np.asarray(point.positions, dtype=np.float64)[columns])
    actions = np.stack(rows)
    if not np.all(np.isfinite(actions)):
        raise ValueError("trajectory positions must be finite, got NaN/inf")
    return actions


# --------------------------------------------------------------------------------------------------
# motus_msgs/Observation
def observation_to_inputs(msg, profile: RobotProfile) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """motus_msgs/Observation -> (images {role: uint8 RGB [H, W, 3]}, state [D] in ROBOT units, or None).

    The state stays in robot units in the profile's joint order (as the message carries it, and as the
    ObservationBuffer holds it); map it with profile.robot_to_model before the model sees it.
    The joint state may be unnamed (exactly D positions in profile order) or named with the profile's
    joint names (any order; unknown names rejected).
    An observation with no images and no joint state means "use the latest": returns ({}, None).
    Images must cover every camera role of the profile; a joint state is then required.
    """
    if len(msg.camera_names) != len(msg.images):
        raise ValueError(
            f"observation must have one camera name per image: {len(msg.camera_names)} names, {len(msg.images)} images"
        )
    images: dict[str, np.ndarray] = {}
    for role, image in zip(msg.camera_names, msg.images):
        if role not in profile.camera_roles:
            raise ValueError(f"unknown camera {role!r}; profile {profile.name!r} has {profile.camera_roles}")
        if role in images:
            raise ValueError(f"camera {role!r} appears twice in the observation")
        try:
            images[role] = image_to_numpy(image)
        except ValueError as error:
            raise ValueError(f"camera {role!r}: {error}") from error
    if images and set(images) != set(profile.camera_roles):
        missing = sorted(set(profile.camera_roles) - set(images))
        raise ValueError(
            f"observation is missing cameras {missing}; profile {profile.name!r} needs {profile.camera_roles}"
        )

    joint_state = msg.joint_state
    if len(joint_state.position) == 0 and len(joint_state.name) == 0:
        if images:
            raise ValueError(f"observation has images but no joint state; expected {profile.action_dim} positions")
        return images, None
    if len(joint_state.name) == 0:
        positions = np.asarray(joint_state.position, dtype=np.float64)
        if positions.shape != (profile.action_dim,):
            raise ValueError(
                f"unnamed joint state must have {profile.action_dim} positions in the profile's "
                f"order, got {positions.shape[0]}"
            )
        if not np.all(np.isfinite(positions)):
            raise ValueError("joint state positions must be finite, got NaN/inf")
    else:
        positions = joint_state_to_vector(joint_state, profile.joint_names, allow_extra=False)
    return images, positions


def profile_joint_state_to_vector(msgs: JointState | Sequence[JointState], profile: RobotProfile) -> np.ndarray:
    """The latest JointState of each of profile.joint_state_topics (same order) -> positions [D] in robot units.

    Applies profile.joint_name_prefixes, so per-arm drivers that publish the same names on both arms work.
    """
    msgs = [msgs] if isinstance(msgs, JointState) else list(msgs)
    return joint_state_to_vector(msgs, profile.joint_names, prefixes=profile.joint_name_prefixes)


def profile_joint_state_to_model(msgs: JointState | Sequence[JointState], profile: RobotProfile) -> np.ndarray:
    """Like profile_joint_state_to_vector, mapped to model space (grippers 0 = closed, 1 = open)."""
    return profile.robot_to_model(profile_joint_state_to_vector(msgs, profile))
