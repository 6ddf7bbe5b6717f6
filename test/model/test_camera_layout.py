"""The camera layout saved in a checkpoint (config.cameras): old checkpoints keep the three-view composite bit for
bit, and a request or observation whose cameras differ from the checkpoint's gets one line naming the roles."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from motus_model.config import CameraConfig, MotusConfig
from motus_model.engine import MotusEngine, MotusRequest
from motus_model.policy import MotusPolicy

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "models" / "motus-small-aloha-transfer-cube"
GOLDEN = Path(__file__).parent / "data" / "shipped_three_view_golden.json"


def golden_request(images: dict[str, np.ndarray]) -> MotusRequest:
    state = np.linspace(-0.5, 0.5, 14)
    return MotusRequest(mode="vla", images=images, state=state, instruction="transfer the cube", steps=2, seed=3)


def golden_views() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {role: rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for role in ("high", "left_wrist", "right_wrist")}


def test_config_without_cameras_loads_as_the_three_aloha_views(tmp_path):
    data = MotusConfig.preset("motus-tiny").to_dict()
    del data["cameras"]
    config = MotusConfig.from_dict(data)
    assert config.cameras == CameraConfig(["high", "left_wrist", "right_wrist"], "head_row")
    config.cameras = CameraConfig(["high"])
    config.save(tmp_path / "config.json")
    loaded = MotusConfig.load(tmp_path / "config.json")
    assert loaded.cameras.roles == ["high"] and loaded.cameras.tiling == "grid" and loaded == config


def checkpoint_with_config(source: Path, target: Path, data: dict) -> Path:
    """``source`` with its config.json replaced by ``data`` (symbolic links to every other file)."""
    target.mkdir()
    for item in source.iterdir():
        if item.name != "config.json":
            os.symlink(item, target / item.name)
    (target / "config.json").write_text(json.dumps(data))
    return target


def test_shipped_checkpoint_gives_its_recorded_outputs_with_or_without_a_camera_section(tmp_path):
    """A config.json without a camera section (every checkpoint written before layouts existed) loads as the three
    ALOHA views: the shipped checkpoint with its section removed and with the three views written out builds the
    composite the code built before layouts existed (golden hash) and gives the same actions, the ones recorded for
    the shipped weights (golden file; `python test/model/test_camera_layout.py` rewrites them after a new model
    is shipped)."""
    golden = json.loads(GOLDEN.read_text())
    data = json.loads((SHIPPED / "config.json").read_text())
    data.pop("cameras", None)
    legacy = checkpoint_with_config(SHIPPED, tmp_path / "legacy", data)
    explicit = checkpoint_with_config(
        SHIPPED,
        tmp_path / "explicit",
        {**data, "cameras": {"roles": ["high", "left_wrist", "right_wrist"], "tiling": "head_row"}},
    )
    actions = []
    for folder in (legacy, explicit):
        composite, folder_actions = composite_and_actions(folder)
        assert hashlib.sha256(composite.tobytes()).hexdigest() == golden["composite_sha256"], folder
        actions.append(folder_actions)
    np.testing.assert_array_equal(actions[0], actions[1])
    # float summation order may differ with the thread count; the composite above is exact
    np.testing.assert_allclose(actions[0], np.asarray(golden["actions"], dtype=np.float32), rtol=0, atol=1e-5)


def composite_and_actions(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    engine = MotusEngine.from_pretrained(folder)
    try:
        return engine._composite(golden_views()), np.asarray(engine.infer(golden_request(golden_views())).actions)
    finally:
        engine.close()


@pytest.fixture(scope="module")
def one_camera_engine():
    config = MotusConfig.preset("motus-tiny")
    config.cameras = CameraConfig(["high"])
    engine = MotusEngine.from_config(config, seed=0)
    yield engine
    engine.close()


def test_a_request_with_other_cameras_fails_naming_the_expected_roles(one_camera_engine):
    high = np.zeros((24, 32, 3), np.uint8)
    request = MotusRequest(mode="vla", images={"high": high, "left_wrist": high}, state=np.zeros(14), steps=1, seed=0)
    with pytest.raises(ValueError, match=r"images: cameras \['high', 'left_wrist'\] do not match .*unknown camera "):
        one_camera_engine.infer(request)
    request.images = {"high": high}
    assert one_camera_engine.infer(request).actions.shape == (4, 14)


def test_policy_refuses_an_observation_without_the_checkpoints_cameras(one_camera_engine):
    policy = MotusPolicy(one_camera_engine)
    assert policy.camera_roles == ["high"]
    views = {"left_wrist": np.zeros((24, 32, 3), np.uint8)}
    with pytest.raises(ValueError, match=r"observation: .*missing camera \['high'\].*expected roles \['high'\]"):
        policy.predict_action_chunk(views, np.zeros(14))
    chunk = policy.predict_action_chunk({"high": np.zeros((24, 32, 3), np.uint8)}, np.zeros(14))
    assert chunk.shape == (4, 14) and np.isfinite(chunk).all()


if __name__ == "__main__":  # rewrite the golden actions for a newly shipped checkpoint (the composite hash stays)
    record = json.loads(GOLDEN.read_text())
    record["actions"] = composite_and_actions(SHIPPED)[1].tolist()
    GOLDEN.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {GOLDEN}")
