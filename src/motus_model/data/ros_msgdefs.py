"""ROS 2 message definitions as text, for writing MCAP bags without a ROS install.

mcap-ros2-support encodes a message from its ``.msg`` text; dependencies follow the main definition,
each after a ``====`` line and ``MSG: package/Type`` (the rosbag2 "ros2msg" schema format).
Texts are the upstream Jazzy definitions with comments stripped.
"""

from __future__ import annotations

_SEPARATOR = "=" * 80

_TIME = "int32 sec\nuint32 nanosec\n"
_HEADER = "builtin_interfaces/Time stamp\nstring frame_id\n"
_DURATION = "int32 sec\nuint32 nanosec\n"


def _with_dependencies(main: str, dependencies: dict[str, str]) -> str:
    parts = [main]
    for name, text in dependencies.items():
        parts.append(f"{_SEPARATOR}\nMSG: {name}\n{text}")
    return "\n".join(parts)


IMAGE = _with_dependencies(
    "std_msgs/Header header\nuint32 height\nuint32 width\nstring encoding\nuint8 is_bigendian\nuint32 step\nuint8[] data\n",
    {"std_msgs/Header": _HEADER, "builtin_interfaces/Time": _TIME},
)

JOINT_STATE = _with_dependencies(
    "std_msgs/Header header\nstring[] name\nfloat64[] position\nfloat64[] velocity\nfloat64[] effort\n",
    {"std_msgs/Header": _HEADER, "builtin_interfaces/Time": _TIME},
)

FLOAT64_MULTI_ARRAY = _with_dependencies(
    "MultiArrayLayout layout\nfloat64[] data\n",
    {
        "std_msgs/MultiArrayLayout": "MultiArrayDimension[] dim\nuint32 data_offset\n",
        "std_msgs/MultiArrayDimension": "string label\nuint32 size\nuint32 stride\n",
    },
)

JOINT_TRAJECTORY = _with_dependencies(
    "std_msgs/Header header\nstring[] joint_names\nJointTrajectoryPoint[] points\n",
    {
        "std_msgs/Header": _HEADER,
        "builtin_interfaces/Time": _TIME,
        "trajectory_msgs/JointTrajectoryPoint": (
            "float64[] positions\nfloat64[] velocities\nfloat64[] accelerations\nfloat64[] effort\n"
            "builtin_interfaces/Duration time_from_start\n"
        ),
        "builtin_interfaces/Duration": _DURATION,
    },
)

MESSAGE_DEFINITIONS: dict[str, str] = {
    "sensor_msgs/msg/Image": IMAGE,
    "sensor_msgs/msg/JointState": JOINT_STATE,
    "std_msgs/msg/Float64MultiArray": FLOAT64_MULTI_ARRAY,
    "trajectory_msgs/msg/JointTrajectory": JOINT_TRAJECTORY,
}
