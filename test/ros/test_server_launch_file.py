"""launch/aloha.launch.py without importing launch (absent here): the file compiles, its arguments are those the
README and its docstring document, and it wraps the tested entry points. The launch_testing test is test_launch.py."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
LAUNCH_FILE = ROOT / "launch" / "aloha.launch.py"
CONFIG = ROOT / "config"
EXPECTED_ARGUMENTS = {
    "profile",
    "checkpoint",
    "sim",
    "rviz",
    "dry_run",
    "steps",
    "torch_threads",
    "camera_rate",
    "params_file",
}


def test_launch_file_declares_the_documented_arguments():
    from motus_ros.launch_config import ARGUMENTS

    compile(LAUNCH_FILE.read_text(), str(LAUNCH_FILE), "exec")
    assert set(ARGUMENTS) == EXPECTED_ARGUMENTS
    assert "for name, (default, description) in ARGUMENTS.items()" in LAUNCH_FILE.read_text()
    assert ARGUMENTS["profile"][0] == "aloha_sim" and ARGUMENTS["sim"][0] == "false" and ARGUMENTS["rviz"][0] == "false"
    # Every `name:=value` the README uses with aloha.launch.py is a declared argument, and parses.
    readme = (ROOT / "README.md").read_text()
    used = {
        match for line in readme.splitlines() if "aloha.launch.py" in line for match in re.findall(r"(\w+):=", line)
    }
    assert used, "the README no longer shows an aloha.launch.py example"
    assert used <= set(ARGUMENTS), f"README uses undeclared launch arguments {used - set(ARGUMENTS)}"
    # The docstring documents every argument.
    docstring = ast.get_docstring(ast.parse(LAUNCH_FILE.read_text()))
    for name in ARGUMENTS:
        assert re.search(rf"^\s+{name}\s", docstring, re.MULTILINE), (
            f"argument {name!r} is not documented in the docstring"
        )


def test_launch_file_wraps_the_tested_entry_points_and_configs():
    source = LAUNCH_FILE.read_text()
    for executable in ("motus_server", "motus_sim", "rviz2"):
        assert f'executable="{executable}"' in source
    for config in ("motus.rviz",):
        assert f'"{config}"' in source
    assert (ROOT / "config" / "motus_server.yaml").is_file() and (ROOT / "config" / "motus.rviz").is_file()
    setup = (ROOT / "setup.py").read_text()
    assert "motus_server = motus_ros.server:main" in setup and "motus_sim = motus_ros.sim.aloha_sim_node:main" in setup


def sections(plan_entries) -> dict:
    """Merge a plan's params files the way rcl does for one key: later files win."""
    merged: dict = {}
    for entry in plan_entries:
        data = entry if isinstance(entry, dict) else yaml.safe_load(Path(entry).read_text())
        for key, value in data.items():
            merged.setdefault(key, {}).update(value["ros__parameters"] or {})
    return merged


def test_sim_launch_defaults_to_the_shipped_checkpoint_and_real_time_settings():
    from motus_ros.checkpoints import DEFAULT_SIM_CHECKPOINT
    from motus_ros.launch_config import make_plan

    plan = make_plan({"sim": "true"}, CONFIG)
    server = sections(plan.server_parameters)
    assert server["/**"]["checkpoint"] == DEFAULT_SIM_CHECKPOINT and server["/**"]["default_steps"] == 2
    assert server["/**/sensors"]["max_age_s"] == 1.0 and server["/**/policy"]["chunk_request_threshold"] == 16
    assert plan.server_arguments == ["--torch-threads", "1"]
    assert sections(plan.sim_parameters)["aloha_sim"]["camera_rate_hz"] == 25.0
    # The knobs win over the real-time file.
    plan = make_plan({"sim": "1", "steps": "4", "torch_threads": "2", "camera_rate": "12.5", "dry_run": "true"}, CONFIG)
    server = sections(plan.server_parameters)
    assert server["/**"]["default_steps"] == 4 and server["/**/policy"]["dry_run"] is True
    assert plan.server_arguments == ["--torch-threads", "2"]
    assert sections(plan.sim_parameters)["aloha_sim"]["camera_rate_hz"] == 12.5


def test_real_robot_launch_never_defaults_to_the_sim_model():
    from motus_ros.launch_config import make_plan

    plan = make_plan({"profile": "interbotix_aloha"}, CONFIG)
    server = sections(plan.server_parameters)
    assert server["/**"]["checkpoint"] == ""  # the random-weights preset, with its loud warning
    assert "dry_run" not in server["/**/policy"]  # the profile's default: dry run on a real robot
    assert not plan.sim and plan.server_arguments == [] and server["/**"]["default_steps"] == 0
    assert (
        sections(make_plan({"profile": "interbotix_aloha", "checkpoint": "/models/mine"}, CONFIG).server_parameters)[
            "/**"
        ]["checkpoint"]
        == "/models/mine"
    )


@pytest.mark.parametrize(
    "name, value, expected",
    [
        ("sim", "yes", "sim:='yes': expected true or false"),
        ("rviz", "", "rviz:='': expected true or false"),
        ("dry_run", "maybe", "dry_run:='maybe': expected true or false"),
        ("steps", "0", "steps:='0': expected a positive integer or auto"),
        ("steps", "2.5", "steps:='2.5': expected a positive integer or auto"),
        ("torch_threads", "-1", "torch_threads:='-1': expected a positive integer or auto"),
        ("camera_rate", "nan", "camera_rate:='nan': expected a positive number"),
        ("params_file", "/no/such.yaml", "params_file:='/no/such.yaml': no such file"),
        ("profile", " ", "profile is empty"),
    ],
)
def test_every_bad_argument_fails_naming_it_and_what_it_accepts(name, value, expected):
    from motus_ros.launch_config import LaunchArgumentError, make_plan

    arguments = {"sim": "true", name: value}
    with pytest.raises(LaunchArgumentError) as error:
        make_plan(arguments, CONFIG)
    assert expected in str(error.value)


def test_camera_rate_needs_the_simulator_and_unknown_arguments_are_refused():
    from motus_ros.launch_config import LaunchArgumentError, make_plan

    with pytest.raises(LaunchArgumentError, match="use it with sim:=true"):
        make_plan({"camera_rate": "10"}, CONFIG)
    with pytest.raises(LaunchArgumentError, match="unknown launch arguments"):
        make_plan({"simulate": "true"}, CONFIG)
