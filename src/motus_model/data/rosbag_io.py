"""Reading ROS 2 bags as ``ros2 bag record`` writes them, through the ``rosbags`` library (no ROS install).

Accepted: a rosbag2 folder (``metadata.yaml`` + ``*.mcap`` or ``*.db3``; Jazzy records MCAP, Humble sqlite3),
or a single ``.mcap`` / ``.db3`` file. Messages are decoded with the message definitions the bag carries,
falling back to the ROS 2 Jazzy typestore plus the Interbotix command messages below.

Every problem a user can fix (a missing, empty, truncated or corrupt bag; a topic the profile names that the
bag lacks; an image format that cannot be decoded) raises :class:`BagError` with one line naming the bag, the
topic and what to do.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rosbags.highlevel import AnyReader
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from motus_model.data.errors import DataInputError

# interbotix_xs_msgs (Interbotix/interbotix_ros_core, interbotix_xs_msgs/msg/*.msg): what the xs_sdk driver
# subscribes to on /<robot>/commands/joint_group and /<robot>/commands/joint_single.
INTERBOTIX_MESSAGES = {
    "interbotix_xs_msgs/msg/JointGroupCommand": "string name\nfloat32[] cmd\n",
    "interbotix_xs_msgs/msg/JointSingleCommand": "string name\nfloat32 cmd\n",
}


class BagError(DataInputError):
    """A bag the converter cannot use, explained in one line (the CLI prints it without a traceback)."""


def motus_typestore() -> Typestore:
    """ROS 2 Jazzy's standard messages plus the Interbotix command messages."""
    typestore = get_typestore(Stores.ROS2_JAZZY)
    types: dict[str, Any] = {}
    for name, text in INTERBOTIX_MESSAGES.items():
        types.update(get_types_from_msg(text, name))
    typestore.register(types)
    return typestore


def _check_path(path: Path) -> None:
    hint = "give a rosbag2 folder (metadata.yaml + *.mcap or *.db3) or a single .mcap / .db3 file"
    if not path.exists():
        raise BagError(f"{path}: no such bag; {hint}")
    if path.is_dir() and not (path / "metadata.yaml").is_file():
        files = sorted(p.name for p in path.iterdir())[:5]
        raise BagError(f"{path}: folder without metadata.yaml (holds {files}); {hint} (`ros2 bag reindex` restores it)")
    if path.is_file() and path.suffix not in (".mcap", ".db3"):
        raise BagError(f"{path}: unknown bag file type {path.suffix!r}; {hint}")
    if path.is_file() and path.stat().st_size == 0:
        raise BagError(f"{path}: the file is empty; re-record or copy the bag again")


class BagReader:
    """An open bag: its topics and their message types, and the messages of chosen topics in time order.

    Use as a context manager: ``with BagReader(path) as bag: ...``.
    """

    def __init__(self, path: str | Path, typestore: Typestore | None = None) -> None:
        self.path = Path(path)
        _check_path(self.path)
        self._reader = AnyReader([self.path], default_typestore=typestore or motus_typestore())

    def __enter__(self) -> BagReader:
        try:
            self._reader.open()
        except Exception as error:  # rosbags / sqlite3 / mcap errors all mean an unreadable bag here
            raise BagError(
                f"{self.path}: cannot open the bag ({type(error).__name__}: {error}); it may be truncated or "
                "corrupt: re-record it, or run `ros2 bag reindex` on the folder"
            ) from None
        return self

    def __exit__(self, *exc: Any) -> None:
        self._reader.close()

    @property
    def topics(self) -> dict[str, str]:
        """Topic -> message type (``sensor_msgs/msg/Image``) of every connection in the bag."""
        return {c.topic: c.msgtype for c in self._reader.connections}

    def require(self, topics: list[str], what: str) -> None:
        """A one-line error naming the first of ``topics`` the bag lacks."""
        for topic in topics:
            if topic not in self.topics:
                raise BagError(
                    f"{self.path}: topic {topic} ({what}) is not in the bag, which has {sorted(self.topics)}; "
                    "fix the topic in the robot profile or record it"
                )

    def count(self, topics: list[str]) -> int:
        return sum(c.msgcount for c in self._reader.connections if c.topic in topics)

    def messages(self, topics: list[str]) -> Iterator[tuple[str, str, int, Any]]:
        """(topic, message type, receive time in ns, decoded message) in receive-time order."""
        connections = [c for c in self._reader.connections if c.topic in set(topics)]
        try:
            for connection, log_time_ns, raw in self._reader.messages(connections=connections):
                try:
                    message = self._reader.deserialize(raw, connection.msgtype)
                except Exception as error:
                    raise BagError(
                        f"{self.path}: a {connection.msgtype} message on {connection.topic} does not decode "
                        f"({type(error).__name__}: {error}); the bag is corrupt or its type definition is wrong"
                    ) from None
                yield connection.topic, connection.msgtype, int(log_time_ns), message
        except BagError:
            raise
        except (sqlite3.Error, EOFError, OSError, ValueError, KeyError, IndexError, AssertionError) as error:
            raise BagError(
                f"{self.path}: reading stopped early ({type(error).__name__}: {error}); the bag is truncated or "
                "corrupt: re-record it, or run `ros2 bag reindex` on the folder"
            ) from None
        except Exception as error:  # rosbags' own reader errors (e.g. a damaged MCAP chunk)
            raise BagError(
                f"{self.path}: reading stopped early ({type(error).__name__}: {error}); the bag is truncated or "
                "corrupt: re-record it, or run `ros2 bag reindex` on the folder"
            ) from None
