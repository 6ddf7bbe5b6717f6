"""Convert HDF5 episode files (ACT / ALOHA, RoboTwin 2.0) into a LeRobot dataset; one file is one episode.

ACT / ALOHA (``record_episodes.py`` of ACT and Interbotix/aloha)::

    /observations/qpos [T, J]        joint positions, grippers normalised (1 open, 0 closed)
    /observations/qvel [T, J]        (not used)
    /observations/images/<cam>       uint8 [T, H, W, 3], or JPEG bytes padded to [T, L] (root attr compress=True;
                                     /compress_len [num_cams, T] gives the lengths; JPEG ignores the padding)
    /action [T, J]                   commanded joints, same units

RoboTwin 2.0 (``collect_data``: ``data/episode<N>.hdf5``)::

    /joint_action/vector [T, J]      joint vector per frame (left arm 6, left gripper, right arm 6, right gripper)
    /observation/<camera>/rgb [T]    JPEG/PNG bytes per frame (head_camera, left_camera, right_camera, front_camera)

RoboTwin stores one vector per frame; as its own ``process_data`` does for ACT, frame t's state is vector t and
its action vector t+1 (the last frame has no action and is dropped).

Cameras map to the robot profile's roles (``--camera ROLE=NAME``, else the defaults below, limited to the
profile's roles when a profile is given); joints are checked against the profile's joint count. Values are
stored as they are in the file (both layouts already use the model's gripper convention).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from motus_model.data.errors import DataInputError
from motus_model.data.lerobot import LeRobotDatasetWriter

logger = logging.getLogger(__name__)

CAMERA_KEY_PREFIX = "observation.images."
COMPOSITE_ROLES = ("high", "left_wrist", "right_wrist")
# file camera name -> camera role, per layout
ACT_CAMERAS = {"cam_high": "high", "cam_left_wrist": "left_wrist", "cam_right_wrist": "right_wrist", "cam_low": "low"}
ROBOTWIN_CAMERAS = {
    "head_camera": "high",
    "left_camera": "left_wrist",
    "right_camera": "right_wrist",
    "front_camera": "front",
}


class Hdf5Error(DataInputError):
    """An HDF5 episode file the converter cannot use (one line: file, key, fix)."""


def camera_key(role: str) -> str:
    """LeRobot key of a camera role (ALOHA's cam_* names for the composite's roles), as the bag converter names them."""
    return f"{CAMERA_KEY_PREFIX}cam_{role}" if role in COMPOSITE_ROLES else f"{CAMERA_KEY_PREFIX}{role}"


def detect_layout(handle: Any, path: Path) -> str:
    if "observations" in handle and "action" in handle:
        return "act"
    if "joint_action" in handle and "observation" in handle:
        return "robotwin"
    raise Hdf5Error(
        f"{path}: neither the ACT layout (/observations/qpos, /action) nor RoboTwin's (/joint_action/vector, "
        f"/observation/<camera>/rgb); it has {sorted(handle.keys())}"
    )


def _decode(buffer: Any, path: Path, key: str, index: int) -> np.ndarray:
    data = np.frombuffer(bytes(buffer), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise Hdf5Error(
            f"{path}: {key} frame {index} is neither raw uint8 [H, W, 3] nor a JPEG/PNG image; re-export the episode"
        )
    return image


def _frames(dataset: Any, path: Path, key: str) -> np.ndarray:
    """uint8 [T, H, W, 3] from raw frames or one compressed image per row."""
    if dataset.dtype == np.uint8 and dataset.ndim == 4 and dataset.shape[-1] == 3:
        return np.asarray(dataset[()])
    if dataset.ndim not in (1, 2):
        raise Hdf5Error(
            f"{path}: {key} has shape {dataset.shape} {dataset.dtype}; expected raw uint8 [T, H, W, 3] "
            "or one JPEG/PNG per frame"
        )
    images = [_decode(row, path, key, i) for i, row in enumerate(dataset[()])]
    if len({image.shape for image in images}) > 1:
        raise Hdf5Error(f"{path}: {key} frames change size within the episode")
    # ACT and RoboTwin both pass their RGB arrays to cv2.imencode (which takes them for BGR), so cv2.imdecode
    # gives the RGB order back: no channel swap.
    return np.stack(images)


def _array(handle: Any, key: str, path: Path) -> np.ndarray:
    if key not in handle:
        raise Hdf5Error(f"{path}: no {key} dataset; is this an ACT/ALOHA or RoboTwin episode file?")
    return np.asarray(handle[key][()], dtype=np.float32)


def read_episode(
    path: str | Path,
    cameras: dict[str, str] | None = None,
    roles: list[str] | None = None,
    num_joints: int | None = None,
) -> dict[str, Any]:
    """One HDF5 episode as {"frames": {camera key: uint8 [T,H,W,3]}, "state", "action", "layout"}.

    Args:
        path: the .hdf5 file.
        cameras: camera role -> name in the file; default per layout (ACT_CAMERAS / ROBOTWIN_CAMERAS).
        roles: keep these roles only (the robot profile's); each must be found.
        num_joints: the robot's joint count; a mismatch is an error.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise Hdf5Error(f"{path}: no such file; give ACT/ALOHA or RoboTwin episode .hdf5 files")
    if path.stat().st_size == 0:
        raise Hdf5Error(f"{path}: the file is empty; copy or record the episode again")
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise Hdf5Error(
            f"{path}: not a readable HDF5 file ({error}); it is truncated or corrupt: copy it again"
        ) from None
    try:
        with handle:
            layout = detect_layout(handle, path)
            if layout == "act":
                state, action = _array(handle, "observations/qpos", path), _array(handle, "action", path)
                group_key, defaults = "observations/images", ACT_CAMERAS
                available = {name: f"{group_key}/{name}" for name in handle.get(group_key, {})}
            else:
                vector = _array(handle, "joint_action/vector", path)
                state, action = vector[:-1], vector[1:]
                defaults = ROBOTWIN_CAMERAS
                available = {
                    name: f"observation/{name}/rgb"
                    for name, group in handle["observation"].items()
                    if hasattr(group, "keys") and "rgb" in group
                }
            if cameras is None:
                by_role = {role: name for name, role in defaults.items() if name in available}
                unknown = [name for name in available if name not in defaults]
                for name in unknown:
                    by_role.setdefault(name, name)  # an unlisted camera keeps its name as its role
            else:
                by_role = dict(cameras)
            if roles is not None:
                missing = [role for role in roles if role not in by_role]
                if missing:
                    raise Hdf5Error(
                        f"{path}: no camera for the profile's role(s) {missing}; the file has "
                        f"{sorted(available)}: map them with --camera ROLE=NAME"
                    )
                by_role = {role: by_role[role] for role in roles}
            for role, name in by_role.items():
                if name not in available:
                    raise Hdf5Error(
                        f"{path}: camera {name!r} (role {role}) not in the file, which has {sorted(available)}; "
                        "fix --camera ROLE=NAME"
                    )
            if not by_role:
                raise Hdf5Error(f"{path}: no camera images in the file")
            length = state.shape[0]
            frames = {}
            for role, name in by_role.items():
                clip = _frames(handle[available[name]], path, available[name])
                frames[camera_key(role)] = clip[:length]
    except Hdf5Error:
        raise
    except (OSError, KeyError, RuntimeError) as error:
        raise Hdf5Error(
            f"{path}: reading failed ({type(error).__name__}: {error}); the file is truncated or corrupt"
        ) from None
    if state.ndim != 2 or action.shape != state.shape:
        raise Hdf5Error(f"{path}: state {state.shape} and action {action.shape} must both be [T, joints]")
    if num_joints is not None and state.shape[1] != num_joints:
        raise Hdf5Error(
            f"{path}: {state.shape[1]} joints per row, the robot profile has {num_joints}; "
            "choose the matching --profile"
        )
    if state.shape[0] == 0:
        raise Hdf5Error(f"{path}: the episode has no frames")
    for key, clip in frames.items():
        if clip.shape[0] != state.shape[0]:
            raise Hdf5Error(f"{path}: {key} has {clip.shape[0]} frames for {state.shape[0]} joint rows")
    return {"frames": frames, "state": state, "action": action, "layout": layout}


def convert_hdf5(
    paths: list[str | Path],
    output: str | Path,
    fps: float,
    task: str,
    profile: dict[str, Any] | None = None,
    cameras: dict[str, str] | None = None,
    robot_type: str = "aloha",
    append: bool = False,
    show_progress: bool = False,
) -> Path:
    """Convert episode files into a LeRobot dataset at ``output`` (atomically; see ``LeRobotDatasetWriter``)."""
    if not paths:
        raise Hdf5Error("no HDF5 files given")
    roles = [str(c["role"]) for c in profile["cameras"]] if profile else None
    num_joints = len(profile["joint_names"]) if profile and "joint_names" in profile else None
    writer: LeRobotDatasetWriter | None = None
    try:
        for path in tqdm(paths, desc="episodes", unit="file", disable=not show_progress):
            episode = read_episode(path, cameras, roles, num_joints)
            if writer is None:
                dim = episode["state"].shape[1]
                writer = LeRobotDatasetWriter(
                    output,
                    fps=fps,
                    camera_keys=tuple(episode["frames"]),
                    robot_type=robot_type,
                    state_dim=dim,
                    action_dim=dim,
                    append=append,
                )
            if set(episode["frames"]) != set(writer.camera_keys) or episode["state"].shape[1] != writer.state_dim:
                raise Hdf5Error(
                    f"{path}: cameras {sorted(episode['frames'])} / {episode['state'].shape[1]} joints differ "
                    "from the first file's; convert different robots into separate datasets"
                )
            writer.add_episode(episode["frames"], episode["state"], episode["action"], task)
        assert writer is not None
        return writer.finalize()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
