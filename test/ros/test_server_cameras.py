"""Any camera set through ROS: a server with a one-camera profile serves a checkpoint trained on that one camera,
and refuses, at configure, a profile whose cameras are not the checkpoint's (naming both)."""

from __future__ import annotations

import pytest
import yaml
from ros_helpers import ROOT, SensorThread, server_command, start_process, stop_process, wait_until_serving

from motus_model.config import CameraConfig, MotusConfig
from motus_model.embodiment import load_profile
from motus_model.engine import MotusEngine
from motus_msgs.msg import ErrorCode
from motus_ros.client import MotusClient

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def head_only(tmp_path_factory):
    """(checkpoint folder with cameras ['high'], a profile YAML with only the aloha_sim head camera)."""
    folder = tmp_path_factory.mktemp("head_only")
    config = MotusConfig.preset("motus-tiny")
    config.cameras = CameraConfig(["high"])
    engine = MotusEngine.from_config(config, seed=0)
    engine.save_pretrained(folder / "checkpoint")
    engine.close()
    data = yaml.safe_load((ROOT / "config" / "robots" / "aloha_sim.yaml").read_text())
    data["name"] = "aloha_sim_head_only"
    data["cameras"] = [camera for camera in data["cameras"] if camera["role"] == "high"]
    profile = folder / "aloha_sim_head_only.yaml"
    profile.write_text(yaml.safe_dump(data))
    return folder / "checkpoint", profile


def test_a_one_camera_profile_serves_a_one_camera_checkpoint(ros_context, head_only):
    checkpoint, profile_path = head_only
    process = start_process(server_command(profile=str(profile_path), checkpoint=str(checkpoint)), "MOTUS SERVER READY")
    profile = load_profile(str(profile_path))
    drivers = SensorThread(profile, node_name="head_only_drivers")
    client = MotusClient(node_name="head_only_client")
    try:
        assert client.wait_for_server(60), "the server's services did not appear"
        wait_until_serving(client)
        response = client.predict_actions("pick", steps=2, seed=0)
        assert response.error.code == ErrorCode.NONE, response.error.message
        assert len(response.trajectory.points) == 4  # motus-tiny: a chunk of 4 control steps
        # an explicit observation with the wrong cameras fails alone, naming the cameras it needs
        wrong = drivers.sensors.observation()
        wrong.camera_names = ["left_wrist"]
        refused = client.predict_actions("pick", observation=wrong, steps=1)
        assert refused.error.code == ErrorCode.INVALID_REQUEST and "high" in refused.error.message
        assert process.poll() is None
    finally:
        client.destroy()
        drivers.close()
        stop_process(process)


def test_a_profile_whose_cameras_differ_from_the_checkpoints_is_refused_naming_both(
    ros_context, spawn_process, head_only
):
    checkpoint, _ = head_only
    process = spawn_process(server_command(profile="aloha_sim", checkpoint=str(checkpoint)))
    output, _ = process.communicate(timeout=120)
    assert process.returncode != 0 and "MOTUS SERVER READY" not in output, output[-3000:]
    failed = [line for line in output.splitlines() if line.startswith("MOTUS SERVER FAILED")]
    assert len(failed) == 1, output[-3000:]
    assert "robot profile 'aloha_sim' has cameras ['high', 'left_wrist', 'right_wrist']" in failed[0]
    assert "takes ['high']" in failed[0] and str(checkpoint) in failed[0]
    assert "give the profile exactly these camera roles" in failed[0]
