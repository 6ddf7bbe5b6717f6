"""The robot-profile schema (motus_model.embodiment, no ROS): every shipped profile loads and validates, bad profiles
fail loudly, grippers map both ways, unknown names list the folders searched."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from motus_model import embodiment
from motus_model.embodiment import COMMAND_INTERFACES, RobotProfile

pytestmark = pytest.mark.timeout(60)

# The repository's profiles, named explicitly: the tests may import an installed motus_model, which has no
# config/robots beside it (motus_ros.profiles adds the installed share folder; test/ros/test_profiles.py).
CONFIG_ROBOTS = Path(__file__).resolve().parents[2] / "config" / "robots"


def load_profile(name_or_path, search_dirs=(CONFIG_ROBOTS,)) -> RobotProfile:
    return embodiment.load_profile(name_or_path, search_dirs)


def available_profiles() -> list[str]:
    return embodiment.available_profiles([CONFIG_ROBOTS])


SHIPPED = ["aloha_sim", "interbotix_aloha", "agilex_aloha2", "ac_one"]


def test_every_shipped_profile_loads_with_14_joints_and_valid_limits():
    assert set(SHIPPED) <= set(available_profiles())
    for name in SHIPPED:
        profile = load_profile(name)
        assert profile.name == name
        assert profile.action_dim == 14 and len(set(profile.joint_names)) == 14
        assert profile.gripper_indices == [6, 13]  # [left 6, left gripper, right 6, right gripper]
        assert np.all(np.asarray(profile.lower_limits) < np.asarray(profile.upper_limits))
        assert profile.command_interface in COMMAND_INTERFACES
        assert profile.camera_roles == ["high", "left_wrist", "right_wrist"]
        assert profile.dry_run_default == (not profile.sim)  # real robots start in dry run


def test_real_robot_values_match_the_conventions():
    interbotix = load_profile("interbotix_aloha")
    assert interbotix.command_interface == "interbotix" and interbotix.control_rate_hz == 50
    assert interbotix.cameras[0].topic == "/cam_high/camera/color/image_rect_raw"
    assert interbotix.joint_state_topics == ["/follower_left/joint_states", "/follower_right/joint_states"]
    assert interbotix.command_topics == ["/follower_left/commands/joint_group", "/follower_right/commands/joint_group"]
    assert interbotix.command_joint_names[0] == [
        "waist",
        "shoulder",
        "elbow",
        "forearm_roll",
        "wrist_angle",
        "wrist_rotate",
        "gripper",
    ]
    agilex = load_profile("agilex_aloha2")
    assert agilex.command_interface == "joint_state_per_arm" and agilex.control_rate_hz == 30
    assert agilex.command_topics == ["/joint_left_states", "/joint_right_states"]
    assert agilex.command_joint_names[1] == [f"joint{i}" for i in range(7)]
    assert load_profile("aloha_sim").dry_run_default is False


def test_gripper_mapping_round_trips_and_is_open_one_closed_zero():
    profile = load_profile("interbotix_aloha")
    q = np.zeros(14)
    q[6], q[13] = 1.6214, 0.6197  # left open, right closed (follower gripper joint, rad)
    model = profile.robot_to_model(q)
    assert model[6] == pytest.approx(1.0) and model[13] == pytest.approx(0.0)
    assert np.array_equal(model[:6], q[:6])  # arm joints untouched
    rng = np.random.default_rng(0)
    batch = rng.uniform(-1, 2, size=(5, 14))
    np.testing.assert_allclose(profile.robot_to_model(profile.model_to_robot(batch)), batch, atol=1e-12)
    with pytest.raises(ValueError, match=r"\[\.\.\., 14\]"):
        profile.robot_to_model(np.zeros(13))


def test_to_dict_is_plain_data_and_round_trips(tmp_path: Path):
    profile = load_profile("agilex_aloha2")
    data = profile.to_dict()
    assert data["cameras"][0] == {
        "role": "high",
        "topic": "/camera_f/color/image_raw",
        "encoding": "rgb8",
        "height": 480,
        "width": 640,
        "transport": "raw",
    }
    assert data["command_topics"] == ["/joint_left_states", "/joint_right_states"]
    assert data["joint_state_topics"] == ["/puppet/joint_left", "/puppet/joint_right"]
    path = tmp_path / "copy.yaml"
    path.write_text(yaml.safe_dump(data))
    assert load_profile(path) == profile


def _sim_dict() -> dict:
    return load_profile("aloha_sim").to_dict()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.update(lower_limits=d["lower_limits"][:13]), "lower_limits must have 14"),
        (lambda d: d.update(command_interface="ros1"), "command_interface must be one of"),
        (lambda d: d["joint_names"].__setitem__(1, d["joint_names"][0]), "unique"),
        (lambda d: d.update(upper_limits=d["lower_limits"]), "lower_limits must be < upper_limits"),
        (lambda d: d.update(command_joint_groups=[list(range(13))]), "cover each action index"),
        (lambda d: d["cameras"][0].update(encoding="yuv422"), "encoding must be one of"),
        (lambda d: d["cameras"][1].update(transport="theora"), "'left_wrist' transport must be one of"),
        (lambda d: d["grippers"][0].update(robot_open=0.0), "divide by zero"),
        (lambda d: d.update(control_rate=50), "unknown profile keys"),
    ],
)
def test_invalid_profiles_are_rejected_with_a_clear_message(tmp_path: Path, change, message):
    data = _sim_dict()
    change(data)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match=message):
        load_profile(path)


def test_interbotix_command_topics_must_be_joint_group_topics(tmp_path: Path):
    data = load_profile("interbotix_aloha").to_dict()
    data["command_topics"] = ["/follower_left/commands", "/follower_right/commands"]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match="joint_group"):
        load_profile(path)


def test_unknown_profile_name_suggests_the_closest_and_lists_the_folders_searched(tmp_path: Path):
    with pytest.raises(ValueError, match="did you mean 'aloha_sim'") as error:
        load_profile("aloha_sin")
    assert str(CONFIG_ROBOTS) in str(error.value)
    (tmp_path / "my_arm.yaml").write_text(yaml.safe_dump(load_profile("aloha_sim").to_dict()))
    assert load_profile("my_arm", [tmp_path]).camera_roles == ["high", "left_wrist", "right_wrist"]
    with pytest.raises(ValueError) as error:
        load_profile("aloha_sim", [tmp_path])
    assert f"available: ['my_arm']; searched: [{str(tmp_path)!r}]" in str(error.value)


def test_every_image_encoding_the_decoder_takes_is_a_valid_camera_encoding():
    from motus_model.images import IMAGE_ENCODINGS

    data = load_profile("aloha_sim").to_dict()
    for encoding in IMAGE_ENCODINGS:  # one encoding set for profiles, serving and training
        data["cameras"][0]["encoding"] = encoding
        assert RobotProfile.from_dict(data).cameras[0].encoding == encoding


def test_camera_transport_defaults_to_raw_and_compressed_reads_the_image_transport_topic():
    data = load_profile("aloha_sim").to_dict()
    assert {camera["transport"] for camera in data["cameras"]} == {"raw"}  # every shipped profile: raw by default
    data["cameras"][0]["transport"] = "compressed"
    profile = RobotProfile.from_dict(data)
    assert profile.cameras[0].transport_topic == "/cam_high/image_raw/compressed"
    assert profile.cameras[1].transport_topic == "/cam_left_wrist/image_raw"
    assert RobotProfile.from_dict(profile.to_dict()).cameras[0].transport == "compressed"


def test_profile_from_dict_requires_the_core_keys():
    with pytest.raises(ValueError, match="missing required keys"):
        RobotProfile.from_dict({"name": "x"})
