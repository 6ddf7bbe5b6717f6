"""config/motus_server.yaml is the documented source of truth: every parameter the four nodes declare appears
there with the node's own default (the sensor intake's too), and every entry there is a declared parameter (no
typos that ROS would
silently ignore). Every parameter has a description."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from motus_ros.server import create_nodes
from motus_ros.server_context import SensorIntake, ServerContext, SharedModel

CONFIG = Path(__file__).resolve().parents[2] / "config" / "motus_server.yaml"
OPTIONAL = {"dry_run"}  # unset on purpose: the robot profile's default applies


def never_built(spec):
    raise AssertionError("the nodes are only constructed here, never configured")


@pytest.mark.timeout(60)
def test_yaml_defaults_match_the_declared_parameters(ros_context):
    config = yaml.safe_load(CONFIG.read_text())
    shared = config["/**"]["ros__parameters"]
    context = ServerContext(model=SharedModel(never_built))
    nodes = [SensorIntake(context), *create_nodes(context)]
    try:
        for node in nodes:
            section = config[f"/**/{node.get_name()}"]["ros__parameters"] or {}
            documented = {**shared, **section}
            declared = {
                name: parameter
                for name, parameter in node.get_parameters_by_prefix("").items()
                if name not in ("use_sim_time", "start_type_description_service")
                and not name.startswith("qos_overrides")
            }
            assert set(documented) | OPTIONAL >= set(declared), (
                f"{node.get_name()}: undocumented {set(declared) - set(documented) - OPTIONAL}"
            )
            unknown = set(section) - set(declared)
            assert not unknown, f"{node.get_name()}: config/motus_server.yaml sets undeclared {unknown}"
            for name, value in documented.items():
                if name in declared:
                    assert declared[name].value == value, (
                        f"{node.get_name()}.{name}: yaml {value!r} != default {declared[name].value!r}"
                    )
            for name in declared:
                assert node.describe_parameter(name).description, f"{node.get_name()}.{name} has no description"
    finally:
        for node in nodes:
            node.destroy_node()
