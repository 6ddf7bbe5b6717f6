"""Rectified flow: the shift-5 table, the loss (conditioning frame excluded), the five-mode sampler and its pieces."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from motus_model.config import MotusConfig
from motus_model.flow_matching import (
    DEFAULT_MODE_MIX,
    FlowMatchSchedule,
    Mode,
    SamplingCancelled,
    Treatment,
    check_mode_mix,
    euler_step,
    flow_matching_loss,
    initial_latents,
    modality_probabilities,
    reachable_video_basis,
    sample,
    training_sigmas,
    treatment_sigma,
)
from motus_model.modeling_motus import MotusModel


def tiny_model(seed: int = 0, **overrides) -> MotusModel:
    torch.manual_seed(seed)
    model = MotusModel(dataclasses.replace(MotusConfig.preset("motus-tiny"), **overrides))
    with torch.no_grad():  # heads are zero-initialised; make outputs depend on the inputs
        torch.nn.init.normal_(model.video.head.head.weight, std=0.1)
        torch.nn.init.normal_(model.action_expert.head.head.weight, std=0.1)
    return model.eval()


def make_batch(config: MotusConfig, batch_size: int = 2, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    frames, height, width = config.latent_grid()
    return {
        "video_latents": torch.randn(
            batch_size, config.video.latent_channels, frames, height, width, generator=generator
        ),
        "actions": torch.randn(batch_size, config.temporal.action_chunk, config.action.action_dim, generator=generator),
        "state": torch.randn(batch_size, config.action.state_dim, generator=generator) if config.uses_state else None,
        "text_context": torch.randn(batch_size, 5, config.video.text_dim, generator=generator),
        "vlm_hidden": torch.randn(batch_size, 7, config.understanding.vlm_dim, generator=generator),
    }


def test_training_table_matches_the_reference_schedule():
    schedule = FlowMatchSchedule(MotusConfig.preset("motus-8b").schedule)
    table = schedule.training_sigmas
    assert table.shape == (1000,)
    assert table[0] == pytest.approx(1.0)
    assert table[-1] == pytest.approx(5 * 0.001 / (1 + 4 * 0.001))  # ~0.005
    assert table.median() == pytest.approx(0.83, abs=0.01)
    assert bool((table[1:] < table[:-1]).all())


def test_training_sigmas_are_independent_per_modality():
    schedule = FlowMatchSchedule(MotusConfig.preset("motus-tiny").schedule)
    video, action = schedule.sample_training_sigmas(64, torch.Generator().manual_seed(0))
    assert video.shape == action.shape == (64,)
    assert not torch.equal(video, action)
    assert set(video.tolist()) <= set(schedule.training_sigmas.tolist())


def test_inference_grids():
    schedule = FlowMatchSchedule(MotusConfig.preset("motus-tiny").schedule)
    linear = schedule.inference_sigmas(10, "linear")
    shifted = schedule.inference_sigmas(10, "shifted")
    torch.testing.assert_close(linear, torch.linspace(1, 0, 11))
    assert shifted[0] == 1.0 and shifted[-1] == 0.0 and bool((shifted[1:-1] > linear[1:-1]).all())
    with pytest.raises(ValueError, match="'linear' or 'shifted'"):
        schedule.inference_sigmas(10, "cosine")


@pytest.mark.timeout(240)
def test_loss_excludes_the_conditioning_frame():
    model = tiny_model()
    config = model.config
    batch = make_batch(config)
    loss, metrics = flow_matching_loss(model, batch, generator=torch.Generator().manual_seed(3))

    # Recompute by hand with the same draws, in the same order.
    generator = torch.Generator().manual_seed(3)
    video_sigma, action_sigma = FlowMatchSchedule(config.schedule).sample_training_sigmas(2, generator)
    x0, a0 = batch["video_latents"], batch["actions"]
    video_noise = torch.randn(x0.shape, generator=generator)
    action_noise = torch.randn(a0.shape, generator=generator)
    noisy = (1 - video_sigma.view(-1, 1, 1, 1, 1)) * x0 + video_sigma.view(-1, 1, 1, 1, 1) * video_noise
    noisy[:, :, 0] = x0[:, :, 0]
    noisy_actions = (1 - action_sigma.view(-1, 1, 1)) * a0 + action_sigma.view(-1, 1, 1) * action_noise
    with torch.no_grad():
        video_pred, action_pred = model.forward_uncached(
            noisy, video_sigma, noisy_actions, action_sigma, batch["state"], batch["text_context"], batch["vlm_hidden"]
        )
    future_only = F.mse_loss(video_pred[:, :, 1:], (video_noise - x0)[:, :, 1:])
    all_frames = F.mse_loss(video_pred, video_noise - x0)
    assert metrics["video"] == pytest.approx(float(future_only), rel=1e-5)
    assert metrics["video"] != pytest.approx(float(all_frames), rel=1e-3)
    assert metrics["action"] == pytest.approx(float(F.mse_loss(action_pred, action_noise - a0)), rel=1e-5)
    assert loss.item() == pytest.approx(metrics["video"] + metrics["action"], rel=1e-5)


@pytest.mark.timeout(240)
def test_conditioning_frame_prediction_gets_no_gradient():
    model = tiny_model().train()
    batch = make_batch(model.config)
    captured = {}

    def keep_output(module, args, output):
        output[0].retain_grad()
        captured["video"] = output[0]

    handle = model.register_forward_hook(keep_output)
    loss, _ = flow_matching_loss(model, batch, generator=torch.Generator().manual_seed(0))
    loss.backward()
    handle.remove()
    grad = captured["video"].grad
    assert torch.count_nonzero(grad[:, :, 0]) == 0
    assert torch.count_nonzero(grad[:, :, 1:]) > 0


@pytest.mark.timeout(240)
@pytest.mark.parametrize("training_mode", ["finetune", "pretrain"])
def test_small_model_overfits_one_batch(training_mode):
    model = tiny_model(seed=1, training_mode=training_mode).train()
    batch = make_batch(model.config, batch_size=1, seed=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(100):
        optimizer.zero_grad()
        # Same noise and sigmas every step: a fixed regression problem the model must memorise.
        loss, _ = flow_matching_loss(model, batch, generator=torch.Generator().manual_seed(0))
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10, f"loss went {losses[0]:.4f} -> {losses[-1]:.4f}"


def _sampling_inputs(model: MotusModel, batch_size: int = 2, seed: int = 0):
    config = model.config
    batch = make_batch(config, batch_size, seed)
    with torch.no_grad():
        conditioning = model.prepare_conditioning(batch["text_context"], None, batch["vlm_hidden"], None)
    return batch, conditioning, batch["video_latents"][:, :, :1]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("mode", list(Mode))
def test_each_mode_holds_given_and_marginalised_parts(mode):
    model = tiny_model()
    config = model.config
    batch, conditioning, cond_latent = _sampling_inputs(model)
    given_video = batch["video_latents"][:, :, 1:]
    given_actions = batch["actions"]
    calls = []
    handle = model.register_forward_pre_hook(
        lambda module, args: calls.append([a.clone() if torch.is_tensor(a) else a for a in args])
    )
    video, actions = sample(
        model,
        conditioning,
        cond_latent,
        batch["state"],
        mode,
        steps=3,
        generator=torch.Generator().manual_seed(0),
        given_video=given_video,
        given_actions=given_actions,
    )
    handle.remove()
    assert len(calls) == 3
    for video_in, video_sigma, actions_in, action_sigma, *_ in calls:
        assert torch.equal(video_in[:, :, :1], cond_latent)  # the conditioning frame is always clean
        if mode.video is Treatment.CLEAN:
            assert torch.equal(video_in[:, :, 1:], given_video) and bool((video_sigma == 0).all())
        if mode.video is Treatment.MARGINALISED:
            assert torch.equal(video_in, calls[0][0]) and bool((video_sigma == 1).all())
        if mode.actions is Treatment.CLEAN:
            assert torch.equal(actions_in, given_actions) and bool((action_sigma == 0).all())
        if mode.actions is Treatment.MARGINALISED:
            assert torch.equal(actions_in, calls[0][2]) and bool((action_sigma == 1).all())
    frames, height, width = config.latent_grid()
    if mode.video is Treatment.DENOISED:
        assert video.shape == (2, config.video.latent_channels, frames, height, width)
        assert torch.equal(video[:, :, :1], cond_latent)
        assert [float(c[1][0]) for c in calls] == pytest.approx([1.0, 2 / 3, 1 / 3])
    else:
        assert video is None
    if mode.actions is Treatment.DENOISED:
        assert actions.shape == (2, config.temporal.action_chunk, config.action.action_dim)
    else:
        assert actions is None


@pytest.mark.timeout(240)
def test_sampler_is_deterministic_with_a_seed():
    model = tiny_model()
    batch, conditioning, cond_latent = _sampling_inputs(model)
    run = lambda seed: sample(
        model,
        conditioning,
        cond_latent,
        batch["state"],
        Mode.JOINT,
        steps=2,
        generator=torch.Generator().manual_seed(seed),
    )
    first, second, other = run(5), run(5), run(6)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.allclose(first[1], other[1])


@pytest.mark.timeout(240)
def test_progress_and_cancellation_between_steps():
    model = tiny_model()
    batch, conditioning, cond_latent = _sampling_inputs(model)
    reported = []
    sample(
        model,
        conditioning,
        cond_latent,
        batch["state"],
        "vla",
        steps=4,
        sigmas="shifted",
        progress=lambda step, total: reported.append((step, total)),
    )
    assert reported == [(1, 4), (2, 4), (3, 4), (4, 4)]

    calls = []
    handle = model.register_forward_pre_hook(lambda module, args: calls.append(1))
    reported.clear()
    with pytest.raises(SamplingCancelled, match="before step 3 of 4"):
        sample(
            model,
            conditioning,
            cond_latent,
            batch["state"],
            Mode.VLA,
            steps=4,
            progress=lambda step, total: reported.append(step),
            should_cancel=lambda: len(reported) >= 2,
        )
    handle.remove()
    assert len(calls) == 2


def test_modes_that_need_given_data_say_so():
    model = tiny_model()
    batch, conditioning, cond_latent = _sampling_inputs(model)
    with pytest.raises(ValueError, match="idm needs given_video"):
        sample(model, conditioning, cond_latent, batch["state"], Mode.IDM, steps=1)
    with pytest.raises(ValueError, match="world_model needs given_actions"):
        sample(model, conditioning, cond_latent, batch["state"], Mode.WORLD_MODEL, steps=1)
    with pytest.raises(ValueError):
        sample(model, conditioning, cond_latent, batch["state"], "policy", steps=1)


@pytest.mark.timeout(240)
def test_pretrain_mode_samples_without_state():
    model = tiny_model(training_mode="pretrain")
    batch, conditioning, cond_latent = _sampling_inputs(model)
    video, actions = sample(model, conditioning, cond_latent, None, Mode.JOINT, steps=2)
    assert video is not None and actions.shape == (2, model.config.temporal.action_chunk, 14)


def test_per_sample_generators_give_each_sample_its_own_noise():
    """A sample's initial noise depends only on its own generator, not on the batch it is in."""
    config = MotusConfig.preset("motus-tiny")
    frames, height, width = config.latent_grid()
    cond_latent = torch.randn(3, config.video.latent_channels, 1, height, width)
    seeds = [4, 9, 4]
    batched = initial_latents(config, Mode.JOINT, cond_latent, [torch.Generator().manual_seed(s) for s in seeds])
    for row, seed in enumerate(seeds):
        alone = initial_latents(config, Mode.JOINT, cond_latent[row : row + 1], torch.Generator().manual_seed(seed))
        assert torch.equal(batched[0][row : row + 1], alone[0]) and torch.equal(batched[1][row : row + 1], alone[1])
    assert batched[0].shape == (3, config.video.latent_channels, frames, height, width)
    assert torch.equal(batched[0][:, :, :1], cond_latent)
    assert not torch.equal(batched[1][0], batched[1][1]) and torch.equal(batched[1][0], batched[1][2])
    with pytest.raises(ValueError, match="one generator per sample \\(3\\), got 2"):
        initial_latents(config, Mode.JOINT, cond_latent, [torch.Generator(), torch.Generator()])


def test_treatment_sigma_and_one_euler_step():
    assert treatment_sigma(Treatment.CLEAN, 0.7, 2, "cpu").tolist() == [0.0, 0.0]
    assert treatment_sigma(Treatment.MARGINALISED, 0.7, 2, "cpu").tolist() == [1.0, 1.0]
    assert treatment_sigma(Treatment.DENOISED, 0.5, 3, "cpu").tolist() == [0.5, 0.5, 0.5]

    model = tiny_model()
    batch, conditioning, cond_latent = _sampling_inputs(model)
    video, actions = initial_latents(model.config, Mode.VLA, cond_latent, torch.Generator().manual_seed(1))
    with torch.no_grad():
        _, action_velocity = model(video, torch.ones(2), actions, torch.full((2,), 0.75), batch["state"], conditioning)
        new_video, new_actions = euler_step(
            model, Mode.VLA, video, actions, 0.75, 0.5, batch["state"], conditioning, cond_latent
        )
    assert torch.equal(new_video, video)  # VLA marginalises the video: never updated
    torch.testing.assert_close(new_actions, actions - 0.25 * action_velocity)
    assert not torch.equal(new_actions, actions)  # the step did move the actions


@pytest.mark.timeout(240)
def test_sample_with_per_sample_generators_equals_each_sample_alone():
    model = tiny_model()
    batch, conditioning, cond_latent = _sampling_inputs(model)
    video, actions = sample(
        model,
        conditioning,
        cond_latent,
        batch["state"],
        Mode.JOINT,
        steps=2,
        generator=[torch.Generator().manual_seed(seed) for seed in (3, 8)],
    )
    for row, seed in enumerate((3, 8)):
        alone_video, alone_actions = sample(
            model,
            conditioning.index([row]),
            cond_latent[row : row + 1],
            batch["state"][row : row + 1],
            Mode.JOINT,
            steps=2,
            generator=torch.Generator().manual_seed(seed),
        )
        torch.testing.assert_close(video[row : row + 1], alone_video, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(actions[row : row + 1], alone_actions, atol=1e-5, rtol=1e-5)


def _outside_head_span(model: MotusModel, video: torch.Tensor) -> torch.Tensor:
    """Per-token residual of ``video`` [B, C, F, H, W] after least squares onto the head's span [W | b].

    Computed with lstsq on the raw head weights (not the sampler's own SVD basis), tokens laid out as
    the model's ``_unpatchify`` reads them (p_t, p_h, p_w, C)."""
    head = model.video.head.head
    span = torch.cat([head.weight, head.bias[:, None]], dim=1).double()
    patch_t, patch_h, patch_w = model.config.video.patch_size
    batch, channels, frames, height, width = video.shape
    x = video.reshape(batch, channels, frames, height // patch_h, patch_h, width // patch_w, patch_w)
    tokens = x.permute(0, 2, 3, 5, 4, 6, 1).reshape(-1, patch_t * patch_h * patch_w * channels).double()
    coefficients = torch.linalg.lstsq(span, tokens.T).solution
    return tokens.T - span @ coefficients


@pytest.mark.timeout(240)
@pytest.mark.parametrize("mode", [Mode.WORLD_MODEL, Mode.VIDEO_GENERATION, Mode.JOINT])
def test_sampled_video_carries_no_noise_the_head_cannot_reach(mode):
    # motus-tiny: a token holds 48 channels x 2 x 2 = 192 values, the expert is 32 wide, so the head
    # writes a 33-dimensional subspace (W and the bias). Whatever the sampler leaves outside it was
    # never denoised: it must be ~0, not ~(159/192) of the initial noise.
    model = tiny_model()
    with torch.no_grad():
        torch.nn.init.normal_(model.video.head.head.bias, std=0.1)
    token_width = model.video.head.head.out_features
    assert token_width > model.config.video.dim + 1  # the case under test
    batch, conditioning, cond_latent = _sampling_inputs(model)
    video, _ = sample(
        model,
        conditioning,
        cond_latent,
        batch["state"],
        mode,
        steps=3,
        generator=torch.Generator().manual_seed(0),
        given_actions=batch["actions"],
    )
    future = video[:, :, 1:]
    outside = _outside_head_span(model, future)
    assert float(outside.norm()) < 1e-4 * float(future.norm())
    assert float(future.norm()) > 1.0  # something was sampled (not all zeros)


@pytest.mark.timeout(240)
def test_marginalised_video_keeps_its_full_noise():
    # The policy (VLA) path feeds the future video as pure noise at sigma 1, as training did:
    # projecting it would change the shipped policy's actions.
    model = tiny_model()
    with torch.no_grad():
        torch.nn.init.normal_(model.video.head.head.bias, std=0.1)
    batch, _, cond_latent = _sampling_inputs(model)
    basis = reachable_video_basis(model)
    assert basis is not None and basis.shape == (model.video.head.head.out_features, model.config.video.dim + 1)
    make = lambda mode, b: initial_latents(
        model.config, mode, cond_latent, torch.Generator().manual_seed(4), given_actions=batch["actions"], video_basis=b
    )
    vla_video, vla_actions = make(Mode.VLA, basis)
    plain_video, plain_actions = make(Mode.VLA, None)
    assert torch.equal(vla_video, plain_video) and torch.equal(vla_actions, plain_actions)
    joint_video, joint_actions = make(Mode.JOINT, basis)
    assert torch.equal(joint_actions, plain_actions)  # same RNG stream: projection draws nothing
    assert not torch.allclose(joint_video, plain_video)
    assert float(_outside_head_span(model, joint_video[:, :, 1:]).norm()) < 1e-4 * float(joint_video.norm())


def test_mode_mix_draws_each_mode_with_its_share():
    # Over many batches the (video, action) sigma pairs must land in each mode's pattern with the configured
    # share: world model = actions at exactly 0, IDM = video at exactly 0, VLA = video at exactly 1,
    # video generation = actions at exactly 1; the rest (joint) both from the shifted table (never 0 or 1).
    mix = {"joint": 0.3, "vla": 0.25, "world_model": 0.2, "idm": 0.15, "video_generation": 0.1}
    schedule = FlowMatchSchedule(MotusConfig.preset("motus-tiny").schedule)
    generator = torch.Generator().manual_seed(0)
    counts = dict.fromkeys(mix, 0)
    total = 0
    for _ in range(200):
        video, action, video_weight, action_weight = training_sigmas(schedule, 64, generator, "cpu", mix)
        patterns = {
            "world_model": (action == 0) & (video > 0),
            "idm": (video == 0) & (action > 0),
            "vla": (video == 1) & (action > 0),
            "video_generation": (action == 1) & (video > 0),
            "joint": (video > 0) & (video < 1) & (action > 0) & (action < 1),
        }
        matched = sum(p.long() for p in patterns.values())
        # Every sample is some mode; the shifted table holds sigma 1 once in 1000 rows, so a few are ambiguous.
        assert bool((matched >= 1).all()) and float((matched > 1).float().mean()) < 0.05
        for name, rows in patterns.items():
            counts[name] += int(rows.sum())
        # A clean modality gets no loss, every other one does.
        assert torch.equal(video_weight, (video != 0).float()) and torch.equal(action_weight, (action != 0).float())
        total += 64
    for name, share in mix.items():
        assert counts[name] / total == pytest.approx(share, abs=0.015), (name, counts[name] / total)
    # Without a mix: the plain shifted draws, sigma 0 never drawn.
    video, action, video_weight, _ = training_sigmas(schedule, 4096, generator, "cpu", None)
    assert video_weight is None and float(video.min()) > 0 and float(action.min()) > 0


def test_mode_mix_loss_ignores_the_clean_modality():
    # All samples in world-model mode: the actions are given, so the action loss is 0 and the action
    # prediction gets no gradient from it, whatever the action head predicts; the video loss is the plain one.
    model = tiny_model()
    model.train()
    batch = make_batch(model.config, batch_size=3)
    loss, parts = flow_matching_loss(
        model, batch, generator=torch.Generator().manual_seed(0), mode_mix={"world_model": 1.0}
    )
    assert parts["action"] == 0.0 and parts["video"] > 0
    loss.backward()
    assert float(model.action_expert.head.head.weight.grad.abs().sum()) == 0.0
    assert float(model.video.head.head.weight.grad.abs().sum()) > 0
    model.zero_grad()
    loss, parts = flow_matching_loss(model, batch, generator=torch.Generator().manual_seed(0), mode_mix={"idm": 1.0})
    assert parts["video"] == 0.0 and parts["action"] > 0
    loss.backward()
    assert float(model.video.head.head.weight.grad.abs().sum()) == 0.0
    with pytest.raises(ValueError, match="unknown modes"):
        flow_matching_loss(model, batch, mode_mix={"policy": 1.0})


def test_default_mode_mix_gives_every_mode_a_real_share():
    shares = check_mode_mix(DEFAULT_MODE_MIX)
    assert set(shares) == {mode.value for mode in Mode} and min(shares.values()) >= 0.1
    per_modality = modality_probabilities(DEFAULT_MODE_MIX)
    assert per_modality["actions"]["clean"] == pytest.approx(shares["world_model"])
    assert per_modality["video"]["clean"] == pytest.approx(shares["idm"])


def test_video_only_loss_runs_and_trains_the_video_expert_alone():
    # Stage 1 trains through forward_video_only: the action and understanding experts are never called
    # (not even fed zeros) and get no gradient; every live video-expert weight does.
    model = tiny_model()
    model.train()
    batch = make_batch(model.config, batch_size=2)
    calls = []
    hooks = [
        module.register_forward_hook(lambda module, args, output, name=name: calls.append(name))
        for name, module in model.named_modules()
        if name.startswith(("action_expert", "und_expert"))
    ]
    video_calls = []
    hooks.append(model.video.head.head.register_forward_hook(lambda *args: video_calls.append(1)))
    loss, parts = flow_matching_loss(model, batch, generator=torch.Generator().manual_seed(0), video_only=True)
    loss.backward()
    for hook in hooks:
        hook.remove()
    assert calls == [] and video_calls  # the video head ran, nothing of the other experts did
    assert parts["action"] == 0.0 and parts["video"] > 0
    for name, parameter in model.named_parameters():
        if name.startswith(("action_expert", "und_expert")):
            assert parameter.grad is None, name
    assert model.video.head.head.weight.grad is not None
    assert float(model.video.blocks[0].self_attn.q.weight.grad.abs().sum()) > 0
    # Same draws as the full loss' video half: the same noisy input reaches the video expert.
    torch.testing.assert_close(
        loss.detach(),
        flow_matching_loss(model, batch, generator=torch.Generator().manual_seed(0), video_only=True)[0].detach(),
    )
