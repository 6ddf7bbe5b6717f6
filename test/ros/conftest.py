"""Fixtures for tests that use the real middleware (rclpy over loopback)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed: run the tests through `make test`")

PEERS = Path(__file__).parent / "peers"


@pytest.fixture(scope="session")
def ros_context() -> Iterator[None]:
    """One rclpy context for the whole session (rclpy.init may run only once per process)."""
    rclpy.init()
    yield
    rclpy.try_shutdown()


@pytest.fixture
def spawn_process():
    """Start a Python child process (a peer script or module); killed at teardown.

    Returns a function `spawn(args, ready_line=None, timeout=30)` that returns the Popen; with
    `ready_line`, it waits until the child prints that line on stdout.
    """
    children: list[subprocess.Popen] = []

    def spawn(args: list[str], ready_line: str | None = None, timeout: float = 60.0) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        children.append(proc)
        if ready_line is not None:
            deadline = time.monotonic() + timeout
            seen = []
            while time.monotonic() < deadline:
                line = proc.stdout.readline()
                if not line:
                    if proc.poll() is not None:
                        break
                    continue
                seen.append(line)
                if ready_line in line:
                    return proc
            proc.kill()
            raise RuntimeError(f"child {args} did not print {ready_line!r}; output:\n{''.join(seen)}")
        return proc

    yield spawn
    for proc in children:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def small_profile(tmp_path: Path) -> Path:
    """aloha_sim with 48x64 cameras: cheap rendering for simulator tests (the image size does not matter there)."""
    import yaml

    from motus_ros.profiles import load_profile

    data = load_profile("aloha_sim").to_dict()
    for camera in data["cameras"]:
        camera.update(height=48, width=64)
    path = tmp_path / "aloha_sim_small.yaml"
    path.write_text(yaml.safe_dump(data))
    return path
