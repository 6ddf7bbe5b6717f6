"""The Motus network: video expert (Wan DiT), action expert, understanding expert, joint attention.

Three streams run in lock-step for ``config.num_layers`` layers and share ONE attention per
layer over the concatenated sequence ``[video | action | understanding]`` in the video
expert's head space (24 x 128 = 3072 in the published shape). Each expert's block projects
its own stream (``attention_inputs``) and finishes it (``forward``); ``JointAttnProcessor`` runs
the one attention in between (diffusers' SD3 joint attention is the precedent).

Module names of the video expert follow the ORIGINAL Wan layout (``WanModel`` of
Wan-Video/Wan2.2: ``patch_embedding``, ``text_embedding.0/.2``, ``time_embedding.0/.2``,
``time_projection.1``, ``blocks.N.{modulation, norm1, self_attn.{q,k,v,o,norm_q,norm_k},
norm3, cross_attn.*, norm2, ffn.0, ffn.2}``, ``head.{head, modulation}``) so that the
reference checkpoint maps 1:1 (see ``convert_checkpoints.py``). Note the original Wan naming:
``norm3`` is the (affine) cross-attention norm and ``norm2`` the FFN norm (diffusers swaps them).

Improvements over the reference:
- key-padding masks for padded understanding tokens and padded text tokens;
- RoPE computed from each input's own latent grid (the reference precomputes it for the
  configured batch size, so batches > 1 lose RoPE on some samples);
- the clean conditioning frame's tokens get t = 0 (``config.clean_condition_timestep``);
- text cross-attention K/V and the understanding adapter output are computed once per
  request (``prepare_conditioning``) and reused across denoising steps.

Numerics: the residual streams and all AdaLN maths run in float32; every Linear casts its
input to its own weight dtype, so the weights may be bf16 while modulation stays fp32.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint as activation_checkpoint

from motus_model.config import MotusConfig
from motus_model.modeling_utils import PretrainedMixin

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------
# Small numerical helpers
# ----------------------------------------------------------------------------------------


def _run(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run ``module`` with ``x`` cast to the module's parameter dtype (float32 without parameters); return float32."""
    weight = next(module.parameters(), None)
    return module(x.to(weight.dtype if weight is not None else torch.float32)).float()


def _layer_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """LayerNorm without affine parameters, in float32."""
    return F.layer_norm(x.float(), (x.shape[-1],), eps=eps)


def _modulate(x: torch.Tensor, eps: float, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """AdaLN: affine-free LayerNorm, then ``* (1 + scale) + shift`` (float32)."""
    return _layer_norm(x, eps) * (1 + scale) + shift


def timestep_sinusoid(timesteps: torch.Tensor, dim: int) -> torch.Tensor:
    """Wan's ``sinusoidal_embedding_1d``: [cos | sin] of t * 10000^(-i/half).

    Args:
        timesteps: any shape ``S`` (values are sigma * 1000).
    Returns:
        ``S + (dim,)`` float32.
    """
    half = dim // 2
    exponent = torch.arange(half, dtype=torch.float64, device=timesteps.device) / half
    angles = timesteps.double().unsqueeze(-1) * torch.pow(10000.0, -exponent)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1).float()


def sincos_positions(num_positions: int, dim: int, device: torch.device) -> torch.Tensor:
    """Fixed 1-D sin-cos absolute positions [num_positions, dim] (MAE/DiT style, [sin | cos])."""
    half = dim // 2
    omega = 1.0 / 10000 ** (torch.arange(half, dtype=torch.float64, device=device) / half)
    angles = torch.arange(num_positions, dtype=torch.float64, device=device).unsqueeze(1) * omega
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1).float()


def rope_dims(head_dim: int) -> tuple[int, int, int]:
    """Real dims of the t/h/w RoPE parts, as Wan: for 128 that is 44/42/42 (22/21/21 pairs)."""
    hw = 2 * (head_dim // 6)
    return head_dim - 2 * hw, hw, hw


def video_rope(
    grid: tuple[int, int, int], head_dim: int, theta: float, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin of Wan's 3-D RoPE for ONE token grid (frames, h, w), each [L, head_dim // 2].

    Computed from the input's own grid (never a cached batch-sized table).
    """
    frames, height, width = grid
    parts = []
    for size, dim, axis in zip((frames, height, width), rope_dims(head_dim), range(3)):
        freqs = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float64, device=device) / dim)
        angles = torch.arange(size, dtype=torch.float64, device=device).unsqueeze(1) * freqs  # [size, dim/2]
        shape = [1, 1, 1, dim // 2]
        shape[axis] = size
        parts.append(angles.view(shape).expand(frames, height, width, dim // 2))
    angles = torch.cat(parts, dim=-1).reshape(frames * height * width, head_dim // 2)
    return torch.cos(angles).float(), torch.sin(angles).float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs (x[..., 0::2], x[..., 1::2]) as complex numbers.

    Args:
        x: [B, L, H, head_dim]; cos, sin: [L, head_dim // 2].
    """
    pairs = x.float().unflatten(-1, (-1, 2))
    real, imag = pairs[..., 0], pairs[..., 1]
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    rotated = torch.stack([real * cos - imag * sin, real * sin + imag * cos], dim=-1)
    return rotated.flatten(-2)


def _mlp3(in_dim: int, dim: int) -> nn.Sequential:
    """The reference's ``mlp3x_silu`` encoder: in -> D -> D -> D with SiLU between."""
    return nn.Sequential(nn.Linear(in_dim, dim), nn.SiLU(), nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))


def _ffn(dim: int, ffn_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(ffn_dim, dim))


def _patchify_linear(conv: nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x).flatten(2).transpose(1, 2)`` for a Conv3d whose stride equals its kernel, as ONE matmul:
    [B, C, F, H, W] -> [B, F'*H'*W', D]. Same maths (patches do not overlap); the CPU has no fast conv3d."""
    batch, channels, frames, height, width = x.shape
    pt, ph, pw = conv.kernel_size
    x = x.reshape(batch, channels, frames // pt, pt, height // ph, ph, width // pw, pw)
    # -> [B, F', H', W', C, pt, ph, pw]: the order of the weight's flattened (C, pt, ph, pw) axes.
    patches = x.permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(batch, -1, channels * pt * ph * pw)
    return F.linear(patches, conv.weight.flatten(1), conv.bias)


def _key_padding_mask(mask: torch.Tensor | None) -> torch.Tensor | None:
    """[B, L] bool (True = keep) -> [B, 1, 1, L] for SDPA, or None when nothing is padded."""
    if mask is None or bool(mask.all()):
        return None
    return mask[:, None, None, :]


# ----------------------------------------------------------------------------------------
# Video expert: Wan DiT (original Wan module names)
# ----------------------------------------------------------------------------------------


class JointAttnProcessor:
    """Scaled dot-product attention over the concatenation of several streams (one call, one place).

    Diffusers' SD3 ``JointAttnProcessor2_0`` is the precedent: each stream brings its own
    projections, the processor concatenates along the sequence, attends once and splits the
    output back per query stream. Motus uses it for the tri-modal joint attention
    ``[video | action | understanding]`` and, with one stream each, for the video cross-attention
    to the text. Swap it with ``MotusModel.set_attn_processor`` (e.g. a flash-attention kernel).
    """

    def __call__(
        self,
        queries: list[torch.Tensor],
        keys: list[torch.Tensor],
        values: list[torch.Tensor],
        attn_mask: torch.Tensor | None,
        dtype: torch.dtype,
    ) -> list[torch.Tensor]:
        """Attend every query stream to all key/value streams.

        Args:
            queries: per stream [B, L_i, heads, head_dim]; may hold fewer streams than ``keys``
                (the last layer drops the understanding queries: they feed nothing).
            keys, values: per stream [B, L_j, heads, head_dim].
            attn_mask: key-padding mask broadcastable to [B, heads, sum L_i, sum L_j] (True = keep), or None.
            dtype: the compute dtype (the attention weights' dtype).
        Returns:
            per query stream [B, L_i, heads * head_dim], in ``dtype``.
        """
        lengths = [query.shape[1] for query in queries]
        query = torch.cat(queries, dim=1).transpose(1, 2).to(dtype)
        key = torch.cat(keys, dim=1).transpose(1, 2).to(dtype)
        value = torch.cat(values, dim=1).transpose(1, 2).to(dtype)
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask)
        return list(out.transpose(1, 2).flatten(2).split(lengths, dim=1))


@dataclass
class LayerContext:
    """What every lock-step layer shares besides the three streams (one per forward call).

    Attributes:
        video_mod: [B, Lv, 6, Dv] video AdaLN modulation from the time embedding.
        action_mod: [B, 1, 6, Da] action AdaLN modulation.
        rope_cos, rope_sin: [Lv, head_dim / 2] video RoPE.
        joint_mask: key-padding mask of the joint attention, or None.
        text_keys, text_values: per layer [B, L_t, Dv] cached text K/V.
        text_mask: key-padding mask of the text cross-attention, or None.
        processor: the attention processor.
        need_video, need_actions: whether the caller uses that stream's velocity; when not, the stream's
            last-layer queries, post-attention work and head are skipped (their output feeds nothing).
    """

    video_mod: torch.Tensor
    action_mod: torch.Tensor
    rope_cos: torch.Tensor
    rope_sin: torch.Tensor
    joint_mask: torch.Tensor | None
    text_keys: list[torch.Tensor]
    text_values: list[torch.Tensor]
    text_mask: torch.Tensor | None
    processor: JointAttnProcessor
    need_video: bool = True
    need_actions: bool = True


def _adaln_chunks(modulation: nn.Parameter, mod: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """shift, scale, gate (attention), shift, scale, gate (FFN): block table + time modulation, fp32."""
    return (modulation.float()[None] + mod).unbind(2)


class WanAttention(nn.Module):
    """Wan ``WanSelfAttention`` / ``WanCrossAttention`` parameters: q, k, v, o (bias) + RMSNorm q/k."""

    def __init__(self, dim: int, eps: float, num_heads: int = 1) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        # RMSNorm over all heads (dim = heads * head_dim), as Wan's qk_norm.
        self.norm_q = nn.RMSNorm(dim, eps=eps)
        self.norm_k = nn.RMSNorm(dim, eps=eps)

    def project(
        self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [B, L, D] -> q, k, v each [B, L, heads, head_dim]; q/k RMS-normed, then rotated when ``rope`` is given."""
        heads = (self.num_heads, -1)
        query = _run(self.norm_q, _run(self.q, x)).unflatten(-1, heads)
        key = _run(self.norm_k, _run(self.k, x)).unflatten(-1, heads)
        value = _run(self.v, x).unflatten(-1, heads)
        if rope is not None:
            query, key = apply_rope(query, *rope), apply_rope(key, *rope)
        return query, key, value

    def cross(
        self,
        x: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        mask: torch.Tensor | None,
        processor: JointAttnProcessor,
    ) -> torch.Tensor:
        """Cross-attention of x [B, L, D] to cached (already normed) keys/values [B, L_t, D]; returns o(attn) fp32."""
        heads = (self.num_heads, -1)
        query = _run(self.norm_q, _run(self.q, x)).unflatten(-1, heads)
        (out,) = processor(
            [query], [keys.unflatten(-1, heads)], [values.unflatten(-1, heads)], mask, self.q.weight.dtype
        )
        return _run(self.o, out)


class WanBlock(nn.Module):
    """One Wan DiT block. Its self-attention runs as part of the joint attention (``attention_inputs``)."""

    def __init__(self, dim: int, ffn_dim: int, eps: float, cross_attn_norm: bool, num_heads: int = 1) -> None:
        super().__init__()
        self.eps = eps
        self.cross_attn_norm = cross_attn_norm
        # shift/scale/gate for attention, then for the FFN (added to the time projection).
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)
        self.self_attn = WanAttention(dim, eps, num_heads)
        self.cross_attn = WanAttention(dim, eps, num_heads)
        # Original Wan: norm3 = affine cross-attention norm, norm2 = FFN norm (no params).
        self.norm3 = nn.LayerNorm(dim, eps=eps, elementwise_affine=True) if cross_attn_norm else nn.Identity()
        self.ffn = _ffn(dim, ffn_dim)

    def attention_inputs(
        self, x: torch.Tensor, chunks: tuple[torch.Tensor, ...], rope: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """AdaLN-modulated norm, then q/k/v in the joint head space with RoPE on q/k."""
        shift, scale = chunks[0], chunks[1]
        return self.self_attn.project(_modulate(x, self.eps, shift, scale), rope)

    def forward(
        self,
        x: torch.Tensor,
        attn_out: torch.Tensor,
        chunks: tuple[torch.Tensor, ...],
        text_keys: torch.Tensor,
        text_values: torch.Tensor,
        text_mask: torch.Tensor | None,
        processor: JointAttnProcessor,
    ) -> torch.Tensor:
        """After the joint attention: gated residual, text cross-attention, gated FFN. x float32 [B, Lv, D]."""
        _, _, gate, ffn_shift, ffn_scale, ffn_gate = chunks
        x = x + _run(self.self_attn.o, attn_out) * gate
        cross_in = _run(self.norm3, x) if self.cross_attn_norm else x
        x = x + self.cross_attn.cross(cross_in, text_keys, text_values, text_mask, processor)
        return x + _run(self.ffn, _modulate(x, self.eps, ffn_shift, ffn_scale)) * ffn_gate


class WanHead(nn.Module):
    """Wan ``Head``: LayerNorm, 2-way modulation (shift, scale), Linear to C * prod(patch)."""

    def __init__(self, dim: int, out_dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.head = nn.Linear(dim, out_dim)
        self.modulation = nn.Parameter(torch.randn(1, 2, dim) / dim**0.5)


class VideoExpert(nn.Module):
    """Wan2.2 DiT parameters (the reference's ``video_model.wan_model``)."""

    def __init__(self, config: MotusConfig) -> None:
        super().__init__()
        video = config.video
        self.config = video
        self.patch_embedding = nn.Conv3d(
            video.latent_channels, video.dim, kernel_size=video.patch_size, stride=video.patch_size
        )
        self.text_embedding = nn.Sequential(
            nn.Linear(video.text_dim, video.dim), nn.GELU(approximate="tanh"), nn.Linear(video.dim, video.dim)
        )
        self.time_embedding = nn.Sequential(
            nn.Linear(video.freq_dim, video.dim), nn.SiLU(), nn.Linear(video.dim, video.dim)
        )
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(video.dim, 6 * video.dim))
        self.blocks = nn.ModuleList(
            WanBlock(video.dim, video.ffn_dim, video.eps, video.cross_attn_norm, config.num_heads)
            for _ in range(config.num_layers)
        )
        self.head = WanHead(video.dim, video.latent_channels * math.prod(video.patch_size), video.eps)


# ----------------------------------------------------------------------------------------
# Action and understanding experts
# ----------------------------------------------------------------------------------------


class JointQKV(nn.Module):
    """Per-expert projection into the joint head space: one [3, heads, D, head_dim] tensor, no bias."""

    def __init__(self, dim: int, num_heads: int, head_dim: int, eps: float) -> None:
        super().__init__()
        self.qkv = nn.Parameter(torch.empty(3, num_heads, dim, head_dim))
        nn.init.normal_(self.qkv, std=dim**-0.5)
        self.norm_q = nn.RMSNorm(num_heads * head_dim, eps=eps)
        self.norm_k = nn.RMSNorm(num_heads * head_dim, eps=eps)

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [B, L, D] -> q, k, v each [B, L, heads, head_dim] (q, k RMS-normed over heads*head_dim)."""
        qkv = torch.einsum("bld,thde->tblhe", x.to(self.qkv.dtype), self.qkv).float()
        query, key, value = qkv.unbind(0)
        query = _run(self.norm_q, query.flatten(2)).unflatten(2, qkv.shape[-2:])
        key = _run(self.norm_k, key.flatten(2)).unflatten(2, qkv.shape[-2:])
        return query, key, value


class ActionBlock(nn.Module):
    """One action-expert layer: AdaLN (6-way), projections into the joint head space, gated FFN."""

    def __init__(self, config: MotusConfig) -> None:
        super().__init__()
        action = config.action
        self.eps = action.eps
        self.modulation = nn.Parameter(torch.randn(1, 6, action.dim) / action.dim**0.5)
        self.attn = JointQKV(action.dim, config.num_heads, config.head_dim, action.eps)
        self.o = nn.Linear(config.attention_dim, action.dim, bias=False)
        self.ffn = _ffn(action.dim, action.ffn_dim)

    def attention_inputs(
        self, x: torch.Tensor, chunks: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.attn.project(_modulate(x, self.eps, chunks[0], chunks[1]))

    def forward(self, x: torch.Tensor, attn_out: torch.Tensor, chunks: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Gated residual of the joint attention's output, then the gated FFN. x float32 [B, La, Da]."""
        _, _, gate, ffn_shift, ffn_scale, ffn_gate = chunks
        x = x + _run(self.o, attn_out) * gate
        return x + _run(self.ffn, _modulate(x, self.eps, ffn_shift, ffn_scale)) * ffn_gate


class ActionHead(nn.Module):
    """LayerNorm + 2-way modulation + Linear D -> action_dim, zero-initialised."""

    def __init__(self, dim: int, action_dim: int) -> None:
        super().__init__()
        self.modulation = nn.Parameter(torch.randn(1, 2, dim) / dim**0.5)
        self.head = nn.Linear(dim, action_dim)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)


def _modulated_head(head: WanHead | ActionHead, x: torch.Tensor, temb: torch.Tensor, eps: float) -> torch.Tensor:
    """An output head: (shift, scale) = head.modulation + time embedding, then Linear of the modulated norm.

    Args:
        x: [B, L, D] stream; temb: [B, L or 1, D] its time embedding. Returns [B, L, out_dim] float32.
    """
    shift, scale = (head.modulation.float()[None] + temb[:, :, None]).unbind(2)
    return _run(head.head, _modulate(x, eps, shift, scale))


class ActionExpert(nn.Module):
    """Action tokens [state | actions | registers] (finetune) or [actions] (pretrain)."""

    def __init__(self, config: MotusConfig) -> None:
        super().__init__()
        action = config.action
        self.config = action
        self.action_encoder = _mlp3(action.action_dim, action.dim)
        if config.uses_state:
            self.state_encoder = _mlp3(action.state_dim, action.dim)
            self.registers = nn.Parameter(torch.randn(1, action.num_registers, action.dim) * 0.02)
        else:  # pretrain (latent actions): no state token, no registers
            self.state_encoder = None
            self.registers = None
        self.time_embedding = nn.Sequential(
            nn.Linear(config.video.freq_dim, action.dim), nn.SiLU(), nn.Linear(action.dim, action.dim)
        )
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(action.dim, 6 * action.dim))
        self.blocks = nn.ModuleList(ActionBlock(config) for _ in range(config.num_layers))
        self.head = ActionHead(action.dim, action.action_dim)


class ActionFrameEmbedding(nn.Module):
    """The actions leading to each future latent frame -> a term added to that frame's time embedding.

    Why (``MotusConfig.action_modulation``): through the joint attention alone the small world models predicted
    as well with another episode's actions as with the true ones. Added to the time embedding, the actions
    modulate every block and the head of their frame's tokens (the AdaLN action conditioning of
    action-conditioned video world models), a path the video expert cannot average away. The chunk splits into
    equal windows, window j being the actions up to future frame j. The actions arrive as noisy as the action
    stream, so their noise level is an input too (pure noise when marginalised carries nothing). The output
    layer starts at zero: switching the path on leaves a trained model's outputs unchanged at step 0. With
    ``action_modulation_clean_only`` a sample's term is zero unless its actions are clean (sigma 0).
    """

    def __init__(self, config: MotusConfig) -> None:
        super().__init__()
        # chunk = video frames x video_action_ratio and latent frames = video frames / temporal_compression,
        # so the chunk always splits evenly: video_action_ratio x temporal_compression actions per window
        self.num_windows = config.latent_grid()[0] - 1
        window = config.temporal.action_chunk // self.num_windows * config.action.action_dim
        self.freq_dim = config.video.freq_dim
        self.clean_only = config.action_modulation_clean_only
        dim = config.video.dim
        self.embed = nn.Sequential(nn.Linear(window + self.freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        nn.init.zeros_(self.embed[2].weight)
        nn.init.zeros_(self.embed[2].bias)

    def forward(self, actions: torch.Tensor, action_sigma: torch.Tensor) -> torch.Tensor:
        """actions [B, chunk, action_dim], action_sigma [B] -> [B, future latent frames, video dim] float32."""
        windows = actions.float().reshape(actions.shape[0], self.num_windows, -1)
        level = timestep_sinusoid(action_sigma.float() * 1000.0, self.freq_dim)[:, None]
        frames = _run(self.embed, torch.cat([windows, level.expand(-1, self.num_windows, -1)], dim=-1))
        if self.clean_only:
            frames = frames * (action_sigma == 0).to(frames.dtype)[:, None, None]
        return frames


class UnderstandingBlock(nn.Module):
    """One understanding-expert layer: plain pre-norms (no timestep), plain residuals."""

    def __init__(self, config: MotusConfig) -> None:
        super().__init__()
        und = config.understanding
        # Affine in our checkpoints; parameter-free in the reference release (config.understanding.norm_affine).
        self.norm1 = nn.LayerNorm(und.dim, eps=und.eps, elementwise_affine=und.norm_affine)
        self.attn = JointQKV(und.dim, config.num_heads, config.head_dim, und.eps)
        self.o = nn.Linear(config.attention_dim, und.dim, bias=False)
        self.norm2 = nn.LayerNorm(und.dim, eps=und.eps, elementwise_affine=und.norm_affine)
        self.ffn = _ffn(und.dim, und.ffn_dim)

    def attention_inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.attn.project(_run(self.norm1, x))

    def forward(self, x: torch.Tensor, attn_out: torch.Tensor) -> torch.Tensor:
        x = x + _run(self.o, attn_out)
        return x + _run(self.ffn, _run(self.norm2, x))


class UnderstandingExpert(nn.Module):
    """VLM last hidden states -> adapter -> a stream with plain LayerNorms (no timestep)."""

    def __init__(self, config: MotusConfig) -> None:
        super().__init__()
        und = config.understanding
        self.config = und
        self.adapter = _mlp3(und.vlm_dim, und.dim)
        self.blocks = nn.ModuleList(UnderstandingBlock(config) for _ in range(config.num_layers))


# ----------------------------------------------------------------------------------------
# Cached per-request conditioning
# ----------------------------------------------------------------------------------------


def _pad_to(x: torch.Tensor, length: int) -> torch.Tensor:
    """Zero-pad [B, L, ...] along L to ``length``."""
    if x.shape[1] == length:
        return x
    pad = x.new_zeros((x.shape[0], length - x.shape[1], *x.shape[2:]))
    return torch.cat([x, pad], dim=1)


def _full_mask(mask: torch.Tensor | None, batch: int, length: int, device: torch.device) -> torch.Tensor:
    return mask if mask is not None else torch.ones(batch, length, dtype=torch.bool, device=device)


@dataclass
class MotusConditioning:
    """Everything the denoiser needs that does not depend on the noise, for a batch of B.

    Only the understanding adapter output (the stream's layer-0 input) can be cached: the
    understanding stream attends to video and action tokens in the joint attention, so its
    hidden state in later layers changes every denoising step. The text cross-attention
    keys/values are fixed per request and cached for every layer.

    Attributes:
        und_tokens: [B, L_u, D_und] adapter output.
        und_mask: [B, L_u] bool, True = real token; None = no padding.
        text_keys / text_values: per layer [B, L_t, video_dim] (keys already RMS-normed).
        text_mask: [B, L_t] bool, True = real token; None = no padding.
    """

    und_tokens: torch.Tensor
    und_mask: torch.Tensor | None
    text_keys: list[torch.Tensor]
    text_values: list[torch.Tensor]
    text_mask: torch.Tensor | None

    @property
    def batch_size(self) -> int:
        return self.und_tokens.shape[0]

    def index(self, indices: torch.Tensor | list[int] | slice) -> MotusConditioning:
        """Select samples (by index list, tensor or slice)."""
        return self._map(lambda x: x[indices])

    def repeat(self, repeats: int) -> MotusConditioning:
        """Repeat every sample ``repeats`` times in place order (a, a, b, b, ...)."""
        return self._map(lambda x: x.repeat_interleave(repeats, dim=0))

    def to(self, device: torch.device | str) -> MotusConditioning:
        return self._map(lambda x: x.to(device))

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> MotusConditioning:
        """``fn`` applied to every tensor (masks that are None stay None)."""

        def apply(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else fn(x)

        return MotusConditioning(
            und_tokens=apply(self.und_tokens),
            und_mask=apply(self.und_mask),
            text_keys=[apply(k) for k in self.text_keys],
            text_values=[apply(v) for v in self.text_values],
            text_mask=apply(self.text_mask),
        )

    @staticmethod
    def cat(items: list[MotusConditioning]) -> MotusConditioning:
        """Concatenate along the batch, padding understanding/text tokens to the longest and masking."""
        if not items:
            raise ValueError("MotusConditioning.cat needs at least one item, got an empty list")
        layer_counts = {len(item.text_keys) for item in items}
        if len(layer_counts) != 1:
            raise ValueError(f"cannot concatenate conditionings with different layer counts {sorted(layer_counts)}")
        num_layers = layer_counts.pop()
        und_len = max(item.und_tokens.shape[1] for item in items)
        text_len = max(item.text_keys[0].shape[1] for item in items)
        device = items[0].und_tokens.device
        und_masks, text_masks = [], []
        for item in items:
            batch = item.batch_size
            und_masks.append(_pad_to(_full_mask(item.und_mask, batch, item.und_tokens.shape[1], device), und_len))
            text_masks.append(_pad_to(_full_mask(item.text_mask, batch, item.text_keys[0].shape[1], device), text_len))
        und_mask = torch.cat(und_masks)
        text_mask = torch.cat(text_masks)
        return MotusConditioning(
            und_tokens=torch.cat([_pad_to(item.und_tokens, und_len) for item in items]),
            und_mask=None if bool(und_mask.all()) else und_mask,
            text_keys=[torch.cat([_pad_to(item.text_keys[i], text_len) for item in items]) for i in range(num_layers)],
            text_values=[
                torch.cat([_pad_to(item.text_values[i], text_len) for item in items]) for i in range(num_layers)
            ],
            text_mask=None if bool(text_mask.all()) else text_mask,
        )


# ----------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------


class MotusModel(PretrainedMixin, nn.Module):
    """Motus: video expert + action expert + understanding expert with tri-modal joint attention.

    Usage::

        model = MotusModel(MotusConfig.preset("motus-tiny"))
        conditioning = model.prepare_conditioning(text_context, text_mask, vlm_hidden, vlm_mask)
        video_velocity, action_velocity = model(latents, video_sigma, actions, action_sigma, state, conditioning)

    Parameters are grouped per expert (``video``, ``action_expert``, ``und_expert``). Folder I/O
    (``save_pretrained`` / ``from_pretrained``) comes from ``modeling_utils.PretrainedMixin``.
    """

    config_class = MotusConfig
    # Kept float32 when loaded in fp16/bf16 (as diffusers' ``_keep_in_fp32_modules`` for Wan):
    # AdaLN modulation, time embeddings and norms.
    keep_fp32 = re.compile(r"(modulation|time_embedding|time_projection|norm)")

    def __init__(self, config: MotusConfig) -> None:
        super().__init__()
        self.config = config
        self.attn_processor = JointAttnProcessor()
        self.video = VideoExpert(config)
        self.action_expert = ActionExpert(config)
        self.und_expert = UnderstandingExpert(config)
        self.action_to_video = ActionFrameEmbedding(config) if config.action_modulation else None
        self.gradient_checkpointing = False
        if not any(p.is_meta for p in self.parameters()):
            self._init_video_weights()

    def _init_video_weights(self) -> None:
        """Wan's ``init_weights``: xavier Linears, std 0.02 embeddings, zero output head."""
        for module in self.video.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.xavier_uniform_(self.video.patch_embedding.weight.flatten(1))
        for sequential in (self.video.text_embedding, self.video.time_embedding):
            for module in sequential:
                if isinstance(module, nn.Linear):
                    nn.init.normal_(module.weight, std=0.02)
        nn.init.zeros_(self.video.head.head.weight)

    # -- bookkeeping -----------------------------------------------------------------------
    def count_parameters(self) -> dict[str, int]:
        """Parameter counts per expert and in total."""
        counts = {
            "video_expert": sum(p.numel() for p in self.video.parameters()),
            "action_expert": sum(p.numel() for p in self.action_expert.parameters()),
            "understanding_expert": sum(p.numel() for p in self.und_expert.parameters()),
        }
        if self.action_to_video is not None:
            counts["action_to_video"] = sum(p.numel() for p in self.action_to_video.parameters())
        counts["total"] = sum(counts.values())
        return counts

    def dead_parameter_names(self) -> list[str]:
        """Parameters that never influence an output and get no gradient.

        The understanding stream has no head, so in the last layer only its keys/values
        matter: its query norm, o-proj, norm2 and FFN are dead (the reference computes them
        anyway; we skip them but keep the weights so checkpoints map 1:1). The query slice
        of that layer's ``qkv`` tensor is dead too, but shares a tensor with live k/v.
        """
        last = f"und_expert.blocks.{self.config.num_layers - 1}."
        live = (last + "attn.qkv", last + "attn.norm_k.", last + "norm1.")
        return [name for name, _ in self.named_parameters() if name.startswith(last) and not name.startswith(live)]

    def video_output_parameter_names(self) -> list[str]:
        """Parameters that only the video velocity depends on: the VLA, IDM and joint action outputs are the same
        whatever their values (a fine-tune of these alone cannot change the policy or the IDM).

        The video head; in the last layer, what acts on the video stream after the joint attention and the video
        queries (only the keys/values reach the other streams); and, with ``action_modulation_clean_only``, the
        action path (it is zero unless the actions are given clean, and then the action output is not wanted).
        ``test_video_output_parameters`` checks the list against autograd.
        """
        last = f"video.blocks.{self.config.num_layers - 1}."
        prefixes = ["video.head."] + [
            last + part
            for part in ("self_attn.q.", "self_attn.norm_q.", "self_attn.o.", "cross_attn.", "norm3.", "ffn.")
        ]
        if self.action_to_video is not None and self.config.action_modulation_clean_only:
            prefixes.append("action_to_video.")
        return [name for name, _ in self.named_parameters() if name.startswith(tuple(prefixes))]

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def set_attn_processor(self, processor: JointAttnProcessor) -> None:
        """Replace the attention processor (joint and cross attention), as diffusers' ``set_attn_processor``."""
        self.attn_processor = processor

    # -- conditioning ---------------------------------------------------------------------
    def prepare_conditioning(
        self,
        text_context: torch.Tensor,
        text_mask: torch.Tensor | None,
        vlm_hidden: torch.Tensor | None,
        vlm_mask: torch.Tensor | None,
    ) -> MotusConditioning:
        """Noise-independent work for a batch: text K/V per layer and the understanding adapter.

        Args:
            text_context: [B, L_t, text_dim] umT5 hidden states (zero-padded).
            text_mask: [B, L_t] bool, True = real token, or None (attend everything, as stock Wan).
            vlm_hidden: [B, L_u, vlm_dim] the VLM's last hidden state, or None for ``forward_video_only``
                (stage 1): no understanding tokens, the understanding expert is not run.
            vlm_mask: [B, L_u] bool, True = real token, or None.
        """
        video, und = self.config.video, self.config.understanding
        if vlm_hidden is None:
            vlm_hidden, vlm_mask = text_context.new_zeros(text_context.shape[0], 0, und.vlm_dim), None
            und_tokens = text_context.new_zeros(text_context.shape[0], 0, und.dim)
        else:
            und_tokens = None
        if text_context.ndim != 3 or text_context.shape[-1] != video.text_dim:
            raise ValueError(f"text_context must be [B, L_t, {video.text_dim}], got {tuple(text_context.shape)}")
        if vlm_hidden.ndim != 3 or vlm_hidden.shape[-1] != und.vlm_dim:
            raise ValueError(f"vlm_hidden must be [B, L_u, {und.vlm_dim}], got {tuple(vlm_hidden.shape)}")
        if vlm_hidden.shape[0] != text_context.shape[0]:
            raise ValueError(
                f"batch sizes differ: text_context {text_context.shape[0]} vs vlm_hidden {vlm_hidden.shape[0]}"
            )
        for name, mask, ref in (("text_mask", text_mask, text_context), ("vlm_mask", vlm_mask, vlm_hidden)):
            if mask is None:
                continue
            if mask.dtype != torch.bool or tuple(mask.shape) != tuple(ref.shape[:2]):
                raise ValueError(f"{name} must be bool {tuple(ref.shape[:2])}, got {mask.dtype} {tuple(mask.shape)}")
            if not bool(mask.any(dim=1).all()):
                raise ValueError(f"{name} has a sample with no real tokens; every sample needs at least one")
        context = _run(self.video.text_embedding, text_context)
        keys, values = [], []
        for block in self.video.blocks:
            # Stored in the attention weights' dtype (bf16 for the 8B model: ~190 MB per request).
            dtype = block.cross_attn.k.weight.dtype
            keys.append(_run(block.cross_attn.norm_k, _run(block.cross_attn.k, context)).to(dtype))
            values.append(_run(block.cross_attn.v, context).to(dtype))
        if und_tokens is None:
            und_tokens = _run(self.und_expert.adapter, vlm_hidden)
        return MotusConditioning(
            und_tokens=und_tokens,
            und_mask=None if vlm_mask is None or bool(vlm_mask.all()) else vlm_mask,
            text_keys=keys,
            text_values=values,
            text_mask=None if text_mask is None or bool(text_mask.all()) else text_mask,
        )

    # -- forward ----------------------------------------------------------------------------
    def forward(
        self,
        video_latents: torch.Tensor,
        video_sigma: torch.Tensor,
        actions: torch.Tensor,
        action_sigma: torch.Tensor,
        state: torch.Tensor | None,
        conditioning: MotusConditioning,
        need_video: bool = True,
        need_actions: bool = True,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Predict the rectified-flow velocities (eps - x0) of video and actions.

        Args:
            video_latents: [B, C, F, H, W] noisy latents; latent frame 0 is the clean conditioning frame.
            video_sigma: [B] noise level of the future video frames in [0, 1].
            actions: [B, chunk, action_dim] noisy actions (or latent actions in pretrain mode).
            action_sigma: [B] noise level of the actions.
            state: [B, state_dim] proprioception (finetune mode) or None (pretrain mode).
            conditioning: from ``prepare_conditioning`` (batch B).
            need_video, need_actions: False when the caller discards that velocity (VLA and IDM sampling
                discard the video's, world-model and video-generation sampling the actions'): the stream's
                last-layer queries, post-attention work and head are skipped and None is returned in its
                place. The other output is unchanged (the skipped work feeds nothing else).
        Returns:
            video_velocity [B, C, F, H, W] and action_velocity [B, chunk, action_dim], float32 (or None, see above).
        """
        config = self.config
        if not (need_video or need_actions):
            raise ValueError("forward: need_video and need_actions are both False; ask for at least one output")
        batch = self._check_inputs(video_latents, video_sigma, actions, action_sigma, state, conditioning)
        # 1. Video tokens, per-token timesteps (conditioning frame t = 0 unless configured otherwise), the
        # future frames' modulated by their actions where the config adds that path.
        action_frames = None if self.action_to_video is None else self.action_to_video(actions, action_sigma)
        video_x, video_temb, video_mod, grid, rope_cos, rope_sin = self._embed_video(
            video_latents, video_sigma, action_frames
        )
        num_video = video_x.shape[1]

        # 2. Action tokens [state | actions | registers] + sin-cos positions; one timestep per
        # sample for the whole stream (state and registers included), as the reference.
        action_x = _run(self.action_expert.action_encoder, actions)
        if config.uses_state:
            state_x = _run(self.action_expert.state_encoder, state[:, None, :])
            registers = self.action_expert.registers.float().expand(batch, -1, -1)
            action_x = torch.cat([state_x, action_x, registers], dim=1)
        action_x = action_x + sincos_positions(action_x.shape[1], config.action.dim, action_x.device)
        action_temb = _run(
            self.action_expert.time_embedding, timestep_sinusoid(action_sigma.float() * 1000.0, config.video.freq_dim)
        )[:, None]  # [B, 1, Da]
        action_mod = _run(self.action_expert.time_projection, action_temb).unflatten(-1, (6, -1))  # [B, 1, 6, Da]

        # 3. Understanding tokens from the cached adapter output.
        und_x = conditioning.und_tokens.float()
        joint_mask = None
        if conditioning.und_mask is not None:
            keep = torch.ones(batch, num_video + action_x.shape[1], dtype=torch.bool, device=und_x.device)
            joint_mask = _key_padding_mask(torch.cat([keep, conditioning.und_mask], dim=1))
        context = LayerContext(
            video_mod=video_mod,
            action_mod=action_mod,
            rope_cos=rope_cos,
            rope_sin=rope_sin,
            joint_mask=joint_mask,
            text_keys=conditioning.text_keys,
            text_values=conditioning.text_values,
            text_mask=_key_padding_mask(conditioning.text_mask),
            processor=self.attn_processor,
            need_video=need_video,
            need_actions=need_actions,
        )

        # 4. The lock-step layers.
        for index in range(config.num_layers):
            if self.gradient_checkpointing and torch.is_grad_enabled():
                video_x, action_x, und_x = activation_checkpoint(
                    self._layer, index, video_x, action_x, und_x, context, use_reentrant=False
                )
            else:
                video_x, action_x, und_x = self._layer(index, video_x, action_x, und_x, context)

        # 5. Heads: video (unpatchify) and actions (drop state token and registers).
        video_velocity = self._video_head(video_x, video_temb, grid) if need_video else None
        if not need_actions:
            return video_velocity, None
        action_out = _modulated_head(self.action_expert.head, action_x, action_temb, config.action.eps)
        if config.uses_state:
            action_out = action_out[:, 1 : 1 + actions.shape[1]]
        return video_velocity, action_out

    def forward_uncached(
        self,
        video_latents: torch.Tensor,
        video_sigma: torch.Tensor,
        actions: torch.Tensor,
        action_sigma: torch.Tensor,
        state: torch.Tensor | None,
        text_context: torch.Tensor,
        vlm_hidden: torch.Tensor,
        text_mask: torch.Tensor | None = None,
        vlm_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Training entry point: ``prepare_conditioning`` + ``forward`` in one differentiable call."""
        conditioning = self.prepare_conditioning(text_context, text_mask, vlm_hidden, vlm_mask)
        return self(video_latents, video_sigma, actions, action_sigma, state, conditioning)

    def forward_video_only(
        self, video_latents: torch.Tensor, video_sigma: torch.Tensor, conditioning: MotusConditioning
    ) -> torch.Tensor:
        """The video expert alone, as a plain Wan2.2 DiT (self-attention over video tokens only).

        For video-only work (stage 1, "VGM only") and for checking the video expert against
        diffusers' ``WanTransformer3DModel``. Only the video blocks run (the action and understanding
        experts are not called), so the joint attention is Wan's self-attention; ``conditioning.und_tokens``
        is unused (``prepare_conditioning`` with ``vlm_hidden=None`` skips the understanding adapter).

        Args:
            video_latents: [B, C, F, H, W]; video_sigma: [B]. Returns the velocity [B, C, F, H, W].
        """
        batch = self._check_video_latents(video_latents)
        if tuple(video_sigma.shape) != (batch,) or conditioning.batch_size != batch:
            raise ValueError(
                f"video_sigma must be ({batch},) and conditioning batch {batch}, "
                f"got {tuple(video_sigma.shape)} and {conditioning.batch_size}"
            )
        video_x, video_temb, video_mod, grid, rope_cos, rope_sin = self._embed_video(video_latents, video_sigma)
        text_mask = _key_padding_mask(conditioning.text_mask)
        # The video blocks alone (the joint attention over the video stream only is Wan's self-attention):
        # the action and understanding experts are not run at all, not even on empty streams (stage 1).
        for index, block in enumerate(self.video.blocks):
            chunks = _adaln_chunks(block.modulation, video_mod)
            query, key, value = block.attention_inputs(video_x, chunks, (rope_cos, rope_sin))
            (attended,) = self.attn_processor([query], [key], [value], None, block.self_attn.q.weight.dtype)
            video_x = block(
                video_x,
                attended,
                chunks,
                conditioning.text_keys[index],
                conditioning.text_values[index],
                text_mask,
                self.attn_processor,
            )
        return self._video_head(video_x, video_temb, grid)

    def _layer(
        self, index: int, video_x: torch.Tensor, action_x: torch.Tensor, und_x: torch.Tensor, context: LayerContext
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One MoT layer (reference ``Motus._process_mot_layer``): each block projects its stream, ONE
        joint attention over ``[video | action | understanding]``, then each block's own ``forward``.
        Streams are float32 [B, L, D]."""
        video_block = self.video.blocks[index]
        action_block = self.action_expert.blocks[index]
        und_block = self.und_expert.blocks[index]
        # In the last layer the understanding queries are skipped: their output feeds nothing (no head).
        is_last = index == self.config.num_layers - 1

        video_chunks = _adaln_chunks(video_block.modulation, context.video_mod)
        action_chunks = _adaln_chunks(action_block.modulation, context.action_mod)
        video_q, video_k, video_v = video_block.attention_inputs(
            video_x, video_chunks, (context.rope_cos, context.rope_sin)
        )
        action_q, action_k, action_v = action_block.attention_inputs(action_x, action_chunks)
        und_q, und_k, und_v = und_block.attention_inputs(und_x)

        # In the last layer a stream whose velocity the caller discards needs only its keys/values.
        live_video = not is_last or context.need_video
        live_action = not is_last or context.need_actions
        queries = [q for q, live in ((video_q, live_video), (action_q, live_action), (und_q, not is_last)) if live]
        outputs = iter(
            context.processor(
                queries,
                [video_k, action_k, und_k],
                [video_v, action_v, und_v],
                context.joint_mask,
                video_block.self_attn.q.weight.dtype,
            )
        )
        if live_video:
            video_x = video_block(
                video_x,
                next(outputs),
                video_chunks,
                context.text_keys[index],
                context.text_values[index],
                context.text_mask,
                context.processor,
            )
        if live_action:
            action_x = action_block(action_x, next(outputs), action_chunks)
        if not is_last:
            und_x = und_block(und_x, next(outputs))
        return video_x, action_x, und_x

    def _embed_video(
        self, video_latents: torch.Tensor, video_sigma: torch.Tensor, action_frames: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[int, int, int], torch.Tensor, torch.Tensor]:
        """Patch embedding, per-token time embedding/modulation and RoPE for the input's own grid.

        ``action_frames`` [B, future latent frames, D] (``ActionFrameEmbedding``) is added to the future frames'
        time embedding before their modulation; None without ``action_modulation`` (and for video-only work).

        Returns tokens [B, Lv, D], time embedding [B, Lv, D], modulation [B, Lv, 6, D], the
        token grid, and RoPE cos/sin [Lv, head_dim / 2].
        """
        config = self.config
        patch_t, patch_h, patch_w = config.video.patch_size
        batch, _, frames, height, width = video_latents.shape
        grid = (frames // patch_t, height // patch_h, width // patch_w)
        patch_weight = self.video.patch_embedding.weight
        video_x = _patchify_linear(self.video.patch_embedding, video_latents.to(patch_weight.dtype)).float()
        # Each sample has two distinct timesteps: the conditioning frame's (0, or sigma when
        # configured as the reference) and the future frames' (sigma). Embed those two, then
        # spread them over the tokens, rather than running the time MLPs on every token.
        future_t = video_sigma.float() * 1000.0
        cond_t = torch.zeros_like(future_t) if config.clean_condition_timestep else future_t
        two_t = torch.stack([cond_t, future_t], dim=1)  # [B, 2]
        two_temb = _run(self.video.time_embedding, timestep_sinusoid(two_t, config.video.freq_dim))  # [B, 2, D]
        two_mod = _run(self.video.time_projection, two_temb)  # [B, 2, 6D]
        is_future = torch.ones(video_x.shape[1], dtype=torch.long, device=video_x.device)
        is_future[: grid[1] * grid[2]] = 0  # latent frame 0 is the conditioning frame
        if action_frames is None:
            video_temb = two_temb[:, is_future]  # [B, Lv, D]
            video_mod = two_mod[:, is_future].unflatten(-1, (6, -1))  # [B, Lv, 6, D]
        else:  # action_modulation: each future frame's own embedding, then spread over its tokens
            frame_temb = torch.cat([two_temb[:, :1], two_temb[:, 1:] + action_frames], dim=1)  # [B, F, D]
            frame_mod = torch.cat([two_mod[:, :1], _run(self.video.time_projection, frame_temb[:, 1:])], dim=1)
            frame_of_token = torch.arange(grid[0], device=video_x.device).repeat_interleave(grid[1] * grid[2])
            video_temb = frame_temb[:, frame_of_token]
            video_mod = frame_mod[:, frame_of_token].unflatten(-1, (6, -1))
        rope_cos, rope_sin = video_rope(grid, config.head_dim, config.video.rope_theta, video_x.device)
        return video_x, video_temb, video_mod, grid, rope_cos, rope_sin

    def _video_head(self, video_x: torch.Tensor, video_temb: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """Wan head: LayerNorm, (shift, scale) from modulation + time embedding, Linear, unpatchify."""
        return self._unpatchify(_modulated_head(self.video.head, video_x, video_temb, self.config.video.eps), grid)

    def _unpatchify(self, tokens: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """[B, F'*H'*W', p_t*p_h*p_w*C] -> [B, C, F'*p_t, H'*p_h, W'*p_w] (Wan's channel-last patch order)."""
        patch_t, patch_h, patch_w = self.config.video.patch_size
        frames, height, width = grid
        x = tokens.reshape(tokens.shape[0], frames, height, width, patch_t, patch_h, patch_w, -1)
        x = x.permute(0, 7, 1, 4, 2, 5, 3, 6)
        return x.reshape(x.shape[0], x.shape[1], frames * patch_t, height * patch_h, width * patch_w)

    def _check_video_latents(self, video_latents: torch.Tensor) -> int:
        """The batch size of [B, C, F, H, W] latents with the configured C."""
        channels = self.config.video.latent_channels
        if video_latents.ndim != 5 or video_latents.shape[1] != channels:
            raise ValueError(f"video_latents must be [B, {channels}, F, H, W], got {tuple(video_latents.shape)}")
        return video_latents.shape[0]

    def _check_inputs(
        self,
        video_latents: torch.Tensor,
        video_sigma: torch.Tensor,
        actions: torch.Tensor,
        action_sigma: torch.Tensor,
        state: torch.Tensor | None,
        conditioning: MotusConditioning,
    ) -> int:
        config = self.config
        batch = self._check_video_latents(video_latents)
        _, _, frames, height, width = video_latents.shape
        patch = config.video.patch_size
        if frames % patch[0] or height % patch[1] or width % patch[2]:
            raise ValueError(f"latent grid {(frames, height, width)} is not divisible by the patch {patch}")
        if actions.ndim != 3 or actions.shape[0] != batch or actions.shape[2] != config.action.action_dim:
            raise ValueError(
                f"actions must be [{batch}, chunk, {config.action.action_dim}], got {tuple(actions.shape)}"
            )
        for name, sigma in (("video_sigma", video_sigma), ("action_sigma", action_sigma)):
            if tuple(sigma.shape) != (batch,):
                raise ValueError(f"{name} must have shape ({batch},), got {tuple(sigma.shape)}")
        if config.uses_state:
            if state is None or tuple(state.shape) != (batch, config.action.state_dim):
                got = None if state is None else tuple(state.shape)
                raise ValueError(f"state must be [{batch}, {config.action.state_dim}] in finetune mode, got {got}")
        elif state is not None:
            raise ValueError("state must be None in pretrain mode (latent actions have no state token)")
        if conditioning.batch_size != batch:
            raise ValueError(f"conditioning has batch {conditioning.batch_size}, inputs have batch {batch}")
        if len(conditioning.text_keys) != config.num_layers:
            raise ValueError(
                f"conditioning has {len(conditioning.text_keys)} layers of text K/V, model has {config.num_layers}"
            )
        return batch
