"""motus convert-hdf5: ACT/ALOHA episode files (raw and JPEG-compressed images) and RoboTwin 2.0's layout,
written here with h5py the way those projects write them."""

from __future__ import annotations

import cv2
import h5py
import numpy as np
import pytest

from motus_model.cli import main
from motus_model.data.hdf5_converter import Hdf5Error, convert_hdf5
from motus_model.data.lerobot import LeRobotDataset

T, H, W = 12, 24, 32
ACT_CAMERAS = ("cam_high", "cam_left_wrist", "cam_right_wrist")


def frame(camera: int, t: int) -> np.ndarray:
    return np.full((H, W, 3), [30 + 60 * camera, 10 * t, 200 - 10 * t], dtype=np.uint8)


def joints(seed: int) -> np.ndarray:
    return np.sin(0.1 * np.arange(T)[:, None] + np.arange(14) + seed).astype(np.float64)


def _jpeg_padded(images: list[np.ndarray]) -> tuple[np.ndarray, list[int]]:
    """As ACT's record_episodes.py stores compressed images: JPEG bytes zero-padded to one length."""
    encoded = [cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes() for image in images]
    width = max(len(e) for e in encoded)
    return np.stack([np.frombuffer(e.ljust(width, b"\0"), np.uint8) for e in encoded]), [len(e) for e in encoded]


def write_act(path, compress: bool, seed: int = 0, joints_per_row: int = 14):
    with h5py.File(path, "w") as root:
        root.attrs["sim"] = False
        root.attrs["compress"] = compress
        q = joints(seed)[:, :joints_per_row]
        root.create_dataset("observations/qpos", data=q)
        root.create_dataset("observations/qvel", data=np.zeros_like(q))
        root.create_dataset("action", data=np.roll(q, -1, axis=0))
        lengths = []
        for c, name in enumerate(ACT_CAMERAS):
            images = [frame(c, t) for t in range(T)]
            if compress:
                data, lens = _jpeg_padded(images)
                lengths.append(lens)
                root.create_dataset(f"observations/images/{name}", data=data)
            else:
                root.create_dataset(f"observations/images/{name}", data=np.stack(images))
        if compress:
            root.create_dataset("compress_len", data=np.array(lengths))
    return path


def write_robotwin(path, seed: int = 0):
    """RoboTwin 2.0 collect_data: /joint_action/{left_arm,left_gripper,right_arm,right_gripper,vector},
    /observation/<camera>/rgb as JPEG bytes per frame (fixed-length, NUL-padded)."""
    vector = joints(seed)
    with h5py.File(path, "w") as root:
        root.create_dataset("joint_action/vector", data=vector)
        root.create_dataset("joint_action/left_arm", data=vector[:, :6])
        root.create_dataset("joint_action/left_gripper", data=vector[:, 6])
        root.create_dataset("joint_action/right_arm", data=vector[:, 7:13])
        root.create_dataset("joint_action/right_gripper", data=vector[:, 13])
        for c, name in enumerate(("head_camera", "left_camera", "right_camera")):
            encoded = [cv2.imencode(".jpg", frame(c, t), [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes() for t in range(T)]
            width = max(len(e) for e in encoded)
            root.create_dataset(
                f"observation/{name}/rgb", data=np.array([e.ljust(width, b"\0") for e in encoded], dtype=f"S{width}")
            )
    return path


def _assert_frames(dataset, episode, length):
    for c, key in enumerate(
        ("observation.images.cam_high", "observation.images.cam_left_wrist", "observation.images.cam_right_wrist")
    ):
        clip = dataset.frames(episode, key)
        assert clip.shape == (length, H, W, 3)
        for t in (0, length - 1):
            assert np.abs(clip[t].astype(int) - frame(c, t).astype(int)).mean() < 4.0, (key, t)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("compress", [False, True])
def test_act_files_convert(tmp_path, compress):
    files = [write_act(tmp_path / f"episode_{i}.hdf5", compress, seed=i) for i in range(2)]
    root = convert_hdf5(files, tmp_path / "dataset", fps=50, task="transfer the cube")
    dataset = LeRobotDataset(root)
    assert dataset.num_episodes == 2 and dataset.task(1) == "transfer the cube"
    np.testing.assert_allclose(dataset.vectors(1)["observation.state"], joints(1), rtol=1e-6)
    np.testing.assert_allclose(dataset.vectors(1)["action"], np.roll(joints(1), -1, axis=0), rtol=1e-6)
    _assert_frames(dataset, 0, T)


@pytest.mark.timeout(120)
def test_robotwin_file_converts_state_t_action_t_plus_1(tmp_path):
    root = convert_hdf5([write_robotwin(tmp_path / "episode0.hdf5")], tmp_path / "dataset", fps=25, task="stack bowls")
    dataset = LeRobotDataset(root)
    vectors = dataset.vectors(0)
    np.testing.assert_allclose(vectors["observation.state"], joints(0)[:-1], rtol=1e-6)
    np.testing.assert_allclose(vectors["action"], joints(0)[1:], rtol=1e-6)
    _assert_frames(dataset, 0, T - 1)


@pytest.mark.timeout(120)
def test_cli_with_a_profile_keeps_its_roles_and_reports_bad_files(tmp_path, capsys):
    import yaml

    from motus_model.embodiment import load_profile

    profile = load_profile("aloha_sim").to_dict()
    profile.update(
        name="one_view", cameras=[{"role": "high", "topic": "/cam_high", "encoding": "rgb8"}]
    )  # a single-view robot
    (tmp_path / "one_view.yaml").write_text(yaml.safe_dump(profile))
    good = write_act(tmp_path / "good.hdf5", compress=True)
    out = tmp_path / "dataset"
    base = ["convert-hdf5", "--output", str(out), "--task", "t", "--profile", str(tmp_path / "one_view.yaml")]
    assert main(base + [str(good)]) == 0
    assert LeRobotDataset(out).camera_keys == ("observation.images.cam_high",)

    def error(files, extra=()):
        with pytest.raises(SystemExit) as exit_info:
            main(base[:2] + [str(tmp_path / "other")] + base[3:] + list(extra) + [str(f) for f in files])
        assert exit_info.value.code == 2
        lines = [line for line in capsys.readouterr().err.splitlines() if "motus: error:" in line]
        assert len(lines) == 1
        return lines[0]

    (tmp_path / "empty.hdf5").write_bytes(b"")
    assert "empty.hdf5: the file is empty" in error([tmp_path / "empty.hdf5"])
    truncated = tmp_path / "truncated.hdf5"
    truncated.write_bytes(good.read_bytes()[:2000])
    assert "truncated.hdf5: not a readable HDF5 file" in error([truncated])
    seven = write_act(tmp_path / "seven.hdf5", compress=False, joints_per_row=7)
    assert "seven.hdf5: 7 joints per row, the robot profile has 14" in error([good, seven])
    assert "camera 'top' (role high) not in the file" in error([good], ["--camera", "high=top"])
    with h5py.File(tmp_path / "garbage.hdf5", "w") as root:
        root.create_dataset("observations/qpos", data=np.zeros((T, 14)))
        root.create_dataset("action", data=np.zeros((T, 14)))
        root.create_dataset("observations/images/cam_high", data=np.full((T, 50), 7, np.uint8))
    assert "neither raw uint8 [H, W, 3] nor a JPEG/PNG image" in error([tmp_path / "garbage.hdf5"])
    assert not (tmp_path / "other").exists()  # nothing written by the failed conversions
    with pytest.raises(Hdf5Error, match="no HDF5 files"):
        convert_hdf5([], tmp_path / "x", 50, "t")
