"""Shared helpers for the training tests: tiny synthetic ALOHA-like episodes.

A uniquely named module (not conftest.py) so ``from training_helpers import ...`` cannot pick up
another directory's conftest when the whole suite runs; test/training/conftest.py re-exports the fixture.
"""

from __future__ import annotations

import numpy as np

from motus_model.data.lerobot import ALOHA_CAMERA_KEYS, LeRobotDatasetWriter


def smooth_frames(length: int, height: int, width: int, seed: int) -> np.ndarray:
    """uint8 [T, H, W, 3] low-frequency frames (video codecs keep them close)."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width] / max(height, width)
    frames = np.empty((length, height, width, 3), dtype=np.uint8)
    # mostly-luminance variation: yuv420p halves chroma resolution, which tiny frames feel strongly
    phases = rng.uniform(0, 2 * np.pi) + np.array([0.0, 0.3, 0.6])
    for t in range(length):
        for c in range(3):
            frames[t, :, :, c] = 127 + 100 * np.sin(2 * np.pi * (xs + ys) + phases[c] + 0.2 * t)
    return frames


def write_tiny_dataset(
    root,
    num_episodes: int = 2,
    length: int = 24,
    height: int = 32,
    width: int = 48,
    seed: int = 0,
    camera_keys: tuple[str, ...] = ALOHA_CAMERA_KEYS,
    offset: float = 0.0,
    scale: float = 1.0,
):
    """A tiny dataset (the three ALOHA cameras unless `camera_keys` names others) with smooth joint trajectories
    (offset + scale * a sine per joint); returns (root, episodes as written)."""
    rng = np.random.default_rng(seed)
    writer = LeRobotDatasetWriter(root, fps=50, camera_keys=tuple(camera_keys))
    written = []
    for e in range(num_episodes):
        t = np.arange(length)[:, None]
        state = (offset + scale * np.sin(0.1 * t + rng.uniform(0, 3, size=(1, 14)))).astype(np.float32)
        action = np.roll(state, -1, axis=0)
        frames = {key: smooth_frames(length, height, width, seed * 10 + e * 3 + i) for i, key in enumerate(camera_keys)}
        task = f"task {e % 2}"
        writer.add_episode(frames, state, action, task)
        written.append({"frames": frames, "state": state, "action": action, "task": task})
    writer.finalize()
    return root, written
