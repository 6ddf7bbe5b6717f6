"""launch_testing test of launch/aloha.launch.py: launching it brings motus_server up to its ready line.

Runs where launch, launch_ros and launch_testing are importable (a full ROS 2 install, with the workspace built
and sourced so `ros2 launch motus_ros ...` resolves); skipped here with the reason otherwise. The checks that
need no launch import (arguments, configs) are in test_server_launch_file.py.
"""

from __future__ import annotations

import importlib.util
import unittest
from pathlib import Path

import pytest

MISSING = [name for name in ("launch", "launch_ros", "launch_testing") if importlib.util.find_spec(name) is None]
if MISSING:
    pytest.skip(
        f"{', '.join(MISSING)} not installed (no PyPI wheels; they come with a full ROS 2 install)",
        allow_module_level=True,
    )

import launch  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402

LAUNCH_FILE = Path(__file__).resolve().parents[2] / "launch" / "aloha.launch.py"


@pytest.mark.launch_test
def generate_test_description():
    """The server alone (no sim, no rviz) with the tiny preset, so it starts fast on a CPU."""
    include = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(LAUNCH_FILE)),
        launch_arguments={"profile": "aloha_sim", "sim": "false", "rviz": "false", "dry_run": "true"}.items(),
    )
    return launch.LaunchDescription([include, launch_testing.actions.ReadyToTest()])


class TestServerComesUp(unittest.TestCase):
    def test_ready_line(self, proc_output):
        proc_output.assertWaitFor("MOTUS SERVER READY", timeout=180, stream="stdout")


@launch_testing.post_shutdown_test()
class TestServerExitsCleanly(unittest.TestCase):
    def test_exit_codes(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info, allowable_exit_codes=[0, -2, -15])
