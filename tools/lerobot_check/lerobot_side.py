"""The `lerobot` half of the two-way LeRobot check; runs in the isolated lerobot 0.4.4 environment.

    python lerobot_side.py load DATASET OUT.npz      load a dataset (written by motus) with LeRobotDataset
    python lerobot_side.py write DATASET SOURCE.npz
        write one with LeRobotDataset.create/add_frame/save_episode/finalize

Two shims, both about this machine's packages rather than the dataset format (they are the same for any
dataset): PyPI's torchvision wheel is a CUDA build whose C extension cannot load next to the CPU torch, so its
two unguarded fake-op registrations get placeholder schemas; and torchvision >= 0.24 has no VideoReader (the
`pyav` backend of lerobot.datasets.video_utils) while torchcodec needs FFmpeg's shared libraries, so frames are
decoded by timestamp with PyAV, as lerobot's pyav backend did.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

_torchvision_ops = torch.library.Library("torchvision", "DEF")
_torchvision_ops.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
_torchvision_ops.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")

import av  # noqa: E402 - after the torchvision op stubs above
import lerobot.datasets.lerobot_dataset as lerobot_dataset  # noqa: E402
import lerobot.datasets.video_utils as video_utils  # noqa: E402

CAMERAS = ("observation.images.cam_high", "observation.images.cam_left_wrist")


def _decode_pyav(video_path, timestamps, tolerance_s, backend=None, **_):
    """float32 [N, C, H, W] in [0, 1] of the frames nearest the timestamps (within tolerance_s)."""
    with av.open(str(video_path)) as container:
        stream = container.streams.video[0]
        decoded = [
            (float(frame.pts * stream.time_base), frame.to_ndarray(format="rgb24"))
            for frame in container.decode(stream)
        ]
    times = np.array([t for t, _ in decoded])
    frames = []
    for ts in timestamps:
        nearest = int(np.argmin(np.abs(times - ts)))
        if abs(times[nearest] - ts) > tolerance_s:
            raise AssertionError(f"no frame within {tolerance_s}s of {ts} in {video_path} (nearest {times[nearest]})")
        frames.append(decoded[nearest][1])
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255.0


video_utils.decode_video_frames = _decode_pyav
lerobot_dataset.decode_video_frames = _decode_pyav


def load(root: Path, out: Path) -> None:
    dataset = lerobot_dataset.LeRobotDataset("motus/check", root=root, video_backend="pyav")
    arrays = {"num_episodes": np.array(dataset.num_episodes), "num_frames": np.array(dataset.num_frames)}
    for name in ("observation.state", "action", "episode_index", "frame_index", "index"):
        arrays[name] = np.stack([dataset[i][name].numpy() for i in range(len(dataset))])
    for key in dataset.meta.video_keys:
        arrays[key] = np.stack(
            [(dataset[i][key].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for i in range(len(dataset))]
        )
    arrays["tasks"] = np.array([dataset[i]["task"] for i in range(len(dataset))])
    arrays["stats_action_mean"] = np.asarray(dataset.meta.stats["action"]["mean"])
    np.savez(out, **arrays)
    print(
        f"lerobot loaded {root}: {dataset.num_episodes} episodes, {dataset.num_frames} frames, "
        f"version {dataset.meta.info['codebase_version']}"
    )


def write(root: Path, source: Path) -> None:
    data = np.load(source)
    height, width = data[CAMERAS[0]].shape[2:4]
    features = {
        "observation.state": {"dtype": "float32", "shape": (14,), "names": None},
        "action": {"dtype": "float32", "shape": (14,), "names": None},
        **{
            key: {"dtype": "video", "shape": (height, width, 3), "names": ["height", "width", "channels"]}
            for key in CAMERAS
        },
    }
    dataset = lerobot_dataset.LeRobotDataset.create(
        "motus/check", fps=int(data["fps"]), features=features, root=root, robot_type="aloha", use_videos=True
    )
    for episode in range(data["state"].shape[0]):
        for t in range(data["state"].shape[1]):
            frame = {
                "observation.state": data["state"][episode, t],
                "action": data["action"][episode, t],
                "task": str(data["tasks"][episode]),
            }
            frame.update({key: data[key][episode, t] for key in CAMERAS})
            dataset.add_frame(frame)
        dataset.save_episode(parallel_encoding=False)
    dataset.finalize()
    print(f"lerobot wrote {root}: {dataset.num_episodes} episodes, {dataset.num_frames} frames")


if __name__ == "__main__":
    command, root, path = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    load(root, path) if command == "load" else write(root, path)
