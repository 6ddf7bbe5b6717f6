"""Convert ROS 2 bags recorded on a robot into LeRobot-format episodes.

Pure Python through ``rosbags`` (see ``rosbag_io``): rosbag2 folders or single files, MCAP or sqlite3; no
rosbag2 or rclpy needed. One bag is one episode; several bags make one dataset.

The robot profile is the shared schema, motus_model.embodiment.RobotProfile (config/robots/<name>.yaml):
its cameras (role, topic, encoding), joint_state_topics with joint_name_prefixes (names on
joint_state_topics[k] are read as prefix[k] + name, for per-arm drivers publishing the same names),
joint_names in the model's action order, command_topics with command_joint_groups (action indices carried
by each command topic) and command_joint_names, and grippers (mapped to model space, 1 open, 0 closed).

Camera roles become LeRobot keys ``observation.images.cam_<role>`` for the composite's three roles
(high, left_wrist, right_wrist: LeRobot's ALOHA names) and ``observation.images.<role>`` otherwise.

Cameras: sensor_msgs/Image (rgb8, bgr8, mono8, rgba8, bgra8) or sensor_msgs/CompressedImage (jpeg, png), per
camera, whichever the bag holds on the camera's topic; a camera topic ``X`` missing from the bag, or declared
``transport: compressed`` in the profile, is read from ``X/compressed`` (where image_transport's compressed plugin
publishes). Both kinds are decoded by motus_model.images, the decoders serving uses.

Command messages: std_msgs/Float64MultiArray (forward command controllers) or
interbotix_xs_msgs/JointGroupCommand (values of topic k fill ``command_joint_groups[k]``; default: concatenated
in topic order), or sensor_msgs/JointState (per-arm joint-state commands) / trajectory_msgs/JointTrajectory
(joint trajectory controllers; first point) by name, with one prefix per command topic when
``joint_name_prefixes`` has one per command topic. Interbotix: a JointGroupCommand "arm" carries 6 values for a
7-joint group; the rest (the gripper) comes from the JointSingleCommand on the sibling
``<robot>/commands/joint_single`` topic, as the Interbotix adapter publishes it.

Time alignment: every stream is stamped with the bag's receive time (``time_source="log"``, the default) or the
messages' header stamps (``"header"``; messages without a header, such as Float64MultiArray and the Interbotix
commands, refuse it). The streams are resampled to the control rate: for each tick t, from the moment every
stream has a sample to the end of the shortest stream, each stream contributes its latest sample at or before t
("nearest-before", so no sample from the future leaks into a frame). Joint states from several topics are
merged by name; a command vector exists once every command topic has been seen. The command decoding is
``CommandDecoder``, shared with the ROS recorder (motus_ros/recorder_node.py), which feeds it live messages.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from motus_model.data.lerobot import LeRobotDatasetWriter
from motus_model.data.rosbag_io import BagError, BagReader
from motus_model.embodiment import RobotProfile, interbotix_single_topic, load_profile
from motus_model.images import decode_compressed_image, decode_image

logger = logging.getLogger(__name__)

CAMERA_KEY_PREFIX = "observation.images."
COMPOSITE_CAMERA_ROLES = ("high", "left_wrist", "right_wrist")


def as_profile(profile: RobotProfile | dict[str, Any] | str | os.PathLike) -> RobotProfile:
    """A RobotProfile from itself, its dict form (RobotProfile.to_dict()), a YAML path or a profile name."""
    if isinstance(profile, RobotProfile):
        return profile
    if isinstance(profile, dict):
        return RobotProfile.from_dict(profile)
    return load_profile(profile)


def camera_key(role: str) -> str:
    """LeRobot key of a camera role (ALOHA's cam_* names for the composite roles)."""
    return f"{CAMERA_KEY_PREFIX}cam_{role}" if role in COMPOSITE_CAMERA_ROLES else f"{CAMERA_KEY_PREFIX}{role}"


def image_message_to_rgb(message: Any, expected_encoding: str | None = None) -> np.ndarray:
    """A decoded sensor_msgs/Image -> uint8 [H, W, 3] RGB (motus_model.images.decode_image)."""
    if expected_encoding is not None and message.encoding != expected_encoding:
        raise ValueError(f"image encoding {message.encoding!r} differs from the profile's {expected_encoding!r}")
    return decode_image(bytes(message.data), message.encoding, message.height, message.width, message.step)


def _command_name_indices(profile: RobotProfile) -> list[dict[str, int]]:
    """Per command topic: joint name -> action index, for commands sent by name (JointState, JointTrajectory).

    A topic's messages may carry the profile's joint_names or that topic's command_joint_names (the names the
    robot's driver uses, e.g. unprefixed per-arm names)."""
    full = {name: index for index, name in enumerate(profile.joint_names)}
    return [
        {**full, **dict(zip(names, group))}
        for names, group in zip(profile.command_joint_names, profile.command_joint_groups)
    ]


def _stamp_ns(message: Any, log_time_ns: int, time_source: str) -> int:
    if time_source == "log":
        return int(log_time_ns)
    stamp = message.header.stamp
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def _by_name(names: Iterable[str], values: Iterable[float]) -> dict[str, float]:
    return dict(zip(list(names), [float(v) for v in values]))


def _update_by_name(
    values: dict[int, float], indices: dict[str, int], names: Iterable[str], positions: Iterable[float], topic: str
) -> None:
    """Store a by-name command's positions at their action indices; unknown names are an error."""
    names, positions = list(names), [float(p) for p in positions]
    unknown = sorted(set(names) - set(indices))
    if unknown:
        raise ValueError(
            f"command on {topic} names joints {unknown} the profile does not know; "
            f"expected names from {sorted(indices)}"
        )
    values.update({indices[name]: position for name, position in zip(names, positions)})


def _prefixed(name: str, prefix: str, joint_index: dict[str, int]) -> str:
    """A published joint name as the profile names it (per-arm prefix unless already a profile name)."""
    return name if name in joint_index else prefix + name


def _assemble_groups(
    parts: dict[str, np.ndarray], topics: list[str], groups: list[list[int]], num_joints: int
) -> np.ndarray:
    """Per-topic command arrays -> one [num_joints] vector (groups[k] = indices of topic k's values)."""
    command = np.full(num_joints, np.nan)
    for topic, group in zip(topics, groups):
        if parts[topic].size != len(group):
            raise ValueError(f"command on {topic} holds {parts[topic].size} values, its joint group has {len(group)}")
        command[group] = parts[topic]
    if np.isnan(command).any():
        raise ValueError(f"command_joint_groups {groups} do not cover all {num_joints} joints")
    return command


def _nearest_before(times: np.ndarray, ticks: np.ndarray) -> np.ndarray:
    """Index of the latest sample at or before each tick (times sorted ascending; every tick >= times[0])."""
    return np.searchsorted(times, ticks, side="right") - 1


# Command message types without a header: their samples are stamped with the receive (log) time.
HEADERLESS_COMMANDS = ("Float64MultiArray", "JointGroupCommand")
_BY_NAME_COMMANDS = ("JointState", "JointTrajectory")


class CommandDecoder:
    """The profile's command messages -> the full commanded joint vector [J] (robot units, profile joint order).

    The one home of how each command interface lays out its values (the inverse of motus_ros.command_adapters):
    ``motus convert-bag`` feeds it recorded messages and the ROS recorder live ones; both pass any object with
    the ROS field names (rosbags' decoded messages, rclpy messages).

    - Float64MultiArray (``data``) / interbotix JointGroupCommand (``cmd``): topic k's values fill
      ``command_joint_groups[k]``. An Interbotix group of 6 values for a 7-joint group is completed by the
      JointSingleCommand (the gripper) on the sibling ``<robot>/commands/joint_single`` topic when it is among
      ``types``.
    - JointState (``name``/``position``) / JointTrajectory (``joint_names``, first point): by joint name (the
      profile's joint_names or that topic's command_joint_names).

    A command exists once every command topic has contributed (every joint for by-name commands); from then on
    each message updates its joints and the others keep their last value.

    Args:
        profile: the robot profile.
        types: topic -> message type name (e.g. ``std_msgs/msg/Float64MultiArray``) of every command topic and of
            any JointSingleCommand sibling topic; only the name's end is looked at.
    """

    def __init__(self, profile: RobotProfile, types: dict[str, str]) -> None:
        self.profile = profile
        self.command_topics = list(profile.command_topics)
        self.types = dict(types)
        missing = [topic for topic in self.command_topics if topic not in self.types]
        if missing:
            raise ValueError(f"no message type given for command topics {missing}")
        for topic in self.command_topics:
            if not self.types[topic].endswith(HEADERLESS_COMMANDS + _BY_NAME_COMMANDS):
                raise ValueError(
                    f"unsupported command type {self.types[topic]} on {topic}; expected Float64MultiArray, "
                    "JointGroupCommand, JointState or JointTrajectory: fix command_topics in the profile"
                )
        # JointSingleCommand topic -> its JointGroupCommand topic
        self.single_topics = {
            interbotix_single_topic(t): t
            for t in self.command_topics
            if self.types[t].endswith("JointGroupCommand") and interbotix_single_topic(t) in self.types
        }
        self._num_joints = len(profile.joint_names)
        self._groups = profile.command_joint_groups
        self._names = _command_name_indices(profile)
        self._parts: dict[str, np.ndarray] = {}  # latest values per group topic (complete groups)
        self._group: dict[str, np.ndarray] = {}  # latest JointGroupCommand / Float64MultiArray values
        self._single: dict[str, float] = {}  # latest gripper (JointSingleCommand) per group topic
        self._by_name: dict[int, float] = {}  # commands sent by name, by action index

    @property
    def topics(self) -> list[str]:
        """Every topic whose messages this decoder reads (command topics and JointSingleCommand siblings)."""
        return self.command_topics + list(self.single_topics)

    def group_topic(self, topic: str) -> str:
        """The command topic a message on ``topic`` belongs to (a JointSingleCommand's JointGroupCommand topic)."""
        return self.single_topics.get(topic, topic)

    def update(self, topic: str, message: Any) -> np.ndarray | None:
        """Fold one message in; returns the full command [J] (a copy) once complete, else None.

        Raises ValueError (one line naming the topic and the fix) for a message that cannot be a command."""
        if topic in self.single_topics:
            topic = self.single_topics[topic]
            self._single[topic] = float(message.cmd)  # the gripper of an Interbotix arm
            if topic not in self._group:
                return None
            return self._fold_group(topic)
        kind = self.types[topic]
        if kind.endswith(HEADERLESS_COMMANDS):
            self._group[topic] = np.asarray(
                message.data if kind.endswith("Float64MultiArray") else message.cmd, dtype=np.float64
            )
            return self._fold_group(topic)
        index = self.command_topics.index(topic)
        if kind.endswith("JointState"):
            _update_by_name(self._by_name, self._names[index], message.name, message.position, topic)
        else:
            if not message.points:
                raise ValueError(f"JointTrajectory on {topic} has no points")
            _update_by_name(self._by_name, self._names[index], message.joint_names, message.points[0].positions, topic)
        if len(self._by_name) < self._num_joints:
            return None
        return np.array([self._by_name[i] for i in range(self._num_joints)])

    def _fold_group(self, topic: str) -> np.ndarray | None:
        values = self._group[topic]
        group_size = len(self._groups[self.command_topics.index(topic)]) if self._groups else None
        if group_size is not None and values.size < group_size and topic in self.single_topics.values():
            if topic not in self._single:
                return None  # the gripper's JointSingleCommand has not arrived yet
            values = np.append(values, self._single[topic])
        self._parts[topic] = values
        if len(self._parts) < len(self.command_topics):
            return None
        try:
            return _assemble_groups(self._parts, self.command_topics, self._groups, self._num_joints)
        except ValueError as error:
            hint = ""
            if self.types[topic].endswith("JointGroupCommand") and topic not in self.single_topics.values():
                hint = f" (no {interbotix_single_topic(topic)} JointSingleCommand topic for the rest)"
            raise ValueError(
                f"{error}{hint}; fix command_joint_groups in the profile or record every command topic"
            ) from None


def read_bag_streams(
    bag_path: str | Path, profile: RobotProfile, time_source: str = "log", show_progress: bool = False
) -> dict[str, Any]:
    """Read every profile stream of a bag: {"cameras": {role: (times, images)}, "joints": (times, [N,J]),
    "commands": (times, [N,J])}, times in ns, sorted.

    Joint states from several topics are merged by joint name: a merged sample exists once every
    joint has been seen, and each new message updates its joints (the others keep their last value).
    """
    if time_source not in ("log", "header"):
        raise ValueError(f"time_source must be 'log' or 'header', got {time_source!r}")
    with BagReader(bag_path) as bag:
        return _read_streams(bag, profile, time_source, show_progress)


def _read_streams(bag: BagReader, profile: RobotProfile, time_source: str, show_progress: bool) -> dict[str, Any]:
    bag_path = bag.path
    camera_roles = {}
    for camera in profile.cameras:
        topic = camera.topic
        compressed = f"{topic}/compressed"  # image_transport's compressed plugin
        if compressed in bag.topics and (camera.transport == "compressed" or topic not in bag.topics):
            topic = compressed
        camera_roles[topic] = camera
    bag.require(list(camera_roles), "camera")
    joint_topics = set(profile.joint_state_topics)
    bag.require(sorted(joint_topics), "joint states")
    command_topics = list(profile.command_topics)
    bag.require(command_topics, "commands")
    types = {topic: bag.topics[topic] for topic in command_topics}
    types.update(
        {
            interbotix_single_topic(t): bag.topics[interbotix_single_topic(t)]
            for t in command_topics
            if bag.topics[t].endswith("JointGroupCommand") and interbotix_single_topic(t) in bag.topics
        }
    )
    try:
        commands = CommandDecoder(profile, types)
    except ValueError as error:
        raise BagError(f"{bag_path}: {error}") from None
    if time_source == "header":
        headerless = [t for t in command_topics if types[t].endswith(HEADERLESS_COMMANDS)]
        if headerless:
            raise BagError(
                f"{bag_path}: {headerless[0]}: {types[headerless[0]]} commands have no header stamp; "
                "use --time-source log"
            )
    topics = set(camera_roles) | joint_topics | set(commands.topics)
    joint_index = {name: i for i, name in enumerate(profile.joint_names)}

    camera_samples: dict[str, list[tuple[int, np.ndarray]]] = {camera.role: [] for camera in profile.cameras}
    joint_samples: list[tuple[int, np.ndarray]] = []
    command_samples: list[tuple[int, np.ndarray]] = []
    latest_joints: dict[str, float] = {}

    messages = bag.messages(sorted(topics))
    if show_progress:
        messages = tqdm(messages, total=bag.count(sorted(topics)), desc=bag_path.name, unit="msg", leave=False)
    for topic, schema, log_time_ns, message in messages:
        if topic in camera_roles:
            camera = camera_roles[topic]
            stamp = _stamp_ns(message, log_time_ns, time_source)
            if schema.endswith("CompressedImage"):
                try:
                    image = decode_compressed_image(message.data, message.format)
                except ValueError as error:
                    raise BagError(f"{bag_path}: {topic}: {error}") from None
            else:
                try:
                    image = image_message_to_rgb(message, camera.encoding)
                except ValueError as error:
                    raise BagError(f"{bag_path}: {topic}: {error}; fix the camera's encoding in the profile") from None
            camera_samples[camera.role].append((stamp, image))
        elif topic in joint_topics:
            stamp = _stamp_ns(message, log_time_ns, time_source)
            prefix = profile.joint_name_prefixes[profile.joint_state_topics.index(topic)]
            if len(message.position) != len(message.name):
                raise BagError(
                    f"{bag_path}: {topic}: JointState with {len(message.name)} names and "
                    f"{len(message.position)} positions; the recording is damaged"
                )
            latest_joints.update(_by_name([_prefixed(n, prefix, joint_index) for n in message.name], message.position))
            if all(name in latest_joints for name in joint_index):
                joint_samples.append((stamp, np.array([latest_joints[n] for n in profile.joint_names])))
        else:
            try:
                command = commands.update(topic, message)
            except ValueError as error:
                raise BagError(f"{bag_path}: {error}") from None
            if command is None:
                continue
            group_type = types[commands.group_topic(topic)]
            # messages without a header are stamped with their log time
            stamp = (
                int(log_time_ns)
                if group_type.endswith(HEADERLESS_COMMANDS)
                else _stamp_ns(message, log_time_ns, time_source)
            )
            command_samples.append((stamp, command))

    def _sorted(samples: list[tuple[int, Any]], what: str) -> tuple[np.ndarray, list[Any]]:
        if not samples:
            raise BagError(
                f"{bag_path}: no usable {what} messages (the topic is empty or never completes a "
                "sample); record the topic or fix the profile"
            )
        samples.sort(key=lambda sample: sample[0])
        return np.array([s[0] for s in samples], dtype=np.int64), [s[1] for s in samples]

    cameras = {role: _sorted(samples, f"camera '{role}'") for role, samples in camera_samples.items()}
    joint_times, joint_values = _sorted(joint_samples, f"joint state ({profile.joint_state_topics})")
    command_times, command_values = _sorted(command_samples, f"command ({command_topics})")
    return {
        "cameras": cameras,
        "joints": (joint_times, np.stack(joint_values)),
        "commands": (command_times, np.stack(command_values)),
    }


def resample_bag(
    bag_path: str | Path, profile: RobotProfile, fps: float, time_source: str = "log", show_progress: bool = False
) -> dict[str, Any]:
    """Read a bag and resample every stream to the control rate.

    Returns:
        {"frames": {camera key: uint8 [T,H,W,3]}, "state": float32 [T,J] (model space),
         "action": float32 [T,J] (model space), "timestamps_ns": int64 [T]}.
    """
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    streams = read_bag_streams(bag_path, profile, time_source, show_progress)
    all_times = [times for times, _ in streams["cameras"].values()]
    all_times += [streams["joints"][0], streams["commands"][0]]
    start = max(int(times[0]) for times in all_times)
    end = min(int(times[-1]) for times in all_times)
    period_ns = 1e9 / fps
    if end < start:
        raise BagError(f"{bag_path}: the streams do not overlap in time; check --time-source and the recording")
    num_ticks = int(np.floor((end - start) / period_ns)) + 1
    ticks = start + np.round(np.arange(num_ticks) * period_ns).astype(np.int64)

    frames = {}
    for role, (times, images) in streams["cameras"].items():
        picked = _nearest_before(times, ticks)
        sizes = {images[i].shape for i in set(picked.tolist())}
        if len(sizes) > 1:
            raise BagError(f"{bag_path}: camera '{role}' changes image size within the bag ({sorted(sizes)})")
        frames[camera_key(role)] = np.stack([images[i] for i in picked])
    joint_times, joint_values = streams["joints"]
    command_times, command_values = streams["commands"]
    state = profile.robot_to_model(joint_values[_nearest_before(joint_times, ticks)])
    action = profile.robot_to_model(command_values[_nearest_before(command_times, ticks)])
    return {
        "frames": frames,
        "state": state.astype(np.float32),
        "action": action.astype(np.float32),
        "timestamps_ns": ticks,
    }


def convert_bags(
    bag_paths: list[str | Path],
    profile: RobotProfile | dict[str, Any] | str | os.PathLike,
    output: str | Path,
    fps: float,
    task: str | list[str],
    time_source: str = "log",
    robot_type: str = "aloha",
    append: bool = False,
    show_progress: bool = False,
) -> Path:
    """Convert bags (one episode each) into a LeRobot dataset at ``output``; returns its root.

    Args:
        bag_paths: rosbag2 folders or .mcap / .db3 files.
        profile: the robot profile: a RobotProfile, its dict form, a YAML path or a profile name.
        output: new dataset folder (or an existing one with ``append``). Written atomically: a failure on any
            bag leaves no dataset (or the existing one untouched).
        fps: control rate to resample to.
        task: the instruction, one for all bags or one per bag.
        time_source: "log" (bag receive time) or "header" (message header stamps).
        append: add the episodes to the dataset at ``output``.
        show_progress: tqdm bars over bags and messages.
    """
    bag_profile = as_profile(profile)
    tasks = [task] * len(bag_paths) if isinstance(task, str) else list(task)
    if len(tasks) != len(bag_paths):
        raise ValueError(f"need one task per bag ({len(bag_paths)}), got {len(tasks)}")
    writer = LeRobotDatasetWriter(
        output,
        fps=fps,
        camera_keys=tuple(camera_key(role) for role in bag_profile.camera_roles),
        robot_type=robot_type,
        state_dim=len(bag_profile.joint_names),
        action_dim=len(bag_profile.joint_names),
        append=append,
    )
    with writer:
        for bag_path, episode_task in tqdm(
            list(zip(bag_paths, tasks)), desc="bags", unit="bag", disable=not show_progress
        ):
            episode = resample_bag(bag_path, bag_profile, fps, time_source, show_progress)
            for key, shape in writer.frame_shapes.items():
                if episode["frames"][key].shape[1:] != shape:
                    raise BagError(
                        f"{bag_path}: {key} images are {episode['frames'][key].shape[1:3]}, the dataset's "
                        f"{shape[:2]}; convert bags of different camera sizes into separate datasets"
                    )
            writer.add_episode(episode["frames"], episode["state"], episode["action"], episode_task)
            logger.info("converted %s: %d frames", bag_path, episode["state"].shape[0])
        return writer.finalize()
