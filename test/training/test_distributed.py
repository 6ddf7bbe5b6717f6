"""Two CPU processes (torchrun, gloo DDP through accelerate) train exactly like one process.

The global batch of 4 is cut into 2 shards: two processes take one shard each, one process takes both as
gradient-accumulation micro-batches. Shard s always uses the same samples and the noise of generator
(seed, step, s), so losses, gradient norms and parameters must agree up to float summation order.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from training_helpers import write_tiny_dataset

from motus_model.conditioning import build_tiny_qwen3_vl, build_tiny_umt5

SOURCE = Path(__file__).resolve().parents[2] / "src"
RUNNER = """
import json, sys
from motus_model.training.config import TrainingConfig
from motus_model.training.trainer import Trainer
config = TrainingConfig.from_dict(json.loads(sys.argv[1]))
trainer = Trainer(config)
result = trainer.train()
if trainer.accelerator.is_main_process:
    (trainer.output / "history.json").write_text(json.dumps(result.history))
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(
    tmp_path: Path, name: str, processes: int, accumulation: int, num_workers: int = 0
) -> tuple[list[dict], dict[str, torch.Tensor]]:
    config = {
        "stage": 3,
        "training_mode": "finetune",
        "preset": "motus-tiny",
        "dataset": str(tmp_path / "ds"),
        "output": str(tmp_path / name),
        "steps": 2,
        "batch_size": 4,
        "gradient_accumulation": accumulation,
        "learning_rate": 1e-3,
        "warmup_steps": 0,
        "log_every": 1,
        "checkpoint_every": 0,
        "reinit_prefixes": [],
        "num_workers": num_workers,
        "text_encoder_path": str(tmp_path / "text_encoder"),
        "vlm_path": str(tmp_path / "vlm"),
    }
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    env = dict(os.environ, PYTHONPATH=str(SOURCE), OMP_NUM_THREADS="1")
    if processes == 1:
        command = [sys.executable, str(script), json.dumps(config)]
    else:
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nproc_per_node={processes}",
            f"--master_port={_free_port()}",
            str(script),
            json.dumps(config),
        ]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert completed.returncode == 0, completed.stderr[-4000:]
    history = json.loads((tmp_path / name / "history.json").read_text())
    weights = load_file(str(tmp_path / name / "checkpoints" / "step_0000002" / "model.safetensors"))
    return history, weights


@pytest.mark.timeout(400)
def test_two_processes_match_one_process_with_accumulation(tmp_path):
    write_tiny_dataset(tmp_path / "ds", num_episodes=2, length=16)
    build_tiny_umt5(24, directory=tmp_path / "text_encoder")
    build_tiny_qwen3_vl(24, directory=tmp_path / "vlm")
    # the single process also prepares its steps in a data-loader worker: that must not change anything
    single_history, single_weights = _run(tmp_path, "single", processes=1, accumulation=2, num_workers=1)
    ddp_history, ddp_weights = _run(tmp_path, "ddp", processes=2, accumulation=1)
    assert len(single_history) == len(ddp_history) == 2
    for single, ddp in zip(single_history, ddp_history):
        assert ddp["loss"] == pytest.approx(single["loss"], rel=1e-5)
        assert ddp["grad_norm"] == pytest.approx(single["grad_norm"], rel=1e-4)
    # Adam's update is lr * m / (sqrt(v) + eps): gradient differences of float-summation size move
    # parameters by far less than 1 % of a step (lr = 1e-3)
    assert set(ddp_weights) == set(single_weights)
    for name, tensor in single_weights.items():
        torch.testing.assert_close(ddp_weights[name], tensor, rtol=0, atol=1e-5, msg=name)
    # training did move the parameters: the zero-initialised action head is no longer zero
    assert single_weights["action_expert.head.head.weight"].abs().max() > 1e-4
