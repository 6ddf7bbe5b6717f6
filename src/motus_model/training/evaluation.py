"""Held-out loss per mode (the trainer's evaluation; the generative modes against baselines: generative_eval).

Each of the five modes fixes how the two modalities are treated (flow_matching.Mode): a CLEAN
modality is given at sigma 0, a MARGINALISED one is pure noise at sigma 1, a DENOISED one gets a
training sigma. The held-out loss of a mode is the rectified-flow MSE of its denoised modalities
under exactly that treatment, e.g. VLA = action loss with the future video marginalised, IDM =
action loss with the future video clean, world model = video loss with clean actions (and, as
``video_other_actions``, with another sample's: the action gap). Noise and sigmas come from a fixed seed,
so numbers are comparable across evaluations.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F

from motus_model.flow_matching import FlowMatchSchedule, Mode, Treatment
from motus_model.modeling_motus import MotusModel

logger = logging.getLogger(__name__)


def _sigma(treatment: Treatment, sampled: torch.Tensor) -> torch.Tensor:
    if treatment is Treatment.CLEAN:
        return torch.zeros_like(sampled)
    if treatment is Treatment.MARGINALISED:
        return torch.ones_like(sampled)
    return sampled


@torch.no_grad()
def mode_losses(
    model: MotusModel,
    batch: Mapping[str, Any],
    mode: Mode,
    generator: torch.Generator,
    schedule: FlowMatchSchedule,
) -> dict[str, float]:
    """Losses of the modalities ``mode`` denoises, for one encoded batch (``features.encode_batch`` keys)."""
    video_x0 = batch["video_latents"].float()
    actions_x0 = batch["actions"].float()
    size, device = video_x0.shape[0], video_x0.device
    video_sampled, action_sampled = schedule.sample_training_sigmas(size, generator, device)
    video_sigma = _sigma(mode.video, video_sampled)
    action_sigma = _sigma(mode.actions, action_sampled)
    video_noise = torch.randn(video_x0.shape, generator=generator, device=generator.device).to(device)
    action_noise = torch.randn(actions_x0.shape, generator=generator, device=generator.device).to(device)
    noisy_video = (1 - video_sigma.view(-1, 1, 1, 1, 1)) * video_x0 + video_sigma.view(-1, 1, 1, 1, 1) * video_noise
    noisy_video[:, :, 0] = video_x0[:, :, 0]
    noisy_actions = (1 - action_sigma.view(-1, 1, 1)) * actions_x0 + action_sigma.view(-1, 1, 1) * action_noise
    state = batch["state"] if model.config.uses_state else None
    conditioning = model.prepare_conditioning(
        batch["text_context"], batch.get("text_mask"), batch["vlm_hidden"], batch.get("vlm_mask")
    )
    video_pred, action_pred = model(noisy_video, video_sigma, noisy_actions, action_sigma, state, conditioning)
    video_target = (video_noise - video_x0)[:, :, 1:]
    losses = {}
    if mode.video is Treatment.DENOISED:
        losses["video"] = float(F.mse_loss(video_pred[:, :, 1:], video_target))
    if mode is Mode.WORLD_MODEL and size > 1:
        # The action gap in loss terms: the same noisy frames given the next sample's actions. A world model
        # that reads its actions predicts clearly worse with them; one that ignores them does not.
        other_pred, _ = model(
            noisy_video, video_sigma, noisy_actions.roll(1, 0), action_sigma, state, conditioning, need_actions=False
        )
        losses["video_other_actions"] = float(F.mse_loss(other_pred[:, :, 1:], video_target))
    if mode.actions is Treatment.DENOISED:
        losses["action"] = float(F.mse_loss(action_pred, action_noise - actions_x0))
    return losses


def evaluate_modes(
    model: MotusModel,
    batches: Iterable[Mapping[str, Any]],
    seed: int = 1234,
    with_actions: bool = True,
) -> dict[str, dict[str, float]]:
    """Mean held-out loss per mode over ``batches``: {mode value: {"video"?: x, "action"?: y}}.

    Without actions (video-only data) only the video-generation mode is evaluated.
    """
    schedule = FlowMatchSchedule(model.config.schedule)
    modes = list(Mode) if with_actions else [Mode.VIDEO_GENERATION]
    was_training = model.training
    model.eval()
    totals: dict[str, dict[str, float]] = {mode.value: {} for mode in modes}
    count = 0
    for batch in batches:
        count += 1
        device = batch["video_latents"].device
        for mode in modes:
            generator = torch.Generator(device=device).manual_seed(seed + 7919 * count)
            for name, value in mode_losses(model, batch, mode, generator, schedule).items():
                totals[mode.value][name] = totals[mode.value].get(name, 0.0) + value
    model.train(was_training)
    if count == 0:
        raise ValueError("no evaluation batches")
    return {mode: {name: value / count for name, value in losses.items()} for mode, losses in totals.items()}
