"""Stage 3 on motus-tiny: the held-out loss falls, and the checkpoint serves (core's from_pretrained)."""

from __future__ import annotations

import json

import pytest
import torch
from training_helpers import write_tiny_dataset

from motus_model.checkpoint import load_pretrained
from motus_model.training.config import TrainingConfig
from motus_model.training.trainer import Trainer


@pytest.mark.timeout(240)
def test_stage3_lowers_loss_and_writes_loadable_checkpoint(tmp_path):
    root, _ = write_tiny_dataset(tmp_path / "ds", num_episodes=2, length=20)
    config = TrainingConfig.for_stage(
        3,
        preset="motus-tiny",
        dataset=str(root),
        eval_dataset=str(root),
        output=str(tmp_path / "run"),
        steps=30,
        batch_size=4,
        learning_rate=2e-3,
        warmup_steps=0,
        log_every=5,
        checkpoint_every=0,
        eval_batches=1,
    )
    trainer = Trainer(config)
    assert trainer.model.config.training_mode == "finetune"
    before = trainer.evaluate()
    result = trainer.train()
    after = result.eval_history[-1]["eval"]
    # same held-out samples and noise before and after: the joint-mode losses must fall
    joint_before = before["joint"]["action"] + before["joint"]["video"]
    joint_after = after["joint"]["action"] + after["joint"]["video"]
    assert joint_after < 0.97 * joint_before, (before, after)
    assert after["joint"]["video"] < before["joint"]["video"], (before, after)
    assert after["vla"]["action"] < before["vla"]["action"], (before, after)
    assert set(after) == {"vla", "world_model", "idm", "video_generation", "joint"}
    # metrics.jsonl holds the logged steps and the evaluation
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [5, 10, 15, 20, 25, 30]
    assert any((tmp_path / "run" / "tensorboard").iterdir())  # TensorBoard event file
    # the checkpoint loads through core's loader with the normalisation stats and encoders beside it
    checkpoint = result.last_checkpoint
    model, stats = load_pretrained(checkpoint)
    assert stats["mode"] == "mean_std" and set(stats["stats"]) == {"state", "action"}
    assert (checkpoint / "text_encoder" / "config.json").is_file() and (checkpoint / "vlm" / "config.json").is_file()
    trained = trainer.accelerator.unwrap_model(trainer.objective).model.state_dict()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, trained[name].cpu()), name
