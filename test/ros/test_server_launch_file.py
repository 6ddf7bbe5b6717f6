"""launch/aloha.launch.py without importing launch (absent here): the file compiles, its arguments are those the
README and its docstring document, and it wraps the tested entry points. The launch_testing test is test_launch.py."""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAUNCH_FILE = ROOT / "launch" / "aloha.launch.py"
EXPECTED_ARGUMENTS = {"profile", "checkpoint", "sim", "rviz", "dry_run"}


def declared_arguments(path: Path) -> dict[str, str]:
    """name -> default_value of every DeclareLaunchArgument(...) call in the file (parsed, not imported)."""
    arguments = {}
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "DeclareLaunchArgument":
            name = ast.literal_eval(node.args[0])
            defaults = [ast.literal_eval(k.value) for k in node.keywords if k.arg == "default_value"]
            arguments[name] = defaults[0] if defaults else None
    return arguments


def test_launch_file_compiles_and_declares_the_documented_arguments():
    compile(LAUNCH_FILE.read_text(), str(LAUNCH_FILE), "exec")
    arguments = declared_arguments(LAUNCH_FILE)
    assert set(arguments) == EXPECTED_ARGUMENTS
    assert arguments["profile"] == "aloha_sim" and arguments["sim"] == "false" and arguments["rviz"] == "false"
    # Every `name:=value` the README uses with aloha.launch.py is a declared argument.
    readme = (ROOT / "README.md").read_text()
    used = {match for line in readme.splitlines() if "aloha.launch.py" in line for match in re.findall(r"(\w+):=", line)}
    assert used, "the README no longer shows an aloha.launch.py example"
    assert used <= set(arguments), f"README uses undeclared launch arguments {used - set(arguments)}"
    # The docstring documents every argument.
    docstring = ast.get_docstring(ast.parse(LAUNCH_FILE.read_text()))
    for name in arguments:
        assert re.search(rf"^\s+{name}\s", docstring, re.MULTILINE), f"argument {name!r} is not documented in the docstring"


def test_launch_file_wraps_the_tested_entry_points_and_configs():
    source = LAUNCH_FILE.read_text()
    for executable in ("motus_server", "motus_sim", "rviz2"):
        assert f'executable="{executable}"' in source
    for config in ("motus_server.yaml", "motus.rviz", "sim.yaml"):
        assert f'"{config}"' in source
    assert (ROOT / "config" / "motus_server.yaml").is_file() and (ROOT / "config" / "motus.rviz").is_file()
    setup = (ROOT / "setup.py").read_text()
    assert "motus_server = motus_ros.server:main" in setup and "motus_sim = motus_ros.sim.aloha_sim_node:main" in setup


def test_sim_launch_defaults_to_the_shipped_checkpoint_and_a_real_robot_does_not():
    """The launch file's checkpoint choice (motus_ros.checkpoints.launch_checkpoint, called by _server_and_sim)."""
    from motus_ros.checkpoints import DEFAULT_SIM_CHECKPOINT, launch_checkpoint

    assert launch_checkpoint("", sim=True) == DEFAULT_SIM_CHECKPOINT
    assert launch_checkpoint("", sim=False) == ""  # a real robot: the random-weights preset, with its warning
    assert launch_checkpoint("/models/mine", sim=True) == "/models/mine"
    assert launch_checkpoint("/models/mine", sim=False) == "/models/mine"
    source = LAUNCH_FILE.read_text()
    assert 'launch_checkpoint(LaunchConfiguration("checkpoint").perform(context), sim)' in source
    assert 'overrides["checkpoint"] = checkpoint' in source
