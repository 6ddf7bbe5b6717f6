"""The simulated-ALOHA mixtures (config/training/mixtures/aloha_sim_*.yaml) run in `motus train`
as shipped: its relative paths resolve to the datasets docs/results.md creates, and a few steps train."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from training_helpers import write_tiny_dataset

from motus_model.cli import main
from motus_model.conditioning import build_tiny_qwen3_vl, build_tiny_umt5
from motus_model.data.lerobot import LeRobotDataset
from motus_model.data.mixture import MixtureConfig

MIXTURES = Path(__file__).resolve().parents[2] / "config" / "training" / "mixtures"
STAGES = {"aloha_sim_pyramid_video.yaml": 1, "aloha_sim_pyramid.yaml": 2}
# every mixture file that `motus train` must run as shipped, with its stage
RUNS = {
    **STAGES,
    "aloha_sim_two_tasks.yaml": 3,
    "aloha_sim_transfer_cube_world_model.yaml": 3,
    "aloha_sim_world_model_random_motions.yaml": 3,
}
# mixtures meant for a model whose actions modulate the video (motus train --action-modulation), and of those the
# ones whose recipe has the path for clean actions only (--action-modulation-clean-only)
ACTION_MODULATION = {"aloha_sim_transfer_cube_world_model.yaml", "aloha_sim_world_model_random_motions.yaml"}
CLEAN_ONLY = {"aloha_sim_world_model_random_motions.yaml"}


def _layout(tmp_path: Path, name: str) -> Path:
    """The mixture file at its place in a copy of the repository layout, with a tiny dataset (labelled with
    latent actions) at every path it names; returns the copied YAML."""
    target = tmp_path / "repo" / "config" / "training" / "mixtures" / name
    target.parent.mkdir(parents=True)
    shutil.copy(MIXTURES / name, target)
    for seed, (_, entry) in enumerate(MixtureConfig.from_yaml(target).entries()):
        root, written = write_tiny_dataset(Path(entry.path), num_episodes=2, length=16, seed=seed)
        latent = [np.random.default_rng(seed).normal(size=(16, 14)).astype(np.float32) for _ in written]
        LeRobotDataset(root).add_vector_column("latent_action", latent)
    return target


def test_the_pyramid_holds_every_tier():
    tiers = {
        name: {t.name: [Path(e.path).name for e in t.datasets] for t in MixtureConfig.from_yaml(MIXTURES / name).tiers}
        for name in STAGES
    }
    assert tiers["aloha_sim_pyramid.yaml"] == tiers["aloha_sim_pyramid_video.yaml"]
    assert tiers["aloha_sim_pyramid.yaml"] == {
        "unlabelled_video": ["transfer_cube_video", "insertion_video", "transfer_cube_corrective"],
        "task_agnostic": ["random_motion"],
        "target": ["transfer_cube_target"],
    }
    for name, stage in STAGES.items():
        keys = {e.action_key for _, e in MixtureConfig.from_yaml(MIXTURES / name).entries()}
        assert keys == ({None} if stage == 1 else {"latent_action"})
        # the paths name the repository's outputs/ folder (git-ignored), where docs/results.md writes them
        for _, entry in MixtureConfig.from_yaml(MIXTURES / name).entries():
            assert Path(entry.path).parent == MIXTURES.parents[2] / "outputs" / "pyramid"


@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", sorted(RUNS))
def test_motus_train_runs_the_pyramid_as_is(tmp_path, capsys, name):
    mixture = _layout(tmp_path, name)
    build_tiny_umt5(24, directory=tmp_path / "te")
    build_tiny_qwen3_vl(24, directory=tmp_path / "vlm")
    argv = ["train", "--stage", str(RUNS[name]), "--mixture", str(mixture), "--output", str(tmp_path / "run")]
    if RUNS[name] == 3:  # one robot, several tasks: one set of statistics
        argv += ["--normalization-stats", "pooled"]
    if name in ACTION_MODULATION:
        argv += ["--action-modulation-clean-only" if name in CLEAN_ONLY else "--action-modulation"]
    argv += ["--preset", "motus-tiny", "--steps", "2", "--batch-size", "2", "--checkpoint-every", "0"]
    argv += ["--warmup-steps", "0", "--text-encoder", str(tmp_path / "te"), "--vlm", str(tmp_path / "vlm")]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 2 and np.isfinite(summary["final_loss"])
    saved = json.loads((tmp_path / "run" / "training_config.json").read_text())
    assert saved["action_modulation"] == (name in ACTION_MODULATION)
    assert saved["action_modulation_clean_only"] == (name in CLEAN_ONLY)
