"""Flow-image data for the latent-action VAE, its training loop, and dataset labelling (stage-2 pseudo-actions).

Latent action at row r of an episode comes from the flow between frames (r - stride, r) (clamped at
0, so row 0 has zero motion): it describes the motion that *arrives* at row r, the same row whose
commanded target ``action[r]`` it is aligned with on labelled data. The training sampler then reads
latent actions exactly where it would read real ones.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from tqdm import tqdm

from motus_model.data.lerobot import ACTION_KEY, LATENT_ACTION_KEY, LeRobotDataset
from motus_model.latent_actions.flow import FlowEstimator, flow_to_image, make_flow_estimator
from motus_model.latent_actions.model import LatentActionVAE, LatentActionVAEConfig
from motus_model.preprocessing import Normalizer

logger = logging.getLogger(__name__)


def flow_image(
    estimator: FlowEstimator, frame0: np.ndarray, frame1: np.ndarray, config: LatentActionVAEConfig
) -> np.ndarray:
    """Two RGB frames -> uint8 flow image [S, S, 3] (Middlebury coding at the config's fixed max radius)."""
    flow = estimator.estimate(frame0, frame1)
    image = flow_to_image(flow, max_radius=config.flow_max_radius).image
    size = config.image_size
    interpolation = cv2.INTER_AREA if image.shape[0] >= size else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interpolation)


def episode_flow_images(
    dataset: LeRobotDataset, episode: int, config: LatentActionVAEConfig, estimator: FlowEstimator, every: int = 1
) -> np.ndarray:
    """uint8 [ceil(T / every), S, S, 3]: row r (r = 0, every, 2*every, ...) codes the flow between frames
    max(r - stride, 0) and r."""
    if config.camera_key not in dataset.camera_keys:
        raise ValueError(f"camera {config.camera_key!r} not in {dataset.root}; it has {list(dataset.camera_keys)}")
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    frames = dataset.frames(episode, config.camera_key)
    rows = range(0, frames.shape[0], every)
    return np.stack([flow_image(estimator, frames[max(r - config.frame_stride, 0)], frames[r], config) for r in rows])


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, S, S, 3] -> float [N, 3, S, S] in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


@dataclass
class FlowPairPool:
    """Flow images of some datasets, with normalised real actions where the data is labelled.

    images: uint8 [N, S, S, 3]; actions: float32 [N, latent_dim] or None (unlabelled).
    """

    images: np.ndarray
    actions: np.ndarray | None

    @classmethod
    def from_datasets(
        cls,
        datasets: list[LeRobotDataset],
        config: LatentActionVAEConfig,
        labelled: bool,
        estimator: FlowEstimator | None = None,
        every: int = 1,
    ) -> FlowPairPool:
        """Compute flow images for every ``every``-th row; labelled pools carry actions normalised with
        each dataset's mean/std (the alignment target). The pool lives in memory (S*S*3 bytes a row)."""
        estimator = estimator or make_flow_estimator(config.flow_estimator)
        images, actions = [], []
        for dataset in datasets:
            normalizer = Normalizer({ACTION_KEY: dataset.stats[ACTION_KEY]}) if labelled else None
            for episode in tqdm(range(dataset.num_episodes), desc=f"flow {dataset.root.name}", leave=False):
                images.append(episode_flow_images(dataset, episode, config, estimator, every))
                if labelled:
                    episode_actions = dataset.vectors(episode)[ACTION_KEY][::every]
                    if episode_actions.shape[1] != config.latent_dim:
                        raise ValueError(
                            f"{dataset.root}: actions are {episode_actions.shape[1]}-d, "
                            f"latent actions {config.latent_dim}-d"
                        )
                    actions.append(normalizer.normalize(ACTION_KEY, episode_actions))
        if not images:
            raise ValueError("no episodes to build a flow pool from")
        return cls(np.concatenate(images), np.concatenate(actions).astype(np.float32) if labelled else None)

    def __len__(self) -> int:
        return int(self.images.shape[0])


def draw_vae_batch(
    rng: np.random.Generator,
    labelled: FlowPairPool | None,
    unlabelled: FlowPairPool | None,
    batch_size: int,
    labelled_fraction: float,
    latent_dim: int,
) -> dict[str, torch.Tensor]:
    """A batch mixing labelled and unlabelled pairs: each sample is labelled with probability
    ``labelled_fraction`` (1 if there is no unlabelled pool, 0 if there is no labelled one)."""
    if labelled is None and unlabelled is None:
        raise ValueError("need a labelled or an unlabelled pool")
    if labelled is None:
        labelled_fraction = 0.0
    elif unlabelled is None:
        labelled_fraction = 1.0
    is_labelled = rng.random(batch_size) < labelled_fraction
    images = np.empty((batch_size,) + (labelled or unlabelled).images.shape[1:], dtype=np.uint8)
    actions = np.zeros((batch_size, latent_dim), dtype=np.float32)
    for i, take_labelled in enumerate(is_labelled):
        pool = labelled if take_labelled else unlabelled
        index = int(rng.integers(0, len(pool)))
        images[i] = pool.images[index]
        if take_labelled:
            actions[i] = pool.actions[index]
    return {
        "flow_images": images_to_tensor(images),
        "actions": torch.from_numpy(actions),
        "labelled": torch.from_numpy(is_labelled),
    }


def train_latent_action_vae(
    model: LatentActionVAE,
    labelled: FlowPairPool | None,
    unlabelled: FlowPairPool | None,
    steps: int,
    batch_size: int = 16,
    learning_rate: float = 1e-3,
    seed: int = 0,
) -> list[dict[str, float]]:
    """Train the VAE with AdamW for ``steps``; returns the per-step losses."""
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    model.train()
    history = []
    progress = tqdm(range(steps), desc="latent-action VAE", disable=steps < 10)
    for _ in progress:
        batch = draw_vae_batch(
            rng, labelled, unlabelled, batch_size, model.config.labelled_fraction, model.config.latent_dim
        )
        losses = model(batch["flow_images"], batch["actions"], batch["labelled"], generator=generator)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        optimizer.step()
        record = {name: float(value.detach()) for name, value in losses.items() if name != "mean"}
        history.append(record)
        progress.set_postfix(loss=f"{record['loss']:.4f}")
    return history


@torch.no_grad()
def label_dataset(
    dataset_root: str | Path,
    model: LatentActionVAE,
    estimator: FlowEstimator | None = None,
    column: str = LATENT_ACTION_KEY,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Write the latent-action mean of every row into the dataset as a new float column (and its stats).

    Returns the column's stats.
    """
    config = model.config
    estimator = estimator or make_flow_estimator(config.flow_estimator)
    dataset = LeRobotDataset(dataset_root, load_stats=False)
    model.eval()
    device = next(model.parameters()).device
    per_episode = []
    for episode in tqdm(range(dataset.num_episodes), desc="latent actions"):
        images = episode_flow_images(dataset, episode, config, estimator)
        means = []
        for start in range(0, len(images), batch_size):
            mean, _ = model.encode(images_to_tensor(images[start : start + batch_size]).to(device))
            means.append(mean.float().cpu().numpy())
        per_episode.append(np.concatenate(means))
    dataset.add_vector_column(column, per_episode)
    logger.info("labelled %d episodes of %s with %s", dataset.num_episodes, dataset_root, column)
    return dataset.stats[column]
