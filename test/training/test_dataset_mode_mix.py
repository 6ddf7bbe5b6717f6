"""A mixture entry's own mode mix (DatasetEntry.mode_mix): its samples train only the modes it names."""

from __future__ import annotations

import pytest
import torch
import yaml
from training_helpers import write_tiny_dataset

from motus_model.config import MotusConfig
from motus_model.data.mixture import DatasetEntry
from motus_model.flow_matching import FlowMatchSchedule, Mode, dataset_mode_shares, training_sigmas
from motus_model.training.config import TrainingConfig
from motus_model.training.trainer import Trainer

WORLD_MODEL_ONLY = {"world_model": 1.0}


def test_each_row_draws_its_mode_from_its_own_shares():
    schedule = FlowMatchSchedule(MotusConfig.preset("motus-tiny").schedule)
    table = dataset_mode_shares({"joint": 1.0}, [None, WORLD_MODEL_ONLY, {"vla": 1.0}])
    one_mode = [[float(mode.value == name) for mode in Mode] for name in ("joint", "world_model", "vla")]
    assert table.tolist() == one_mode  # columns in Mode order; the run's mix where an entry has none
    dataset = torch.tensor([0, 1, 2] * 20)
    video_sigma, action_sigma, video_weight, action_weight = training_sigmas(
        schedule, 60, torch.Generator().manual_seed(0), "cpu", {"joint": 1.0}, table[dataset]
    )
    joint, world_model, vla = (dataset == index for index in range(3))
    # world model: actions given clean (sigma 0, no loss), video denoised
    assert torch.all(action_sigma[world_model] == 0) and torch.all(action_weight[world_model] == 0)
    assert torch.all(video_sigma[world_model] > 0) and torch.all(video_weight[world_model] == 1)
    # VLA: the future video marginalised (sigma 1), actions denoised with their loss
    assert torch.all(video_sigma[vla] == 1) and torch.all(action_weight[vla] == 1)
    # joint: both denoised, both with a loss
    assert torch.all(action_sigma[joint] > 0) and torch.all(video_sigma[joint] < 1)
    assert torch.all(action_weight[joint] == 1) and torch.all(video_weight[joint] == 1)


def test_without_an_entry_of_its_own_nothing_changes_and_bad_mixes_are_refused():
    assert dataset_mode_shares({"joint": 1.0}, [None, None]) is None
    with pytest.raises(ValueError, match="mode mixing off"):
        dataset_mode_shares(None, [WORLD_MODEL_ONLY])
    with pytest.raises(ValueError, match="data/sent.*unknown modes"):
        DatasetEntry(path="data/sent", mode_mix={"policy": 1.0})
    assert DatasetEntry(path="data/sent", mode_mix={"world_model": 2.0}).mode_mix["world_model"] == 1.0


@pytest.mark.timeout(300)
@pytest.mark.parametrize("own_mix", [None, WORLD_MODEL_ONLY])
def test_a_world_model_only_dataset_never_trains_the_actions(tmp_path, own_mix):
    root, _ = write_tiny_dataset(tmp_path / "sent", num_episodes=2, length=16)
    entry = {"path": str(root)} if own_mix is None else {"path": str(root), "mode_mix": own_mix}
    mixture = tmp_path / "mixture.yaml"
    mixture.write_text(yaml.safe_dump({"tiers": [{"name": "sent", "weight": 1.0, "datasets": [entry]}]}))
    config = TrainingConfig.for_stage(
        3, preset="motus-tiny", mixture=str(mixture), output=str(tmp_path / "run"), batch_size=4, warmup_steps=0
    )
    trainer = Trainer(config)
    steps = [trainer.train_step() for _ in range(3)]
    assert all(step["video"] > 0 for step in steps)
    if own_mix is None:  # the run's mix: VLA, joint, IDM and video generation samples train the actions
        assert sum(step["action"] for step in steps) > 0
    else:  # world model only: the actions are always given, never a target
        assert all(step["action"] == 0 for step in steps)
