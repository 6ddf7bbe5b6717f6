"""``train_video_outputs_only``: a world-model fine-tune that cannot change the policy or the IDM.

The oracle for which parameters the action outputs depend on is autograd, not the list under test; the
trainer test then checks that such a run leaves every other weight bit-identical to its starting checkpoint.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file
from training_helpers import write_tiny_dataset

from motus_model.cli import main
from motus_model.conditioning import build_tiny_qwen3_vl, build_tiny_umt5
from motus_model.config import MotusConfig
from motus_model.modeling_motus import MotusModel


def _model(seed: int, clean_only: bool = True) -> MotusModel:
    config = dataclasses.replace(
        MotusConfig.preset("motus-tiny"), action_modulation=True, action_modulation_clean_only=clean_only
    )
    torch.manual_seed(seed)
    model = MotusModel(config)
    with torch.no_grad():  # every zero-initialised output layer given weights, so gradients flow everywhere
        for layer in (model.video.head.head, model.action_expert.head.head, model.action_to_video.embed[2]):
            torch.nn.init.normal_(layer.weight, std=0.1)
    return model


def _inputs(config: MotusConfig, video_sigma: float, action_sigma: float, batch: int = 2):
    generator = torch.Generator().manual_seed(7)
    frames, height, width = config.latent_grid()
    return (
        torch.randn(batch, config.video.latent_channels, frames, height, width, generator=generator),
        torch.full((batch,), video_sigma),
        torch.randn(batch, config.temporal.action_chunk, config.action.action_dim, generator=generator),
        torch.full((batch,), action_sigma),
        torch.randn(batch, config.action.state_dim, generator=generator) if config.uses_state else None,
        torch.randn(batch, 6, config.video.text_dim, generator=generator),
        torch.randn(batch, 9, config.understanding.vlm_dim, generator=generator),
    )


def _gradients(model: MotusModel, inputs, output: int) -> dict[str, torch.Tensor | None]:
    model.zero_grad(set_to_none=True)
    model.forward_uncached(*inputs)[output].square().mean().backward()
    return {name: parameter.grad for name, parameter in model.named_parameters()}


@pytest.mark.timeout(240)
def test_the_video_output_parameters_never_reach_an_action_output():
    model = _model(seed=0)
    listed = set(model.video_output_parameter_names())
    assert any(name.startswith("action_to_video.") for name in listed)
    assert any(name.startswith("video.head.") for name in listed)
    # sigmas of the modes whose actions the user reads: VLA (video marginalised), IDM (video clean), joint
    for video_sigma, action_sigma in ((1.0, 0.6), (0.0, 0.6), (0.5, 0.5)):
        grads = _gradients(model, _inputs(model.config, video_sigma, action_sigma), output=1)
        reached = {name for name, grad in grads.items() if grad is not None and grad.abs().sum() > 0}
        assert not reached & listed, (video_sigma, action_sigma, sorted(reached & listed))
        # and the rest of the video stream does reach the actions (the list is not everything)
        assert "video.blocks.0.self_attn.q.weight" in reached
    # every listed parameter is live: the world model's video velocity depends on it
    grads = _gradients(model, _inputs(model.config, 0.5, 0.0), output=0)
    dead = sorted(name for name in listed if grads[name] is None or grads[name].abs().sum() == 0)
    assert not dead, dead
    # a path that is not clean-only also modulates the VLA's video tokens: not listed
    assert not any(
        n.startswith("action_to_video.") for n in _model(seed=0, clean_only=False).video_output_parameter_names()
    )


@pytest.mark.timeout(300)
def test_a_video_outputs_only_fine_tune_leaves_every_action_weight_as_it_was(tmp_path, capsys):
    dataset, _ = write_tiny_dataset(tmp_path / "ds", num_episodes=2, length=16)
    build_tiny_umt5(24, directory=tmp_path / "te")
    build_tiny_qwen3_vl(24, directory=tmp_path / "vlm")
    start = _model(seed=1)
    start.save_pretrained(tmp_path / "start")
    argv = ["train", "--stage", "3", "--dataset", str(dataset), "--init-from", str(tmp_path / "start")]
    argv += ["--output", str(tmp_path / "run"), "--train-video-outputs-only", "--steps", "2", "--batch-size", "2"]
    argv += ["--lr", "1e-2", "--warmup-steps", "0", "--checkpoint-every", "0", "--mode-mix", "joint=1,world_model=1"]
    argv += ["--text-encoder", str(tmp_path / "te"), "--vlm", str(tmp_path / "vlm")]
    assert main(argv) == 0
    assert json.loads((tmp_path / "run" / "training_config.json").read_text())["train_video_outputs_only"] is True
    before = start.state_dict()
    after = load_file(str(tmp_path / "run" / "checkpoints" / "step_0000002" / "model.safetensors"))
    listed = set(start.video_output_parameter_names())
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed and changed <= listed, sorted(changed - listed)
    assert (
        "| frozen | nothing (trained: the video outputs' parameters only"
        in (tmp_path / "run" / "checkpoints" / "step_0000002" / "README.md").read_text()
    )
    capsys.readouterr()


def test_video_outputs_only_needs_a_checkpoint_and_keeps_its_live_action_path(tmp_path):
    from motus_model.training.config import TrainingConfig
    from motus_model.training.trainer import build_model

    with pytest.raises(ValueError, match="set --init-from"):
        build_model(TrainingConfig(train_video_outputs_only=True))
    _model(seed=2, clean_only=False).save_pretrained(tmp_path / "live")  # its path also modulates the VLA
    with pytest.raises(ValueError, match="changes it: leave it off"):
        build_model(
            TrainingConfig(
                init_from=str(tmp_path / "live"), train_video_outputs_only=True, action_modulation_clean_only=True
            )
        )
    assert TrainingConfig(action_modulation_clean_only=True).action_modulation  # clean-only switches the path on
