"""The built workspace: motus_model is ROS-free, and the colcon install space is importable on its own."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

ROS_FREE_CHECK = r"""
import importlib, pkgutil, sys
import motus_model
names = [m.name for m in pkgutil.walk_packages(motus_model.__path__, "motus_model.")
         if not m.name.endswith(".__main__")]
for name in names:
    importlib.import_module(name)
ROS = {"rclpy", "rosidl_runtime_py", "motus_msgs", "motus_ros", "std_msgs", "sensor_msgs"}
ros = sorted(m for m in sys.modules if m.split(".")[0] in ROS)
assert not ros, f"motus_model imported ROS modules: {ros}"
print("modules:", len(names))
"""


def test_motus_model_imports_no_ros_module():
    out = subprocess.run([sys.executable, "-c", ROS_FREE_CHECK], capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "modules:" in out.stdout


def test_install_space_is_importable_after_sourcing_setup():
    """A fresh shell that sources install/setup.bash (as a user does) finds both packages there."""
    script = (
        f"source {ROOT}/.venv/bin/activate && source {ROOT}/install/setup.bash && cd / && "
        "python -c 'import motus_msgs.srv, motus_ros, motus_model; "
        "print(motus_ros.__file__); print(motus_model.__file__)'"
    )
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "AMENT_PREFIX_PATH"}}
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    for line in out.stdout.split():
        assert line.startswith(str(ROOT / "install" / "motus_ros")), line
    assert (ROOT / "install" / "motus_ros" / "lib" / "motus_ros" / "motus_server").exists()


def test_ruff_is_the_pinned_version_and_reads_the_repository_settings():
    """make lint runs the ruff that tools/constraints.txt pins, with ruff.toml's settings (120 columns)."""
    import re

    pin = re.search(r"^ruff==(\S+)$", (ROOT / "tools" / "constraints.txt").read_text(), re.M)
    assert pin, "tools/constraints.txt must pin ruff"
    out = subprocess.run([sys.executable, "-m", "ruff", "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.split() == ["ruff", pin.group(1)], out.stdout + out.stderr
    settings = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--show-settings", str(ROOT / "src")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert settings.returncode == 0, settings.stderr[-2000:]
    assert re.search(r"^linter.line_length = 120$", settings.stdout, re.M), settings.stdout[:2000]
