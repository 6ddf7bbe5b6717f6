"""Small helpers shared by the ROS tests (owned by the server tests; the edge tests may import them)."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import rclpy
from rclpy.node import Node


def spin_until(node: Node, predicate: Callable[[], bool], timeout: float) -> bool:
    """Spin `node` until predicate() is true or `timeout` seconds pass; returns the predicate's last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        rclpy.spin_once(node, timeout_sec=0.05)
    return predicate()


def wait_future(node: Node, future: Any, timeout: float) -> Any:
    """Spin `node` until the rclpy future is done; its result (AssertionError on timeout)."""
    assert spin_until(node, future.done, timeout), "timed out waiting for a ROS future"
    return future.result()
