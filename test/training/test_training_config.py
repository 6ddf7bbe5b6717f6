"""Stage presets carry the reference optimiser settings; the lr factor has the reference's shape."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from motus_model.training.config import TrainingConfig
from motus_model.training.schedule import LinearWarmupDecay, make_scheduler
from motus_model.training.trainer import perturb_state


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_stage_presets_use_reference_optimiser(stage):
    config = TrainingConfig.for_stage(stage)
    assert (config.learning_rate, tuple(config.betas), config.weight_decay) == (5e-5, (0.9, 0.95), 0.01)
    assert (config.warmup_steps, config.lr_f_max, config.lr_f_min, config.grad_clip) == (200, 0.99, 0.4, 0.5)
    assert config.stage == stage


def test_stage_specifics():
    stage1, stage2, stage3 = (TrainingConfig.for_stage(s) for s in (1, 2, 3))
    assert stage1.action_loss_weight == 0.0 and stage1.action_key is None
    assert set(stage1.frozen_modules) == {"action_expert", "und_expert"}
    assert stage2.training_mode == "pretrain" and stage2.action_key == "latent_action" and not stage2.frozen_modules
    assert stage3.training_mode == "finetune" and stage3.action_key == "action"
    assert stage3.reinit_prefixes == ["action_expert.action_encoder.", "action_expert.head."]


def test_config_json_round_trip_and_errors(tmp_path):
    config = TrainingConfig.for_stage(3, steps=7, dataset="/data/x")
    config.save(tmp_path / "c.json")
    assert TrainingConfig.load(tmp_path / "c.json") == config
    with pytest.raises(ValueError, match="unknown training config keys"):
        TrainingConfig.from_dict({"stepz": 3})
    with pytest.raises(ValueError, match="stage must be"):
        TrainingConfig(stage=4)
    with pytest.raises(ValueError, match="state_noise_std"):
        TrainingConfig(state_noise_std=-0.1)
    with pytest.raises(ValueError, match="state_dropout"):
        TrainingConfig(state_dropout=1.0)
    with pytest.raises(ValueError, match="episode_start_fraction"):
        TrainingConfig(episode_start_fraction=1.5)


def test_state_augmentation_noise_dropout_and_determinism():
    state = torch.ones(4000, 14)
    generator = lambda: torch.Generator().manual_seed(5)  # noqa: E731

    assert torch.equal(perturb_state(state, 0.0, 0.0, generator()), state)
    noisy = perturb_state(state, 0.5, 0.0, generator())
    assert abs(float((noisy - state).std()) - 0.5) < 0.01 and abs(float((noisy - state).mean())) < 0.01

    dropped = perturb_state(state, 0.0, 0.25, generator())
    zero_rows = (dropped == 0).all(dim=1)
    assert torch.equal(dropped[~zero_rows], state[~zero_rows])  # a row is kept whole or replaced whole
    assert abs(float(zero_rows.float().mean()) - 0.25) < 0.03

    both = perturb_state(state, 0.5, 0.25, generator())
    assert torch.equal(both, perturb_state(state, 0.5, 0.25, generator()))  # the generator decides everything
    assert not torch.equal(both, perturb_state(state, 0.5, 0.25, torch.Generator().manual_seed(6)))


def test_lr_factor_shape_and_scheduler_state():
    factor = LinearWarmupDecay(warmup_steps=200, f_start=1e-6, f_max=0.99, f_min=0.4, cycle_steps=1000)
    assert factor(0) == pytest.approx(1e-6)
    assert factor(100) == pytest.approx(1e-6 + (0.99 - 1e-6) / 2)
    assert factor(200) == pytest.approx(0.4 + 0.59 * 0.8)  # decays over the whole cycle, counted from 0
    assert factor(1000) == pytest.approx(0.4) and factor(5000) == pytest.approx(0.4)
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([parameter], lr=5e-5)
    scheduler = make_scheduler(optimizer, factor)
    for _ in range(150):
        optimizer.step()
        scheduler.step()
    state = scheduler.state_dict()
    restored = make_scheduler(torch.optim.AdamW([parameter], lr=5e-5), factor)
    restored.load_state_dict(state)
    assert restored.get_last_lr() == scheduler.get_last_lr()
    assert scheduler.get_last_lr()[0] == pytest.approx(5e-5 * factor(150))


def test_mode_mix_in_stage_presets_config_and_model_card(tmp_path):
    from motus_model.cli import _parse_mode_mix
    from motus_model.config import MotusConfig
    from motus_model.training.trainer import write_model_card

    stage1, stage2, stage3 = (TrainingConfig.for_stage(s) for s in (1, 2, 3))
    assert stage1.mode_mix is None  # video only
    assert stage2.mode_mix == stage3.mode_mix and set(stage3.mode_mix) == {
        "joint",
        "vla",
        "world_model",
        "idm",
        "video_generation",
    }
    stage3.save(tmp_path / "c.json")
    assert TrainingConfig.load(tmp_path / "c.json").mode_mix == stage3.mode_mix  # saved with the run
    assert TrainingConfig(mode_mix=_parse_mode_mix("off")).mode_mix is None
    assert _parse_mode_mix("joint=1,idm=0.5") == {"joint": 1.0, "idm": 0.5}
    with pytest.raises(ValueError, match="unknown modes"):
        TrainingConfig(mode_mix={"policy": 1.0})
    card = write_model_card(tmp_path, stage3, MotusConfig.preset("motus-tiny"), 5).read_text()
    assert "world_model 15%" in card and "idm 15%" in card and "clean 15%" in card
    assert "| action modulation | off" in card
    modulated = dataclasses.replace(MotusConfig.preset("motus-tiny"), action_modulation=True)
    assert "| action modulation | on" in write_model_card(tmp_path, stage3, modulated, 5).read_text()


def test_stage1_trains_through_the_video_only_path():
    from motus_model.config import MotusConfig
    from motus_model.modeling_motus import MotusModel
    from motus_model.training.trainer import FlowMatchingObjective

    stage1 = TrainingConfig.for_stage(1)
    assert stage1.video_only and stage1.mode_mix is None
    assert {"action_expert", "und_expert"} <= set(stage1.frozen_modules)
    assert not TrainingConfig.for_stage(3).video_only
    with pytest.raises(ValueError, match="set mode_mix to null"):
        TrainingConfig(video_only=True)
    # The objective the trainer builds calls forward_video_only and never the full forward.
    model = MotusModel(MotusConfig.preset("motus-tiny"))
    objective = FlowMatchingObjective(model, model.config, stage1.mode_mix, stage1.video_only)
    seen = []
    model.register_forward_pre_hook(lambda *args: seen.append("forward"))
    original = model.forward_video_only
    model.forward_video_only = lambda *args, **kwargs: (seen.append("video_only"), original(*args, **kwargs))[1]
    config = model.config
    frames, height, width = config.latent_grid()
    batch = {
        "video_latents": torch.randn(2, config.video.latent_channels, frames, height, width),
        "actions": torch.zeros(2, config.temporal.action_chunk, config.action.action_dim),
        "state": None,
        "text_context": torch.randn(2, 5, config.video.text_dim),
        "vlm_hidden": torch.randn(2, 7, config.understanding.vlm_dim),
    }
    objective(batch, torch.Generator().manual_seed(0))
    assert seen == ["video_only"]
