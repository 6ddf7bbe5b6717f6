"""MotusEngine: one model on one device, one request queue, one worker thread.

The engine owns everything between raw robot inputs and raw robot outputs:

    request (camera frames uint8, state/actions in raw units, instruction)
      -> preprocess   camera composite, normalised state/actions, conditioning-frame latents
      -> condition    text features (LRU-cached per instruction), VLM features,
                      model.prepare_conditioning (text cross-attention K/V, und adapter)
      -> sample       Euler in the request's mode, batched with waiting requests of the same
                      mode and step count, per-request noise generators
      -> decode       video only where the mode produces video and the request asks for it
      -> result       actions un-normalised to raw units, frames as uint8 composites

Everything that does not depend on the noise is computed ONCE per request, not per
denoising step (the thu-ml/Motus release re-runs the VLM on every step).
`naive=True` recomputes it every step; it exists only for the benchmark comparison.

Thread model: `submit` may be called from any thread; the model only ever runs on the
worker thread. A request that fails validation or preprocessing fails alone (its future
raises ValueError); the worker keeps serving.

Checkpoint folder read by `MotusEngine.from_pretrained`::

    checkpoint/
      config.json, model.safetensors, stats.json   (motus_model.checkpoint)
      text_encoder/      umT5 encoder + tokenizer (transformers format)
      text_features.safetensors   optional pre-encoded instructions (save_text_features)
      vlm/               Qwen3-VL model + tokenizer + image processor (transformers format)
      vae/               diffusers AutoencoderKLWan (only when config.latents.kind == "wan_vae")

The stats file holds `Normalizer.to_dict()` ({"mode", "eps", "stats"}); a bare stats dict
({"action": {...}, "state": {...}}) is read as mean_std; no stats means raw units.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections import deque
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from motus_model.conditioning import (
    Qwen3VLFeatureExtractor,
    TextConditioner,
    UMT5TextEncoder,
    build_tiny_qwen3_vl,
    build_tiny_umt5,
)
from motus_model.config import MotusConfig
from motus_model.flow_matching import FlowMatchSchedule, Mode, SamplingCancelled, Treatment, euler_step, initial_latents
from motus_model.modeling_motus import MotusConditioning, MotusModel
from motus_model.preprocessing import (
    CAMERA_ROLES,
    CompositeLayout,
    Normalizer,
    compose_views,
    fit_composite,
    image_to_tensor,
    tensor_to_image,
    validate_image,
)
from motus_model.video_latents import VideoCodec, WanVAECodec, build_codec, tiny_wan_vae

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]
# Modes whose output includes denoised future video.
VIDEO_MODES = frozenset(mode for mode in Mode if mode.video is Treatment.DENOISED)


@dataclass
class MotusRequest:
    """One inference request, in robot units.

    Attributes:
        mode: a `Mode` or its value ("vla", "world_model", "idm", "video_generation", "joint").
        images: camera role ("high", "left_wrist", "right_wrist") -> uint8 RGB [H, W, 3], or one
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


class RequestCancelled(SamplingCancelled, CancelledError):
    """Raised by a future whose request was cancelled while the worker was running it.

    It is a `concurrent.futures.CancelledError` (callers catching cancellation see it) and a
    `flow_matching.SamplingCancelled`.
    """


class MotusFuture(Future):
    """A Future whose `cancel()` also works while the request is running.

    Queued: cancelled at once (`cancelled()` is True). Running: the worker stops the request
    at the next denoising step boundary and `result()` raises `RequestCancelled`; `cancel()`
    returns True because the request will not complete normally.
    """

    def __init__(self) -> None:
        super().__init__()
        self._cancel_requested = threading.Event()

    def cancel(self) -> bool:
        self._cancel_requested.set()
        if super().cancel():
            return True
        return not self.done()

    @property
    def cancel_requested(self) -> bool:
        return self._cancel_requested.is_set()


@dataclass
class _Job:
    """A request in flight: its future, and what the worker computes for it once."""

    request: MotusRequest
    mode: Mode
    steps: int
    seed: int
    future: MotusFuture
    progress: ProgressCallback | None
    submitted: float
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
        return self.mode, self.steps

    @property
    def wants_video(self) -> bool:
        if self.request.decode_video is None:
            return self.mode in VIDEO_MODES
        return bool(self.request.decode_video)


_STOP = object()


def parse_mode(mode: Mode | str) -> Mode:
    """A `Mode` from itself, its value ("vla") or its name ("VLA")."""
    try:
        return Mode(mode)
    except ValueError:
        if isinstance(mode, str) and mode.upper() in Mode.__members__:
            return Mode[mode.upper()]
        raise ValueError(f"unknown mode {mode!r}; expected one of {[m.value for m in Mode]}") from None


class MotusEngine:
    """Serves a `MotusModel` in the five modes from one worker thread.

    Args:
        model: the network (moved to `device`, eval mode).
        codec: pixels <-> latents (`video_latents.build_codec`).
        normalizer: state/action normalisation (checkpoint stats).
        text_encoder: a `TextConditioner` (cache + precomputed) or a bare encoder (wrapped in one).
        vlm: the Qwen3-VL feature extractor (or anything with `extract(instructions, images)`).
        device: where the model runs.
        max_batch: most requests sampled together.
        naive: recompute the noise-independent work (VLM, text, prepare_conditioning,
            conditioning-frame latents) every denoising step, as the reference does. Benchmark only.
        max_instruction_chars: longer instructions are rejected at submit.
    """

    def __init__(
        self,
        model: MotusModel,
        codec: VideoCodec,
        normalizer: Normalizer,
        text_encoder: TextConditioner | Any,
        vlm: Qwen3VLFeatureExtractor | Any,
        device: torch.device | str = "cpu",
        max_batch: int = 4,
        naive: bool = False,
        max_instruction_chars: int = 2000,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
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
        self.max_batch = int(max_batch)
        self.naive = naive
        self.max_instruction_chars = int(max_instruction_chars)
        self.layout = CompositeLayout.from_config(self.config)
        self.schedule = FlowMatchSchedule(self.config.schedule)
        self._check_components()

        self._counters = {
            "requests": 0, "completed": 0, "failed": 0, "cancelled": 0, "batches": 0, "batched_requests": 0,
            "vlm_calls": 0, "prepare_conditioning_calls": 0, "encode_calls": 0, "decode_calls": 0,
            "model_forward_calls": 0,
        }
        self._stats_lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue()
        self._closed = False
        self._close_lock = threading.Lock()
        self._worker = threading.Thread(target=self._worker_loop, name="motus-engine-worker", daemon=True)
        self._worker.start()

    # ------------------------------------------------------------------------------------
    # Construction
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
        max_batch: int = 4,
        text_encoder_path: str | Path | None = None,
        vlm_path: str | Path | None = None,
        vae_path: str | Path | None = None,
        **kwargs: Any,
    ) -> "MotusEngine":
        """Load a checkpoint folder (layout in the module docstring); component paths can be overridden."""
        from motus_model.checkpoint import load_pretrained

        path = Path(path)
        model, stats = load_pretrained(path, device=device, dtype=dtype)
        config = model.config
        encoder_dtype = dtype or torch.float32
        if stats:
            normalizer = Normalizer.from_dict(stats)
        else:
            logger.warning("checkpoint %s has no normalisation stats: state and actions are in raw units", path)
            normalizer = Normalizer.identity()
        codec = build_codec(
            config, path=vae_path or (path / "vae" if config.latents.kind == "wan_vae" else None), device=device
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
            encoder, config.video.text_len, config.video.text_dim,
            precomputed=features_file if features_file.is_file() else None,
        )
        vlm_dir = Path(vlm_path) if vlm_path else path / "vlm"
        if not (vlm_dir / "config.json").is_file():
            raise FileNotFoundError(f"no VLM: expected a Qwen3-VL folder at {vlm_dir}")
        vlm = Qwen3VLFeatureExtractor.from_pretrained(vlm_dir, device, encoder_dtype)
        return cls(model, codec, normalizer, text, vlm, device=device, max_batch=max_batch, **kwargs)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write everything `from_pretrained` reads (layout in the module docstring).

        The model and the normaliser go through `checkpoint.save_pretrained` (stats.json holds
        `Normalizer.to_dict()`); the encoders and the VAE are saved in their libraries' formats.
        """
        from motus_model.checkpoint import save_pretrained
        from motus_model.conditioning import save_text_features

        directory = Path(directory)
        save_pretrained(self.model, directory, stats=self.normalizer.to_dict())
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
        logger.info("saved the engine's model, normaliser and encoders to %s", directory)
        return directory

    @classmethod
    def from_config(
        cls,
        config: MotusConfig,
        seed: int = 0,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | None = None,
        max_batch: int = 4,
        encoder_layers: int = 1,
        codec: VideoCodec | None = None,
        **kwargs: Any,
    ) -> "MotusEngine":
        """An engine with RANDOM weights everywhere (model, tiny umT5 and Qwen3-VL of the config's widths,
        a random Wan VAE if the config asks for one), raw-unit normalisation. For tests,
        benchmarks and bring-up only: its outputs are noise. Seeded, so two calls give the same engine.
        `encoder_layers` sets the depth of the random umT5 and Qwen3-VL language models (1 by
        default; benchmarks may ask for the real depths, 24 and 28). `codec` overrides the codec.
        """
        logger.warning("building a Motus engine with RANDOM weights (seed %d): outputs are meaningless", seed)
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
        else:
            codec = build_codec(config, device=device)
        return cls(model, codec, Normalizer.identity(), text, vlm, device=device, max_batch=max_batch, **kwargs)

    @classmethod
    def from_preset(cls, name: str, seed: int = 0, **kwargs: Any) -> "MotusEngine":
        """`from_config(MotusConfig.preset(name))`: random weights, see `from_config`."""
        return cls.from_config(MotusConfig.preset(name), seed=seed, **kwargs)

    # ------------------------------------------------------------------------------------
    # Public API
    # ------------------------------------------------------------------------------------

    @property
    def stats(self) -> dict[str, int]:
        """Counters: requests, completed, failed, cancelled, batches, batched_requests, vlm_calls,
        text_encoder_calls, text_cache_hits, prepare_conditioning_calls, encode_calls, decode_calls,
        model_forward_calls."""
        with self._stats_lock:
            counters = dict(self._counters)
        counters["text_encoder_calls"] = self.text.encoder_calls
        counters["text_cache_hits"] = self.text.cache_hits
        return counters

    def submit(self, request: MotusRequest, progress: ProgressCallback | None = None) -> MotusFuture:
        """Queue a request; returns a future of `MotusResult`.

        `progress(step, total)` is called from the worker after each denoising step.
        An invalid request gives a future that raises ValueError (nothing is queued).
        """
        future = MotusFuture()
        self._count("requests")
        try:
            mode, steps, seed = self._validate(request)
        except ValueError as error:
            self._count("failed")
            future.set_running_or_notify_cancel()
            future.set_exception(error)
            return future
        with self._close_lock:
            if self._closed:
                raise RuntimeError("MotusEngine is closed")
            job = _Job(request, mode, steps, seed, future, progress, submitted=time.perf_counter())
            self._queue.put(job)
        return future

    def infer(self, request: MotusRequest, progress: ProgressCallback | None = None, timeout: float | None = None) -> MotusResult:
        """`submit` and wait for the result (raises what the request raised)."""
        return self.submit(request, progress).result(timeout=timeout)

    def cancel(self, future: Future) -> bool:
        """Cancel a submitted request (queued: at once; running: at the next denoising step)."""
        return future.cancel()

    def close(self, timeout: float | None = 30.0) -> None:
        """Stop the worker after the batch it is running; queued requests are cancelled."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._worker.join(timeout)

    def __enter__(self) -> "MotusEngine":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------------------------
    # Validation (at submit, cheap) and per-request preparation (on the worker, once)
    # ------------------------------------------------------------------------------------

    def _validate(self, request: MotusRequest) -> tuple[Mode, int, int]:
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
                got = None if frames is None else (type(frames).__name__ if isinstance(frames, (np.ndarray, Mapping)) else len(frames))
                raise ValueError(f"future_frames: mode idm needs a list of {num_future} future observations, got {got}")
            for index, frame in enumerate(frames):
                self._check_images(frame, f"future_frames[{index}]")
        elif request.future_frames is not None:
            raise ValueError(f"future_frames are only an input in idm mode, got them in mode {mode.value!r}")

        if mode not in VIDEO_MODES and request.decode_video:
            raise ValueError(f"decode_video: mode {mode.value!r} produces no video (only {sorted(m.value for m in VIDEO_MODES)} do)")
        if not isinstance(request.instruction, str):
            raise ValueError(f"instruction: expected a str, got {type(request.instruction).__name__}")
        if len(request.instruction) > self.max_instruction_chars:
            raise ValueError(
                f"instruction too long: expected at most {self.max_instruction_chars} characters, got {len(request.instruction)}"
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

    @staticmethod
    def _check_images(images: Any, name: str) -> None:
        if images is None:
            raise ValueError(f"{name}: expected camera images (dict role -> uint8 [H, W, 3]) or a composite, got None")
        if isinstance(images, np.ndarray):
            validate_image(images, name)
            return
        if not isinstance(images, Mapping):
            raise ValueError(f"{name}: expected a dict role -> uint8 [H, W, 3] or a composite array, got {type(images).__name__}")
        missing = [role for role in CAMERA_ROLES if role not in images]
        if missing:
            raise ValueError(f"{name}: missing camera {missing}; expected roles {list(CAMERA_ROLES)}, got {sorted(images)}")
        for role in CAMERA_ROLES:
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
        return compose_views({role: images[role] for role in CAMERA_ROLES}, self.layout)

    def _prepare_inputs(self, job: _Job) -> None:
        """Composite, latents of the given frames, normalised state/actions (once per request)."""
        request, config = job.request, self.config
        job.composite = self._composite(request.images)
        frames = [image_to_tensor(job.composite)]
        if job.mode.video is Treatment.CLEAN:
            frames += [image_to_tensor(self._composite(frame)) for frame in request.future_frames]
        job.frames = torch.stack(frames)[None]  # [1, T, 3, H, W]
        self._encode_frames(job)
        if config.uses_state:
            state = self.normalizer.normalize("state", np.asarray(request.state, dtype=np.float32))
            job.state = torch.as_tensor(state, dtype=torch.float32, device=self.device)[None]
        if job.mode.actions is Treatment.CLEAN:
            actions = self.normalizer.normalize("action", np.asarray(request.actions, dtype=np.float32))
            job.given_actions = torch.as_tensor(actions, dtype=torch.float32, device=self.device)[None]

    def _encode_frames(self, job: _Job) -> None:
        """Latents of the conditioning frame (and, in IDM, of the given future frames)."""
        if job.mode.video is Treatment.CLEAN and job.frames.shape[1] - 1 != self.config.temporal.num_video_frames:
            raise ValueError(f"expected {self.config.temporal.num_video_frames} future frames, got {job.frames.shape[1] - 1}")
        latents = self.codec.encode(job.frames.to(self.device)).float()
        self._count("encode_calls")
        job.cond_latent = latents[:, :, :1]
        if job.mode.video is Treatment.CLEAN:
            job.given_video = latents[:, :, 1:]

    def _prepare_conditioning(self, job: _Job, use_cache: bool = True) -> None:
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
                text_features.to(self.device), text_mask.to(self.device), vlm_hidden.to(self.device), vlm_mask.to(self.device)
            )
        self._count("prepare_conditioning_calls")
        if "conditioning_text" not in job.timing_ms:  # the first (per-request) computation
            job.timing_ms["conditioning_text"] = (text_done - started) * 1e3
            job.timing_ms["conditioning_vlm"] = (vlm_done - text_done) * 1e3
            job.timing_ms["conditioning_prepare"] = (time.perf_counter() - vlm_done) * 1e3

    # ------------------------------------------------------------------------------------
    # The worker
    # ------------------------------------------------------------------------------------

    def _count(self, name: str, amount: int = 1) -> None:
        with self._stats_lock:
            self._counters[name] += amount

    def _worker_loop(self) -> None:
        pending: deque[_Job] = deque()
        stopping = False
        while True:
            # Wait for a request when idle; then everything already waiting joins the pending
            # list, so it can be batched.
            wait = not pending and not stopping
            while True:
                try:
                    item = self._queue.get(block=wait)
                except queue.Empty:
                    break
                wait = False
                if item is _STOP:
                    stopping = True
                else:
                    pending.append(item)
            if stopping:
                for job in pending:
                    job.future.cancel()
                    self._count("cancelled")
                logger.info("engine worker stopped")
                return
            if not pending:
                continue
            first = pending.popleft()
            batch = [first]
            for job in list(pending):
                if len(batch) >= self.max_batch:
                    break
                if job.batch_key == first.batch_key:
                    batch.append(job)
                    pending.remove(job)
            try:
                self._run_batch(batch)
            except Exception:  # a bug, not a bad request: fail the batch, keep serving
                logger.exception("engine batch failed")
                for job in batch:
                    self._fail(job, RuntimeError("internal engine error; see the server log"))

    def _fail(self, job: _Job, error: BaseException) -> None:
        if not job.future.done():
            job.future.set_exception(error)
            self._count("cancelled" if isinstance(error, CancelledError) else "failed")

    @staticmethod
    def _batch_conditioning(jobs: list[_Job]) -> MotusConditioning:
        return jobs[0].conditioning if len(jobs) == 1 else MotusConditioning.cat([job.conditioning for job in jobs])

    def _run_batch(self, jobs: list[_Job]) -> None:
        live: list[_Job] = []
        for job in jobs:
            if not job.future.set_running_or_notify_cancel():
                self._count("cancelled")
                continue
            started = time.perf_counter()
            job.timing_ms["queue"] = (started - job.submitted) * 1e3
            try:
                with torch.no_grad():
                    self._prepare_inputs(job)
                    prepared = time.perf_counter()
                    self._prepare_conditioning(job)
            except Exception as error:  # this request's own failure (bad input, too long...): it fails alone
                if not isinstance(error, ValueError):
                    logger.exception("preparing a request failed")
                self._fail(job, error)
                continue
            job.timing_ms["preprocess"] = (prepared - started) * 1e3
            job.timing_ms["conditioning"] = (time.perf_counter() - prepared) * 1e3
            live.append(job)
        if live:
            self._count("batches")
            self._count("batched_requests", len(live))
            with torch.no_grad():
                self._sample(live)

    def _sample(self, jobs: list[_Job]) -> None:
        """Euler sampling of a batch of same-mode requests, then decoding and results.

        The maths is `flow_matching`'s (`initial_latents`, `euler_step`); each request draws its
        initial noise from its own generator, so a batched request equals the same request run
        alone. Between steps, cancelled requests leave the batch and the others go on.
        """
        config = self.config
        mode, steps = jobs[0].mode, jobs[0].steps
        started = time.perf_counter()
        grid = self.schedule.inference_sigmas(steps)
        cond_latent = torch.cat([job.cond_latent for job in jobs])
        video, actions = initial_latents(
            config, mode, cond_latent,
            generator=[torch.Generator(device="cpu").manual_seed(job.seed) for job in jobs],
            given_video=torch.cat([job.given_video for job in jobs]) if mode.video is Treatment.CLEAN else None,
            given_actions=torch.cat([job.given_actions for job in jobs]) if mode.actions is Treatment.CLEAN else None,
        )
        state = torch.cat([job.state for job in jobs]) if config.uses_state else None
        conditioning = self._batch_conditioning(jobs)

        for step in range(steps):
            # Drop requests cancelled since the last step; the others go on.
            keep = [index for index, job in enumerate(jobs) if not job.future.cancel_requested]
            if len(keep) < len(jobs):
                for index, job in enumerate(jobs):
                    if index not in keep:
                        self._fail(job, RequestCancelled(f"cancelled before denoising step {step + 1} of {steps}"))
                if not keep:
                    return
                jobs = [jobs[index] for index in keep]
                rows = torch.tensor(keep, device=self.device)
                video, actions, cond_latent = video[rows], actions[rows], cond_latent[rows]
                state = state[rows] if state is not None else None
                conditioning = conditioning.index(keep)
            if self.naive:
                # The reference's cost model: everything noise-independent recomputed every step.
                for job in jobs:
                    self._encode_frames(job)
                    self._prepare_conditioning(job, use_cache=False)
                conditioning = self._batch_conditioning(jobs)
                cond_latent = torch.cat([job.cond_latent for job in jobs])

            video, actions = euler_step(
                self.model, mode, video, actions, float(grid[step]), float(grid[step + 1]), state, conditioning, cond_latent
            )
            self._count("model_forward_calls")
            for job in jobs:
                if job.progress is not None:
                    try:
                        job.progress(step + 1, steps)
                    except Exception:  # a client's callback must not take down the batch
                        logger.exception("progress callback failed")
        sampled = time.perf_counter()

        # Decode only the requests that asked for video, in one call.
        frames_by_job: dict[int, np.ndarray] = {}
        decode_rows = [index for index, job in enumerate(jobs) if mode in VIDEO_MODES and job.wants_video]
        if decode_rows:
            pixels = self.codec.decode(video[torch.tensor(decode_rows, device=self.device)])
            self._count("decode_calls")
            for row, index in enumerate(decode_rows):
                frames_by_job[index] = tensor_to_image(pixels[row, 1:])  # future frames only
        finished = time.perf_counter()

        for index, job in enumerate(jobs):
            raw_actions = None
            if mode.actions is Treatment.DENOISED:
                raw_actions = np.asarray(self.normalizer.unnormalize("action", actions[index].float().cpu().numpy()), dtype=np.float32)
            job.timing_ms["sampling"] = (sampled - started) * 1e3
            job.timing_ms["decode"] = (finished - sampled) * 1e3 if index in frames_by_job else 0.0
            job.timing_ms["total"] = (finished - job.submitted) * 1e3
            result = MotusResult(
                actions=raw_actions, frames=frames_by_job.get(index), timing_ms=dict(job.timing_ms),
                steps=steps, mode=mode, seed=job.seed, batch_size=len(jobs),
            )
            if not job.future.done():
                job.future.set_result(result)
                self._count("completed")
