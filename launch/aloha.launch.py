"""Bring up Motus on an ALOHA-family robot: the model server, optionally the simulated ALOHA and rviz2.

    ros2 launch motus_ros aloha.launch.py profile:=aloha_sim sim:=true rviz:=true        # shipped sim checkpoint
    ros2 launch motus_ros aloha.launch.py profile:=interbotix_aloha checkpoint:=/models/motus dry_run:=true

Arguments:
    profile     robot profile: a name under config/robots/ or a path (default aloha_sim)
    checkpoint  model checkpoint folder or shipped model name (models/<name>); empty = with sim:=true the shipped
                motus-small-aloha-transfer-cube (trained in gym-aloha), without sim the preset of
                config/motus_server.yaml with random weights (a sim-trained model is never a real robot's default)
    sim         also start motus_sim, the simulated ALOHA (gym-aloha, MuJoCo) (default false)
    rviz        also start rviz2 with config/motus.rviz: live cameras beside the imagined ones (default false)
    dry_run     true | false | "" (empty = the robot profile's default: true for real robots)

This file is a thin wrapper over the tested entry points: `motus_server` with config/motus_server.yaml and
`motus_sim` with config/sim.yaml, the same executables `python -m motus_ros.demo` and the tests start.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from motus_ros.checkpoints import DEFAULT_SIM_CHECKPOINT, launch_checkpoint

PACKAGE = "motus_ros"


def _server_and_sim(context, *args, **kwargs):
    """Resolve the arguments that change which parameters are passed (empty means "leave the default")."""
    share = get_package_share_directory(PACKAGE)
    profile = LaunchConfiguration("profile").perform(context)
    sim = LaunchConfiguration("sim").perform(context).strip().lower() == "true"
    # Empty checkpoint: the shipped sim model with sim:=true, else the random-weights preset (never a sim model).
    checkpoint = launch_checkpoint(LaunchConfiguration("checkpoint").perform(context), sim)
    dry_run = LaunchConfiguration("dry_run").perform(context).strip().lower()
    overrides = {"profile": profile}
    if checkpoint:
        overrides["checkpoint"] = checkpoint
    if dry_run:
        if dry_run not in ("true", "false"):
            raise ValueError(f"dry_run must be true, false or empty, got {dry_run!r}")
        overrides["dry_run"] = dry_run == "true"  # declared by the policy node only; the others ignore it
    actions = [
        Node(
            package=PACKAGE,
            executable="motus_server",
            # No `name`: a node-name remap would rename all four nodes of the process.
            output="screen",
            parameters=[os.path.join(share, "config", "motus_server.yaml"), overrides],
        )
    ]
    if sim:
        sim_params = os.path.join(share, "config", "sim.yaml")
        actions.append(
            Node(
                package=PACKAGE,
                executable="motus_sim",
                output="screen",
                parameters=[sim_params, {"profile": profile}] if os.path.exists(sim_params) else [{"profile": profile}],
            )
        )
    return actions


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory(PACKAGE)
    return LaunchDescription([
        DeclareLaunchArgument("profile", default_value="aloha_sim", description="robot profile name (config/robots/) or path"),
        DeclareLaunchArgument("checkpoint", default_value="", description=(
            f"checkpoint folder or shipped model name; empty = {DEFAULT_SIM_CHECKPOINT} with sim:=true, "
            "else the preset with random weights")),
        DeclareLaunchArgument("sim", default_value="false", description="start the simulated ALOHA (motus_sim)"),
        DeclareLaunchArgument("rviz", default_value="false", description="start rviz2 with config/motus.rviz"),
        DeclareLaunchArgument("dry_run", default_value="", description="true | false | empty = the profile's default"),
        OpaqueFunction(function=_server_and_sim),
        Node(
            package="rviz2",
            executable="rviz2",
            name="rviz2",
            arguments=["-d", os.path.join(share, "config", "motus.rviz")],
            condition=IfCondition(LaunchConfiguration("rviz")),
            output="screen",
        ),
    ])
