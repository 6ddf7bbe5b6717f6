"""The shipped checkpoint models/motus-small-aloha-transfer-cube: it loads in the engine (a motus-small-aloha-pca
model with its fitted PCA video codec and the demonstrations' normalisation stats), motus_server serves it by name,
and with the simulated robot the commands it sends stay within the aloha_sim profile's joint limits. Also:
checkpoint names resolve, or fail clearly."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from ros_helpers import server_command, sim_command, start_process, stop_process
from std_msgs.msg import Float64MultiArray

from motus_msgs.msg import ErrorCode
from motus_ros.checkpoints import DEFAULT_SIM_CHECKPOINT, DEFAULT_SIM_INSTRUCTION, resolve_checkpoint, shipped_models
from motus_ros.client import GOAL_STATUS_SUCCEEDED, MotusClient
from motus_ros.profiles import load_profile

pytestmark = pytest.mark.timeout(240)

PROFILE = load_profile("aloha_sim")


def test_resolve_checkpoint_names_paths_and_unknown_names(tmp_path):
    assert DEFAULT_SIM_CHECKPOINT in shipped_models()
    path = Path(resolve_checkpoint(DEFAULT_SIM_CHECKPOINT))
    assert (path.parent / "latent-action-vae-aloha" / "config.json").is_file()
    assert "latent-action-vae-aloha" not in shipped_models()  # a model folder too, but no Motus checkpoint
    assert path.name == DEFAULT_SIM_CHECKPOINT and path.parent.name == "models" and (path / "config.json").is_file()
    assert resolve_checkpoint(str(tmp_path)) == str(tmp_path)  # an existing path is used as is
    with pytest.raises(FileNotFoundError) as error:
        resolve_checkpoint("motus-no-such-model")
    message = str(error.value)
    assert "motus-no-such-model" in message and DEFAULT_SIM_CHECKPOINT in message  # names the shipped models
    with pytest.raises(FileNotFoundError):
        resolve_checkpoint(str(tmp_path / "missing" / "folder"))  # a path that does not exist is no name either
    with pytest.raises(ValueError):
        resolve_checkpoint("")


def test_shipped_checkpoint_loads_as_a_motus_small_aloha_pca_model():
    from motus_model.config import MotusConfig
    from motus_model.engine import MotusEngine, MotusRequest

    path = Path(resolve_checkpoint(DEFAULT_SIM_CHECKPOINT))
    for name in ("config.json", "model.safetensors", "stats.json", "text_encoder", "vlm", "vae"):
        assert (path / name).exists(), f"the shipped checkpoint lacks {name}"
    engine = MotusEngine.from_pretrained(str(path))
    try:
        preset = MotusConfig.preset("motus-small-aloha-pca")
        config = engine.config
        for part in ("video", "action", "understanding", "latents", "temporal"):
            assert getattr(config, part) == getattr(preset, part), f"{part} differs from motus-small-aloha-pca"
        # a video token as wide as the video expert: the head can write every direction of the noise
        assert config.video_token_dim == config.video.dim
        assert config.num_layers == preset.num_layers
        assert (config.temporal.action_chunk, config.temporal.downsample_rate) == (16, 2)  # 32 control steps = 0.64 s
        # Normalisation stats of the demonstrations (a preset with random weights has none).
        stats = engine.normalizer.to_dict()["stats"]
        for key in ("action", "state"):
            assert len(stats[key]["mean"]) == 14 and np.all(np.asarray(stats[key]["std"]) > 0), key
        assert not np.allclose(stats["action"]["mean"], 0.0)
        views = {role: np.full((240, 320, 3), 90, np.uint8) for role in ("high", "left_wrist", "right_wrist")}
        start = np.array([0.0, -0.96, 1.16, 0.0, -0.3, 0.0, 1.0] * 2)
        result = engine.infer(
            MotusRequest(mode="vla", images=views, state=start, instruction=DEFAULT_SIM_INSTRUCTION, steps=2, seed=0)
        )
        assert result.actions.shape == (16, 14) and np.all(np.isfinite(result.actions))
    finally:
        engine.close()


@pytest.mark.slow
@pytest.mark.flaky(reruns=2, reruns_delay=5)  # real processes on 2 shared cores: a starved run is retried
def test_server_serves_the_shipped_checkpoint_by_name_within_the_joint_limits(ros_context):
    """motus_sim + motus_server --checkpoint <name>: the name resolves to the shipped folder, and a short RunPolicy
    run's commands on the robot's command topic all lie within the profile's joint limits."""
    processes = []
    client = None
    try:
        processes.append(start_process(sim_command("-p", "camera_rate_hz:=4.0"), "MOTUS_SIM READY", timeout=120))
        server = start_process(
            server_command(
                "--checkpoint",
                DEFAULT_SIM_CHECKPOINT,
                "--torch-threads",
                "1",
                default_steps=1,
                chunk_request_threshold=16,
            ),
            "MOTUS SERVER READY",
            timeout=180,
        )
        processes.append(server)
        output = "".join(server.output)
        assert f"models/{DEFAULT_SIM_CHECKPOINT}" in output and "loading the Motus checkpoint" in output, output[-3000:]
        assert "RANDOM weights" not in output

        client = MotusClient(node_name="shipped_checkpoint_client")
        lock = threading.Lock()
        commands: list[tuple[float, np.ndarray]] = []

        def on_command(message: Float64MultiArray) -> None:
            with lock:
                commands.append((time.monotonic(), np.asarray(message.data)))

        client.node.create_subscription(Float64MultiArray, PROFILE.command_topics[0], on_command, 100)
        assert client.wait_for_server(60)
        deadline = time.monotonic() + 30
        while True:  # the sim's first camera frames reach the server
            response = client.predict_actions(DEFAULT_SIM_INSTRUCTION, steps=1)
            if response.error.code == ErrorCode.NONE or time.monotonic() > deadline:
                break
            client.spin(0.3)
        assert response.error.code == ErrorCode.NONE, response.error.message
        assert len(response.trajectory.points) > 0

        start = time.monotonic()
        assert client.run_policy(DEFAULT_SIM_INSTRUCTION, max_duration_s=4.0)
        while not client.is_task_complete(0.1):
            pass
        result = client.get_result()
        client.spin(0.5)
        assert client.policy_task.status == GOAL_STATUS_SUCCEEDED, result.error.message
        assert result.termination == "completed" and result.chunks >= 1
        assert any(not f.holding for f in client.policy_task.feedback), "no chunk of the shipped model was executed"
        with lock:
            sent = [command for stamp, command in commands if stamp >= start]
        assert len(sent) > 50, f"only {len(sent)} commands reached the robot"
        sent = np.stack(sent)
        assert sent.shape[1] == 14 and np.all(np.isfinite(sent))
        lower, upper = np.asarray(PROFILE.lower_limits), np.asarray(PROFILE.upper_limits)
        assert np.all(sent >= lower - 1e-9) and np.all(sent <= upper + 1e-9), (
            f"commands outside the joint limits: min {sent.min(axis=0)}, max {sent.max(axis=0)}"
        )
    finally:
        if client is not None:
            client.destroy()
        for process in reversed(processes):
            stop_process(process)
