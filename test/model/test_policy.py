"""MotusPolicy, the runtime the policy node and `motus eval` share: timing rule, transforms, late chunks, failures.

The engine is a stand-in whose futures the test completes by hand, so every expected action is written out with
plain arithmetic here (not through upsample_chunk or the blender under test).
"""

from __future__ import annotations

from concurrent.futures import Future
from types import SimpleNamespace

import numpy as np
import pytest

from motus_model.policy import HOLD_FIRST_CHUNK, HOLD_NEXT_CHUNK, MotusPolicy, PolicyConfig

D = 3
RATE = 2  # control steps per model action
CHUNK = 4  # model actions per chunk -> 8 control steps


class AffineTransforms:
    """robot = 2 * model + 1: a transform that is not its own inverse, so a missing or swapped mapping shows."""

    def robot_to_model(self, q):
        return (np.asarray(q, dtype=np.float64) - 1.0) / 2.0

    def model_to_robot(self, a):
        return 2.0 * np.asarray(a, dtype=np.float64) + 1.0


class HandEngine:
    """Records each request; its futures complete when the test says (or at once with `immediate`)."""

    def __init__(self, immediate: bool = False) -> None:
        self.config = SimpleNamespace(temporal=SimpleNamespace(downsample_rate=RATE, action_chunk=CHUNK))
        self.requests: list = []
        self.futures: list[Future] = []
        self.immediate = immediate

    @staticmethod
    def chunk_for(index: int) -> np.ndarray:
        """Model-space chunk of request `index`: row i is 10 * (index + 1) + i in every dimension."""
        return np.repeat((10.0 * (index + 1) + np.arange(CHUNK))[:, None], D, axis=1)

    def submit(self, request):
        self.requests.append(request)
        future: Future = Future()
        self.futures.append(future)
        if self.immediate:
            self.complete(len(self.futures) - 1)
        return future

    def complete(self, index: int) -> None:
        self.futures[index].set_result(SimpleNamespace(actions=self.chunk_for(index)))


def per_step(index: int, state_robot: float) -> list[float]:
    """What a chunk means per control step, in robot units, by hand: model action i -> 2 a + 1, reached at
    control step 2 (i + 1) after the observation, halfway points in between, starting from the observed state."""
    knots = [state_robot] + [2.0 * a + 1.0 for a in HandEngine.chunk_for(index)[:, 0]]
    out = []
    for i in range(CHUNK):
        out += [(knots[i] + knots[i + 1]) / 2.0, knots[i + 1]]
    return out


def test_synchronous_chunk_starts_at_the_observed_step_with_mirrored_transforms():
    engine = HandEngine(immediate=True)
    policy = MotusPolicy(
        engine,
        PolicyConfig(blending="replace", chunk_request_threshold=0, synchronous=True, seed=7),
        transforms=AffineTransforms(),
    )
    policy.reset("pick", seed=100)
    state = np.full(D, 5.0)
    assert policy.wants_observation(0)
    assert policy.observe(0, {"high": np.zeros((2, 2, 3), np.uint8)}, state)
    request = engine.requests[0]
    np.testing.assert_allclose(request.state, np.full(D, 2.0))  # (5 - 1) / 2: robot -> model
    assert request.instruction == "pick" and request.seed == 100 and request.mode == "vla"
    expected = per_step(0, 5.0)
    for step in range(8):
        assert not policy.wants_observation(step)
        np.testing.assert_allclose(policy.action_for(step).action, np.full(D, expected[step]))
    assert policy.wants_observation(8)  # the whole chunk executed: re-plan
    policy.observe(8, {"high": np.zeros((2, 2, 3), np.uint8)}, np.full(D, 41.0))
    assert engine.requests[1].seed == 101  # chunk k of the episode uses seed + k
    np.testing.assert_allclose(policy.action_for(8).action, np.full(D, per_step(1, 41.0)[0]))
    assert policy.stats.chunks == 2 and policy.stats.dropped_actions == 0


def test_threshold_replans_before_the_chunk_ends():
    engine = HandEngine(immediate=True)
    policy = MotusPolicy(engine, PolicyConfig(blending="replace", chunk_request_threshold=5, synchronous=True))
    policy.reset("x")
    asked = []
    for step in range(8):
        if policy.wants_observation(step):
            asked.append(step)
            policy.observe(step, {}, np.zeros(D))
        assert policy.action_for(step).action is not None
    assert asked == [0, 3, 6]  # 8 planned steps each time; 5 remain 3 steps after each request


def test_asynchronous_late_chunk_drops_the_steps_already_passed_and_holds_until_it_arrives():
    engine = HandEngine()
    policy = MotusPolicy(
        engine, PolicyConfig(blending="replace", chunk_request_threshold=2), transforms=AffineTransforms()
    )
    policy.reset("x")
    assert policy.observe(10, {}, np.full(D, 3.0))
    assert not policy.observe(11, {}, np.full(D, 3.0))  # one request in flight at a time
    for step in (10, 11, 12):
        decision = policy.action_for(step)
        assert decision.action is None and decision.hold_reason == HOLD_FIRST_CHUNK
    engine.complete(0)  # arrives during step 13: steps 10, 11 and 12 are gone
    decision = policy.action_for(13)
    np.testing.assert_allclose(decision.action, np.full(D, per_step(0, 3.0)[3]))
    assert policy.stats.dropped_actions == 3 and policy.last_chunk.kept == 5
    for step in range(14, 18):
        policy.observe(step, {}, np.full(D, 3.0))
        policy.action_for(step)
    assert len(engine.requests) == 2  # asked at step 16, when 2 planned steps remained
    assert policy.action_for(18).hold_reason == HOLD_NEXT_CHUNK  # the chunk ran out before the next arrived


def test_failed_request_is_kept_for_the_caller_and_raised_when_synchronous():
    engine = HandEngine()
    policy = MotusPolicy(engine, PolicyConfig())
    policy.reset("x")
    policy.observe(0, {}, np.zeros(D))
    engine.futures[0].set_exception(ValueError("instruction too long"))
    assert policy.action_for(1).action is None
    assert isinstance(policy.error, ValueError)
    assert not policy.wants_observation(2)  # no more requests once the episode failed

    class FailingEngine(HandEngine):
        def submit(self, request):
            future = super().submit(request)
            future.set_exception(RuntimeError("boom"))
            return future

    synchronous = MotusPolicy(FailingEngine(), PolicyConfig(synchronous=True))
    synchronous.reset("x")
    with pytest.raises(RuntimeError, match="boom"):
        synchronous.observe(0, {}, np.zeros(D))


def test_reset_cancels_pending():
    engine = HandEngine()
    policy = MotusPolicy(engine, PolicyConfig(chunk_request_threshold=0))
    policy.reset("a")
    policy.observe(0, {}, np.zeros(D))
    assert policy.pending
    policy.reset("b")
    assert engine.futures[0].cancelled() and not policy.pending
    assert policy.action_for(0).hold_reason == HOLD_FIRST_CHUNK and policy.stats.chunks == 0


def test_bad_config_fails_clearly():
    with pytest.raises(ValueError, match="blending"):
        PolicyConfig(blending="average")
    with pytest.raises(ValueError, match="chunk_request_threshold"):
        PolicyConfig(chunk_request_threshold=-1)
    with pytest.raises(ValueError, match="steps"):
        PolicyConfig(steps=0)
