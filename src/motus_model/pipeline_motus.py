"""MotusPipeline: the Motus components and the maths from raw robot inputs to raw robot outputs.

A diffusers-style pipeline (one request or a batch of same-mode requests, synchronous, no threads)::

    request (camera frames uint8, state/actions in raw units, instruction)
      -> check_inputs          mode, steps, seed; one-line ValueError on bad input
      -> prepare_inputs        camera composite, normalised state/actions, conditioning-frame latents
      -> encode_conditioning   text features (LRU-cached per instruction), VLM features,
                               model.prepare_conditioning (text cross-attention K/V, und adapter)
      -> prepare_latents       per-request noise generators, clean parts imposed
      -> denoise               Euler steps; hooks before and after each step (``on_step_begin``,
                               ``callback_on_step_end``) may drop rows from the batch
      -> postprocess           decode video where asked, actions un-normalised to raw units

Everything that does not depend on the noise is computed ONCE per request, not per denoising
step (the reference re-runs the VLM every step). ``recompute_every_step=True`` restores that
cost model; it exists only for the benchmark comparison.

The serving side (queue, batching, futures, cancellation, a worker thread) is ``engine.MotusEngine``.

Checkpoint folder read by ``MotusPipeline.from_pretrained``::

    checkpoint/
      config.json, model.safetensors, stats.json   (MotusModel.save_pretrained)
      text_encoder/      umT5 encoder + tokenizer (transformers format)
      text_features.safetensors   optional pre-encoded instructions (save_text_features)
      vlm/               Qwen3-VL model + tokenizer + image processor (transformers format)
      vae/               diffusers AutoencoderKLWan (config.latents.kind "wan_vae") or PatchPCACodec ("patch_pca")

The stats file holds ``Normalizer.to_dict()`` ({"mode", "eps", "stats"}); a bare stats dict
({"action": {...}, "state": {...}}) is read as mean_std. A policy checkpoint without stats is refused.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from motus_model.conditioning import (
    Qwen3VLFeatureExtractor,
    TextConditioner,
    UMT5TextEncoder,
    build_tiny_qwen3_vl,
    build_tiny_umt5,
    save_text_features,
)
from motus_model.config import MotusConfig
from motus_model.flow_matching import (
    FlowMatchSchedule,
    Mode,
    Treatment,
    euler_step,
    initial_latents,
    reachable_video_basis,
)
from motus_model.modeling_motus import MotusConditioning, MotusModel
from motus_model.modeling_utils import STATS_NAME, MissingCheckpointFileError, load_stats
from motus_model.preprocessing import (
    CompositeLayout,
    Normalizer,
    compose_views,
    fit_composite,
    image_to_tensor,
    tensor_to_image,
    validate_image,
)
from motus_model.video_latents import PatchPCACodec, VideoCodec, WanVAECodec, build_codec, tiny_wan_vae

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]
# Modes whose output includes denoised future video.
VIDEO_MODES = frozenset(mode for mode in Mode if mode.video is Treatment.DENOISED)


@dataclass
class MotusRequest:
    """One inference request, in robot units.

    Attributes:
        mode: a `Mode` or its value ("vla", "world_model", "idm", "video_generation", "joint").
        images: camera role (exactly the checkpoint's `config.cameras.roles`) -> uint8 RGB [H, W, 3], or one
            already composed uint8 image (resized with padding to the model size).
        state: [state_dim] proprioception in raw units (required in finetune checkpoints).
        instruction: the task text (umT5 and Qwen3-VL inputs).
        actions: [chunk, action_dim] raw action chunk (world model mode only).
        future_frames: `num_video_frames` future observations, each like `images` (IDM only).
        steps: Euler steps (default: config.schedule.inference_steps).
        seed: noise seed (default: a random one, reported in the result).
        decode_video: decode and return frames. Default: True in modes that denoise video
            (world model, video generation, joint); VLA and IDM produce no video.
    """

    mode: Mode | str
    images: Mapping[str, np.ndarray] | np.ndarray | None = None
    state: np.ndarray | None = None
    instruction: str = ""
    actions: np.ndarray | None = None
    future_frames: Sequence[Mapping[str, np.ndarray] | np.ndarray] | None = None
    steps: int | None = None
    seed: int | None = None
    decode_video: bool | None = None


@dataclass
class MotusResult:
    """The answer to one request.

    Attributes:
        actions: [chunk, action_dim] in raw units, or None (world model, video generation).
        frames: [num_video_frames, H, W, 3] uint8 predicted future composites (the
            conditioning frame excluded), or None.
        timing_ms: queue, preprocess, conditioning, sampling, decode, total (milliseconds);
            sampling is the whole batch's time. conditioning_text / conditioning_vlm /
            conditioning_prepare split the conditioning stage.
        steps: Euler steps run.
        mode, seed: as run (seed makes the result reproducible).
        batch_size: requests sampled together with this one (itself included).
    """

    actions: np.ndarray | None
    frames: np.ndarray | None
    timing_ms: dict[str, float]
    steps: int
    mode: Mode
    seed: int
    batch_size: int


def parse_mode(mode: Mode | str) -> Mode:
    """A `Mode` from itself, its value ("vla") or its name ("VLA")."""
    try:
        return Mode(mode)
    except ValueError:
        if isinstance(mode, str) and mode.upper() in Mode.__members__:
            return Mode[mode.upper()]
        raise ValueError(f"unknown mode {mode!r}; expected one of {[m.value for m in Mode]}") from None


@dataclass
class PreparedRequest:
    """One request and what the pipeline computes for it once (inputs, latents, conditioning)."""

    request: MotusRequest
    mode: Mode
    steps: int
    seed: int
    timing_ms: dict[str, float] = field(default_factory=dict)
    composite: np.ndarray | None = None  # uint8 [H, W, 3] at the model size
    frames: torch.Tensor | None = None  # [1, T, 3, H, W] conditioning (+ future) frames
    cond_latent: torch.Tensor | None = None  # [1, C, 1, h, w]
    given_video: torch.Tensor | None = None  # [1, C, f, h, w] (IDM)
    given_actions: torch.Tensor | None = None  # [1, chunk, action_dim] normalised (world model)
    state: torch.Tensor | None = None  # [1, state_dim] normalised
    conditioning: MotusConditioning | None = None

    @property
    def batch_key(self) -> tuple[Mode, int]:
        """Requests with equal keys can be denoised together."""
        return self.mode, self.steps

    @property
    def wants_video(self) -> bool:
        if self.request.decode_video is None:
            return self.mode in VIDEO_MODES
        return bool(self.request.decode_video)


@dataclass
class DenoiseState:
    """The batch being denoised. ``items[i]`` owns row i of every tensor; ``select`` drops rows."""

    items: list[PreparedRequest]
    video: torch.Tensor  # [B, C, F, h, w]
    actions: torch.Tensor  # [B, chunk, action_dim]
    cond_latent: torch.Tensor  # [B, C, 1, h, w]
    state: torch.Tensor | None  # [B, state_dim]
    conditioning: MotusConditioning

    def select(self, keep: list[int]) -> None:
        """Keep only rows ``keep`` (positions in the current batch), e.g. after cancellations."""
        if keep == list(range(len(self.items))):
            return
        self.items = [self.items[index] for index in keep]
        if not keep:
            return
        rows = torch.tensor(keep, device=self.video.device)
        self.video, self.actions, self.cond_latent = self.video[rows], self.actions[rows], self.cond_latent[rows]
        self.state = self.state[rows] if self.state is not None else None
        self.conditioning = self.conditioning.index(keep)


StepHook = Callable[[int, int, DenoiseState], None]


def batch_conditioning(items: list[PreparedRequest]) -> MotusConditioning:
    """The conditioning of several prepared requests as one batch (padded and masked)."""
    return items[0].conditioning if len(items) == 1 else MotusConditioning.cat([item.conditioning for item in items])


class MotusPipeline:
    """The Motus components (model, codec, normaliser, text encoder, VLM) and the five modes' maths.

    Args:
        model: the network (moved to ``device``, eval mode).
        codec: pixels <-> latents (``video_latents.build_codec``).
        normalizer: state/action normalisation (checkpoint stats).
        text_encoder: a ``TextConditioner`` (cache + precomputed) or a bare encoder (wrapped in one).
        vlm: the Qwen3-VL feature extractor (or anything with ``extract(instructions, images)``).
        device: where the model runs.
        max_instruction_chars: longer instructions are rejected by ``check_inputs``.

    Usage::

        pipe = MotusPipeline.from_pretrained("models/motus-small-aloha-transfer-cube")
        result = pipe(MotusRequest(mode="vla", images=views, state=state, instruction="transfer the cube"))
    """

    def __init__(
        self,
        model: MotusModel,
        codec: VideoCodec,
        normalizer: Normalizer,
        text_encoder: TextConditioner | Any,
        vlm: Qwen3VLFeatureExtractor | Any,
        device: torch.device | str = "cpu",
        max_instruction_chars: int = 2000,
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.config: MotusConfig = model.config
        self.codec = codec
        self.normalizer = normalizer
        video = self.config.video
        if not isinstance(text_encoder, TextConditioner):
            text_encoder = TextConditioner(text_encoder, text_len=video.text_len, text_dim=video.text_dim)
        self.text = text_encoder
        self.vlm = vlm
        self.max_instruction_chars = int(max_instruction_chars)
        self.layout = CompositeLayout.from_config(self.config)
        self.schedule = FlowMatchSchedule(self.config.schedule)
        self._check_components()
        self._counters = {
            "vlm_calls": 0,
            "prepare_conditioning_calls": 0,
            "encode_calls": 0,
            "decode_calls": 0,
            "model_forward_calls": 0,
        }
        self._counters_lock = threading.Lock()

    # ------------------------------------------------------------------------------------
    # Construction and folder I/O
    # ------------------------------------------------------------------------------------

    def _check_components(self) -> None:
        latents = self.config.latents
        got = (self.codec.latent_channels, self.codec.spatial_compression, self.codec.temporal_compression)
        expected = (latents.channels, latents.spatial_compression, latents.temporal_compression)
        if got != expected:
            raise ValueError(f"codec (channels, spatial, temporal) {got} does not match config.latents {expected}")
        vlm_dim = getattr(self.vlm, "vlm_dim", None)
        if vlm_dim is not None and vlm_dim != self.config.understanding.vlm_dim:
            raise ValueError(f"VLM gives {vlm_dim}-d features, the model expects {self.config.understanding.vlm_dim}")
        video = self.config.video
        if (self.text.text_len, self.text.text_dim) != (video.text_len, video.text_dim):
            raise ValueError(
                f"text features [{self.text.text_len}, {self.text.text_dim}] do not match the model's "
                f"[{video.text_len}, {video.text_dim}]"
            )

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | None = None,
        text_encoder_path: str | Path | None = None,
        vlm_path: str | Path | None = None,
        vae_path: str | Path | None = None,
        allow_missing_stats: bool = False,
        **kwargs: Any,
    ) -> MotusPipeline:
        """Load a checkpoint folder (layout in the module docstring); component paths can be overridden.

        A policy checkpoint (finetune mode: state in, actions out) without ``stats.json`` is refused:
        serving it would feed raw joint angles to a model trained on normalised ones. Pass
        ``allow_missing_stats=True`` only for a model trained in raw units.
        """
        path = Path(path)
        model = MotusModel.from_pretrained(path, device=device, dtype=dtype)
        stats = load_stats(path)
        config = model.config
        encoder_dtype = dtype or torch.float32
        if stats:
            normalizer = Normalizer.from_dict(stats)
        elif config.uses_state and not allow_missing_stats:
            raise MissingCheckpointFileError(
                f"{path / STATS_NAME} is missing: a policy checkpoint needs its normalisation stats; "
                "re-export it with stats (save_pretrained(..., stats=...)) or pass allow_missing_stats=True"
            )
        else:
            logger.warning("checkpoint %s has no normalisation stats: state and actions are in raw units", path)
            normalizer = Normalizer.identity()
        codec = build_codec(
            config,
            path=vae_path or (path / "vae" if config.latents.kind in ("wan_vae", "patch_pca") else None),
            device=device,
        )
        text_dir = Path(text_encoder_path) if text_encoder_path else path / "text_encoder"
        features_file = path / "text_features.safetensors"
        encoder = None
        if (text_dir / "config.json").is_file():
            encoder = UMT5TextEncoder.from_pretrained(text_dir, config.video.text_len, device, encoder_dtype)
        elif not features_file.is_file():
            raise FileNotFoundError(
                f"no text encoder: expected {text_dir}/config.json (umT5) or {features_file} (pre-encoded instructions)"
            )
        text = TextConditioner(
            encoder,
            config.video.text_len,
            config.video.text_dim,
            precomputed=features_file if features_file.is_file() else None,
        )
        vlm_dir = Path(vlm_path) if vlm_path else path / "vlm"
        if not (vlm_dir / "config.json").is_file():
            raise FileNotFoundError(f"no VLM: expected a Qwen3-VL folder at {vlm_dir}")
        vlm = Qwen3VLFeatureExtractor.from_pretrained(vlm_dir, device, encoder_dtype)
        return cls(model, codec, normalizer, text, vlm, device=device, **kwargs)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write everything `from_pretrained` reads (layout in the module docstring).

        The model and the normaliser go through `MotusModel.save_pretrained` (stats.json holds
        `Normalizer.to_dict()`); the encoders and the VAE are saved in their libraries' formats.
        """
        directory = Path(directory)
        self.model.save_pretrained(directory, stats=self.normalizer.to_dict())
        encoder = self.text.encoder
        if isinstance(encoder, UMT5TextEncoder):
            encoder.model.save_pretrained(directory / "text_encoder")
            encoder.tokenizer.save_pretrained(directory / "text_encoder")
        elif encoder is not None:
            raise ValueError(f"cannot save a text encoder of type {type(encoder).__name__}; expected UMT5TextEncoder")
        if self.text.precomputed:
            save_text_features(
                directory / "text_features.safetensors",
                {text: features[mask] for text, (features, mask) in self.text.precomputed.items()},
            )
        if not isinstance(self.vlm, Qwen3VLFeatureExtractor):
            raise ValueError(f"cannot save a VLM of type {type(self.vlm).__name__}; expected Qwen3VLFeatureExtractor")
        self.vlm.model.save_pretrained(directory / "vlm")
        self.vlm.tokenizer.save_pretrained(directory / "vlm")
        self.vlm.image_processor.save_pretrained(directory / "vlm")
        if not (directory / "vlm" / "chat_template.jinja").is_file():
            (directory / "vlm" / "chat_template.jinja").write_text(self.vlm.chat_template)
        if isinstance(self.codec, WanVAECodec):
            self.codec.vae.save_pretrained(directory / "vae")
        elif isinstance(self.codec, PatchPCACodec):
            self.codec.save_pretrained(directory / "vae")
        logger.info("saved the engine's model, normaliser and encoders to %s", directory)
        return directory

    @classmethod
    def from_config(
        cls,
        config: MotusConfig,
        seed: int = 0,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | None = None,
        encoder_layers: int = 1,
        codec: VideoCodec | None = None,
        **kwargs: Any,
    ) -> MotusPipeline:
        """A pipeline with RANDOM weights everywhere (model, tiny umT5 and Qwen3-VL of the config's widths,
        a random Wan VAE if the config asks for one), raw-unit normalisation. For tests,
        benchmarks and bring-up only: its outputs are noise. Seeded, so two calls give the same engine.
        `encoder_layers` sets the depth of the random umT5 and Qwen3-VL language models (1 by
        default; benchmarks may ask for the real depths, 24 and 28). `codec` overrides the codec.
        """
        logger.warning("building a Motus pipeline with RANDOM weights (seed %d): outputs are meaningless", seed)
        torch.manual_seed(seed)
        with torch.device(device):
            model = MotusModel(config)
        if dtype is not None:
            model = model.to(dtype)
        encoder_dtype = dtype or torch.float32
        umt5, umt5_tokenizer = build_tiny_umt5(config.video.text_dim, num_layers=encoder_layers, seed=seed)
        text = UMT5TextEncoder(umt5, umt5_tokenizer, config.video.text_len, device, encoder_dtype)
        # Qwen3-VL-2B uses 16-pixel patches; tiny composites use 8 so the image still gives several tokens.
        large = config.latents.image_height * config.latents.image_width >= 128 * 128
        qwen, qwen_tokenizer, image_processor = build_tiny_qwen3_vl(
            config.understanding.vlm_dim, num_layers=encoder_layers, seed=seed, patch_size=16 if large else 8
        )
        vlm = Qwen3VLFeatureExtractor(qwen, qwen_tokenizer, image_processor, device, encoder_dtype)
        if codec is not None:
            pass
        elif config.latents.kind == "wan_vae":
            codec = WanVAECodec(tiny_wan_vae(), device=device)
        elif config.latents.kind == "patch_pca":
            codec = PatchPCACodec.truncating(config.latents.channels, config.latents.spatial_compression)
        else:
            codec = build_codec(config, device=device)
        return cls(model, codec, Normalizer.identity(), text, vlm, device=device, **kwargs)

    @classmethod
    def from_preset(cls, name: str, seed: int = 0, **kwargs: Any) -> MotusPipeline:
        """`from_config(MotusConfig.preset(name))`: random weights, see `from_config`."""
        return cls.from_config(MotusConfig.preset(name), seed=seed, **kwargs)

    # ------------------------------------------------------------------------------------
    # Validation (cheap) and per-request preparation (once per request)
    # ------------------------------------------------------------------------------------

    def check_inputs(self, request: MotusRequest) -> tuple[Mode, int, int]:
        """Validate a request (cheap, no model call): its mode, step count and seed, or a one-line ValueError."""
        if not isinstance(request, MotusRequest):
            raise ValueError(f"expected a MotusRequest, got {type(request).__name__}")
        mode = parse_mode(request.mode)
        config = self.config
        self._check_images(request.images, "images")

        if config.uses_state:
            self._check_vector(request.state, "state", (config.action.state_dim,))
        elif request.state is not None:
            raise ValueError("state: this checkpoint is in pretrain (latent action) mode and takes no state; got one")

        chunk_shape = (config.temporal.action_chunk, config.action.action_dim)
        if mode.actions is Treatment.CLEAN:
            self._check_vector(request.actions, "actions", chunk_shape)
        elif request.actions is not None:
            raise ValueError(f"actions are only an input in world_model mode, got actions in mode {mode.value!r}")

        num_future = config.temporal.num_video_frames
        if mode.video is Treatment.CLEAN:
            frames = request.future_frames
            if frames is None or isinstance(frames, (np.ndarray, Mapping)) or len(frames) != num_future:
                got = (
                    None
                    if frames is None
                    else (type(frames).__name__ if isinstance(frames, (np.ndarray, Mapping)) else len(frames))
                )
                raise ValueError(f"future_frames: mode idm needs a list of {num_future} future observations, got {got}")
            for index, frame in enumerate(frames):
                self._check_images(frame, f"future_frames[{index}]")
        elif request.future_frames is not None:
            raise ValueError(f"future_frames are only an input in idm mode, got them in mode {mode.value!r}")

        if mode not in VIDEO_MODES and request.decode_video:
            raise ValueError(
                f"decode_video: mode {mode.value!r} produces no video (only {sorted(m.value for m in VIDEO_MODES)} do)"
            )
        if not isinstance(request.instruction, str):
            raise ValueError(f"instruction: expected a str, got {type(request.instruction).__name__}")
        if len(request.instruction) > self.max_instruction_chars:
            raise ValueError(
                f"instruction too long: expected at most {self.max_instruction_chars} characters, "
                f"got {len(request.instruction)}"
            )
        steps = config.schedule.inference_steps if request.steps is None else request.steps
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
            raise ValueError(f"steps: expected a positive int, got {request.steps!r}")
        seed = request.seed
        if seed is None:
            seed = random.SystemRandom().randrange(2**63)
        elif isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed: expected a non-negative int, got {seed!r}")
        return mode, int(steps), int(seed)

    def _check_images(self, images: Any, name: str) -> None:
        if images is None:
            raise ValueError(f"{name}: expected camera images (dict role -> uint8 [H, W, 3]) or a composite, got None")
        if isinstance(images, np.ndarray):
            validate_image(images, name)
            return
        if not isinstance(images, Mapping):
            raise ValueError(
                f"{name}: expected a dict role -> uint8 [H, W, 3] or a composite array, got {type(images).__name__}"
            )
        self.layout.check_roles(images, name)  # exactly the checkpoint's cameras (config.cameras)
        for role in self.layout.roles:
            validate_image(images[role], f"{name}[{role!r}]")

    @staticmethod
    def _check_vector(values: Any, name: str, shape: tuple[int, ...]) -> None:
        if values is None:
            raise ValueError(f"{name}: expected an array of shape {shape}, got None")
        array = np.asarray(values)
        if array.shape != shape:
            raise ValueError(f"{name}: expected shape {shape}, got {array.shape}")
        if not np.issubdtype(array.dtype, np.number) or not np.isfinite(array).all():
            raise ValueError(f"{name}: expected finite numbers, got non-finite values or dtype {array.dtype}")

    def _composite(self, images: Mapping[str, np.ndarray] | np.ndarray) -> np.ndarray:
        if isinstance(images, np.ndarray):
            return fit_composite(images, self.layout)
        return compose_views(images, self.layout)

    def prepare_inputs(self, job: PreparedRequest) -> None:
        """Composite, latents of the given frames, normalised state/actions (once per request)."""
        request, config = job.request, self.config
        job.composite = self._composite(request.images)
        frames = [image_to_tensor(job.composite)]
        if job.mode.video is Treatment.CLEAN:
            frames += [image_to_tensor(self._composite(frame)) for frame in request.future_frames]
        job.frames = torch.stack(frames)[None]  # [1, T, 3, H, W]
        self.encode_frames(job)
        if config.uses_state:
            state = self.normalizer.normalize("state", np.asarray(request.state, dtype=np.float32))
            job.state = torch.as_tensor(state, dtype=torch.float32, device=self.device)[None]
        if job.mode.actions is Treatment.CLEAN:
            actions = self.normalizer.normalize("action", np.asarray(request.actions, dtype=np.float32))
            job.given_actions = torch.as_tensor(actions, dtype=torch.float32, device=self.device)[None]

    def encode_frames(self, job: PreparedRequest) -> None:
        """Latents of the conditioning frame (and, in IDM, of the given future frames)."""
        if job.mode.video is Treatment.CLEAN and job.frames.shape[1] - 1 != self.config.temporal.num_video_frames:
            raise ValueError(
                f"expected {self.config.temporal.num_video_frames} future frames, got {job.frames.shape[1] - 1}"
            )
        latents = self.codec.encode(job.frames.to(self.device)).float()
        self._count("encode_calls")
        job.cond_latent = latents[:, :, :1]
        if job.mode.video is Treatment.CLEAN:
            job.given_video = latents[:, :, 1:]

    def encode_conditioning(self, job: PreparedRequest, use_cache: bool = True) -> None:
        """Text features, VLM features and model.prepare_conditioning for one request."""
        instruction = job.request.instruction
        started = time.perf_counter()
        if use_cache:
            text_features, text_mask = self.text.encode([instruction])
        else:  # naive path: the encoder itself, no cache
            if self.text.encoder is None:
                text_features, text_mask = self.text.encode([instruction])
            else:
                text_features, text_mask = self.text.encoder.encode([instruction])
        text_done = time.perf_counter()
        vlm_hidden, vlm_mask = self.vlm.extract([instruction], [job.composite])
        self._count("vlm_calls")
        vlm_done = time.perf_counter()
        with torch.no_grad():
            job.conditioning = self.model.prepare_conditioning(
                text_features.to(self.device),
                text_mask.to(self.device),
                vlm_hidden.to(self.device),
                vlm_mask.to(self.device),
            )
        self._count("prepare_conditioning_calls")
        if "conditioning_text" not in job.timing_ms:  # the first (per-request) computation
            job.timing_ms["conditioning_text"] = (text_done - started) * 1e3
            job.timing_ms["conditioning_vlm"] = (vlm_done - text_done) * 1e3
            job.timing_ms["conditioning_prepare"] = (time.perf_counter() - vlm_done) * 1e3

    # ------------------------------------------------------------------------------------
    # Sampling
    # ------------------------------------------------------------------------------------

    def _count(self, name: str, amount: int = 1) -> None:
        with self._counters_lock:
            self._counters[name] += amount

    @property
    def counters(self) -> dict[str, int]:
        """vlm_calls, prepare_conditioning_calls, encode_calls, decode_calls, model_forward_calls,
        text_encoder_calls, text_cache_hits."""
        with self._counters_lock:
            counters = dict(self._counters)
        counters["text_encoder_calls"] = self.text.encoder_calls
        counters["text_cache_hits"] = self.text.cache_hits
        return counters

    def prepare(self, request: MotusRequest, mode: Mode, steps: int, seed: int) -> PreparedRequest:
        """``prepare_inputs`` + ``encode_conditioning`` for one checked request (timings recorded)."""
        item = PreparedRequest(request, mode, steps, seed)
        started = time.perf_counter()
        with torch.no_grad():
            self.prepare_inputs(item)
            prepared = time.perf_counter()
            self.encode_conditioning(item)
        item.timing_ms["preprocess"] = (prepared - started) * 1e3
        item.timing_ms["conditioning"] = (time.perf_counter() - prepared) * 1e3
        return item

    def _video_basis(self) -> torch.Tensor | None:
        """``reachable_video_basis`` of the model, cached until the head's weights change (an SVD: ~50 ms on a CPU)."""
        head = self.model.video.head.head
        key = (head.weight.data_ptr(), head.weight._version, head.bias.data_ptr(), head.bias._version)
        cached = getattr(self, "_video_basis_cache", None)
        if cached is None or cached[0] != key:
            cached = (key, reachable_video_basis(self.model))
            self._video_basis_cache = cached
        return cached[1]

    def prepare_latents(self, items: list[PreparedRequest]) -> DenoiseState:
        """The starting point of a same-mode batch: each request draws its noise from its own
        generator, so a batched request equals the same request run alone."""
        mode = items[0].mode
        cond_latent = torch.cat([item.cond_latent for item in items])
        video, actions = initial_latents(
            self.config,
            mode,
            cond_latent,
            generator=[torch.Generator(device="cpu").manual_seed(item.seed) for item in items],
            given_video=torch.cat([item.given_video for item in items]) if mode.video is Treatment.CLEAN else None,
            given_actions=torch.cat([item.given_actions for item in items])
            if mode.actions is Treatment.CLEAN
            else None,
            video_basis=self._video_basis() if mode.video is Treatment.DENOISED else None,
        )
        state = torch.cat([item.state for item in items]) if self.config.uses_state else None
        return DenoiseState(list(items), video, actions, cond_latent, state, batch_conditioning(items))

    @torch.no_grad()
    def denoise(
        self,
        items: list[PreparedRequest],
        on_step_begin: StepHook | None = None,
        callback_on_step_end: StepHook | None = None,
        recompute_every_step: bool = False,
    ) -> DenoiseState:
        """Euler sampling of a batch of same-(mode, steps) requests (the maths is ``flow_matching``'s).

        ``on_step_begin(step, total, state)`` runs before step ``step`` (0-based) and
        ``callback_on_step_end(step, total, state)`` after it (1-based count of steps done);
        either may drop rows with ``state.select``. An emptied batch stops the loop.
        ``recompute_every_step`` re-runs the noise-independent work before every step (benchmark only).
        """
        if not items:
            raise ValueError("denoise needs at least one prepared request")
        keys = {item.batch_key for item in items}
        if len(keys) != 1:
            raise ValueError(f"a batch must share one (mode, steps); got {sorted((m.value, s) for m, s in keys)}")
        mode, steps = items[0].mode, items[0].steps
        grid = self.schedule.inference_sigmas(steps)
        state = self.prepare_latents(items)
        for step in range(steps):
            if on_step_begin is not None:
                on_step_begin(step, steps, state)
            if not state.items:
                return state
            if recompute_every_step:
                # The reference's cost model: everything noise-independent recomputed every step.
                for item in state.items:
                    self.encode_frames(item)
                    self.encode_conditioning(item, use_cache=False)
                state.conditioning = batch_conditioning(state.items)
                state.cond_latent = torch.cat([item.cond_latent for item in state.items])
            state.video, state.actions = euler_step(
                self.model,
                mode,
                state.video,
                state.actions,
                float(grid[step]),
                float(grid[step + 1]),
                state.state,
                state.conditioning,
                state.cond_latent,
            )
            self._count("model_forward_calls")
            if callback_on_step_end is not None:
                callback_on_step_end(step + 1, steps, state)
                if not state.items:
                    return state
        return state

    @torch.no_grad()
    def postprocess(self, state: DenoiseState) -> list[tuple[np.ndarray | None, np.ndarray | None]]:
        """(raw-unit actions or None, uint8 future frames or None) per row; video decoded in one call,
        only for the rows that want it."""
        if not state.items:
            return []
        mode = state.items[0].mode
        frames_by_row: dict[int, np.ndarray] = {}
        decode_rows = [index for index, item in enumerate(state.items) if mode in VIDEO_MODES and item.wants_video]
        if decode_rows:
            pixels = self.codec.decode(state.video[torch.tensor(decode_rows, device=state.video.device)])
            self._count("decode_calls")
            for row, index in enumerate(decode_rows):
                frames_by_row[index] = tensor_to_image(pixels[row, 1:])  # future frames only
        outputs = []
        for index in range(len(state.items)):
            raw_actions = None
            if mode.actions is Treatment.DENOISED:
                normalised = state.actions[index].float().cpu().numpy()
                raw_actions = np.asarray(self.normalizer.unnormalize("action", normalised), dtype=np.float32)
            outputs.append((raw_actions, frames_by_row.get(index)))
        return outputs

    def __call__(self, request: MotusRequest, callback_on_step_end: StepHook | None = None) -> MotusResult:
        """Run one request synchronously (no queue, no thread)."""
        started = time.perf_counter()
        mode, steps, seed = self.check_inputs(request)
        item = self.prepare(request, mode, steps, seed)
        sampling = time.perf_counter()
        state = self.denoise([item], callback_on_step_end=callback_on_step_end)
        sampled = time.perf_counter()
        if not state.items:
            raise RuntimeError("the step callback dropped the request; nothing to return")
        ((actions, frames),) = self.postprocess(state)
        finished = time.perf_counter()
        item.timing_ms.update(
            sampling=(sampled - sampling) * 1e3,
            decode=(finished - sampled) * 1e3 if frames is not None else 0.0,
            queue=0.0,
            total=(finished - started) * 1e3,
        )
        return MotusResult(actions, frames, dict(item.timing_ms), steps, mode, seed, batch_size=1)
