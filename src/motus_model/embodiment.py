"""The robot-profile schema: everything that differs between embodiments (ROS-free, one home).

A profile owns the mapping between the robot's world (topics, joint names, gripper units, command
interface, limits) and the model's action space (14-d for the dual-arm robots: [left 6 joints, left
gripper, right 6 joints, right gripper], grippers normalised 1 = open, 0 = closed). The bag converter
(motus_model.data.bag_converter) and the ROS nodes (motus_ros) read the same `RobotProfile`; nothing here
imports ROS, so profiles load and validate anywhere (training, notebooks, CI without ROS).

Profiles live as YAML files, config/robots/<name>.yaml (installed to share/motus_ros/config/robots).
`load_profile` resolves a name in the folders it is given (default: default_profile_dirs(); motus_ros.profiles
adds the folder the ament index names) or reads a path to a YAML file directly.

Joint names: `joint_names` are the profile's unique names in model order. Drivers that publish one
JointState per arm with the same names in both (Interbotix: `waist`..`gripper`; Agilex: `joint0`..`joint6`)
are described with `joint_name_prefixes`: the names published on `joint_state_topics[k]` are read as
`joint_name_prefixes[k] + name`, e.g. `follower_left/waist`.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Sequence
from dataclasses import MISSING, asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from motus_model.images import IMAGE_ENCODINGS

logger = logging.getLogger(__name__)

COMMAND_INTERFACES = ("joint_trajectory", "forward_command", "joint_state_per_arm", "interbotix")
# How a camera reaches the server (image_transport's names): `raw` = sensor_msgs/Image on `topic`; `compressed` =
# sensor_msgs/CompressedImage (jpeg/png) on `topic`/compressed, where the compressed plugin publishes it.
CAMERA_TRANSPORTS = ("raw", "compressed")
# Where profile names resolve without ROS: config/robots of a source checkout (src/motus_model/embodiment.py ->
# repository root), and the copy setup.py installs beside an installed package
# (<prefix>/lib/pythonX.Y/site-packages/motus_model -> <prefix>/share/motus_ros/config/robots).
_HERE = Path(__file__).resolve()
SOURCE_PROFILE_DIR = _HERE.parents[2] / "config" / "robots"
INSTALLED_PROFILE_DIR = _HERE.parents[min(4, len(_HERE.parents) - 1)] / "share" / "motus_ros" / "config" / "robots"


def interbotix_single_topic(group_topic: str) -> str:
    """The Interbotix JointSingleCommand (gripper) topic beside a JointGroupCommand topic:
    ``<robot>/commands/joint_group`` -> ``<robot>/commands/joint_single``."""
    return group_topic.rsplit("/", 1)[0] + "/joint_single"


@dataclass
class CameraSpec:
    """One camera: `role` is the model's name for the view (high, left_wrist, right_wrist).

    `topic` is the raw image topic (image_transport's base name, e.g. /cam_high/image_raw); with `transport:
    compressed` the server reads `topic`/compressed instead. `encoding` is checked on raw images only (a
    compressed image carries its codec in its `format`); the size is checked for both.
    """

    role: str
    topic: str
    encoding: str = "rgb8"
    height: int = 480
    width: int = 640
    transport: str = "raw"

    @property
    def transport_topic(self) -> str:
        """The topic the camera's messages arrive on for its transport (image_transport naming)."""
        return f"{self.topic.rstrip('/')}/compressed" if self.transport == "compressed" else self.topic


@dataclass
class GripperSpec:
    """A gripper joint: model value 1 = open, 0 = closed; robot_open/robot_closed in robot units."""

    index: int
    robot_open: float
    robot_closed: float


@dataclass
class RobotProfile:
    """An embodiment: topics, joint order, gripper mapping, command interface and limits.

    All per-joint arrays have one entry per model action dimension (14 for the dual-arm robots), in
    `joint_names` order, in robot units (rad; grippers in the driver's unit).
    """

    name: str
    cameras: list[CameraSpec]
    joint_state_topics: list[str]
    joint_names: list[str]
    grippers: list[GripperSpec]
    control_rate_hz: float
    command_interface: str
    command_topics: list[str]
    # One list of action indices per command topic (per arm, or one list with every index).
    command_joint_groups: list[list[int]]
    lower_limits: list[float]
    upper_limits: list[float]
    max_delta_per_step: list[float]
    dry_run_default: bool = True
    sim: bool = False
    # Prefix added to the names read on joint_state_topics[k] (see the module docstring); "" = none.
    joint_name_prefixes: list[str] = field(default_factory=list)
    # Names the command messages carry, per command group (default: joint_names with the prefix stripped).
    command_joint_names: list[list[str]] = field(default_factory=list)
    description: str = ""

    def __post_init__(self) -> None:
        self.cameras = [c if isinstance(c, CameraSpec) else CameraSpec(**c) for c in self.cameras]
        self.grippers = [g if isinstance(g, GripperSpec) else GripperSpec(**g) for g in self.grippers]
        if not self.joint_name_prefixes:
            self.joint_name_prefixes = [""] * len(self.joint_state_topics)
        if not self.command_joint_names:
            self.command_joint_names = [
                [self.joint_names[i].rsplit("/", 1)[-1] for i in group] for group in self.command_joint_groups
            ]
        self.validate()

    # ----------------------------------------------------------------------------------------------
    @property
    def action_dim(self) -> int:
        return len(self.joint_names)

    @property
    def camera_roles(self) -> list[str]:
        return [camera.role for camera in self.cameras]

    @property
    def gripper_indices(self) -> list[int]:
        return [gripper.index for gripper in self.grippers]

    def camera(self, role: str) -> CameraSpec:
        for camera in self.cameras:
            if camera.role == role:
                return camera
        raise ValueError(f"profile {self.name!r} has no camera {role!r}; cameras: {self.camera_roles}")

    def validate(self) -> None:
        """Raise ValueError naming the first inconsistent field (expected vs got)."""
        where = f"robot profile {self.name!r}"
        dim = len(self.joint_names)
        if dim == 0:
            raise ValueError(f"{where}: joint_names is empty")
        if len(set(self.joint_names)) != dim:
            duplicates = sorted({n for n in self.joint_names if self.joint_names.count(n) > 1})
            raise ValueError(
                f"{where}: joint_names must be unique, duplicated: {duplicates} "
                "(use joint_name_prefixes for per-arm topics)"
            )
        for key in ("lower_limits", "upper_limits", "max_delta_per_step"):
            values = getattr(self, key)
            if len(values) != dim:
                raise ValueError(f"{where}: {key} must have {dim} entries (one per joint), got {len(values)}")
            if not np.all(np.isfinite(np.asarray(values, dtype=float))):
                raise ValueError(f"{where}: {key} must be finite, got {values}")
        lower, upper = np.asarray(self.lower_limits, float), np.asarray(self.upper_limits, float)
        bad = np.nonzero(lower >= upper)[0]
        if bad.size:
            raise ValueError(
                f"{where}: lower_limits must be < upper_limits, not for joints {[self.joint_names[i] for i in bad]}"
            )
        if np.any(np.asarray(self.max_delta_per_step, float) <= 0):
            raise ValueError(f"{where}: max_delta_per_step must be > 0, got {self.max_delta_per_step}")
        if not self.cameras:
            raise ValueError(f"{where}: at least one camera is required")
        roles = self.camera_roles
        if len(set(roles)) != len(roles):
            raise ValueError(f"{where}: camera roles must be unique, got {roles}")
        for camera in self.cameras:
            if camera.encoding not in IMAGE_ENCODINGS:
                raise ValueError(
                    f"{where}: camera {camera.role!r} encoding must be one of {IMAGE_ENCODINGS}, "
                    f"got {camera.encoding!r}"
                )
            if camera.transport not in CAMERA_TRANSPORTS:
                raise ValueError(
                    f"{where}: camera {camera.role!r} transport must be one of {CAMERA_TRANSPORTS} "
                    f"(compressed: sensor_msgs/CompressedImage on <topic>/compressed), got {camera.transport!r}"
                )
            if camera.height <= 0 or camera.width <= 0:
                raise ValueError(
                    f"{where}: camera {camera.role!r} size must be positive, got {camera.height}x{camera.width}"
                )
        if not self.joint_state_topics:
            raise ValueError(f"{where}: joint_state_topics is empty")
        if len(self.joint_name_prefixes) != len(self.joint_state_topics):
            raise ValueError(
                f"{where}: joint_name_prefixes must have one entry per joint state topic "
                f"({len(self.joint_state_topics)}), got {len(self.joint_name_prefixes)}"
            )
        for gripper in self.grippers:
            if not 0 <= gripper.index < dim:
                raise ValueError(f"{where}: gripper index must be in [0, {dim}), got {gripper.index}")
            if gripper.robot_open == gripper.robot_closed:
                raise ValueError(
                    f"{where}: gripper {gripper.index} robot_open == robot_closed "
                    f"({gripper.robot_open}): the mapping would divide by zero"
                )
        if self.control_rate_hz <= 0:
            raise ValueError(f"{where}: control_rate_hz must be > 0, got {self.control_rate_hz}")
        if self.command_interface not in COMMAND_INTERFACES:
            raise ValueError(
                f"{where}: command_interface must be one of {COMMAND_INTERFACES}, got {self.command_interface!r}"
            )
        if len(self.command_joint_groups) != len(self.command_topics):
            raise ValueError(
                f"{where}: command_joint_groups must have one group per command topic "
                f"({len(self.command_topics)}), got {len(self.command_joint_groups)}"
            )
        covered = sorted(i for group in self.command_joint_groups for i in group)
        if covered != list(range(dim)):
            raise ValueError(
                f"{where}: command_joint_groups must cover each action index 0..{dim - 1} exactly "
                f"once, got {self.command_joint_groups}"
            )
        if [len(g) for g in self.command_joint_names] != [len(g) for g in self.command_joint_groups]:
            raise ValueError(
                f"{where}: command_joint_names must match command_joint_groups in shape, "
                f"got {self.command_joint_names} for {self.command_joint_groups}"
            )
        if self.command_interface == "forward_command" and len(self.command_topics) != 1:
            raise ValueError(f"{where}: forward_command takes one topic, got {self.command_topics}")
        if self.command_interface == "interbotix":
            for topic in self.command_topics:
                if not topic.endswith("/joint_group"):
                    raise ValueError(
                        f"{where}: interbotix command_topics must be the per-arm JointGroupCommand topics "
                        f"<robot>/commands/joint_group (joint_single is their sibling), got {topic!r}"
                    )
            for group in self.command_joint_groups:
                in_group = [i for i in group if i in self.gripper_indices]
                if len(in_group) != 1:
                    raise ValueError(
                        f"{where}: each interbotix arm group needs exactly one gripper index, got {in_group} in {group}"
                    )

    # ----------------------------------------------------------------------------------------------
    def robot_to_model(self, q: np.ndarray) -> np.ndarray:
        """Robot units -> model space: grippers mapped to 1 = open, 0 = closed. q: [..., D] -> [..., D]."""
        q = self._check_vector(q, "q")
        out = q.astype(np.float64, copy=True)
        for g in self.grippers:
            out[..., g.index] = (q[..., g.index] - g.robot_closed) / (g.robot_open - g.robot_closed)
        return out

    def model_to_robot(self, a: np.ndarray) -> np.ndarray:
        """Model space -> robot units (the inverse of robot_to_model). a: [..., D] -> [..., D]."""
        a = self._check_vector(a, "a")
        out = a.astype(np.float64, copy=True)
        for g in self.grippers:
            out[..., g.index] = g.robot_closed + a[..., g.index] * (g.robot_open - g.robot_closed)
        return out

    def _check_vector(self, x: np.ndarray, name: str) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim == 0 or x.shape[-1] != self.action_dim:
            raise ValueError(
                f"{name} must have shape [..., {self.action_dim}] for profile {self.name!r}, got {x.shape}"
            )
        return x

    # ----------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Every field as plain data (YAML-safe); from_dict(to_dict()) gives an equal profile."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> RobotProfile:
        data = dict(data)
        data.pop("command_topic", None)  # derived; older to_dict() copies carry it
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            hints = {k: difflib.get_close_matches(k, known, n=1) for k in unknown}
            raise ValueError(
                f"{source}: unknown profile keys {unknown} (did you mean {hints}?); valid keys: {sorted(known)}"
            )
        required = [
            k for k, f in cls.__dataclass_fields__.items() if f.default is MISSING and f.default_factory is MISSING
        ]
        missing = [k for k in required if k not in data]
        if missing:
            raise ValueError(f"{source}: profile is missing required keys {missing}")
        try:
            return cls(**data)
        except TypeError as error:  # e.g. a camera entry with an unknown key
            raise ValueError(f"{source}: {error}") from error


def default_profile_dirs() -> list[Path]:
    """The profile folders that exist: the source checkout's config/robots, the installed share copy."""
    return [d for d in (SOURCE_PROFILE_DIR, INSTALLED_PROFILE_DIR) if d.is_dir()]


def available_profiles(search_dirs: Sequence[str | os.PathLike] | None = None) -> list[str]:
    """Profile names (YAML file stems) found in `search_dirs` (default: default_profile_dirs())."""
    dirs = default_profile_dirs() if search_dirs is None else [Path(d) for d in search_dirs]
    names: set[str] = set()
    for directory in dirs:
        if directory.is_dir():
            names.update(p.stem for p in directory.glob("*.yaml"))
    return sorted(names)


def load_profile_file(path: str | os.PathLike) -> RobotProfile:
    """Read and validate one profile YAML file; ValueError names the file and the first bad field."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"robot profile file {path} does not exist (give a profile name or a path to a YAML file)")
    with open(path, encoding="utf-8") as stream:
        try:
            data = yaml.safe_load(stream)
        except yaml.YAMLError as error:
            raise ValueError(f"{path}: not valid YAML: {error}") from error
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a robot profile must be a YAML mapping, got {type(data).__name__}")
    profile = RobotProfile.from_dict(data, source=str(path))
    logger.debug("loaded robot profile %s from %s", profile.name, path)
    return profile


def load_profile(
    name_or_path: str | os.PathLike | RobotProfile, search_dirs: Sequence[str | os.PathLike] | None = None
) -> RobotProfile:
    """A profile by name (<search dir>/<name>.yaml, first match wins) or by a path to a YAML file.

    search_dirs: folders searched for names (default: default_profile_dirs()). An unknown name raises a
    ValueError with the closest known name, every known name, and the folders searched.
    A RobotProfile is returned as is, so callers can take either.
    """
    if isinstance(name_or_path, RobotProfile):
        return name_or_path
    text = os.fspath(name_or_path)
    if text.endswith((".yaml", ".yml")) or os.sep in text or isinstance(name_or_path, Path):
        return load_profile_file(text)
    dirs = default_profile_dirs() if search_dirs is None else [Path(d) for d in search_dirs]
    found = [d / f"{text}.yaml" for d in dirs if (d / f"{text}.yaml").is_file()]
    if found:
        return load_profile_file(found[0])
    known = available_profiles(dirs)
    hint = difflib.get_close_matches(text, known, n=1)
    searched = [str(d) for d in dirs] if dirs else "no profile folder found"
    raise ValueError(
        f"unknown robot profile {text!r}"
        + (f" (did you mean {hint[0]!r}?)" if hint else "")
        + f"; available: {known}; searched: {searched}; or give a path to a profile YAML file"
    )
