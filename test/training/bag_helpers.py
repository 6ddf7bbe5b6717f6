"""Bags written with rosbags' Writer the way `ros2 bag record` lays them out (a folder: metadata.yaml + one
storage file), MCAP or sqlite3, with messages from the typestore the converter reads them with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer

from motus_model.data.rosbag_io import motus_typestore

TYPESTORE = motus_typestore()
T = TYPESTORE.types


def _time(t_ns: int) -> Any:
    return T["builtin_interfaces/msg/Time"](sec=t_ns // 1_000_000_000, nanosec=t_ns % 1_000_000_000)


def header(t_ns: int) -> Any:
    return T["std_msgs/msg/Header"](stamp=_time(t_ns), frame_id="")


def image(t_ns: int, rgb: np.ndarray, encoding: str = "rgb8") -> Any:
    data = rgb[:, :, ::-1] if encoding == "bgr8" else rgb
    height, width = rgb.shape[:2]
    return T["sensor_msgs/msg/Image"](
        header=header(t_ns),
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=0,
        step=width * 3,
        data=np.ascontiguousarray(data).reshape(-1),
    )


def compressed(t_ns: int, rgb: np.ndarray, fmt: str = "jpeg") -> Any:
    """As image_transport's compressed plugin publishes it (format e.g. "rgb8; jpeg compressed bgr8")."""
    ext = ".png" if "png" in fmt else ".jpg"
    ok, buffer = cv2.imencode(
        ext, np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 95] if ext == ".jpg" else []
    )
    assert ok
    return T["sensor_msgs/msg/CompressedImage"](header=header(t_ns), format=fmt, data=buffer.reshape(-1))


def joint_state(t_ns: int, names: list[str], positions: np.ndarray) -> Any:
    return T["sensor_msgs/msg/JointState"](
        header=header(t_ns),
        name=list(names),
        position=np.asarray(positions, dtype=np.float64),
        velocity=np.zeros(0),
        effort=np.zeros(0),
    )


def float64_array(values: np.ndarray) -> Any:
    layout = T["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0)
    return T["std_msgs/msg/Float64MultiArray"](layout=layout, data=np.asarray(values, dtype=np.float64))


def joint_group(name: str, values: np.ndarray) -> Any:
    return T["interbotix_xs_msgs/msg/JointGroupCommand"](name=name, cmd=np.asarray(values, dtype=np.float32))


def joint_single(name: str, value: float) -> Any:
    return T["interbotix_xs_msgs/msg/JointSingleCommand"](name=name, cmd=float(value))


def joint_trajectory(t_ns: int, names: list[str], positions: np.ndarray) -> Any:
    duration = T["builtin_interfaces/msg/Duration"](sec=0, nanosec=20_000_000)
    point = T["trajectory_msgs/msg/JointTrajectoryPoint"](
        positions=np.asarray(positions, dtype=np.float64),
        velocities=np.zeros(0),
        accelerations=np.zeros(0),
        effort=np.zeros(0),
        time_from_start=duration,
    )
    return T["trajectory_msgs/msg/JointTrajectory"](header=header(t_ns), joint_names=list(names), points=[point])


def write_bag(folder: Path, events: list[tuple[int, str, str, Any]], storage: str = "mcap") -> Path:
    """events: (receive time ns, topic, message type, message); returns the bag folder."""
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(folder, version=9, storage_plugin=plugin) as writer:
        connections: dict[str, Any] = {}
        for t_ns, topic, msgtype, message in sorted(events, key=lambda e: e[0]):
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msgtype, typestore=TYPESTORE)
            writer.write(connections[topic], t_ns, TYPESTORE.serialize_cdr(message, msgtype))
    return folder
