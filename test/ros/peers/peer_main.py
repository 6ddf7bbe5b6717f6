"""The one main loop of the test peers (separate processes that play a ROS peer of the Motus server)."""

from __future__ import annotations

import rclpy
from rclpy.executors import Executor, ExternalShutdownException
from rclpy.node import Node


def spin_peer(node: Node, executor: Executor, ready_line: str) -> None:
    """Spin `node` until SIGINT/shutdown; `ready_line` on stdout tells the test the peer is up."""
    executor.add_node(node)
    print(ready_line, flush=True)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
