"""MotusModel: shapes, published parameter counts, masks, per-input RoPE, caching, gradients."""

import pytest
import torch
from model_helpers import make_inputs, tiny_config

from motus_model.config import MotusConfig
from motus_model.modeling_motus import MotusConditioning, MotusModel, rope_dims

ATOL = 1e-5


@pytest.fixture(scope="module")
def model() -> MotusModel:
    torch.manual_seed(0)
    model = MotusModel(tiny_config()).eval()
    # The heads are zero-initialised (as Wan and the reference); give them weights so outputs depend on inputs.
    with torch.no_grad():
        torch.nn.init.normal_(model.video.head.head.weight, std=0.1)
        torch.nn.init.normal_(model.action_expert.head.head.weight, std=0.1)
    return model


@pytest.mark.timeout(240)
@pytest.mark.parametrize("training_mode", ["finetune", "pretrain"])
def test_output_shapes(training_mode):
    config = tiny_config(training_mode=training_mode)
    model = MotusModel(config)
    latents, vs, actions, as_, state, text, vlm = make_inputs(config, batch=2)
    video_velocity, action_velocity = model.forward_uncached(latents, vs, actions, as_, state, text, vlm)
    assert video_velocity.shape == latents.shape
    assert action_velocity.shape == actions.shape
    assert video_velocity.dtype == action_velocity.dtype == torch.float32


@pytest.mark.timeout(300)
def test_published_shape_builds_on_meta_and_matches_reference_counts():
    with torch.device("meta"):
        model = MotusModel(MotusConfig.preset("motus-8b"))
    counts = model.count_parameters()
    # README of thu-ml/Motus: ~5.00B video (Wan2.2-TI2V-5B), ~641.5M action, ~253.5M understanding.
    assert counts["video_expert"] == pytest.approx(5.00e9, rel=0.01)
    assert counts["action_expert"] == pytest.approx(641.5e6, rel=0.01)
    assert counts["understanding_expert"] == pytest.approx(253.5e6, rel=0.01)
    assert model.action_expert.blocks[0].attn.qkv.shape == (3, 24, 1024, 128)
    assert model.und_expert.blocks[0].attn.qkv.shape == (3, 24, 512, 128)
    assert model.action_expert.blocks[0].o.weight.shape == (1024, 3072)
    assert model.video.head.head.weight.shape == (192, 3072)  # 48 x 1 x 2 x 2


def test_rope_split_matches_wan():
    assert rope_dims(128) == (44, 42, 42)  # 22 / 21 / 21 complex pairs


@pytest.mark.timeout(240)
def test_padded_batch_equals_unpadded_single_samples(model):
    """Regression pinned: the reference attends padded VLM/text tokens and precomputes RoPE per batch size."""
    config = model.config
    latents, vs, actions, as_, state, text, vlm = make_inputs(config, batch=2, seed=1)
    text_mask = torch.ones(2, 6, dtype=torch.bool)
    vlm_mask = torch.ones(2, 9, dtype=torch.bool)
    text_mask[0, 4:] = False  # sample 0 has 4 real text tokens and 6 real VLM tokens
    vlm_mask[0, 6:] = False
    with torch.no_grad():
        conditioning = model.prepare_conditioning(text, text_mask, vlm, vlm_mask)
        batched = model(latents, vs, actions, as_, state, conditioning)
        alone0 = model.forward_uncached(latents[:1], vs[:1], actions[:1], as_[:1], state[:1], text[:1, :4], vlm[:1, :6])
        alone1 = model.forward_uncached(latents[1:], vs[1:], actions[1:], as_[1:], state[1:], text[1:], vlm[1:])
    for index, alone in ((0, alone0), (1, alone1)):
        torch.testing.assert_close(batched[0][index : index + 1], alone[0], atol=ATOL, rtol=0)
        torch.testing.assert_close(batched[1][index : index + 1], alone[1], atol=ATOL, rtol=0)


@pytest.mark.timeout(240)
def test_padding_content_does_not_change_outputs(model):
    config = model.config
    latents, vs, actions, as_, state, text, vlm = make_inputs(config, batch=1, seed=2)
    text_mask = torch.tensor([[True] * 3 + [False] * 3])
    vlm_mask = torch.tensor([[True] * 5 + [False] * 4])
    garbage_text, garbage_vlm = text.clone(), vlm.clone()
    garbage_text[:, 3:] = 1e3
    garbage_vlm[:, 5:] = -1e3
    with torch.no_grad():
        clean = model.forward_uncached(latents, vs, actions, as_, state, text, vlm, text_mask, vlm_mask)
        dirty = model.forward_uncached(latents, vs, actions, as_, state, garbage_text, garbage_vlm, text_mask, vlm_mask)
        unmasked = model.forward_uncached(latents, vs, actions, as_, state, garbage_text, garbage_vlm)
    torch.testing.assert_close(clean[0], dirty[0], atol=ATOL, rtol=0)
    torch.testing.assert_close(clean[1], dirty[1], atol=ATOL, rtol=0)
    assert not torch.allclose(clean[1], unmasked[1], atol=1e-3), "without a mask the padding must matter"


@pytest.mark.timeout(240)
def test_rope_follows_each_input_grid(model):
    """A grid other than the configured one, batched, equals the samples run alone."""
    config = model.config
    latents, vs, actions, as_, state, text, vlm = make_inputs(config, batch=2, seed=3, grid=(2, 6, 4))
    with torch.no_grad():
        batched = model.forward_uncached(latents, vs, actions, as_, state, text, vlm)
        for index in range(2):
            alone = model.forward_uncached(
                *(x[index : index + 1] for x in (latents, vs, actions, as_, state, text, vlm))
            )
            torch.testing.assert_close(batched[0][index : index + 1], alone[0], atol=ATOL, rtol=0)
            torch.testing.assert_close(batched[1][index : index + 1], alone[1], atol=ATOL, rtol=0)
    assert batched[0].shape[2:] == (2, 6, 4)


@pytest.mark.timeout(240)
def test_conditioning_cat_index_repeat(model):
    config = model.config
    latents, vs, actions, as_, state, text, vlm = make_inputs(config, batch=2, seed=4)
    with torch.no_grad():
        first = model.prepare_conditioning(text[:1, :3], None, vlm[:1, :5], None)
        second = model.prepare_conditioning(text[1:], None, vlm[1:], None)
        joined = MotusConditioning.cat([first, second])
        assert joined.und_mask is not None and joined.und_mask[0].sum() == 5
        batched = model(latents, vs, actions, as_, state, joined)
        alone = model(latents[:1], vs[:1], actions[:1], as_[:1], state[:1], first)
        torch.testing.assert_close(batched[1][:1], alone[1], atol=ATOL, rtol=0)
        picked = joined.index([1])
        torch.testing.assert_close(
            model(latents[1:], vs[1:], actions[1:], as_[1:], state[1:], picked)[1], batched[1][1:], atol=ATOL, rtol=0
        )
        repeated = first.repeat(2)
        out = model(
            latents[:1].repeat(2, 1, 1, 1, 1),
            vs[:1].repeat(2),
            actions[:1].repeat(2, 1, 1),
            as_[:1].repeat(2),
            state[:1].repeat(2, 1),
            repeated,
        )
        torch.testing.assert_close(out[1][1:], alone[1], atol=ATOL, rtol=0)


@pytest.mark.timeout(240)
def test_conditioning_frame_timestep_is_zero_when_configured():
    torch.manual_seed(5)
    config = tiny_config()
    model = MotusModel(config)
    torch.nn.init.normal_(model.video.head.head.weight, std=0.1)
    reference_like = MotusModel(tiny_config(clean_condition_timestep=False))
    reference_like.load_state_dict(model.state_dict())
    latents, _, actions, as_, state, text, vlm = make_inputs(config, batch=1, seed=5)
    zero = torch.zeros(1)
    with torch.no_grad():
        # At sigma 0 every token has t = 0 either way: the two must agree exactly...
        a = model.forward_uncached(latents, zero, actions, as_, state, text, vlm)
        b = reference_like.forward_uncached(latents, zero, actions, as_, state, text, vlm)
        torch.testing.assert_close(a[0], b[0], atol=0, rtol=0)
        # ...and at sigma 0.7 they differ, because only one gives the conditioning frame t = 0.
        sigma = torch.full((1,), 0.7)
        a = model.forward_uncached(latents, sigma, actions, as_, state, text, vlm)
        b = reference_like.forward_uncached(latents, sigma, actions, as_, state, text, vlm)
    assert not torch.allclose(a[0], b[0], atol=1e-4)


def _train_step_grads(model: MotusModel, config: MotusConfig) -> dict[str, torch.Tensor | None]:
    latents, vs, actions, as_, state, text, vlm = make_inputs(config, batch=2, seed=6)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):  # the first step moves the zero-initialised heads so gradients reach every layer
        optimizer.zero_grad()
        video_velocity, action_velocity = model.forward_uncached(latents, vs, actions, as_, state, text, vlm)
        ((video_velocity - 1).square().mean() + (action_velocity - 1).square().mean()).backward()
        optimizer.step()
    return {name: p.grad for name, p in model.named_parameters()}


@pytest.mark.timeout(240)
def test_gradients_reach_exactly_the_live_parameters_finetune():
    torch.manual_seed(7)
    config = tiny_config()
    model = MotusModel(config)
    grads = _train_step_grads(model, config)
    dead = set(model.dead_parameter_names())
    # Dead = the last understanding layer's query norm, o-proj, norm2 and FFN (no head reads that stream).
    last = f"und_expert.blocks.{config.num_layers - 1}."
    assert dead == {
        last + s
        for s in (
            "attn.norm_q.weight",
            "o.weight",
            "norm2.weight",
            "norm2.bias",
            "ffn.0.weight",
            "ffn.0.bias",
            "ffn.2.weight",
            "ffn.2.bias",
        )
    }
    for name, grad in grads.items():
        if name in dead:
            assert grad is None, f"{name} should not receive a gradient"
        else:
            assert grad is not None and grad.abs().sum() > 0, f"{name} received no gradient"


@pytest.mark.timeout(240)
def test_pretrain_mode_has_no_state_token_or_registers():
    torch.manual_seed(8)
    config = tiny_config(training_mode="pretrain")
    model = MotusModel(config)
    assert model.action_expert.state_encoder is None and model.action_expert.registers is None
    grads = _train_step_grads(model, config)
    dead = set(model.dead_parameter_names())
    assert all(g is not None for n, g in grads.items() if n not in dead)
    assert not any("state_encoder" in n or "registers" in n for n in grads)
    latents, vs, actions, as_, _, text, vlm = make_inputs(config, batch=1)
    with pytest.raises(ValueError, match="state must be None in pretrain mode"):
        model.forward_uncached(latents, vs, actions, as_, torch.zeros(1, 14), text, vlm)


def test_bad_inputs_raise_clear_errors(model):
    config = model.config
    latents, vs, actions, as_, state, text, vlm = make_inputs(config, batch=1)
    with pytest.raises(ValueError, match="video_latents must be"):
        model.forward_uncached(latents[:, :5], vs, actions, as_, state, text, vlm)
    with pytest.raises(ValueError, match="state must be"):
        model.forward_uncached(latents, vs, actions, as_, None, text, vlm)
    with pytest.raises(ValueError, match="text_context must be"):
        model.forward_uncached(latents, vs, actions, as_, state, text[..., :3], vlm)
    with pytest.raises(ValueError, match="no real tokens"):
        model.forward_uncached(
            latents, vs, actions, as_, state, text, vlm, text_mask=torch.zeros(1, 6, dtype=torch.bool)
        )


@pytest.mark.timeout(240)
def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(9)
    config = tiny_config()
    model = MotusModel(config)
    with torch.no_grad():
        torch.nn.init.normal_(model.video.head.head.weight, std=0.1)
        torch.nn.init.normal_(model.action_expert.head.head.weight, std=0.1)
    inputs = make_inputs(config, batch=2, seed=9)
    grads = []
    for checkpointing in (False, True):
        model.zero_grad()
        model.gradient_checkpointing = checkpointing
        video_velocity, action_velocity = model.forward_uncached(*inputs)
        (video_velocity.square().mean() + action_velocity.square().mean()).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-5)
