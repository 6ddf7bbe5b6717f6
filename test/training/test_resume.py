"""Exact resume: 2N steps straight == N steps, checkpoint, a fresh process-state resume, N more steps."""

from __future__ import annotations

import json

import pytest
import torch
from training_helpers import write_tiny_dataset

from motus_model.conditioning import build_tiny_qwen3_vl, build_tiny_umt5
from motus_model.training.config import TrainingConfig
from motus_model.training.trainer import Trainer, latest_checkpoint


def _config(tmp_path, output: str, steps: int, encoders) -> TrainingConfig:
    text_dir, vlm_dir = encoders
    return TrainingConfig.for_stage(
        3,
        preset="motus-tiny",
        dataset=str(tmp_path / "ds"),
        output=str(tmp_path / output),
        steps=steps,
        batch_size=2,
        learning_rate=1e-3,
        warmup_steps=2,
        log_every=1,
        checkpoint_every=3,
        text_encoder_path=str(text_dir),
        vlm_path=str(vlm_dir),
        # the state augmentation draws from the per-step generator, so it must resume exactly too
        state_noise_std=0.3,
        state_dropout=0.25,
    )


def _dataset_and_encoders(tmp_path, num_episodes: int) -> tuple:
    """A tiny dataset in tmp_path/ds and tiny text/VLM encoder folders; returns the encoder folders."""
    write_tiny_dataset(tmp_path / "ds", num_episodes=num_episodes, length=16)
    encoders = (tmp_path / "text_encoder", tmp_path / "vlm")
    build_tiny_umt5(24, directory=encoders[0])
    build_tiny_qwen3_vl(24, directory=encoders[1])
    return encoders


@pytest.mark.timeout(240)
def test_resume_is_bit_exact(tmp_path):
    encoders = _dataset_and_encoders(tmp_path, num_episodes=2)

    straight = Trainer(_config(tmp_path, "straight", 6, encoders))
    straight_result = straight.train()

    first_half = Trainer(_config(tmp_path, "resumed", 3, encoders))
    first_half.train()
    assert latest_checkpoint(tmp_path / "resumed").name == "step_0000003"
    state = json.loads((tmp_path / "resumed/checkpoints/step_0000003/training_state/trainer_state.json").read_text())
    assert state["step"] == 3
    torch.manual_seed(999)  # a resumed run must not depend on the process's global RNG
    second_half = Trainer(_config(tmp_path, "resumed", 6, encoders), resume=True)
    assert second_half.step == 3
    resumed_result = second_half.train()

    losses_straight = [h["loss"] for h in straight_result.history]
    losses_resumed = [h["loss"] for h in first_half_history(tmp_path)] + [h["loss"] for h in resumed_result.history]
    assert losses_resumed == losses_straight
    params_straight = straight.accelerator.unwrap_model(straight.objective).model.state_dict()
    params_resumed = second_half.accelerator.unwrap_model(second_half.objective).model.state_dict()
    for name, tensor in params_straight.items():
        assert torch.equal(tensor, params_resumed[name]), name
    assert second_half.scheduler.get_last_lr() == straight.scheduler.get_last_lr()


def first_half_history(tmp_path) -> list[dict]:
    records = [json.loads(line) for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if "loss" in r and r["step"] <= 3]


def test_resume_without_checkpoint_fails(tmp_path):
    write_tiny_dataset(tmp_path / "ds", num_episodes=1, length=12)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        Trainer(_config(tmp_path, "empty", 2, ("", "")), resume=True)


@pytest.mark.timeout(240)
def test_resume_follows_this_runs_lr_schedule(tmp_path):
    """Extending a run with an annealing schedule: the step comes from the checkpoint, the schedule from the config."""
    encoders = _dataset_and_encoders(tmp_path, num_episodes=1)
    Trainer(_config(tmp_path, "run", 3, encoders)).train()
    annealed = _config(tmp_path, "run", 5, encoders)
    annealed.lr_cycle_steps, annealed.lr_f_min = 5, 0.05
    resumed = Trainer(annealed, resume=True)
    resumed.train()
    # Step 5 of a 5-step cycle: the factor has reached f_min (the saved schedule's 1M-step cycle would give ~0.99).
    assert resumed.scheduler.get_last_lr()[0] == pytest.approx(1e-3 * 0.05)


@pytest.mark.timeout(240)
def test_state_augmentation_reaches_the_model(tmp_path):
    """The state the objective receives: the dataset's with the augmentation off, perturbed with it on."""
    encoders = _dataset_and_encoders(tmp_path, num_episodes=1)
    seen: dict[str, torch.Tensor] = {}
    for name, (noise, dropout) in {"plain": (0.0, 0.0), "augmented": (0.3, 0.0)}.items():
        config = _config(tmp_path, name, 1, encoders)
        config.state_noise_std, config.state_dropout = noise, dropout
        trainer = Trainer(config)
        trainer.objective.register_forward_pre_hook(
            lambda _, args, name=name: seen.update({name: args[0]["state"].clone()})
        )
        trainer.train_step()
    difference = seen["augmented"] - seen["plain"]  # same step, same samples
    assert 0.1 < float(difference.std()) < 0.5
