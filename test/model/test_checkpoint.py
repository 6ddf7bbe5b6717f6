"""Checkpoints: our folder format, the reference DeepSpeed file, diffusers Wan weights; strict errors."""

import json

import numpy as np
import pytest
import torch
from torch import nn

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

STATS = {
    "action": {"mean": [0.1] * 14, "std": [2.0] * 14, "min": [-1.0] * 14, "max": [1.0] * 14},
    "state": {"mean": [0.0] * 14, "std": [1.0] * 14},
}


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
def test_loaded_weights_do_not_depend_on_their_offsets_in_the_file(tmp_path):
    # CPU matmuls round differently with the operands' alignment, and a .safetensors tensor sits wherever the
    # header's length puts it: the same weights in two files once gave actions 2e-7 apart (6 of 50 closed-loop
    # episodes flipped). Loaded weights must live in torch's own (64-byte aligned) memory, whatever the file.
    from safetensors.torch import load_file, save_file

    model = random_model()
    save_pretrained(model, tmp_path / "ckpt")
    weights = tmp_path / "ckpt" / "model.safetensors"
    for padding in range(8):  # header lengths 8 bytes apart move every tensor's offset
        save_file(load_file(str(weights)), str(weights), metadata={"format": "pt", "pad": "x" * (8 * padding)})
        loaded = MotusModel.from_pretrained(tmp_path / "ckpt")
        misaligned = [name for name, tensor in loaded.state_dict().items() if tensor.data_ptr() % 64]
        assert misaligned == [], (padding, misaligned[:3])
        assert_same_weights(model, loaded)


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
    inputs = (
        torch.randn(1, 48, frames, height, width),
        torch.tensor([0.5]),
        torch.randn(1, 4, 14),
        torch.tensor([0.5]),
        torch.randn(1, 14),
        torch.randn(1, 3, config.video.text_dim),
        torch.randn(1, 3, config.understanding.vlm_dim),
    )
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
    with pytest.raises(
        CheckpointError, match=r"mis-shaped \(1\): video.head.modulation \(expected \(1, 2, 32\), got \(1, 3, 32\)\)"
    ):
        load_pretrained(path)


# -- corrupt weights and missing files (issue 15 item 5) -------------------------------------


@pytest.mark.timeout(240)
def test_non_finite_weights_are_refused_at_load(tmp_path):
    def poison(tensors):
        tensors["action_expert.blocks.0.o.weight"][0, 0] = float("nan")

    path = _corrupt(tmp_path, poison)
    with pytest.raises(
        CheckpointError,
        match=r"model.safetensors: 1 tensor\(s\) hold NaN or Inf "
        r"\(action_expert.blocks.0.o.weight\).*re-export",
    ):
        MotusModel.from_pretrained(path)


def test_missing_files_are_named_with_the_fix(tmp_path):
    save_pretrained(random_model(), tmp_path / "ckpt")
    (tmp_path / "ckpt" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"ckpt/model.safetensors is missing: .*save_pretrained"):
        MotusModel.from_pretrained(tmp_path / "ckpt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        MotusModel.from_pretrained(tmp_path / "nowhere")


# -- the reference release ---------------------------------------------------------------------
# A tiny module tree named and shaped as the reference's own modules (thu-ml/Motus
# models/action_expert.py, models/und_expert.py, models/motus.py), written from the facts of that
# code, NOT from our key map: state/action encoders under ``input_encoder`` with a sin-cos
# ``pos_embedding`` buffer, ``wan_action_*`` / ``wan_und_*`` projections, ``decoder.action_head.0``,
# ``und_expert.vlm_adapter``, parameter-free LayerNorms (Wan's WanLayerNorm default), and wrapper
# modules that register the same experts twice. The Wan video expert keeps Wan's own names (checked
# against diffusers' Wan below), so its part is taken from our VideoExpert as is.


class _RefRMSNorm(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))


def _ref_mlp3(in_dim: int, dim: int) -> nn.Sequential:  # the reference's build_mlp("mlp3x_silu")
    return nn.Sequential(nn.Linear(in_dim, dim), nn.SiLU(), nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))


def _ref_ffn(dim: int, ffn_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(ffn_dim, dim))


def _ref_sincos(dim: int, length: int) -> torch.Tensor:  # get_1d_sincos_pos_embed_from_grid, in numpy
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    out = np.einsum("m,d->md", np.arange(length, dtype=np.float64), omega)
    return torch.from_numpy(np.concatenate([np.sin(out), np.cos(out)], axis=1)).float()


class _RefStateActionEncoder(nn.Module):
    def __init__(self, config: MotusConfig, chunk_size: int) -> None:
        super().__init__()
        action = config.action
        self.state_encoder = _ref_mlp3(action.state_dim, action.dim)
        self.action_encoder = _ref_mlp3(action.action_dim, action.dim)
        self.register_buffer("pos_embedding", _ref_sincos(action.dim, chunk_size + 1 + action.num_registers)[None])


class _RefActionBlock(nn.Module):
    def __init__(self, config: MotusConfig) -> None:
        super().__init__()
        dim, wan_dim = config.action.dim, config.attention_dim
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False)
        self.wan_action_qkv = nn.Parameter(torch.randn(3, config.num_heads, dim, config.head_dim))
        self.wan_action_o = nn.Linear(wan_dim, dim, bias=False)
        self.wan_action_norm_q = _RefRMSNorm(wan_dim)
        self.wan_action_norm_k = _RefRMSNorm(wan_dim)
        self.ffn = _ref_ffn(dim, config.action.ffn_dim)
        self.modulation = nn.Parameter(torch.randn(1, 6, dim))


class _RefActionDecoder(nn.Module):
    def __init__(self, config: MotusConfig) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(config.action.dim, elementwise_affine=False)
        self.action_head = nn.Sequential(nn.Linear(config.action.dim, config.action.action_dim))  # "mlp1x_silu"
        self.modulation = nn.Parameter(torch.randn(1, 2, config.action.dim))


class _RefActionExpert(nn.Module):
    def __init__(self, config: MotusConfig) -> None:
        super().__init__()
        dim = config.action.dim
        # The reference's chunk_size counts the state token too: 1 + action_chunk.
        self.input_encoder = _RefStateActionEncoder(config, chunk_size=1 + config.temporal.action_chunk)
        self.time_embedding = nn.Sequential(nn.Linear(config.video.freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        self.blocks = nn.ModuleList(_RefActionBlock(config) for _ in range(config.num_layers))
        self.registers = nn.Parameter(torch.randn(1, config.action.num_registers, dim))
        self.decoder = _RefActionDecoder(config)


class _RefUndBlock(nn.Module):
    def __init__(self, config: MotusConfig) -> None:
        super().__init__()
        dim, wan_dim = config.understanding.dim, config.attention_dim
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False)  # WanLayerNorm: no parameters
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False)
        self.wan_und_qkv = nn.Parameter(torch.randn(3, config.num_heads, dim, config.head_dim))
        self.wan_und_o = nn.Linear(wan_dim, dim, bias=False)
        self.wan_und_norm_q = _RefRMSNorm(wan_dim)
        self.wan_und_norm_k = _RefRMSNorm(wan_dim)
        self.ffn = _ref_ffn(dim, config.understanding.ffn_dim)


class _RefUndExpert(nn.Module):
    def __init__(self, config: MotusConfig) -> None:
        super().__init__()
        self.vlm_adapter = _ref_mlp3(config.understanding.vlm_dim, config.understanding.dim)
        self.blocks = nn.ModuleList(_RefUndBlock(config) for _ in range(config.num_layers))


class _RefWrapper(nn.Module):
    """VideoModule / UndModule: hold the same submodules again, so their keys repeat in the state dict."""


class _RefMotus(nn.Module):
    def __init__(self, config: MotusConfig, with_wrappers: bool = True) -> None:
        super().__init__()
        from motus_model.modeling_motus import VideoExpert

        self.video_model = _RefWrapper()
        self.video_model.wan_model = VideoExpert(config)
        self.action_expert = _RefActionExpert(config)
        self.und_expert = _RefUndExpert(config)
        if with_wrappers:
            self.video_module = _RefWrapper()
            self.video_module.video_model = self.video_model
            self.und_module = _RefWrapper()
            self.und_module.und_expert = self.und_expert


def _write_reference(config: MotusConfig, path, vlm_state=None, seed: int = 0, wrappers: bool = True):
    torch.manual_seed(seed)
    reference = _RefMotus(config, with_wrappers=wrappers)
    with torch.no_grad():  # distinct random values everywhere, so a crossed mapping cannot hide
        for parameter in reference.parameters():
            parameter.copy_(torch.randn_like(parameter) * 0.02)
    module = {key: tensor.clone() for key, tensor in reference.state_dict().items()}
    module.update({"vlm_model." + k: v for k, v in (vlm_state or {}).items()})
    path.mkdir(parents=True, exist_ok=True)
    torch.save({"module": module, "global_steps": 5}, path / "mp_rank_00_model_states.pt")
    return reference, module


@pytest.mark.timeout(240)
def test_reference_checkpoint_loads_from_the_reference_module_layout(tmp_path):
    config = MotusConfig.preset("motus-tiny")
    vlm_state = {"model.language_model.embed_tokens.weight": torch.randn(10, 4)}
    reference, module = _write_reference(config, tmp_path / "ref", vlm_state)
    assert "und_module.und_expert.blocks.0.wan_und_qkv" in module  # the wrappers' duplicates are there
    loaded, vlm = load_reference_checkpoint(tmp_path / "ref", config)

    # Parameter-free understanding norms, as the reference's; the shipped config keeps affine ones.
    assert loaded.config.understanding.norm_affine is False and config.understanding.norm_affine is True
    assert loaded.und_expert.blocks[0].norm1.weight is None
    ref_action, ref_und = reference.action_expert, reference.und_expert
    pairs = {
        "video.blocks.1.self_attn.norm_q.weight": reference.video_model.wan_model.blocks[1].self_attn.norm_q.weight,
        "action_expert.state_encoder.0.weight": ref_action.input_encoder.state_encoder[0].weight,
        "action_expert.action_encoder.4.bias": ref_action.input_encoder.action_encoder[4].bias,
        "action_expert.registers": ref_action.registers,
        "action_expert.time_projection.1.weight": ref_action.time_projection[1].weight,
        "action_expert.blocks.1.attn.qkv": ref_action.blocks[1].wan_action_qkv,
        "action_expert.blocks.0.attn.norm_q.weight": ref_action.blocks[0].wan_action_norm_q.weight,
        "action_expert.blocks.0.attn.norm_k.weight": ref_action.blocks[0].wan_action_norm_k.weight,
        "action_expert.blocks.1.o.weight": ref_action.blocks[1].wan_action_o.weight,
        "action_expert.blocks.0.modulation": ref_action.blocks[0].modulation,
        "action_expert.head.head.weight": ref_action.decoder.action_head[0].weight,
        "action_expert.head.modulation": ref_action.decoder.modulation,
        "und_expert.adapter.2.weight": ref_und.vlm_adapter[2].weight,
        "und_expert.blocks.1.attn.qkv": ref_und.blocks[1].wan_und_qkv,
        "und_expert.blocks.0.attn.norm_k.weight": ref_und.blocks[0].wan_und_norm_k.weight,
        "und_expert.blocks.0.o.weight": ref_und.blocks[0].wan_und_o.weight,
        "und_expert.blocks.1.ffn.2.bias": ref_und.blocks[1].ffn[2].bias,
    }
    ours = loaded.state_dict()
    for name, tensor in pairs.items():
        assert torch.equal(ours[name], tensor), name
    # Every reference parameter lands in exactly one of ours (the counts match, the values are distinct).
    assert len(ours) == sum(1 for _ in reference.parameters())
    assert vlm.keys() == vlm_state.keys()
    assert torch.equal(
        vlm["model.language_model.embed_tokens.weight"], vlm_state["model.language_model.embed_tokens.weight"]
    )


def test_reference_key_map_uses_the_reference_module_names():
    key_map = reference_key_map(MotusConfig.preset("motus-tiny"))
    assert key_map["video_model.wan_model.blocks.1.self_attn.norm_q.weight"] == "video.blocks.1.self_attn.norm_q.weight"
    assert key_map["video_model.wan_model.time_projection.1.weight"] == "video.time_projection.1.weight"
    assert key_map["action_expert.blocks.0.wan_action_qkv"] == "action_expert.blocks.0.attn.qkv"
    assert key_map["action_expert.input_encoder.state_encoder.0.weight"] == "action_expert.state_encoder.0.weight"
    assert key_map["action_expert.decoder.action_head.0.weight"] == "action_expert.head.head.weight"
    assert key_map["und_expert.vlm_adapter.4.bias"] == "und_expert.adapter.4.bias"
    assert key_map["und_expert.blocks.1.wan_und_norm_q.weight"] == "und_expert.blocks.1.attn.norm_q.weight"
    assert not any("norm1" in key or "norm2" in key for key in key_map if key.startswith("und_expert."))


@pytest.mark.timeout(240)
def test_reference_checkpoint_errors_list_every_problem(tmp_path):
    config = MotusConfig.preset("motus-tiny")
    _, module = _write_reference(config, tmp_path / "ref", seed=2, wrappers=False)
    module.pop("und_expert.blocks.0.wan_und_qkv")
    module["action_expert.blocks.0.wan_action_o.weight"] = torch.zeros(3, 3)
    module["mystery.weight"] = torch.zeros(1)
    torch.save({"module": module}, tmp_path / "ref" / "mp_rank_00_model_states.pt")
    with pytest.raises(CheckpointError) as error:
        load_reference_checkpoint(tmp_path / "ref", config)
    message = str(error.value)
    assert "missing (1): und_expert.blocks.0.wan_und_qkv" in message
    assert "unexpected (1): mystery.weight" in message
    assert "mis-shaped (1): action_expert.blocks.0.wan_action_o.weight" in message


@pytest.mark.timeout(240)
def test_reference_alias_or_position_table_that_differs_is_an_error(tmp_path):
    config = MotusConfig.preset("motus-tiny")
    _, module = _write_reference(config, tmp_path / "ref", seed=3)
    module["video_module.video_model.wan_model.head.modulation"] += 1
    torch.save({"module": module}, tmp_path / "ref" / "mp_rank_00_model_states.pt")
    with pytest.raises(CheckpointError, match="video_module.video_model.wan_model.head.modulation differs"):
        load_reference_checkpoint(tmp_path / "ref", config)
    _, module = _write_reference(config, tmp_path / "ref", seed=3, wrappers=False)
    module["action_expert.input_encoder.pos_embedding"] = module["action_expert.input_encoder.pos_embedding"].flip(1)
    torch.save({"module": module}, tmp_path / "ref" / "mp_rank_00_model_states.pt")
    with pytest.raises(CheckpointError, match="pos_embedding is not the 1-D sin-cos table"):
        load_reference_checkpoint(tmp_path / "ref", config)


def _tiny_diffusers_wan(config: MotusConfig):
    from diffusers import WanTransformer3DModel

    video = config.video
    torch.manual_seed(4)
    wan = WanTransformer3DModel(
        patch_size=video.patch_size,
        num_attention_heads=video.num_heads,
        attention_head_dim=video.head_dim,
        in_channels=video.latent_channels,
        out_channels=video.latent_channels,
        text_dim=video.text_dim,
        freq_dim=video.freq_dim,
        ffn_dim=video.ffn_dim,
        num_layers=config.num_layers,
        cross_attn_norm=video.cross_attn_norm,
        eps=video.eps,
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
