"""Bring up Motus on an ALOHA-family robot: the model server, optionally the simulated ALOHA and rviz2.

    ros2 launch motus_ros aloha.launch.py sim:=true rviz:=true        # simulated robot, shipped model, real time
    ros2 launch motus_ros aloha.launch.py profile:=interbotix_aloha checkpoint:=/models/motus   # real robot, dry run
    ros2 launch motus_ros aloha.launch.py profile:=interbotix_aloha checkpoint:=/models/motus dry_run:=false

Arguments (motus_ros/launch_config.py parses them; a bad value stops the launch with a message naming it):
    profile        robot profile: a name under config/robots/ or a path (default aloha_sim)
    checkpoint     model folder or shipped model name; auto (default) = motus-small-aloha-transfer-cube with
                   sim:=true, the preset with random weights without (a sim-trained model never drives a real robot
                   by default)
    sim            true | false: also start motus_sim, the simulated ALOHA, with the real-time settings of
                   config/sim_realtime.yaml (default false)
    rviz           true | false: also start rviz2 with config/motus.rviz, its live panes following the profile's
                   cameras, and a static `world` frame (default false)
    dry_run        true | false | profile (default: the robot profile's dry_run_default, true for real robots)
    steps          Euler steps per chunk, or auto (default: 2 with sim:=true, else the model's)
    torch_threads  torch threads of the model, or auto (default: 1 with sim:=true, else torch's)
    camera_rate    simulated cameras' rate in Hz, or auto (default: 25 from config/sim_realtime.yaml); sim only
    params_file    a params file applied last to the server and the simulator, or none (default)

The launch ends when motus_server exits, with a non-zero status when the server failed. This file only wraps the
tested entry points: `motus_server` with config/motus_server.yaml and `motus_sim` with config/sim.yaml.
"""

import tempfile
from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from motus_ros.launch_config import ARGUMENTS, make_plan, write_parameter_files
from motus_ros.profiles import load_profile

PACKAGE = "motus_ros"


def _rviz_config(share: str, profile_name: str) -> str:
    """config/motus.rviz with its live panes on the profile's camera topics (it is written for aloha_sim's)."""
    text = Path(share, "config", "motus.rviz").read_text()
    sim_topics = {camera.role: camera.topic for camera in load_profile("aloha_sim").cameras}
    for camera in load_profile(profile_name).cameras:
        if camera.role in sim_topics:
            text = text.replace(f"Value: {sim_topics[camera.role]}\n", f"Value: {camera.topic}\n")
    handle = tempfile.NamedTemporaryFile("w", prefix="motus_", suffix=".rviz", delete=False)
    with handle:
        handle.write(text)
    return handle.name


def _on_server_exit(event, context):
    if event.returncode:  # an exception in an event handler ends `ros2 launch` with status 1
        raise RuntimeError(f"motus_server exited with status {event.returncode} (see its log above)")
    return [EmitEvent(event=Shutdown(reason="motus_server exited"))]


def _actions(context, *args, **kwargs):
    share = get_package_share_directory(PACKAGE)
    plan = make_plan({name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}, Path(share, "config"))
    server = Node(
        package=PACKAGE,
        executable="motus_server",
        # No `name`: a node-name remap would rename every node of the process.
        output="screen",
        arguments=plan.server_arguments,
        parameters=write_parameter_files(plan.server_parameters),
    )
    actions = [server, RegisterEventHandler(OnProcessExit(target_action=server, on_exit=_on_server_exit))]
    if plan.sim:
        actions.append(
            Node(
                package=PACKAGE,
                executable="motus_sim",
                output="screen",
                parameters=write_parameter_files(plan.sim_parameters),
            )
        )
    if plan.rviz:
        actions += [
            # rviz needs its fixed frame to exist; the image panes need no other transform.
            Node(
                package="tf2_ros",
                executable="static_transform_publisher",
                output="log",
                arguments=["--frame-id", "world", "--child-frame-id", "motus_base"],
            ),
            Node(
                package="rviz2",
                executable="rviz2",
                name="rviz2",
                output="screen",
                arguments=["-d", _rviz_config(share, plan.profile)],
            ),
        ]
    return actions


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription(
        [
            *[
                DeclareLaunchArgument(name, default_value=default, description=description)
                for name, (default, description) in ARGUMENTS.items()
            ],
            OpaqueFunction(function=_actions),
        ]
    )
