"""Checkpoints: our folder format, the reference DeepSpeed file, diffusers Wan weights; strict errors."""

import json

import pytest
import torch

from motus_model.checkpoint import (
    CheckpointError,
    diffusers_wan_key_map,
    load_pretrained,
    load_reference_checkpoint,
    load_wan_diffusers_transformer,
    reference_key_map,
    save_pretrained,
)
from motus_model.config import MotusConfig
from motus_model.modeling_motus import MotusModel

STATS = {"action": {"mean": [0.1] * 14, "std": [2.0] * 14, "min": [-1.0] * 14, "max": [1.0] * 14},
         "state": {"mean": [0.0] * 14, "std": [1.0] * 14}}


def random_model(seed: int = 0, config: MotusConfig | None = None) -> MotusModel:
    torch.manual_seed(seed)
    model = MotusModel(config or MotusConfig.preset("motus-tiny"))
    with torch.no_grad():  # fill zero-initialised heads so that a wrong mapping cannot hide
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return model


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


@pytest.mark.timeout(240)
def test_save_and_load_round_trip_is_bit_exact(tmp_path):
    model = random_model()
    save_pretrained(model, tmp_path / "ckpt", stats=STATS)
    assert {p.name for p in (tmp_path / "ckpt").iterdir()} == {"config.json", "model.safetensors", "stats.json"}
    loaded, stats = load_pretrained(tmp_path / "ckpt")
    assert loaded.config == model.config
    assert stats == STATS
    assert_same_weights(model, loaded)
    assert MotusModel.from_pretrained(tmp_path / "ckpt").config == model.config


@pytest.mark.timeout(240)
def test_bf16_load_keeps_modulation_in_fp32(tmp_path):
    save_pretrained(random_model(), tmp_path / "ckpt")
    loaded, stats = load_pretrained(tmp_path / "ckpt", dtype=torch.bfloat16)
    assert stats is None
    assert loaded.video.blocks[0].self_attn.q.weight.dtype == torch.bfloat16
    assert loaded.video.blocks[0].modulation.dtype == torch.float32
    assert loaded.action_expert.time_embedding[0].weight.dtype == torch.float32
    # Mixed precision runs: bf16 weights, fp32 streams and modulation, float32 outputs close to fp32.
    reference, _ = load_pretrained(tmp_path / "ckpt")
    config = reference.config
    frames, height, width = config.latent_grid()
    inputs = (torch.randn(1, 48, frames, height, width), torch.tensor([0.5]), torch.randn(1, 4, 14), torch.tensor([0.5]),
              torch.randn(1, 14), torch.randn(1, 3, config.video.text_dim), torch.randn(1, 3, config.understanding.vlm_dim))
    with torch.no_grad():
        full = reference.forward_uncached(*inputs)
        half = loaded.forward_uncached(*inputs)
    assert half[0].dtype == torch.float32
    assert (half[0] - full[0]).abs().max() < 0.1 * full[0].abs().max()


def _corrupt(tmp_path, edit):
    from safetensors.torch import load_file, save_file

    save_pretrained(random_model(), tmp_path / "ckpt")
    tensors = load_file(str(tmp_path / "ckpt" / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(tmp_path / "ckpt" / "model.safetensors"))
    return tmp_path / "ckpt"


@pytest.mark.timeout(240)
def test_missing_key_is_named(tmp_path):
    path = _corrupt(tmp_path, lambda t: t.pop("action_expert.registers"))
    with pytest.raises(CheckpointError, match=r"missing \(1\): action_expert.registers"):
        load_pretrained(path)


@pytest.mark.timeout(240)
def test_unexpected_key_is_named(tmp_path):
    path = _corrupt(tmp_path, lambda t: t.update({"video.extra.weight": torch.zeros(2)}))
    with pytest.raises(CheckpointError, match=r"unexpected \(1\): video.extra.weight"):
        load_pretrained(path)


@pytest.mark.timeout(240)
def test_mis_shaped_key_is_named(tmp_path):
    path = _corrupt(tmp_path, lambda t: t.update({"video.head.modulation": torch.zeros(1, 3, 32)}))
    with pytest.raises(CheckpointError, match=r"mis-shaped \(1\): video.head.modulation \(expected \(1, 2, 32\), got \(1, 3, 32\)\)"):
        load_pretrained(path)


def _write_reference(model: MotusModel, path, vlm_state=None, alias=True):
    inverse = {ours: ref for ref, ours in reference_key_map(model.config).items()}
    module = {inverse[name]: tensor.clone() for name, tensor in model.state_dict().items()}
    if alias:  # the wrapper module's duplicate view of the same Wan weights
        for key in [k for k in module if k.startswith("video_model.")]:
            module["video_module." + key] = module[key].clone()
    module.update({"vlm_model." + k: v for k, v in (vlm_state or {}).items()})
    path.mkdir(parents=True, exist_ok=True)
    torch.save({"module": module, "global_steps": 5}, path / "mp_rank_00_model_states.pt")
    return module


@pytest.mark.timeout(240)
def test_reference_checkpoint_loads_bit_exactly_and_routes_vlm(tmp_path):
    model = random_model(1)
    vlm_state = {"model.language_model.embed_tokens.weight": torch.randn(10, 4)}
    _write_reference(model, tmp_path / "ref", vlm_state)
    loaded, vlm = load_reference_checkpoint(tmp_path / "ref", model.config)
    assert_same_weights(model, loaded)
    assert vlm.keys() == vlm_state.keys()
    assert torch.equal(vlm["model.language_model.embed_tokens.weight"], vlm_state["model.language_model.embed_tokens.weight"])


def test_reference_key_map_uses_wan_names_for_the_video_expert():
    key_map = reference_key_map(MotusConfig.preset("motus-tiny"))
    assert key_map["video_model.wan_model.blocks.1.self_attn.norm_q.weight"] == "video.blocks.1.self_attn.norm_q.weight"
    assert key_map["video_model.wan_model.time_projection.1.weight"] == "video.time_projection.1.weight"
    assert key_map["action_expert.blocks.0.qkv"] == "action_expert.blocks.0.attn.qkv"
    assert key_map["action_expert.decoder.head.weight"] == "action_expert.head.head.weight"
    assert key_map["und_expert.adapter.4.bias"] == "und_expert.adapter.4.bias"


@pytest.mark.timeout(240)
def test_reference_checkpoint_errors_list_every_problem(tmp_path):
    model = random_model(2)
    module = _write_reference(model, tmp_path / "ref", alias=False)
    module.pop("und_expert.blocks.0.qkv")
    module["action_expert.blocks.0.o.weight"] = torch.zeros(3, 3)
    module["mystery.weight"] = torch.zeros(1)
    torch.save({"module": module}, tmp_path / "ref" / "mp_rank_00_model_states.pt")
    with pytest.raises(CheckpointError) as error:
        load_reference_checkpoint(tmp_path / "ref", model.config)
    message = str(error.value)
    assert "missing (1): und_expert.blocks.0.qkv" in message
    assert "unexpected (1): mystery.weight" in message
    assert "mis-shaped (1): action_expert.blocks.0.o.weight" in message


@pytest.mark.timeout(240)
def test_reference_alias_that_differs_is_an_error(tmp_path):
    model = random_model(3)
    module = _write_reference(model, tmp_path / "ref")
    module["video_module.video_model.wan_model.head.modulation"] += 1
    torch.save({"module": module}, tmp_path / "ref" / "mp_rank_00_model_states.pt")
    with pytest.raises(CheckpointError, match="video_module.video_model.wan_model.head.modulation differs"):
        load_reference_checkpoint(tmp_path / "ref", model.config)


def _tiny_diffusers_wan(config: MotusConfig):
    from diffusers import WanTransformer3DModel

    video = config.video
    torch.manual_seed(4)
    wan = WanTransformer3DModel(
        patch_size=video.patch_size, num_attention_heads=video.num_heads, attention_head_dim=video.head_dim,
        in_channels=video.latent_channels, out_channels=video.latent_channels, text_dim=video.text_dim,
        freq_dim=video.freq_dim, ffn_dim=video.ffn_dim, num_layers=config.num_layers,
        cross_attn_norm=video.cross_attn_norm, eps=video.eps,
    )
    with torch.no_grad():  # diffusers zero-inits nothing relevant, but make sure no tensor is trivially equal
        for p in wan.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return wan.eval()


@pytest.mark.timeout(300)
def test_diffusers_wan_loads_and_matches_outputs(tmp_path):
    config = MotusConfig.preset("motus-tiny")
    wan = _tiny_diffusers_wan(config)
    wan.save_pretrained(tmp_path / "wan", max_shard_size="100KB")  # sharded, as the real 5B release
    assert list((tmp_path / "wan").glob("*.index.json"))
    model = random_model(5, config).eval()
    action_before = {k: v.clone() for k, v in model.action_expert.state_dict().items()}
    load_wan_diffusers_transformer(model, tmp_path / "wan")

    key_map = diffusers_wan_key_map(config.num_layers)
    for key, tensor in wan.state_dict().items():
        assert torch.equal(model.video.state_dict()[key_map[key]], tensor), key
    assert all(torch.equal(model.action_expert.state_dict()[k], v) for k, v in action_before.items())

    # Same input, same per-token timesteps: our video expert equals diffusers' Wan.
    generator = torch.Generator().manual_seed(0)
    frames, height, width = config.latent_grid()
    latents = torch.randn(2, config.video.latent_channels, frames, height, width, generator=generator)
    text = torch.randn(2, 5, config.video.text_dim, generator=generator)
    sigma = torch.tensor([0.3, 0.9])
    tokens_per_frame = (height // 2) * (width // 2)
    timesteps = (sigma * 1000)[:, None].repeat(1, frames * tokens_per_frame)
    timesteps[:, :tokens_per_frame] = 0  # Wan2.2 TI2V: the clean first frame gets t = 0
    with torch.no_grad():
        expected = wan(latents, timesteps, text, return_dict=False)[0]
        conditioning = model.prepare_conditioning(text, None, torch.randn(2, 3, config.understanding.vlm_dim), None)
        ours = model.forward_video_only(latents, sigma, conditioning)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.timeout(240)
def test_diffusers_wan_config_mismatch_is_reported(tmp_path):
    config = MotusConfig.preset("motus-tiny")
    wan = _tiny_diffusers_wan(config)
    wan.save_pretrained(tmp_path / "wan")
    data = json.loads((tmp_path / "wan" / "config.json").read_text())
    data["num_layers"] = 3
    (tmp_path / "wan" / "config.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=r"num_layers \(Motus 2, Wan 3\)"):
        load_wan_diffusers_transformer(random_model(), tmp_path / "wan")
    state = wan.state_dict()
    state.pop("blocks.0.attn2.norm_k.weight")
    with pytest.raises(CheckpointError, match=r"missing \(1\): blocks.0.attn2.norm_k.weight"):
        load_wan_diffusers_transformer(random_model(), state)
