"""MotusEngine (motus_model.engine) on the tiny preset with random weights, on CPU.

Regressions pinned:
- the noise-independent work (VLM, text encoder, prepare_conditioning, conditioning-frame
  latents) runs once per request, not once per denoising step;
- a request batched with others gets exactly the answer it gets alone (per-request noise);
- VLA and IDM never decode video;
- a bad request fails alone and the worker keeps serving;
- every input reaches the output: a different instruction, image, state or given action chunk
  changes the answer (the preset's video and action heads are zero-initialised, so the fixture
  re-initialises them with seeded random weights; with zero heads the engine returns its
  initial noise whatever the inputs and none of these tests could fail).
"""

import threading

import numpy as np
import pytest
import torch

from motus_model.engine import MotusEngine, MotusRequest, RequestCancelled
from motus_model.flow_matching import Mode, sample
from motus_model.preprocessing import CompositeLayout, compose_views, image_to_tensor

pytestmark = pytest.mark.timeout(120)


def randomise_heads(model: torch.nn.Module, seed: int = 1234) -> None:
    """Seeded non-zero output heads (the preset zero-initialises them, as Wan and the reference do)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for head in (model.video.head.head, model.action_expert.head.head):
            head.weight.copy_(torch.randn(head.weight.shape, generator=generator) * head.weight.shape[1] ** -0.5)
            head.bias.copy_(torch.randn(head.bias.shape, generator=generator) * 0.1)


@pytest.fixture(scope="module")
def engine():
    engine = MotusEngine.from_preset("motus-tiny", seed=0, max_batch=4)
    randomise_heads(engine.model)
    yield engine
    engine.close()


def views(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {role: rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for role in ("high", "left_wrist", "right_wrist")}


def make_request(engine: MotusEngine, mode: Mode, seed: int = 0, **overrides) -> MotusRequest:
    config = engine.config
    fields = dict(
        mode=mode, images=views(seed), state=np.linspace(-1, 1, config.action.state_dim), instruction="pick", seed=seed
    )
    if mode is Mode.WORLD_MODEL:
        fields["actions"] = np.random.default_rng(seed).normal(
            size=(config.temporal.action_chunk, config.action.action_dim)
        )
    if mode is Mode.IDM:
        fields["future_frames"] = [views(seed + 100 + i) for i in range(config.temporal.num_video_frames)]
    fields.update(overrides)
    return MotusRequest(**fields)


class Blocker:
    """A request that holds the worker at its first denoising step until released, so others queue up."""

    def __init__(self, engine: MotusEngine) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

        def progress(step: int, total: int) -> None:
            self.started.set()
            assert self.release.wait(60)

        self.future = engine.submit(make_request(engine, Mode.VLA, seed=999, instruction="wait"), progress=progress)
        assert self.started.wait(60)


def test_all_five_modes_return_well_formed_results(engine):
    config = engine.config
    chunk_shape = (config.temporal.action_chunk, config.action.action_dim)
    frames_shape = (config.temporal.num_video_frames, config.latents.image_height, config.latents.image_width, 3)
    expect = {  # mode -> (has actions, has frames)
        Mode.VLA: (True, False),
        Mode.WORLD_MODEL: (False, True),
        Mode.IDM: (True, False),
        Mode.VIDEO_GENERATION: (False, True),
        Mode.JOINT: (True, True),
    }
    for mode, (has_actions, has_frames) in expect.items():
        result = engine.infer(make_request(engine, mode, seed=1), timeout=60)
        assert result.mode is mode and result.steps == config.schedule.inference_steps
        if has_actions:
            assert result.actions.shape == chunk_shape and result.actions.dtype == np.float32
            assert np.isfinite(result.actions).all()
        else:
            assert result.actions is None
        if has_frames:
            assert result.frames.shape == frames_shape and result.frames.dtype == np.uint8
        else:
            assert result.frames is None
        assert {"queue", "preprocess", "conditioning", "sampling", "decode", "total"} <= set(result.timing_ms)
        assert result.timing_ms["total"] >= result.timing_ms["sampling"] > 0


def test_same_seed_same_answer_and_mode_names(engine):
    first = engine.infer(make_request(engine, Mode.VLA, seed=5, steps=2), timeout=60)
    second = engine.infer(make_request(engine, "VLA", seed=5, steps=2), timeout=60)
    other = engine.infer(make_request(engine, "vla", seed=6, steps=2, images=views(5)), timeout=60)
    np.testing.assert_array_equal(first.actions, second.actions)
    assert not np.allclose(first.actions, other.actions)


def test_every_input_changes_the_output(engine):
    """Instruction, camera image, state and given actions all reach the answer (same seed each time)."""
    base = engine.infer(make_request(engine, Mode.VLA, seed=40, steps=2), timeout=60)
    variants = {
        "instruction": dict(instruction="place"),
        "image": dict(images=views(41)),
        "state": dict(state=np.linspace(1, -1, engine.config.action.state_dim)),
    }
    for name, overrides in variants.items():
        other = engine.infer(make_request(engine, Mode.VLA, seed=40, steps=2, **overrides), timeout=60)
        assert np.abs(other.actions - base.actions).max() > 1e-3, f"the {name} does not change the actions"
    chunk = (engine.config.temporal.action_chunk, engine.config.action.action_dim)
    world = engine.infer(make_request(engine, Mode.WORLD_MODEL, seed=40, steps=2), timeout=60)
    moved = engine.infer(
        make_request(engine, Mode.WORLD_MODEL, seed=40, steps=2, actions=np.full(chunk, 3.0)), timeout=60
    )
    assert np.abs(world.frames.astype(int) - moved.frames.astype(int)).max() > 0, (
        "given actions do not change the video"
    )


def test_single_request_matches_flow_matching_sample(engine):
    """The engine's batched sampler is the core sampler, given the request's own generator."""
    request = make_request(engine, Mode.JOINT, seed=7, steps=3)
    result = engine.infer(request, timeout=60)

    layout = CompositeLayout.from_config(engine.config)
    composite = compose_views(request.images, layout)
    with torch.no_grad():
        text, text_mask = engine.text.encode([request.instruction])
        hidden, hidden_mask = engine.vlm.extract([request.instruction], [composite])
        conditioning = engine.model.prepare_conditioning(text, text_mask, hidden, hidden_mask)
        cond_latent = engine.codec.encode(image_to_tensor(composite)[None, None])
        state = torch.as_tensor(request.state, dtype=torch.float32)[None]
        video, actions = sample(
            engine.model,
            conditioning,
            cond_latent,
            state,
            Mode.JOINT,
            steps=3,
            generator=torch.Generator().manual_seed(7),
        )
    np.testing.assert_allclose(result.actions, actions[0].numpy(), atol=1e-5)
    expected_frames = ((engine.codec.decode(video)[0, 1:].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    assert np.abs(result.frames.astype(int) - expected_frames.permute(0, 2, 3, 1).numpy().astype(int)).max() <= 1


def test_batched_requests_equal_single_requests(engine):
    requests = [
        make_request(engine, Mode.JOINT, seed=11, instruction="a"),
        make_request(engine, Mode.JOINT, seed=12, instruction="go left"),  # different text and VLM lengths
        make_request(engine, Mode.JOINT, seed=13, instruction="a"),
    ]
    singles = [engine.infer(request, timeout=60) for request in requests]
    assert all(result.batch_size == 1 for result in singles)

    batches_before = engine.stats["batches"]
    blocker = Blocker(engine)
    futures = [engine.submit(request) for request in requests]
    blocker.release.set()
    batched = [future.result(timeout=60) for future in futures]
    blocker.future.result(timeout=60)
    assert [result.batch_size for result in batched] == [3, 3, 3]
    assert engine.stats["batches"] == batches_before + 2  # the blocker, then the three together
    for single, together in zip(singles, batched):
        np.testing.assert_allclose(together.actions, single.actions, atol=1e-4)
        assert np.abs(together.frames.astype(int) - single.frames.astype(int)).max() <= 1


def test_different_modes_are_not_batched_together(engine):
    blocker = Blocker(engine)
    vla = engine.submit(make_request(engine, Mode.VLA, seed=1))
    joint = engine.submit(make_request(engine, Mode.JOINT, seed=1))
    vla_again = engine.submit(make_request(engine, Mode.VLA, seed=2))
    blocker.release.set()
    assert vla.result(timeout=60).batch_size == 2 and vla_again.result(timeout=60).batch_size == 2
    assert joint.result(timeout=60).batch_size == 1


def test_noise_independent_work_runs_once_per_request(engine):
    steps = 5
    before = engine.stats
    engine.infer(make_request(engine, Mode.VLA, seed=2, steps=steps, instruction="lift"), timeout=60)
    after = engine.stats
    delta = {key: after[key] - before[key] for key in after}
    assert delta["model_forward_calls"] == steps
    assert delta["vlm_calls"] == 1
    assert delta["prepare_conditioning_calls"] == 1
    assert delta["encode_calls"] == 1
    assert delta["text_encoder_calls"] == 1  # "lift" is new
    # The same instruction again: the text encoder is not called (LRU cache), the VLM is (new image).
    engine.infer(make_request(engine, Mode.VLA, seed=3, steps=steps, instruction="lift"), timeout=60)
    again = engine.stats
    assert again["text_encoder_calls"] == after["text_encoder_calls"]
    assert again["vlm_calls"] == after["vlm_calls"] + 1


def test_naive_engine_recomputes_every_step_with_the_same_answer(engine):
    naive = MotusEngine(engine.model, engine.codec, engine.normalizer, engine.text.encoder, engine.vlm, naive=True)
    try:
        steps = 3
        request = make_request(engine, Mode.VLA, seed=4, steps=steps, instruction="lift")
        result = naive.infer(request, timeout=60)
        stats = naive.stats
        # once in preparation, then once per step
        assert stats["vlm_calls"] == steps + 1 and stats["prepare_conditioning_calls"] == steps + 1
        assert stats["encode_calls"] == steps + 1
        cached = engine.infer(request, timeout=60)
        np.testing.assert_allclose(result.actions, cached.actions, atol=1e-5)
    finally:
        naive.close()


def test_no_video_decode_in_action_only_modes(engine):
    before = engine.stats["decode_calls"]
    engine.infer(make_request(engine, Mode.VLA, seed=1), timeout=60)
    engine.infer(make_request(engine, Mode.IDM, seed=1), timeout=60)
    engine.infer(make_request(engine, Mode.JOINT, seed=1, decode_video=False), timeout=60)
    assert engine.stats["decode_calls"] == before
    engine.infer(make_request(engine, Mode.WORLD_MODEL, seed=1), timeout=60)
    assert engine.stats["decode_calls"] == before + 1


def test_cancel_mid_sampling_and_while_queued(engine):
    steps_seen = []
    holder = {}

    def progress(step: int, total: int) -> None:
        steps_seen.append(step)
        if step == 2:
            assert holder["future"].cancel()

    holder["future"] = engine.submit(make_request(engine, Mode.VLA, seed=1, steps=40), progress=progress)
    with pytest.raises(RequestCancelled, match="before denoising step 3 of 40"):
        holder["future"].result(timeout=60)
    assert steps_seen == [1, 2]

    blocker = Blocker(engine)
    queued = engine.submit(make_request(engine, Mode.JOINT, seed=1))
    assert engine.cancel(queued) and queued.cancelled()
    blocker.release.set()
    assert blocker.future.result(timeout=60).actions is not None
    # The worker still serves.
    assert engine.infer(make_request(engine, Mode.VLA, seed=1, steps=1), timeout=60).actions is not None


def test_cancelling_one_batched_request_leaves_the_others(engine):
    blocker = Blocker(engine)
    holder = {}

    def cancel_at_first_step(step: int, total: int) -> None:
        if step == 1:
            holder["future"].cancel()

    # The cancelled request is row 0 and the kept one row 1, so the kept one must carry its own
    # conditioning and noise through the row removal.
    holder["future"] = engine.submit(make_request(engine, Mode.VLA, seed=22, steps=3), progress=cancel_at_first_step)
    keep = engine.submit(make_request(engine, Mode.VLA, seed=21, steps=3, instruction="go", state=np.zeros(14)))
    blocker.release.set()
    with pytest.raises(RequestCancelled):
        holder["future"].result(timeout=60)
    kept = keep.result(timeout=60)
    assert kept.batch_size == 1  # the batch shrank to the kept request
    alone = engine.infer(
        make_request(engine, Mode.VLA, seed=21, steps=3, instruction="go", state=np.zeros(14)), timeout=60
    )
    np.testing.assert_allclose(kept.actions, alone.actions, atol=1e-4)


def test_bad_requests_fail_alone_with_clear_errors(engine):
    config = engine.config
    bad_images = views(0)
    bad_images["left_wrist"] = bad_images["left_wrist"].astype(np.float32)
    missing = views(0)
    del missing["right_wrist"]
    nan_state = np.zeros(config.action.state_dim)
    nan_state[3] = np.nan
    cases = [
        (dict(images=bad_images), "expected dtype uint8"),
        (dict(images=missing), "missing camera \\['right_wrist'\\]"),
        (dict(state=nan_state), "state: expected finite numbers"),
        (dict(state=np.zeros(3)), "state: expected shape \\(14,\\), got \\(3,\\)"),
        (dict(mode="dream"), "unknown mode 'dream'"),
        (dict(decode_video=True), "produces no video"),
        (dict(actions=np.zeros((4, 14))), "only an input in world_model mode"),
        (dict(steps=0), "steps: expected a positive int"),
    ]
    good = engine.submit(make_request(engine, Mode.VLA, seed=1))
    for overrides, message in cases:
        mode = overrides.pop("mode", Mode.VLA)
        future = engine.submit(make_request(engine, mode, seed=1, **overrides))
        with pytest.raises(ValueError, match=message):
            future.result(timeout=60)
    with pytest.raises(ValueError, match="actions: expected shape \\(4, 14\\), got \\(3, 14\\)"):
        engine.submit(make_request(engine, Mode.WORLD_MODEL, actions=np.zeros((3, 14)))).result(timeout=60)
    with pytest.raises(ValueError, match="future_frames: mode idm needs a list of 2"):
        engine.submit(make_request(engine, Mode.IDM, future_frames=[views(1)])).result(timeout=60)
    assert good.result(timeout=60).actions is not None

    # Too many tokens is found on the worker, inside a batch: only that request fails.
    blocker = Blocker(engine)
    before = engine.stats["failed"]
    ok_one = engine.submit(make_request(engine, Mode.VLA, seed=2))
    too_long = engine.submit(make_request(engine, Mode.VLA, seed=3, instruction="pick up the red cube"))
    ok_two = engine.submit(make_request(engine, Mode.VLA, seed=4))
    blocker.release.set()
    with pytest.raises(ValueError, match="instruction too long: expected at most 8 tokens"):
        too_long.result(timeout=60)
    assert ok_one.result(timeout=60).batch_size == 2 and ok_two.result(timeout=60).batch_size == 2
    assert engine.stats["failed"] == before + 1


def test_concurrent_submitters(engine):
    results = {}

    def request(index: int) -> MotusRequest:  # each client its own instruction, images, state and seed
        state = np.linspace(-1, 1, engine.config.action.state_dim) * (index + 1) / 4
        return make_request(
            engine, Mode.VLA, seed=30 + index, steps=2, instruction=["a", "go", "b c", "up"][index], state=state
        )

    def client(index: int) -> None:
        results[index] = engine.infer(request(index), timeout=60)

    threads = [threading.Thread(target=client, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(results) == [0, 1, 2, 3]
    for index, result in results.items():
        alone = engine.infer(request(index), timeout=60)
        np.testing.assert_allclose(result.actions, alone.actions, atol=1e-4)


def test_close_cancels_queued_and_rejects_new(engine):
    local = MotusEngine(engine.model, engine.codec, engine.normalizer, engine.text, engine.vlm)
    blocker = Blocker(local)
    queued = local.submit(make_request(engine, Mode.VLA, seed=1))
    closer = threading.Thread(target=local.close)
    closer.start()
    blocker.release.set()
    closer.join(60)
    assert blocker.future.result(timeout=60).actions is not None
    assert queued.cancelled()
    with pytest.raises(RuntimeError, match="closed"):
        local.submit(make_request(engine, Mode.VLA, seed=1))


def test_save_and_load_pretrained_folder(engine, tmp_path):
    """A checkpoint folder (model + stats + umT5 + Qwen3-VL) loads into an engine that answers like the original."""
    from motus_model.preprocessing import Normalizer

    config = engine.config
    dim = config.action.action_dim
    stats = {
        "action": {"mean": np.linspace(-1, 1, dim).tolist(), "std": np.linspace(0.5, 2, dim).tolist()},
        "state": {"mean": np.zeros(dim).tolist(), "std": np.full(dim, 2.0).tolist()},
    }
    original = MotusEngine(
        engine.model, engine.codec, Normalizer(stats, mode="mean_std"), engine.text.encoder, engine.vlm
    )
    try:
        original.save_pretrained(tmp_path / "ckpt")
        for name in ("config.json", "model.safetensors", "stats.json", "text_encoder/config.json", "vlm/config.json"):
            assert (tmp_path / "ckpt" / name).is_file(), name
        loaded = MotusEngine.from_pretrained(tmp_path / "ckpt")
        try:
            assert loaded.normalizer.mode == "mean_std"
            for mode in (Mode.VLA, Mode.WORLD_MODEL):
                request = make_request(engine, mode, seed=8, steps=2)
                expected, got = original.infer(request, timeout=60), loaded.infer(request, timeout=60)
                if mode is Mode.VLA:
                    np.testing.assert_allclose(got.actions, expected.actions, atol=1e-5)
                    # Actions come back in raw units: the normaliser's inverse was applied.
                    raw_engine = engine.infer(request, timeout=60)
                    assert not np.allclose(got.actions, raw_engine.actions)
                else:
                    assert np.abs(got.frames.astype(int) - expected.frames.astype(int)).max() <= 1
        finally:
            loaded.close()
    finally:
        original.close()
    # A policy checkpoint without its normalisation stats is refused, not served in raw units.
    (tmp_path / "ckpt" / "stats.json").rename(tmp_path / "stats.json")
    with pytest.raises(
        FileNotFoundError, match="stats.json is missing: a policy checkpoint needs its normalisation stats"
    ):
        MotusEngine.from_pretrained(tmp_path / "ckpt")
    (tmp_path / "stats.json").rename(tmp_path / "ckpt" / "stats.json")
    with pytest.raises(FileNotFoundError, match="no VLM"):
        (tmp_path / "ckpt" / "vlm" / "config.json").unlink()
        MotusEngine.from_pretrained(tmp_path / "ckpt")


def test_pipeline_alone_answers_like_the_engine(engine):
    """The synchronous pipeline (no queue, no thread) and the engine over it give the same answer."""
    request = make_request(engine, Mode.JOINT, seed=9, steps=2)
    steps_seen = []
    direct = engine.pipeline(request, callback_on_step_end=lambda step, total, state: steps_seen.append(step))
    served = engine.infer(request, timeout=60)
    assert steps_seen == [1, 2] and direct.batch_size == 1
    np.testing.assert_allclose(direct.actions, served.actions, atol=1e-6)
    np.testing.assert_array_equal(direct.frames, served.frames)


def test_pretrain_mode_engine_takes_no_state():
    from motus_model.config import MotusConfig

    config = MotusConfig.preset("motus-tiny")
    config.training_mode = "pretrain"  # latent actions: no state token, no registers
    with MotusEngine.from_config(config, seed=1) as latent_engine:
        result = latent_engine.infer(make_request(latent_engine, Mode.VLA, seed=1, state=None, steps=2), timeout=60)
        assert result.actions.shape == (config.temporal.action_chunk, config.action.action_dim)
        with pytest.raises(ValueError, match="takes no state"):
            latent_engine.infer(make_request(latent_engine, Mode.VLA, seed=1, steps=2), timeout=60)
