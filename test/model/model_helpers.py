"""Inputs for MotusModel tests on the tiny preset (shared by the model test files)."""

import dataclasses

import torch

from motus_model.config import MotusConfig


def tiny_config(**overrides) -> MotusConfig:
    return dataclasses.replace(MotusConfig.preset("motus-tiny"), **overrides)


def make_inputs(config: MotusConfig, batch: int, seed: int = 0, grid=None):
    """(latents, video_sigma, actions, action_sigma, state, text, vlm): forward_uncached's positional inputs."""
    generator = torch.Generator().manual_seed(seed)
    frames, height, width = grid or config.latent_grid()
    latents = torch.randn(batch, config.video.latent_channels, frames, height, width, generator=generator)
    actions = torch.randn(batch, config.temporal.action_chunk, config.action.action_dim, generator=generator)
    state = torch.randn(batch, config.action.state_dim, generator=generator) if config.uses_state else None
    video_sigma = torch.rand(batch, generator=generator)
    action_sigma = torch.rand(batch, generator=generator)
    text = torch.randn(batch, 6, config.video.text_dim, generator=generator)
    vlm = torch.randn(batch, 9, config.understanding.vlm_dim, generator=generator)
    return latents, video_sigma, actions, action_sigma, state, text, vlm
