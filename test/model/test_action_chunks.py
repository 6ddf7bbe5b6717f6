"""ChunkBlender: ACT temporal ensembling weights, replace mode, inference-delay accounting, remaining()."""

import numpy as np
import pytest

from motus_model.action_chunks import ChunkBlender, upsample_chunk

pytestmark = pytest.mark.timeout(60)


def chunk(value: float, n: int = 10, dim: int = 14) -> np.ndarray:
    return np.full((n, dim), value)


def test_single_chunk_action_i_is_for_step_obs_plus_one_plus_i():
    blender = ChunkBlender()
    actions = np.arange(5 * 14, dtype=float).reshape(5, 14)
    blender.add_chunk(actions, obs_step=0)
    assert blender.action_for(0) is None  # the observation's own step has no action
    for i in range(5):
        assert np.array_equal(blender.action_for(1 + i), actions[i])
    assert blender.action_for(6) is None


def test_temporal_ensemble_uses_act_weights_oldest_first():
    decay = 0.5
    blender = ChunkBlender("temporal_ensemble", ensemble_decay=decay)
    values = [1.0, 2.0, 4.0]
    for obs_step, value in enumerate(values):  # three chunks from steps 0, 1, 2: all cover step 3
        blender.add_chunk(chunk(value), obs_step)
    weights = np.exp(-decay * np.arange(3))  # ACT: exp(-k * i), i = 0 for the oldest chunk
    expected = (weights * np.array(values)).sum() / weights.sum()
    np.testing.assert_allclose(blender.action_for(3), np.full(14, expected))
    # With ACT's default k = 0.01 the weights are nearly uniform and the oldest chunk still weighs most.
    act = ChunkBlender(ensemble_decay=0.01)
    act.add_chunk(chunk(0.0), 0)
    act.add_chunk(chunk(1.0), 0)
    assert act.action_for(1)[0] == pytest.approx(np.exp(-0.01) / (1 + np.exp(-0.01)))
    assert act.action_for(1)[0] < 0.5


def test_replace_mode_uses_only_the_newest_chunk():
    blender = ChunkBlender("replace")
    blender.add_chunk(chunk(1.0), obs_step=0)
    assert blender.action_for(1)[0] == 1.0
    blender.add_chunk(chunk(2.0), obs_step=1)
    assert blender.action_for(2)[0] == 2.0
    assert blender.remaining(3) == 9  # the new chunk covers steps 2..11: 3..11 are left


def test_late_chunk_drops_the_actions_already_due():
    blender = ChunkBlender("replace")
    blender.add_chunk(chunk(0.0, n=20), obs_step=0)
    for step in range(1, 6):  # steps 1..5 run while the next chunk is being inferred
        blender.action_for(step)
    late = np.arange(10, dtype=float)[:, None].repeat(14, axis=1)  # action i has value i
    kept = blender.add_chunk(late, obs_step=1)  # predicted at step 1: its actions 0..3 were for steps 2..5
    assert kept == 6 and blender.dropped_actions == 4
    assert blender.action_for(6)[0] == 4.0  # step 6 = 1 + 1 + 4
    assert blender.remaining(6) == 6 and blender.remaining(7) == 5
    # A chunk entirely in the past is dropped whole.
    assert blender.add_chunk(chunk(9.0, n=3), obs_step=0) == 0 and blender.action_for(7)[0] == 5.0


def test_remaining_spans_overlapping_chunks_and_horizon_truncates():
    blender = ChunkBlender()
    assert blender.remaining(0) == 0
    blender.add_chunk(chunk(1.0, n=10), obs_step=0)  # steps 1..10
    blender.add_chunk(chunk(1.0, n=10), obs_step=5)  # steps 6..15
    assert blender.remaining(1) == 15 and blender.remaining(12) == 4 and blender.remaining(16) == 0
    short = ChunkBlender(horizon=3)
    short.add_chunk(chunk(1.0, n=10), obs_step=0)
    assert short.remaining(1) == 3 and short.action_for(4) is None


def test_bad_input_raises():
    with pytest.raises(ValueError, match="must be one of"):
        ChunkBlender("average")
    blender = ChunkBlender()
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        blender.add_chunk(np.zeros(14), 0)
    blender.add_chunk(chunk(0.0), 0)
    with pytest.raises(ValueError, match="dim must stay 14"):
        blender.add_chunk(np.zeros((3, 7)), 1)
    with pytest.raises(ValueError, match="finite"):
        blender.add_chunk(np.full((3, 14), np.nan), 1)


def test_upsample_chunk_puts_action_i_at_control_step_i_plus_1_times_rate():
    """The model's action i is for control step (i + 1) * downsample_rate; the steps between are interpolated
    from the observed state (step 0), so the blender gets one action per control step."""
    start = np.zeros(2)
    chunk = np.array([[3.0, -3.0], [6.0, 0.0]])
    per_step = upsample_chunk(chunk, start, 3)
    assert per_step.shape == (6, 2)
    assert np.allclose(per_step[:, 0], [1, 2, 3, 4, 5, 6]) and np.allclose(per_step[:, 1], [-1, -2, -3, -2, -1, 0])
    assert np.allclose(per_step[[2, 5]], chunk)  # the model's own actions land exactly on their steps
    assert np.array_equal(upsample_chunk(chunk, start, 1), chunk)
