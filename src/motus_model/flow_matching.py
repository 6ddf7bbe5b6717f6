"""Rectified flow for Motus: the shifted sigma schedule, the training loss, the sampler, five modes.

Convention (as the reference): x_sigma = (1 - sigma) * x0 + sigma * eps, velocity target
v = eps - x0, so an Euler step from sigma to sigma' is x + (sigma' - sigma) * v.
Video and actions carry independent sigmas (UniDiffuser style); at inference each modality
is CLEAN (given, sigma 0), DENOISED (Euler from 1 to 0) or MARGINALISED (pure noise held at
sigma 1, never updated), which gives the five modes of the paper from one network.
``sample`` is ``initial_latents`` followed by ``euler_step`` per step; the serving engine runs
the same two pieces in its own loop (per-request noise, cancellation between steps).

Batches for ``flow_matching_loss`` are mappings with these keys (B = batch):

    video_latents  [B, C, F, H, W] clean latents; latent frame 0 is the conditioning frame
    actions        [B, chunk, action_dim] clean actions (latent actions in pretrain mode)
    state          [B, state_dim] (finetune) or None / absent (pretrain)
    text_context   [B, L_t, text_dim];  text_mask [B, L_t] bool or None / absent
    vlm_hidden     [B, L_u, vlm_dim];   vlm_mask  [B, L_u] bool or None / absent
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

from motus_model.config import MotusConfig, ScheduleConfig
from motus_model.modeling_motus import MotusConditioning, MotusModel

logger = logging.getLogger(__name__)


class SamplingCancelled(RuntimeError):
    """Raised by ``sample`` when ``should_cancel()`` returns True between two steps."""


# ----------------------------------------------------------------------------------------
# Schedule
# ----------------------------------------------------------------------------------------


def shift_sigmas(u: torch.Tensor, shift: float) -> torch.Tensor:
    """sigma = shift * u / (1 + (shift - 1) * u) (maps 0 -> 0 and 1 -> 1)."""
    return shift * u / (1.0 + (shift - 1.0) * u)


class FlowMatchSchedule:
    """The training table and the inference grids of the reference's ``FlowMatchScheduler``.

    The training table has ``num_train_timesteps`` sigmas, shifted from u = 1 down to
    u = 1 / num_train_timesteps (shift 5: median ~0.83, minimum ~0.005).
    """

    def __init__(self, config: ScheduleConfig) -> None:
        self.config = config
        count = config.num_train_timesteps
        u = torch.linspace(1.0, 1.0 / count, count, dtype=torch.float64)
        self.training_sigmas = shift_sigmas(u, config.shift).float()

    def sample_training_sigmas(
        self, batch_size: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Independent uniform table indices for video and for actions: two [B] tensors."""
        gen_device = generator.device if generator is not None else torch.device("cpu")
        count = self.config.num_train_timesteps
        video_index = torch.randint(0, count, (batch_size,), generator=generator, device=gen_device)
        action_index = torch.randint(0, count, (batch_size,), generator=generator, device=gen_device)
        table = self.training_sigmas.to(gen_device)
        return table[video_index].to(device), table[action_index].to(device)

    def inference_sigmas(self, steps: int | None = None, kind: str | None = None) -> torch.Tensor:
        """[steps + 1] sigmas from 1 to 0. ``linear`` is the reference's unshifted grid."""
        steps = self.config.inference_steps if steps is None else steps
        kind = self.config.inference_sigmas if kind is None else kind
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        grid = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
        if kind == "linear":
            return grid.float()
        if kind == "shifted":
            return shift_sigmas(grid, self.config.shift).float()
        raise ValueError(f"sigma grid must be 'linear' or 'shifted', got {kind!r}")


# ----------------------------------------------------------------------------------------
# Training loss
# ----------------------------------------------------------------------------------------


def _get(batch: Mapping[str, torch.Tensor | None], key: str, required: bool = True) -> torch.Tensor | None:
    if key not in batch or batch[key] is None:
        if required:
            raise ValueError(f"batch is missing {key!r}; it has keys {sorted(batch)}")
        return None
    return batch[key]


def flow_matching_loss(
    model: MotusModel,
    batch: Mapping[str, torch.Tensor | None],
    config: MotusConfig | None = None,
    generator: torch.Generator | None = None,
    schedule: FlowMatchSchedule | None = None,
    mode_mix: Mapping[str, float] | None = None,
    video_only: bool = False,
    dataset_mode_shares: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Rectified-flow loss with independent video/action sigmas.

    ``video_only`` (stage 1): the video expert alone through ``MotusModel.forward_video_only``; the action
    and understanding experts are not run, the batch's actions and VLM features are ignored, the action
    loss is 0.

    The conditioning latent frame (frame 0) is kept clean and EXCLUDED from the video loss:
    the MSE is a mean over the future frames only (unlike the reference, which zeroes frame 0
    but still counts it in the mean, weighting future frames 2/3).

    ``mode_mix`` ({mode value: share}, see ``training_sigmas``): each sample is drawn as one of the five
    modes; a modality the mode gives CLEAN is fed at sigma 0 and gets no loss (its target would be the
    noise, which nothing in the input tells), a MARGINALISED one is fed at sigma 1 (its loss kept: it is
    the flow's own sigma-1 point). None keeps the plain independent shifted draws.

    ``dataset_mode_shares`` [num_datasets, 5] (``dataset_mode_shares``): per source dataset, the shares its
    samples draw their mode with (``batch["dataset_index"]`` picks the row); None: ``mode_mix`` for all.

    Returns:
        total loss (scalar tensor with grad) and {"video": float, "action": float, "loss": float}.
    """
    config = model.config if config is None else config
    schedule = FlowMatchSchedule(config.schedule) if schedule is None else schedule
    video_x0 = _get(batch, "video_latents").float()
    actions_x0 = _get(batch, "actions").float()
    if video_x0.ndim != 5 or video_x0.shape[2] < 2:
        raise ValueError(
            f"video_latents must be [B, C, F>=2, H, W] (conditioning + future), got {tuple(video_x0.shape)}"
        )
    batch_size = video_x0.shape[0]
    device = video_x0.device
    gen_device = generator.device if generator is not None else device
    if video_only:
        return _video_only_loss(model, batch, config, schedule, video_x0, generator, gen_device)

    row_shares = None
    if dataset_mode_shares is not None:  # without mode mixing (mode_mix None) training_sigmas ignores it
        row_shares = dataset_mode_shares.to(gen_device)[_get(batch, "dataset_index").to(gen_device)]
    video_sigma, action_sigma, video_weight, action_weight = training_sigmas(
        schedule, batch_size, generator, device, mode_mix, row_shares
    )
    video_noise = torch.randn(video_x0.shape, generator=generator, device=gen_device).to(device)
    action_noise = torch.randn(actions_x0.shape, generator=generator, device=gen_device).to(device)

    noisy_video = _noisy_video(video_x0, video_sigma, video_noise)
    noisy_actions = (1 - action_sigma.view(-1, 1, 1)) * actions_x0 + action_sigma.view(-1, 1, 1) * action_noise

    video_pred, action_pred = model.forward_uncached(
        noisy_video,
        video_sigma,
        noisy_actions,
        action_sigma,
        _get(batch, "state", required=False),
        _get(batch, "text_context"),
        _get(batch, "vlm_hidden"),
        text_mask=_get(batch, "text_mask", required=False),
        vlm_mask=_get(batch, "vlm_mask", required=False),
    )
    video_target = video_noise - video_x0
    action_target = action_noise - actions_x0
    if video_weight is None:
        # Future frames only: frame 0 contributes to neither the sum nor the count.
        video_loss = F.mse_loss(video_pred[:, :, 1:], video_target[:, :, 1:])
        action_loss = F.mse_loss(action_pred, action_target)
    else:
        video_loss = _masked_mean((video_pred[:, :, 1:] - video_target[:, :, 1:]).pow(2), video_weight)
        action_loss = _masked_mean((action_pred - action_target).pow(2), action_weight)
    total = config.loss.video_weight * video_loss + config.loss.action_weight * action_loss
    return total, {
        "loss": float(total.detach()),
        "video": float(video_loss.detach()),
        "action": float(action_loss.detach()),
    }


def _noisy_video(video_x0: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """x_sigma = (1 - sigma) x0 + sigma noise per sample, the conditioning frame kept clean (teacher forcing)."""
    noisy = (1 - sigma.view(-1, 1, 1, 1, 1)) * video_x0 + sigma.view(-1, 1, 1, 1, 1) * noise
    noisy[:, :, 0] = video_x0[:, :, 0]
    return noisy


def _video_only_loss(
    model: MotusModel,
    batch: Mapping[str, torch.Tensor | None],
    config: MotusConfig,
    schedule: FlowMatchSchedule,
    video_x0: torch.Tensor,
    generator: torch.Generator | None,
    gen_device: torch.device,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The stage-1 loss: the same video sigma draw, noise and target as the full loss, the video expert alone."""
    device = video_x0.device
    video_sigma, _ = schedule.sample_training_sigmas(video_x0.shape[0], generator, device)
    video_noise = torch.randn(video_x0.shape, generator=generator, device=gen_device).to(device)
    noisy_video = _noisy_video(video_x0, video_sigma, video_noise)
    conditioning = model.prepare_conditioning(
        _get(batch, "text_context"), _get(batch, "text_mask", required=False), None, None
    )
    video_pred = model.forward_video_only(noisy_video, video_sigma, conditioning)
    video_loss = F.mse_loss(video_pred[:, :, 1:], (video_noise - video_x0)[:, :, 1:])
    total = config.loss.video_weight * video_loss
    return total, {"loss": float(total.detach()), "video": float(video_loss.detach()), "action": 0.0}


def _masked_mean(squared: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean over the samples with weight 1 (each sample's own mean first; all samples have the same size).
    With no such sample it is 0, still attached to the graph (every parameter keeps a gradient for DDP)."""
    per_sample = squared.flatten(1).mean(dim=1)
    return (per_sample * weight).sum() / weight.sum().clamp_min(1.0)


# ----------------------------------------------------------------------------------------
# Mode mixing (UniDiffuser style): every conditional of the five modes trained
# ----------------------------------------------------------------------------------------

# Shares of the five modes in a training batch. The shifted schedule alone never draws sigma 0 and draws
# sigma <= 0.05 1% of the time, so the world model (actions given) and the IDM (video given) were ~1% of
# training each; these shares give every mode a real part. Joint and VLA keep the most: they train the
# action denoiser the policy uses, so the policy's share of action-loss samples stays 60% (joint + VLA).
DEFAULT_MODE_MIX: dict[str, float] = {
    "joint": 0.3,
    "vla": 0.3,
    "world_model": 0.15,
    "idm": 0.15,
    "video_generation": 0.1,
}


def check_mode_mix(mode_mix: Mapping[str, float]) -> dict[str, float]:
    """The shares normalised to sum 1, in ``Mode`` order; a clear error for an unknown mode or a bad share."""
    names = [mode.value for mode in Mode]
    unknown = sorted(set(mode_mix) - set(names))
    if unknown:
        raise ValueError(f"mode_mix: unknown modes {unknown}; expected some of {names}")
    values = {name: float(mode_mix.get(name, 0.0)) for name in names}
    if any(value < 0 or value != value for value in values.values()) or sum(values.values()) <= 0:
        raise ValueError(f"mode_mix: shares must be >= 0 with a positive sum, got {dict(mode_mix)}")
    total = sum(values.values())
    return {name: value / total for name, value in values.items()}


def modality_probabilities(mode_mix: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """What a mode mix means per modality: {"video"|"actions": {"clean", "marginalised", "shifted"}}."""
    shares = check_mode_mix(mode_mix)
    result: dict[str, dict[str, float]] = {}
    for modality in ("video", "actions"):
        counts = {"clean": 0.0, "marginalised": 0.0, "shifted": 0.0}
        for mode in Mode:
            treatment = getattr(mode, modality)
            key = {Treatment.CLEAN: "clean", Treatment.MARGINALISED: "marginalised"}.get(treatment, "shifted")
            counts[key] += shares[mode.value]
        result[modality] = counts
    return result


def training_sigmas(
    schedule: FlowMatchSchedule,
    batch_size: int,
    generator: torch.Generator | None,
    device: torch.device | str,
    mode_mix: Mapping[str, float] | None = None,
    row_shares: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(video_sigma, action_sigma, video_loss_weight, action_loss_weight), each [B].

    ``row_shares`` [B, 5] (in ``Mode`` order): each sample's own shares, in place of ``mode_mix``'s (per-dataset
    mixes, ``dataset_mode_shares``); ``mode_mix`` must still be given (None means no mode mixing at all).

    The shifted draws come first (so without a mix the RNG stream is the plain one); with a mix, one mode per
    sample is then drawn with the mix's shares and each modality is set by the mode's treatment: CLEAN ->
    sigma 0 and loss weight 0, MARGINALISED -> sigma 1, DENOISED -> the shifted draw. Without a mix the
    weights are None (every sample counts).
    """
    video_sigma, action_sigma = schedule.sample_training_sigmas(batch_size, generator, device)
    if mode_mix is None:
        return video_sigma, action_sigma, None, None
    if row_shares is None:
        modes = draw_training_modes(mode_mix, batch_size, generator, device)
    else:
        modes = torch.multinomial(row_shares.double(), 1, generator=generator).squeeze(1).to(device)
    video_weight = torch.ones(batch_size, device=device)
    action_weight = torch.ones(batch_size, device=device)
    for index, mode in enumerate(Mode):
        rows = modes == index
        for sigma, weight, treatment in (
            (video_sigma, video_weight, mode.video),
            (action_sigma, action_weight, mode.actions),
        ):
            if treatment is Treatment.CLEAN:
                sigma[rows] = 0.0
                weight[rows] = 0.0
            elif treatment is Treatment.MARGINALISED:
                sigma[rows] = 1.0
    return video_sigma, action_sigma, video_weight, action_weight


def draw_training_modes(
    mode_mix: Mapping[str, float], batch_size: int, generator: torch.Generator | None, device: torch.device | str
) -> torch.Tensor:
    """[B] indices into ``list(Mode)``, drawn with the mix's shares."""
    shares = check_mode_mix(mode_mix)
    gen_device = generator.device if generator is not None else torch.device("cpu")
    probabilities = torch.tensor([shares[mode.value] for mode in Mode], dtype=torch.float64, device=gen_device)
    return torch.multinomial(probabilities, batch_size, replacement=True, generator=generator).to(device)


def dataset_mode_shares(
    mode_mix: Mapping[str, float] | None, dataset_mixes: Sequence[Mapping[str, float] | None]
) -> torch.Tensor | None:
    """[num_datasets, 5] shares in ``Mode`` order: each dataset's own mix, else ``mode_mix``. None when no dataset
    has its own (the batch then draws with ``mode_mix`` alone, the RNG stream unchanged)."""
    if all(mix is None for mix in dataset_mixes):
        return None
    if mode_mix is None:
        raise ValueError("a dataset of the mixture has its own mode_mix, but the run has mode mixing off")
    rows = [check_mode_mix(mode_mix if mix is None else mix) for mix in dataset_mixes]
    return torch.tensor([[row[mode.value] for mode in Mode] for row in rows], dtype=torch.float64)


# ----------------------------------------------------------------------------------------
# Modes and the sampler
# ----------------------------------------------------------------------------------------


class Treatment(enum.Enum):
    CLEAN = "clean"  # given, sigma 0 throughout
    DENOISED = "denoised"  # sampled: Euler from sigma 1 to 0
    MARGINALISED = "marginalised"  # pure noise held at sigma 1, never updated


class Mode(str, enum.Enum):  # noqa: UP042 - str(Mode.VLA) stays "Mode.VLA" in messages and logs
    """The five Motus modes (the conditioning frame is always clean)."""

    VLA = "vla"  # p(a | o, l)
    WORLD_MODEL = "world_model"  # p(o' | o, a)
    IDM = "idm"  # p(a | o, o')
    VIDEO_GENERATION = "video_generation"  # p(o' | o, l)
    JOINT = "joint"  # p(o', a | o, l)

    @property
    def video(self) -> Treatment:
        return _TREATMENTS[self][0]

    @property
    def actions(self) -> Treatment:
        return _TREATMENTS[self][1]


# (future video, actions)
_TREATMENTS: dict[Mode, tuple[Treatment, Treatment]] = {
    Mode.VLA: (Treatment.MARGINALISED, Treatment.DENOISED),
    Mode.WORLD_MODEL: (Treatment.DENOISED, Treatment.CLEAN),
    Mode.IDM: (Treatment.CLEAN, Treatment.DENOISED),
    Mode.VIDEO_GENERATION: (Treatment.DENOISED, Treatment.MARGINALISED),
    Mode.JOINT: (Treatment.DENOISED, Treatment.DENOISED),
}


def _noise(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    gen_device = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=gen_device, dtype=torch.float32).to(device)


def treatment_sigma(treatment: Treatment, sigma: float, batch_size: int, device: torch.device | str) -> torch.Tensor:
    """The [B] float32 sigma a modality is fed at grid value ``sigma``: 0 if CLEAN, 1 if MARGINALISED."""
    fixed = {Treatment.CLEAN: 0.0, Treatment.MARGINALISED: 1.0}.get(treatment, sigma)
    return torch.full((batch_size,), fixed, device=device, dtype=torch.float32)


def reachable_video_basis(model: MotusModel, rtol: float = 1e-5) -> torch.Tensor | None:
    """An orthonormal basis [token_width, rank] of what the video head can write, or None if it writes everything.

    The head is ``Linear(dim -> C * prod(patch))`` of a normed hidden state, so every velocity
    token lies in span(W, b). When a token is wider than that rank (pixel-patch latents: 768
    values per token from a 256-wide expert), Euler steps never touch the rest of the initial
    noise: it survives to sigma 0 as static. ``initial_latents`` projects the noise onto this basis.
    """
    head = model.video.head.head
    with torch.no_grad():
        span = torch.cat([head.weight.detach().float(), head.bias.detach().float()[:, None]], dim=1).cpu()
    if span.shape[1] >= span.shape[0]:  # as many columns as token values: assume full rank (the 8B preset)
        return None
    left, singular, _ = torch.linalg.svd(span.double(), full_matrices=False)
    rank = int((singular > rtol * singular.max().clamp_min(1e-30)).sum()) if singular.numel() else 0
    if rank >= span.shape[0]:
        return None
    return left[:, :rank].float()


def project_video_tokens(video: torch.Tensor, basis: torch.Tensor, patch_size: Sequence[int]) -> torch.Tensor:
    """Project every DiT token of ``video`` [B, C, F, H, W] onto ``basis`` [token_width, rank].

    Tokens are laid out as the head writes them (``MotusModel._unpatchify``: p_t, p_h, p_w, C).
    """
    patch_t, patch_h, patch_w = patch_size
    batch, channels, frames, height, width = video.shape
    if frames % patch_t or height % patch_h or width % patch_w:
        raise ValueError(f"latent grid {(frames, height, width)} is not divisible by the patch {tuple(patch_size)}")
    x = video.reshape(
        batch, channels, frames // patch_t, patch_t, height // patch_h, patch_h, width // patch_w, patch_w
    )
    x = x.permute(0, 2, 4, 6, 3, 5, 7, 1)  # [B, F', H', W', p_t, p_h, p_w, C]
    grid_shape = x.shape
    tokens = x.reshape(*grid_shape[:4], -1)
    basis = basis.to(device=tokens.device, dtype=tokens.dtype)
    tokens = (tokens @ basis) @ basis.T
    x = tokens.reshape(grid_shape).permute(0, 7, 1, 4, 2, 5, 3, 6)
    return x.reshape(batch, channels, frames, height, width)


def initial_latents(
    config: MotusConfig,
    mode: Mode | str,
    cond_latent: torch.Tensor,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    given_video: torch.Tensor | None = None,
    given_actions: torch.Tensor | None = None,
    video_basis: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The sampler's starting point: noise everywhere, then the clean parts imposed.

    Args:
        cond_latent: [B, C, 1, H, W] latent of the conditioning frame (becomes video frame 0).
        generator: one generator for the whole batch (future noise [B, ...] then action noise
            [B, ...]), or one per sample (each draws its own future then action noise, so a
            sample's noise does not depend on the batch it is in), or None (global RNG).
        given_video: [B, C, F - 1, H, W], required when the mode holds video clean (IDM).
        given_actions: [B, chunk, action_dim], required when the mode holds actions clean (world model).
        video_basis: ``reachable_video_basis(model)``; when given and the mode DENOISES video, the future
            noise is projected onto it (noise the head cannot reach would otherwise never be removed).
            A MARGINALISED video keeps its full noise: that is what training fed at sigma 1 (the policy path).
    Returns:
        video [B, C, F, H, W] float32 with the conditioning frame first, actions [B, chunk, action_dim] float32.
    """
    mode = Mode(mode)
    if cond_latent.ndim != 5 or cond_latent.shape[2] != 1 or cond_latent.shape[1] != config.video.latent_channels:
        raise ValueError(
            f"cond_latent must be [B, {config.video.latent_channels}, 1, H, W], got {tuple(cond_latent.shape)}"
        )
    batch, channels, _, height, width = cond_latent.shape
    device = cond_latent.device
    future_shape = (batch, channels, config.latent_grid()[0] - 1, height, width)
    action_shape = (batch, config.temporal.action_chunk, config.action.action_dim)

    if generator is None or isinstance(generator, torch.Generator):
        future = _noise(future_shape, generator, device)
        actions = _noise(action_shape, generator, device)
    else:
        generators = list(generator)
        if len(generators) != batch:
            raise ValueError(f"expected one generator per sample ({batch}), got {len(generators)}")
        parts = [
            (_noise((1, *future_shape[1:]), g, device), _noise((1, *action_shape[1:]), g, device)) for g in generators
        ]
        future = torch.cat([future_part for future_part, _ in parts])
        actions = torch.cat([action_part for _, action_part in parts])

    if video_basis is not None and mode.video is Treatment.DENOISED:
        # Drawn first, projected after: the RNG stream (and so the action noise) is unchanged.
        future = project_video_tokens(future, video_basis, config.video.patch_size)
    if mode.video is Treatment.CLEAN:
        future = _given(mode, "given_video", given_video, future_shape, device)
    if mode.actions is Treatment.CLEAN:
        actions = _given(mode, "given_actions", given_actions, action_shape, device)
    return torch.cat([cond_latent.float(), future], dim=2), actions


def _given(
    mode: Mode, name: str, given: torch.Tensor | None, expected: tuple[int, ...], device: torch.device
) -> torch.Tensor:
    """A modality the mode holds clean, checked against its expected shape, as float32 on ``device``."""
    if given is None or tuple(given.shape) != expected:
        raise ValueError(
            f"mode {mode.value} needs {name} {expected}, got {None if given is None else tuple(given.shape)}"
        )
    return given.float().to(device)


def euler_step(
    model: MotusModel,
    mode: Mode,
    video: torch.Tensor,
    actions: torch.Tensor,
    sigma: float,
    sigma_next: float,
    state: torch.Tensor | None,
    conditioning: MotusConditioning,
    cond_latent: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One Euler step from ``sigma`` to ``sigma_next`` of the modalities ``mode`` denoises.

    Args:
        video: [B, C, F, H, W] float32; actions: [B, chunk, action_dim] float32 (as ``initial_latents`` gives).
        state: [B, state_dim] or None; conditioning: ``model.prepare_conditioning(...)`` for the B samples.
        cond_latent: [B, C, 1, H, W], re-imposed on video frame 0 after the update.
    Returns:
        (video, actions), new tensors for the updated modalities; CLEAN and MARGINALISED ones are returned as given.
    """
    batch, device = video.shape[0], video.device
    # Only the velocities the mode updates are computed (the model skips the rest of the last layer).
    video_velocity, action_velocity = model(
        video,
        treatment_sigma(mode.video, sigma, batch, device),
        actions,
        treatment_sigma(mode.actions, sigma, batch, device),
        state,
        conditioning,
        need_video=mode.video is Treatment.DENOISED,
        need_actions=mode.actions is Treatment.DENOISED,
    )
    if mode.video is Treatment.DENOISED:
        video = video + (sigma_next - sigma) * video_velocity.float()
        video[:, :, :1] = cond_latent.float()  # re-impose the clean conditioning frame
    if mode.actions is Treatment.DENOISED:
        actions = actions + (sigma_next - sigma) * action_velocity.float()
    return video, actions


def _sigma_grid(schedule: FlowMatchSchedule, steps: int | None, sigmas: str | torch.Tensor | None) -> torch.Tensor:
    """The [steps + 1] inference grid: a named one from the schedule, or an explicit one checked."""
    if not isinstance(sigmas, torch.Tensor):
        return schedule.inference_sigmas(steps, sigmas)
    grid = sigmas.float().cpu()
    if (
        grid.ndim != 1
        or grid.numel() < 2
        or float(grid[0]) != 1.0
        or float(grid[-1]) != 0.0
        or bool((grid[1:] > grid[:-1]).any())
    ):
        raise ValueError(f"an explicit sigma grid must be 1-D, non-increasing, from 1 to 0; got {grid.tolist()}")
    return grid


@torch.no_grad()
def sample(
    model: MotusModel,
    conditioning: MotusConditioning,
    cond_latent: torch.Tensor,
    state: torch.Tensor | None,
    mode: Mode | str,
    steps: int | None = None,
    sigmas: str | torch.Tensor | None = None,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    given_video: torch.Tensor | None = None,
    given_actions: torch.Tensor | None = None,
    progress: Callable[[int, int], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Euler sampling in one of the five modes. Latents stay float32.

    Args:
        conditioning: ``model.prepare_conditioning(...)`` for the batch B.
        cond_latent: [B, C, 1, H, W] latent of the current (conditioning) frame.
        state: [B, state_dim] (finetune) or None (pretrain).
        mode: a ``Mode`` or its value ("vla", "world_model", "idm", "video_generation", "joint").
        steps: Euler steps (default ``config.schedule.inference_steps``).
        sigmas: "linear" (reference), "shifted", or an explicit [steps + 1] grid from 1 to 0.
        generator: seeds every noise draw (deterministic on CPU): one for the batch, or a
            sequence of B, one per sample (see ``initial_latents``).
        given_video: [B, C, F - 1, H, W] future latents, required when the mode holds video clean (IDM).
        given_actions: [B, chunk, action_dim], required when the mode holds actions clean (world model).
        progress: called as ``progress(step, num_steps)`` after each step (step from 1).
        should_cancel: checked before each step; True raises ``SamplingCancelled``.
    Returns:
        (video, actions): video [B, C, F, H, W] including the conditioning frame if the mode
        denoises video, else None; actions [B, chunk, action_dim] if denoised, else None.
    """
    mode = Mode(mode)
    grid = _sigma_grid(FlowMatchSchedule(model.config.schedule), steps, sigmas)
    basis = reachable_video_basis(model) if mode.video is Treatment.DENOISED else None
    video, actions = initial_latents(model.config, mode, cond_latent, generator, given_video, given_actions, basis)
    num_steps = grid.numel() - 1
    for step in range(num_steps):
        if should_cancel is not None and should_cancel():
            raise SamplingCancelled(f"sampling cancelled before step {step + 1} of {num_steps}")
        video, actions = euler_step(
            model, mode, video, actions, float(grid[step]), float(grid[step + 1]), state, conditioning, cond_latent
        )
        if progress is not None:
            progress(step + 1, num_steps)

    return (
        video if mode.video is Treatment.DENOISED else None,
        actions if mode.actions is Treatment.DENOISED else None,
    )
