"""MotusConfig.action_modulation: each future frame's actions modulate that frame's video tokens."""

import pytest
import torch
from model_helpers import make_inputs, tiny_config

from motus_model.config import MotusConfig
from motus_model.flow_matching import Mode
from motus_model.modeling_motus import MotusModel
from motus_model.training.evaluation import evaluate_modes


def modulated_model(seed: int = 0) -> MotusModel:
    """A tiny model with the path on and every zero-initialised output layer given weights."""
    torch.manual_seed(seed)
    model = MotusModel(tiny_config(action_modulation=True)).eval()
    with torch.no_grad():
        for layer in (model.video.head.head, model.action_expert.head.head, model.action_to_video.embed[2]):
            torch.nn.init.normal_(layer.weight, std=0.1)
    return model


def test_the_path_is_off_by_default_and_in_the_release_shape():
    assert MotusConfig().action_modulation is False
    assert MotusModel(tiny_config()).action_to_video is None
    assert not any(key.startswith("action_to_video.") for key in MotusModel(tiny_config()).state_dict())


@pytest.mark.timeout(240)
def test_switched_on_over_a_model_without_it_the_outputs_are_unchanged():
    torch.manual_seed(1)
    plain = MotusModel(tiny_config()).eval()
    with torch.no_grad():
        torch.nn.init.normal_(plain.video.head.head.weight, std=0.1)
        torch.nn.init.normal_(plain.action_expert.head.head.weight, std=0.1)
    modulated = MotusModel(tiny_config(action_modulation=True)).eval()
    missing, unexpected = modulated.load_state_dict(plain.state_dict(), strict=False)
    assert unexpected == [] and missing and all(key.startswith("action_to_video.") for key in missing)
    inputs = make_inputs(plain.config, batch=3, seed=1)
    with torch.no_grad():
        before = plain.forward_uncached(*inputs)
        after = modulated.forward_uncached(*inputs)
    torch.testing.assert_close(after[0], before[0], atol=0, rtol=0)
    torch.testing.assert_close(after[1], before[1], atol=0, rtol=0)


@pytest.mark.timeout(240)
def test_clean_only_modulates_the_world_model_and_leaves_the_other_modes_as_without_the_path():
    torch.manual_seed(4)
    gated = MotusModel(tiny_config(action_modulation=True, action_modulation_clean_only=True)).eval()
    with torch.no_grad():
        for layer in (gated.video.head.head, gated.action_expert.head.head, gated.action_to_video.embed[2]):
            torch.nn.init.normal_(layer.weight, std=0.1)
    plain = MotusModel(tiny_config()).eval()  # the same weights without the path: the oracle
    plain.load_state_dict({k: v for k, v in gated.state_dict().items() if not k.startswith("action_to_video.")})
    latents, video_sigma, actions, _, state, text, vlm = make_inputs(gated.config, batch=4, seed=4)
    action_sigma = torch.tensor([0.0, 0.3, 1.0, 0.0])  # world model, denoised, marginalised, world model
    inputs = (latents, video_sigma, actions, action_sigma, state, text, vlm)
    with torch.no_grad():
        gated_video, gated_actions = gated.forward_uncached(*inputs)
        plain_video, plain_actions = plain.forward_uncached(*inputs)
    for row, sigma in enumerate(action_sigma.tolist()):
        same = torch.equal(gated_video[row], plain_video[row]) and torch.equal(gated_actions[row], plain_actions[row])
        assert same is (sigma != 0.0), (row, sigma)  # bit-identical exactly where the actions are not clean
    with pytest.raises(ValueError, match="needs action_modulation"):
        tiny_config(action_modulation_clean_only=True)


@pytest.mark.timeout(240)
def test_each_future_frame_is_modulated_by_the_actions_that_lead_to_it():
    model = modulated_model(seed=2)
    config = model.config
    latents, video_sigma, actions, action_sigma, *_ = make_inputs(config, batch=2, seed=2)
    frames, height, width = config.token_grid()
    per_frame = height * width
    window = config.temporal.action_chunk // (frames - 1)

    def frame_temb(acts: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            action_frames = model.action_to_video(acts, action_sigma)
            temb = model._embed_video(latents, video_sigma, action_frames)[1]
        return temb.unflatten(1, (frames, per_frame))  # [B, F, h*w, D]

    base = frame_temb(actions)
    for future in range(frames - 1):
        changed = actions.clone()
        changed[:, future * window : (future + 1) * window] += 1.0
        moved = (frame_temb(changed) - base).abs().amax(dim=(0, 2, 3))  # per latent frame
        # latent frame 0 is the conditioning frame; frame future + 1 is the one these actions lead to
        expected = [index == future + 1 for index in range(frames)]
        assert [bool(value > 1e-6) for value in moved] == expected, (future, moved)


@pytest.mark.timeout(240)
def test_every_parameter_of_the_path_trains():
    model = modulated_model(seed=3).train()
    latents, vs, actions, as_, state, text, vlm = make_inputs(model.config, batch=2, seed=3)
    video_velocity, action_velocity = model.forward_uncached(latents, vs, actions, as_, state, text, vlm)
    ((video_velocity - 1).square().mean() + (action_velocity - 1).square().mean()).backward()
    for name, parameter in model.action_to_video.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert model.count_parameters()["total"] == sum(p.numel() for p in model.parameters())


@pytest.mark.timeout(240)
def test_the_held_out_world_model_loss_reports_the_action_gap():
    model = modulated_model(seed=4)
    config = model.config
    latents, _, actions, _, state, text, vlm = make_inputs(config, batch=4, seed=4)
    batch = {"video_latents": latents, "actions": actions, "state": state, "text_context": text, "vlm_hidden": vlm}
    losses = evaluate_modes(model, [batch])[Mode.WORLD_MODEL.value]
    assert set(losses) == {"video", "video_other_actions"}
    # the model reads its actions: another sample's give another prediction, hence another loss
    assert abs(losses["video_other_actions"] - losses["video"]) > 1e-4 * losses["video"]
    # every sample with the same actions: "another sample's" are the same, so the two losses are equal
    same = dict(batch, actions=actions[:1].expand_as(actions).clone())
    losses = evaluate_modes(model, [same])[Mode.WORLD_MODEL.value]
    assert losses["video_other_actions"] == losses["video"]


@pytest.mark.timeout(240)
def test_a_fine_tune_switches_the_path_on_over_a_checkpoint_without_it(tmp_path):
    from motus_model.checkpoint import load_pretrained
    from motus_model.training.config import TrainingConfig
    from motus_model.training.trainer import build_model

    torch.manual_seed(5)
    previous = MotusModel(tiny_config()).eval()
    with torch.no_grad():
        torch.nn.init.normal_(previous.video.head.head.weight, std=0.1)
    previous.save_pretrained(tmp_path / "previous")
    training = TrainingConfig.for_stage(3, init_from=str(tmp_path / "previous"), reinit_prefixes=[])
    assert build_model(training).action_to_video is None  # off unless asked for
    training.action_modulation = True
    model = build_model(training).eval()
    assert model.config.action_modulation and model.action_to_video is not None
    inputs = make_inputs(model.config, batch=2, seed=5)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_uncached(*inputs)[0], previous.forward_uncached(*inputs)[0])
    # the saved checkpoint carries the path, and a later fine-tune keeps it without being asked
    model.save_pretrained(tmp_path / "modulated")
    reloaded, _ = load_pretrained(tmp_path / "modulated")
    assert reloaded.config.action_modulation and reloaded.action_to_video is not None
    again = TrainingConfig.for_stage(3, init_from=str(tmp_path / "modulated"), reinit_prefixes=[])
    assert build_model(again).action_to_video is not None
