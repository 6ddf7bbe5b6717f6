"""LeRobot writer -> reader round trip, stats, and the extra-column path used for latent actions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from motus_model.data.lerobot import ALOHA_CAMERA_KEYS, LeRobotDataset, LeRobotDatasetWriter


@pytest.mark.timeout(60)
def test_round_trip_exact_vectors_and_close_frames(tiny_dataset):
    root, written = tiny_dataset
    dataset = LeRobotDataset(root)
    assert dataset.num_episodes == 2
    assert dataset.fps == 50
    assert dataset.camera_keys == ALOHA_CAMERA_KEYS
    info = json.loads((root / "meta" / "info.json").read_text())
    assert info["total_frames"] == 48 and info["codebase_version"] == "v3.0"
    # v3.0: both episodes share one parquet file and one mp4 per camera
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*.parquet")) == [
        "data/chunk-000/file-000.parquet",
        "meta/episodes/chunk-000/file-000.parquet",
        "meta/tasks.parquet",
    ]
    assert len(list(root.rglob("*.mp4"))) == 3
    for e, episode in enumerate(written):
        loaded = dataset.load_episode(e)
        np.testing.assert_array_equal(loaded["observation.state"], episode["state"])
        np.testing.assert_array_equal(loaded["action"], episode["action"])
        assert loaded["task"] == episode["task"]
        for key in ALOHA_CAMERA_KEYS:
            decoded = loaded["frames"][key]
            assert decoded.shape == episode["frames"][key].shape
            error = np.abs(decoded.astype(np.int16) - episode["frames"][key].astype(np.int16)).mean()
            assert error < 5.0, f"{key}: mean abs error {error} after H.264 coding"
    table = dataset.read_table(1)
    # global index continues across episodes; frame_index restarts
    assert table["index"].to_pylist() == list(range(24, 48))
    assert table["frame_index"].to_pylist() == list(range(24))


@pytest.mark.timeout(60)
def test_stats_cover_all_rows(tiny_dataset):
    root, written = tiny_dataset
    stats = json.loads((root / "meta" / "stats.json").read_text())
    all_actions = np.concatenate([e["action"] for e in written]).astype(np.float64)
    np.testing.assert_allclose(stats["action"]["mean"], all_actions.mean(0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(stats["action"]["std"], all_actions.std(0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(stats["observation.state"]["max"], np.concatenate([e["state"] for e in written]).max(0))


@pytest.mark.timeout(60)
def test_add_vector_column_updates_info_and_stats(tiny_dataset):
    root, _ = tiny_dataset
    dataset = LeRobotDataset(root)
    latents = [np.full((24, 14), float(e), dtype=np.float32) for e in range(2)]
    dataset.add_vector_column("latent_action", latents)
    reopened = LeRobotDataset(root)
    assert "latent_action" in reopened.vector_keys
    np.testing.assert_array_equal(reopened.vectors(1)["latent_action"], latents[1])
    np.testing.assert_allclose(reopened.stats["latent_action"]["mean"], np.full(14, 0.5))
    with pytest.raises(ValueError, match="must be"):
        reopened.add_vector_column("latent_action", [np.zeros((3, 14))] * 2)


def test_writer_rejects_bad_input(tmp_path):
    writer = LeRobotDatasetWriter(tmp_path / "bad", fps=10)
    frames = {key: np.zeros((4, 8, 8, 3), np.uint8) for key in ALOHA_CAMERA_KEYS}
    with pytest.raises(ValueError, match="state must be"):
        writer.add_episode(frames, np.zeros((4, 7)), np.zeros((4, 14)), "t")
    with pytest.raises(ValueError, match="frames keys"):
        writer.add_episode({"x": frames[ALOHA_CAMERA_KEYS[0]]}, np.zeros((4, 14)), np.zeros((4, 14)), "t")
    with pytest.raises(ValueError, match="no episodes"):
        writer.finalize()


def test_frames_can_be_decoded_smaller(tiny_dataset):
    root, written = tiny_dataset
    small = LeRobotDataset(root, max_frame_width=24).frames(0, ALOHA_CAMERA_KEYS[0])
    assert small.shape == (24, 16, 24, 3)  # 32x48 recorded, aspect kept
    import cv2

    expected = cv2.resize(written[0]["frames"][ALOHA_CAMERA_KEYS[0]][5], (24, 16), interpolation=cv2.INTER_AREA)
    assert np.abs(small[5].astype(int) - expected.astype(int)).mean() < 5.0


def test_writer_appends_episodes_and_refuses_a_dataset_it_cannot_continue(tmp_path):
    frames = {key: np.full((3, 8, 8, 3), 100, np.uint8) for key in ALOHA_CAMERA_KEYS}
    first = LeRobotDatasetWriter(tmp_path / "d", fps=10)
    first.add_episode(frames, np.zeros((3, 14)), np.zeros((3, 14)), "pick")
    first.finalize()

    more = LeRobotDatasetWriter(tmp_path / "d", fps=10, append=True)
    assert more.num_episodes == 1 and more.frame_shapes[ALOHA_CAMERA_KEYS[0]] == (8, 8, 3)
    assert more.add_episode(frames, np.ones((3, 14)), np.ones((3, 14)), "place") == 1
    more.finalize()
    dataset = LeRobotDataset(tmp_path / "d")
    assert [dataset.task(i) for i in range(2)] == ["pick", "place"]
    assert dataset.read_table(1)["index"].to_pylist() == [3, 4, 5]
    np.testing.assert_allclose(dataset.stats["action"]["mean"], np.full(14, 0.5))

    with pytest.raises(ValueError, match="fps"):
        LeRobotDatasetWriter(tmp_path / "d", fps=50, append=True)
    with pytest.raises(ValueError, match="cameras"):
        LeRobotDatasetWriter(tmp_path / "d", fps=10, camera_keys=ALOHA_CAMERA_KEYS[:1], append=True)
    # A column the writer does not fill (latent actions added later) would be missing from new episodes.
    dataset.add_vector_column("latent_action", [np.zeros((3, 4), np.float32)] * 2)
    with pytest.raises(ValueError, match="vector columns"):
        LeRobotDatasetWriter(tmp_path / "d", fps=10, append=True)


def test_v21_is_complete_and_read_without_stats_json(tmp_path):
    """v2.1 needs meta/episodes_stats.jsonl (LeRobot 0.3 and its v3.0 converter refuse a dataset without it)."""
    frames = {key: np.full((3, 8, 8, 3), 100, np.uint8) for key in ALOHA_CAMERA_KEYS}
    writer = LeRobotDatasetWriter(tmp_path / "v21", fps=10, version="v2.1")
    writer.add_episode(frames, np.zeros((3, 14)), np.zeros((3, 14)), "pick")
    writer.add_episode(frames, np.ones((3, 14)), np.full((3, 14), 2.0), "place")
    root = writer.finalize()
    assert (root / "data/chunk-000/episode_000001.parquet").is_file()
    lines = (root / "meta" / "episodes_stats.jsonl").read_text().splitlines()
    assert [json.loads(line)["stats"]["action"]["count"] for line in lines] == [[3], [3]]
    (root / "meta" / "stats.json").unlink()  # v2.1 datasets from the Hub may only have the per-episode stats
    dataset = LeRobotDataset(root)
    assert dataset.version == "v2.1" and dataset.task(1) == "place"
    np.testing.assert_allclose(dataset.stats["action"]["mean"], np.ones(14))
    np.testing.assert_allclose(dataset.stats["action"]["std"], np.ones(14))
    with pytest.raises(ValueError, match="cannot write"):
        LeRobotDatasetWriter(tmp_path / "v9", fps=10, version="v9.0")
