"""The latent-action VAE: losses fall, labelled/unlabelled mixing, save/load, and labelling a dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from motus_model.data.lerobot import LeRobotDataset
from motus_model.latent_actions import LatentActionVAE, LatentActionVAEConfig, flow_to_image, label_dataset
from motus_model.latent_actions.train import FlowPairPool, draw_vae_batch, train_latent_action_vae


def synthetic_pools(config: LatentActionVAEConfig, count: int = 64, seed: int = 0):
    """Uniform flow fields of random direction and speed; the 'real action' is (dx, dy) scaled, zero-padded."""
    rng = np.random.default_rng(seed)
    images, actions = [], []
    for _ in range(count):
        motion = rng.uniform(-1, 1, size=2) * config.flow_max_radius
        flow = np.tile(motion, (config.image_size, config.image_size, 1))
        images.append(flow_to_image(flow, max_radius=config.flow_max_radius).image)
        action = np.zeros(config.latent_dim, dtype=np.float32)
        action[:2] = motion / config.flow_max_radius
        actions.append(action)
    images = np.stack(images)
    return FlowPairPool(images[: count // 2], np.stack(actions[: count // 2])), FlowPairPool(images[count // 2 :], None)


@pytest.mark.timeout(180)
def test_losses_fall():
    torch.manual_seed(0)
    config = LatentActionVAEConfig(labelled_fraction=0.5, kl_weight=1e-4)
    model = LatentActionVAE(config)
    assert config.num_tokens == 16 and config.token_dim == 16
    labelled, unlabelled = synthetic_pools(config)
    history = train_latent_action_vae(model, labelled, unlabelled, steps=60, batch_size=16, learning_rate=3e-3)
    first = {k: np.mean([h[k] for h in history[:5]]) for k in ("loss", "reconstruction", "alignment")}
    last = {k: np.mean([h[k] for h in history[-5:]]) for k in ("loss", "reconstruction", "alignment")}
    assert last["loss"] < 0.85 * first["loss"], (first, last)
    assert last["reconstruction"] < 0.9 * first["reconstruction"], (first, last)
    assert last["alignment"] < 0.5 * first["alignment"], (first, last)


def test_alignment_counts_only_labelled_samples():
    config = LatentActionVAEConfig(kl_weight=0.0)
    model = LatentActionVAE(config)
    images = torch.zeros(4, 3, 16, 16)
    mean, _ = model.encode(images)
    actions = mean.detach().clone()
    actions[2:] += 10.0  # far off, but unlabelled
    losses = model(images, actions, torch.tensor([True, True, False, False]))
    assert losses["alignment"].item() == pytest.approx(0.0, abs=1e-10)
    losses = model(images, actions, torch.tensor([False, False, True, False]))
    assert losses["alignment"].item() == pytest.approx(100.0, rel=1e-4)


def test_batch_mixing_fraction():
    config = LatentActionVAEConfig()
    labelled, unlabelled = synthetic_pools(config, count=8)
    rng = np.random.default_rng(0)
    batch = draw_vae_batch(rng, labelled, unlabelled, 4000, labelled_fraction=0.1, latent_dim=14)
    assert abs(batch["labelled"].float().mean().item() - 0.1) < 0.02
    assert batch["flow_images"].shape == (4000, 3, 16, 16)
    assert torch.all(batch["actions"][~batch["labelled"]] == 0)


def test_save_load_round_trip(tmp_path):
    model = LatentActionVAE(LatentActionVAEConfig())
    model.save_pretrained(tmp_path / "vae")
    assert json.loads((tmp_path / "vae" / "config.json").read_text())["latent_dim"] == 14
    loaded = LatentActionVAE.from_pretrained(tmp_path / "vae")
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    torch.testing.assert_close(loaded.encode(images)[0], model.encode(images)[0])


def test_published_shape_is_four_tokens_of_512():
    config = LatentActionVAEConfig.published()
    assert (config.num_tokens, config.token_dim, config.latent_dim) == (4, 512, 14)
    with torch.device("meta"):
        model = LatentActionVAE(config)
    assert model.encoder[1].in_features == 4 * 512


@pytest.mark.timeout(60)
def test_label_dataset_adds_latent_action_column(tiny_dataset):
    root, written = tiny_dataset
    config = LatentActionVAEConfig(image_size=16)
    model = LatentActionVAE(config)
    stats = label_dataset(root, model)
    dataset = LeRobotDataset(root)
    latent = dataset.vectors(0)["latent_action"]
    assert latent.shape == (24, 14) and np.all(np.isfinite(latent))
    assert len(stats["mean"]) == 14 and "latent_action" in dataset.stats
    info = json.loads((root / "meta" / "info.json").read_text())
    assert info["features"]["latent_action"]["shape"] == [14]
    # the real columns are untouched
    np.testing.assert_array_equal(dataset.vectors(0)["action"], written[0]["action"])


def test_the_shipped_vae_loads_and_carries_its_probe_figure():
    from pathlib import Path

    from motus_model.latent_actions.train import images_to_tensor

    root = Path(__file__).resolve().parents[2] / "models" / "latent-action-vae-aloha"
    vae = LatentActionVAE.from_pretrained(root).eval()
    metrics = json.loads((root / "metrics.json").read_text())
    config = vae.config
    # what labelling checks a dataset against, and what the model card says
    assert (config.frame_stride, config.camera_key, config.latent_dim) == (2, "composite", 14)
    assert metrics["frame_stride"] == config.frame_stride and metrics["camera"] == config.camera_key
    assert metrics["flow_max_radius"] == pytest.approx(config.flow_max_radius)
    assert metrics["probe"]["r2"] > 0.1  # the card's 0.148: the latent explains part of the held-out motion
    size, radius = config.image_size, config.flow_max_radius
    still = flow_to_image(np.zeros((size, size, 2)), max_radius=radius).image
    moving = flow_to_image(np.tile([0.5 * radius, 0.0], (size, size, 1)), max_radius=radius).image
    with torch.no_grad():
        means, _ = vae.encode(images_to_tensor(np.stack([still, moving])))
    assert torch.isfinite(means).all() and (means[1] - means[0]).norm() > 0.1  # motion moves the latent
