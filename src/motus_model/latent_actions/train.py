"""Flow-image data for the latent-action VAE, its training loop, its quality probe, and dataset labelling.

Latent action at row r of an episode comes from the flow between frames (r - stride, r) (clamped at
0, so rows before the stride see the motion since row 0): it describes the motion that *arrives* at
row r. On labelled data it is aligned with what that flow can see, by default the commanded change
``action[r] - action[r - stride]`` (``LatentActionVAEConfig.alignment_target``). The training sampler
then reads latent actions exactly where it would read real ones.

Pipeline of one row: frames (one view, or the three composed) resized to ``flow_width`` -> dense flow
(pixels) -> the flow field area-averaged to ``image_size`` x ``image_size`` (vectors keep their pixel
units) -> Middlebury coding at ``flow_max_radius``. Training sets that radius from the training data's
flow magnitudes (``flow_scale_percentile``) and saves it in the VAE's config.json; labelling reuses it.

Quality: ``fit_latent_action_vae`` holds out whole labelled episodes, and after training reports the
linear-probe R^2 of the 14-d latent mean against the action deltas of those episodes (a least-squares
probe fitted on the training episodes), printed and written to ``metrics.json`` beside the weights.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from tqdm import tqdm

from motus_model.data.lerobot import ACTION_KEY, LATENT_ACTION_KEY, STATE_KEY, LeRobotDataset
from motus_model.latent_actions.flow import FlowEstimator, flow_to_image, make_flow_estimator
from motus_model.latent_actions.model import (
    CAMERA_ROLE_KEYS,
    COMPOSITE_CAMERA,
    LatentActionVAE,
    LatentActionVAEConfig,
)
from motus_model.preprocessing import CompositeLayout, compose_views

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
# A flow-image pixel counts as near white when every channel is at least this (about 10 % of full saturation).
NEAR_WHITE_LEVEL = 230


# ---------------------------------------------------------------------------------------------
# Compatibility of a VAE (or its config) with a dataset
# ---------------------------------------------------------------------------------------------


def check_dataset(dataset: LeRobotDataset, config: LatentActionVAEConfig, needs_actions: bool) -> None:
    """Refuse, in one line naming the mismatch, a dataset the VAE's stride, camera or action width does not fit."""
    if config.camera_key == COMPOSITE_CAMERA:
        missing = [key for key in CAMERA_ROLE_KEYS.values() if key not in dataset.camera_keys]
        if missing:
            raise ValueError(
                f"{dataset.root}: the composite needs cameras {missing}, the dataset has {list(dataset.camera_keys)}; "
                "choose one view with --camera"
            )
    elif config.camera_key not in dataset.camera_keys:
        raise ValueError(
            f"{dataset.root}: camera {config.camera_key!r} not in the dataset (it has {list(dataset.camera_keys)}); "
            "choose another with --camera (a key, a role high/left_wrist/right_wrist, or composite)"
        )
    if config.fps is not None and abs(dataset.fps - config.fps) > 1e-6:
        raise ValueError(
            f"{dataset.root} is recorded at {dataset.fps:g} fps, the VAE's stride of {config.frame_stride} frames was "
            f"set at {config.fps:g} fps (another frame rate is another motion); resample the dataset or train a VAE "
            "for it"
        )
    if ACTION_KEY in dataset.info["features"]:
        width = int(dataset.info["features"][ACTION_KEY]["shape"][0])
        if width != config.latent_dim:
            raise ValueError(
                f"{dataset.root}: actions are {width}-d, the VAE's latent actions {config.latent_dim}-d; "
                "use a VAE with latent_dim matching the robot's action width"
            )
    elif needs_actions:
        raise ValueError(f"{dataset.root} has no {ACTION_KEY!r} column; pass it as --unlabelled")


def _composite_layout(width: int) -> CompositeLayout:
    """The model's composite geometry, unpadded, at ``width`` (head 3/4 * width tall, wrists half that)."""
    head = int(round(width * 3 / 4))
    return CompositeLayout(height=head + head // 2, width=width)


def episode_frames(dataset: LeRobotDataset, episode: int, config: LatentActionVAEConfig) -> np.ndarray:
    """uint8 [T, H, W, 3]: the config's view (or the composite), resized to ``flow_width`` when it is set."""
    if config.camera_key == COMPOSITE_CAMERA:
        views = {role: dataset.frames(episode, key) for role, key in CAMERA_ROLE_KEYS.items()}
        width = config.flow_width or views["high"].shape[2]
        layout = _composite_layout(width)
        return np.stack(
            [compose_views({role: v[t] for role, v in views.items()}, layout) for t in range(len(views["high"]))]
        )
    frames = dataset.frames(episode, config.camera_key)
    if config.flow_width is None or frames.shape[2] == config.flow_width:
        return frames
    height = int(round(frames.shape[1] * config.flow_width / frames.shape[2]))
    interpolation = cv2.INTER_AREA if frames.shape[2] > config.flow_width else cv2.INTER_LINEAR
    return np.stack([cv2.resize(frame, (config.flow_width, height), interpolation=interpolation) for frame in frames])


def resize_flow(flow: np.ndarray, size: int) -> np.ndarray:
    """Area-average a flow field [H, W, 2] to [size, size, 2]; vectors keep their pixel units (of the input)."""
    interpolation = cv2.INTER_AREA if flow.shape[0] >= size else cv2.INTER_LINEAR
    return cv2.resize(flow.astype(np.float32), (size, size), interpolation=interpolation)


def episode_flows(
    frames: np.ndarray, config: LatentActionVAEConfig, estimator: FlowEstimator, every: int = 1
) -> np.ndarray:
    """float32 [ceil(T / every), S, S, 2]: row r (r = 0, every, ...) is the flow between frames max(r - stride, 0)
    and r, area-averaged to the VAE's image size."""
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    stride, size = config.frame_stride, config.image_size
    rows = range(0, frames.shape[0], every)
    return np.stack([resize_flow(estimator.estimate(frames[max(r - stride, 0)], frames[r]), size) for r in rows])


def flows_to_images(flows: np.ndarray, max_radius: float) -> np.ndarray:
    """float [N, S, S, 2] -> uint8 flow images [N, S, S, 3], Middlebury-coded at a fixed max radius."""
    return np.stack([flow_to_image(flow, max_radius=max_radius).image for flow in flows])


def near_white_share(images: np.ndarray, level: int = NEAR_WHITE_LEVEL) -> float:
    """Share of flow-image pixels whose every channel is >= ``level`` (motion too small to tell from none)."""
    return float(np.mean(np.all(np.asarray(images) >= level, axis=-1)))


def episode_targets(vectors: dict[str, np.ndarray], target: str, stride: int, every: int = 1) -> np.ndarray:
    """Per row r (every ``every``-th), the value a latent action at r is compared with:

    "action_delta": action[r] - action[max(r - stride, 0)]; "state_delta": the same on observation.state;
    "action": action[r].
    """
    key = STATE_KEY if target == "state_delta" else ACTION_KEY
    if key not in vectors:
        raise ValueError(f"alignment target {target!r} needs the {key!r} column")
    values = np.asarray(vectors[key], dtype=np.float64)
    if target != "action":
        values = values - values[np.maximum(np.arange(len(values)) - stride, 0)]
    return values[::every].astype(np.float32)


def episode_flow_images(
    dataset: LeRobotDataset, episode: int, config: LatentActionVAEConfig, estimator: FlowEstimator, every: int = 1
) -> np.ndarray:
    """uint8 [ceil(T / every), S, S, 3]: the coded flow images of one episode (see ``episode_flows``)."""
    flows = episode_flows(episode_frames(dataset, episode, config), config, estimator, every)
    return flows_to_images(flows, config.flow_max_radius)


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, S, S, 3] -> float [N, 3, S, S] in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


# ---------------------------------------------------------------------------------------------
# Pools of flow pairs
# ---------------------------------------------------------------------------------------------


@dataclass
class FlowPairPool:
    """Flow images of some datasets, with alignment targets where the data is labelled.

    images: uint8 [N, S, S, 3] (None until ``code`` when built from flows);
    actions: float32 [N, latent_dim] alignment targets (normalised by ``normalise_targets``), or None;
    flows: float32 [N, S, S, 2] the flow fields the images code (for the scale percentile);
    deltas: float32 [N, latent_dim] action deltas over the stride (the probe's target), or None;
    groups: int [N] one id per (dataset, episode), for held-out splits.
    """

    images: np.ndarray | None
    actions: np.ndarray | None
    flows: np.ndarray | None = None
    deltas: np.ndarray | None = None
    groups: np.ndarray | None = None

    @classmethod
    def from_datasets(
        cls,
        datasets: list[LeRobotDataset],
        config: LatentActionVAEConfig,
        labelled: bool,
        estimator: FlowEstimator | None = None,
        every: int = 1,
        episodes: list[list[int]] | None = None,
    ) -> FlowPairPool:
        """Flow fields of every ``every``-th row of the given episodes (default all), coded at the config's
        current radius. Labelled pools carry the raw alignment targets and action deltas. In memory: S*S*11
        bytes a row."""
        estimator = estimator or make_flow_estimator(config.flow_estimator)
        flows, targets, deltas, groups = [], [], [], []
        for index, dataset in enumerate(datasets):
            check_dataset(dataset, config, needs_actions=labelled)
            chosen = range(dataset.num_episodes) if episodes is None else episodes[index]
            for episode in tqdm(chosen, desc=f"flow {dataset.root.name}", leave=False):
                episode_flow = episode_flows(episode_frames(dataset, episode, config), config, estimator, every)
                flows.append(episode_flow)
                groups.append(np.full(len(episode_flow), index * 1_000_000 + episode))
                if labelled:
                    vectors = dataset.vectors(episode)
                    targets.append(episode_targets(vectors, config.alignment_target, config.frame_stride, every))
                    deltas.append(episode_targets(vectors, "action_delta", config.frame_stride, every))
        if not flows:
            raise ValueError("no episodes to build a flow pool from")
        pool = cls(
            images=None,
            actions=np.concatenate(targets) if labelled else None,
            flows=np.concatenate(flows).astype(np.float32),
            deltas=np.concatenate(deltas) if labelled else None,
            groups=np.concatenate(groups),
        )
        pool.code(config.flow_max_radius)
        return pool

    def code(self, max_radius: float) -> None:
        """(Re)code the flow fields as images at ``max_radius``."""
        if self.flows is None:
            raise ValueError("this pool holds images only; nothing to recode")
        self.images = flows_to_images(self.flows, max_radius)

    def magnitude_percentile(self, percentile: float) -> float:
        return float(np.percentile(np.hypot(self.flows[..., 0], self.flows[..., 1]), percentile))

    def normalise_targets(self, mean: np.ndarray, std: np.ndarray) -> None:
        self.actions = ((self.actions - mean) / std).astype(np.float32)

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
    max_minutes: float | None = None,
) -> list[dict[str, float]]:
    """Train the VAE with AdamW for ``steps`` (or until ``max_minutes`` have passed); returns the per-step losses."""
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    model.train()
    history = []
    deadline = None if max_minutes is None else time.monotonic() + 60.0 * max_minutes
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
        if deadline is not None and time.monotonic() > deadline:
            logger.info("stopped at step %d: --max-minutes %.1f reached", len(history), max_minutes)
            break
    return history


# ---------------------------------------------------------------------------------------------
# The quality probe
# ---------------------------------------------------------------------------------------------


def linear_probe_r2(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> dict[str, Any]:
    """Least-squares probe y ~ [x, 1] W fitted on (train_x, train_y), scored on the test pairs.

    Targets are scaled per dimension by their training std (dimensions that never move in training are
    dropped), so ``r2`` = 1 - sum SSE / sum SST over dimensions weighs every joint by its held-out variance
    in training stds; ``r2_per_dim`` is per kept dimension (None for the dropped ones) and
    ``r2_mean_per_dim`` their mean. A joint that barely moves in the held-out episodes but is predicted
    to move gets a negative R^2 of its own.
    """
    train_y, test_y = np.asarray(train_y, np.float64), np.asarray(test_y, np.float64)
    std = train_y.std(axis=0)
    kept = std > 1e-6 * max(float(std.max()), 1e-12)
    if not kept.any():
        raise ValueError("the probe's targets never change in the training episodes")
    design = np.concatenate([np.asarray(train_x, np.float64), np.ones((len(train_x), 1))], axis=1)
    weights, *_ = np.linalg.lstsq(design, train_y[:, kept] / std[kept], rcond=None)
    test_design = np.concatenate([np.asarray(test_x, np.float64), np.ones((len(test_x), 1))], axis=1)
    prediction = test_design @ weights
    target = test_y[:, kept] / std[kept]
    sse = ((prediction - target) ** 2).sum(axis=0)
    sst = ((target - target.mean(axis=0)) ** 2).sum(axis=0)
    per_dim: list[float | None] = [None] * train_y.shape[1]
    for column, (error, total) in zip(np.flatnonzero(kept), zip(sse, sst)):
        per_dim[int(column)] = float(1 - error / total) if total > 0 else None
    scored = [value for value in per_dim if value is not None]
    return {
        "r2": float(1 - sse.sum() / max(sst.sum(), 1e-12)),
        "r2_mean_per_dim": float(np.mean(scored)) if scored else None,  # sklearn's "uniform_average"
        "r2_per_dim": per_dim,
        "test_rows": len(test_x),
    }


@torch.no_grad()
def encode_images(model: LatentActionVAE, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """uint8 flow images [N, S, S, 3] -> latent means float32 [N, latent_dim]."""
    model.eval()
    device = next(model.parameters()).device
    means = [
        model.encode(images_to_tensor(images[start : start + batch_size]).to(device))[0].float().cpu().numpy()
        for start in range(0, len(images), batch_size)
    ]
    return np.concatenate(means)


def probe_vae(model: LatentActionVAE, train: FlowPairPool, test: FlowPairPool) -> dict[str, Any]:
    """Linear-probe R^2 of the VAE's latent mean against the action deltas (over its stride) of ``test``,
    the probe fitted on ``train``. Both pools must be labelled and coded at the model's radius."""
    if train.deltas is None or test.deltas is None:
        raise ValueError("the probe needs labelled pools (action deltas)")
    return linear_probe_r2(
        encode_images(model, train.images), train.deltas, encode_images(model, test.images), test.deltas
    )


# ---------------------------------------------------------------------------------------------
# The whole training run: pools, flow scale, training, probe, save
# ---------------------------------------------------------------------------------------------


def split_episodes(num_episodes: int, holdout_fraction: float, rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """(training episodes, held-out episodes): round(fraction * n) held out, at least one when the fraction
    is positive; at least one left for training."""
    if holdout_fraction <= 0:
        return list(range(num_episodes)), []
    held = max(1, int(round(holdout_fraction * num_episodes)))
    if held >= num_episodes:
        raise ValueError(
            f"holding out {held} of {num_episodes} labelled episodes leaves none to train on; "
            "add episodes or lower --holdout (0 skips the probe)"
        )
    order = rng.permutation(num_episodes)
    return sorted(int(e) for e in order[held:]), sorted(int(e) for e in order[:held])


def fit_latent_action_vae(
    config: LatentActionVAEConfig,
    labelled_paths: list[str | Path],
    unlabelled_paths: list[str | Path],
    output: str | Path,
    steps: int,
    batch_size: int = 32,
    learning_rate: float = 1e-4,
    seed: int = 0,
    every: int = 1,
    holdout_fraction: float = 0.2,
    max_minutes: float | None = None,
    estimator: FlowEstimator | None = None,
) -> dict[str, Any]:
    """Train a latent-action VAE end to end and save it (config.json, model.safetensors, metrics.json).

    1. fps and flow width are taken from the first dataset (all must match the fps); the flow fields of
       every ``every``-th row are computed (held-out labelled episodes apart);
    2. the flow scale: ``flow_max_radius`` = the ``flow_scale_percentile``-th percentile of the training
       flows' magnitudes (unless that is None); alignment targets are normalised by their mean/std;
    3. training; 4. the probe on the held-out labelled episodes. Returns the metrics (also written).
    """
    output = Path(output)
    if output.exists() and any(output.iterdir()):
        raise FileExistsError(f"--output {output} already exists and is not empty; choose a new folder")
    if not labelled_paths and not unlabelled_paths:
        raise ValueError("give --labelled and/or --unlabelled datasets")
    labelled_sets = [LeRobotDataset(path) for path in labelled_paths]
    unlabelled_sets = [LeRobotDataset(path) for path in unlabelled_paths]
    first = (labelled_sets or unlabelled_sets)[0]
    if config.fps is None:
        config = replace(config, fps=first.fps)
    if config.flow_width is None:
        key = CAMERA_ROLE_KEYS["high"] if config.camera_key == COMPOSITE_CAMERA else config.camera_key
        check_dataset(first, config, needs_actions=False)
        config = replace(config, flow_width=int(first.frames(0, key).shape[2]))
    for dataset in labelled_sets + unlabelled_sets:
        check_dataset(dataset, config, needs_actions=dataset in labelled_sets)
    estimator = estimator or make_flow_estimator(config.flow_estimator)
    rng = np.random.default_rng(seed)
    splits = [split_episodes(d.num_episodes, holdout_fraction, rng) for d in labelled_sets]
    started = time.monotonic()
    labelled = heldout = unlabelled = None
    if labelled_sets:
        labelled = FlowPairPool.from_datasets(labelled_sets, config, True, estimator, every, [s[0] for s in splits])
        if holdout_fraction > 0:
            # every row of the held-out episodes: the probe is scored where labelling would write
            heldout = FlowPairPool.from_datasets(labelled_sets, config, True, estimator, 1, [s[1] for s in splits])
    if unlabelled_sets:
        unlabelled = FlowPairPool.from_datasets(unlabelled_sets, config, False, estimator, every)
    training_pools = [pool for pool in (labelled, unlabelled) if pool is not None]
    radius_before = config.flow_max_radius
    white_before = near_white_share(np.concatenate([pool.images for pool in training_pools]))
    magnitudes = np.concatenate([np.hypot(p.flows[..., 0], p.flows[..., 1]).ravel() for p in training_pools])
    percentiles = {f"p{q}": float(np.percentile(magnitudes, q)) for q in (50, 90, 99, 99.9)}
    if config.flow_scale_percentile is not None:
        radius = float(np.percentile(magnitudes, config.flow_scale_percentile))
        if radius <= 0:
            raise ValueError(
                f"the training flows' {config.flow_scale_percentile}th percentile magnitude is 0 (nothing moves); "
                "raise --stride or give --flow-max-radius"
            )
        config = replace(config, flow_max_radius=radius)
        for pool in training_pools + ([heldout] if heldout is not None else []):
            pool.code(radius)
    white_after = near_white_share(np.concatenate([pool.images for pool in training_pools]))
    target_stats = None
    if labelled is not None:
        mean, std = labelled.actions.mean(axis=0), np.maximum(labelled.actions.std(axis=0), 1e-6)
        labelled.normalise_targets(mean, std)
        target_stats = {"mean": mean.tolist(), "std": std.tolist()}
    flow_seconds = time.monotonic() - started
    torch.manual_seed(seed)
    model = LatentActionVAE(config)
    started = time.monotonic()
    history = train_latent_action_vae(model, labelled, unlabelled, steps, batch_size, learning_rate, seed, max_minutes)
    train_seconds = time.monotonic() - started
    probe = None
    if heldout is not None:
        probe = probe_vae(model, labelled, heldout)  # the probe reads the raw deltas, never normalised
    metrics = {
        "probe": probe,
        "probe_note": "linear least-squares probe of the 14-d latent mean -> action deltas over the stride, "
        "fitted on the training episodes, R^2 on the held-out episodes"
        if probe
        else "no held-out labelled episodes (no --labelled data or --holdout 0): no probe",
        "heldout_episodes": {str(p): s[1] for p, s in zip(labelled_paths, splits)},
        "camera": config.camera_key,
        "frame_stride": config.frame_stride,
        "fps": config.fps,
        "flow_width": config.flow_width,
        "alignment_target": config.alignment_target,
        "flow_max_radius": config.flow_max_radius,
        "flow_max_radius_before": radius_before,
        "flow_magnitude_percentiles": percentiles,
        "near_white_share": {"at_given_radius": white_before, "at_data_radius": white_after},
        "alignment_target_stats": target_stats,
        "training_rows": {
            "labelled": len(labelled) if labelled else 0,
            "unlabelled": len(unlabelled) if unlabelled else 0,
        },
        "steps": len(history),
        "final_losses": history[-1] if history else None,
        "seconds": {"flow": flow_seconds, "training": train_seconds},
    }
    model.save_pretrained(output)
    _write_json_atomic(output / METRICS_FILE, metrics)
    return metrics


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(data, indent=2))
    os.replace(temporary, path)


def read_metrics(vae_folder: str | Path) -> dict[str, Any] | None:
    """A VAE folder's metrics.json, or None when it has none (trained before the probe existed)."""
    path = Path(vae_folder) / METRICS_FILE
    return json.loads(path.read_text()) if path.is_file() else None


# ---------------------------------------------------------------------------------------------
# Labelling
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def label_dataset(
    dataset_root: str | Path,
    model: LatentActionVAE,
    estimator: FlowEstimator | None = None,
    column: str = LATENT_ACTION_KEY,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Write the latent-action mean of every row into the dataset as a new float column (and its stats).

    The flow is computed as at training (the VAE's camera, stride, flow width and radius); a dataset
    whose frame rate, cameras or action width the VAE does not fit is refused before anything is
    computed, and the column is written atomically (``LeRobotDataset.add_vector_column``). Returns the
    column's stats.
    """
    config = model.config
    estimator = estimator or make_flow_estimator(config.flow_estimator)
    dataset = LeRobotDataset(dataset_root, load_stats=False)
    check_dataset(dataset, config, needs_actions=False)
    per_episode = []
    for episode in tqdm(range(dataset.num_episodes), desc="latent actions"):
        per_episode.append(encode_images(model, episode_flow_images(dataset, episode, config, estimator), batch_size))
    dataset.add_vector_column(column, per_episode)
    logger.info("labelled %d episodes of %s with %s", dataset.num_episodes, dataset_root, column)
    return dataset.stats[column]
