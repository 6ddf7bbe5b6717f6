"""The motus half of the two-way LeRobot check (runs in the project's environment).

python motus_side.py write DATASET                 write a v3.0 dataset with LeRobotDatasetWriter
python motus_side.py compare-load DATASET OUT.npz  check what lerobot loaded from it
python motus_side.py source SOURCE.npz             the frames lerobot is asked to write
python motus_side.py compare-read DATASET SOURCE.npz  read lerobot's dataset with LeRobotDataset, compare
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from motus_model.data.lerobot import LeRobotDataset, LeRobotDatasetWriter

CAMERAS = ("observation.images.cam_high", "observation.images.cam_left_wrist")
EPISODES, LENGTH, HEIGHT, WIDTH, FPS = 3, 20, 48, 64, 30
# H.264 / AV1 at their default quality on smooth frames: mean absolute error per pixel (0..255)
FRAME_TOLERANCE = 6.0


def _source() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH] / max(HEIGHT, WIDTH)
    data: dict[str, np.ndarray] = {"fps": np.array(FPS)}
    t = np.arange(LENGTH)[None, :, None]
    data["state"] = np.sin(0.1 * t + rng.uniform(0, 3, size=(EPISODES, 1, 14))).astype(np.float32)
    data["action"] = np.roll(data["state"], -1, axis=1)
    data["tasks"] = np.array([f"task {e % 2}" for e in range(EPISODES)])
    for c, key in enumerate(CAMERAS):
        clip = np.empty((EPISODES, LENGTH, HEIGHT, WIDTH, 3), np.uint8)
        for e in range(EPISODES):
            for step in range(LENGTH):
                for channel in range(3):
                    clip[e, step, :, :, channel] = 127 + 100 * np.sin(
                        2 * np.pi * (xs + ys) + e + c + 0.3 * channel + 0.2 * step
                    )
        data[key] = clip
    return data


def _close(name: str, got: np.ndarray, want: np.ndarray) -> None:
    error = np.abs(got.astype(np.int16) - want.astype(np.int16)).mean()
    if got.shape != want.shape or error > FRAME_TOLERANCE:
        raise SystemExit(f"FAIL {name}: shape {got.shape} vs {want.shape}, mean abs error {error:.2f}")
    print(f"ok {name}: mean abs error {error:.2f} (tolerance {FRAME_TOLERANCE})")


def write(root: Path) -> None:
    data = _source()
    writer = LeRobotDatasetWriter(root, fps=FPS, camera_keys=CAMERAS)
    for e in range(EPISODES):
        writer.add_episode(
            {key: data[key][e] for key in CAMERAS}, data["state"][e], data["action"][e], str(data["tasks"][e])
        )
    writer.finalize()


def compare_load(root: Path, loaded_path: Path) -> None:
    data, loaded = _source(), np.load(loaded_path)
    assert int(loaded["num_episodes"]) == EPISODES and int(loaded["num_frames"]) == EPISODES * LENGTH
    np.testing.assert_array_equal(loaded["observation.state"], data["state"].reshape(-1, 14))
    np.testing.assert_array_equal(loaded["action"], data["action"].reshape(-1, 14))
    np.testing.assert_array_equal(loaded["index"], np.arange(EPISODES * LENGTH))
    assert list(loaded["tasks"]) == [str(t) for t in data["tasks"] for _ in range(LENGTH)]
    for key in CAMERAS:
        _close(f"lerobot decoding motus's {key}", loaded[key], data[key].reshape(-1, HEIGHT, WIDTH, 3))
    print("ok lerobot loads the motus-written dataset: vectors exact, tasks, indices, frames")


def compare_read(root: Path, source: Path) -> None:
    data = np.load(source)
    dataset = LeRobotDataset(root)
    assert dataset.version == "v3.0" and dataset.num_episodes == EPISODES, (dataset.version, dataset.num_episodes)
    for e in range(EPISODES):
        episode = dataset.load_episode(e)
        np.testing.assert_array_equal(episode["observation.state"], data["state"][e])
        np.testing.assert_array_equal(episode["action"], data["action"][e])
        assert episode["task"] == str(data["tasks"][e]), episode["task"]
        for key in CAMERAS:
            _close(f"motus decoding lerobot's {key} episode {e}", episode["frames"][key], data[key][e])
    print("ok motus reads the lerobot-written dataset: vectors exact, tasks, frames")


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "write":
        write(Path(sys.argv[2]))
    elif command == "source":
        np.savez(sys.argv[2], **_source())
    elif command == "compare-load":
        compare_load(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        compare_read(Path(sys.argv[2]), Path(sys.argv[3]))
