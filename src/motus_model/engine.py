"""MotusEngine: a request server over one ``MotusPipeline`` (one device, one queue, one worker thread).

The maths (inputs -> conditioning -> latents -> denoise -> outputs) is ``pipeline_motus``'s; the
engine adds only serving: a thread-safe ``submit`` returning futures, batching of waiting
requests of the same mode and step count (up to ``max_batch``), cancellation (queued: at once;
running: at the next denoising step, the rest of the batch goes on) and counters.

Thread model: ``submit`` may be called from any thread; the model only ever runs on the
worker thread. A request that fails validation or preparation fails alone (its future raises
ValueError); the worker keeps serving.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from motus_model.config import MotusConfig
from motus_model.flow_matching import SamplingCancelled
from motus_model.pipeline_motus import (
    VIDEO_MODES,
    DenoiseState,
    MotusPipeline,
    MotusRequest,
    MotusResult,
    PreparedRequest,
    ProgressCallback,
    parse_mode,
)

__all__ = [
    "VIDEO_MODES",
    "MotusEngine",
    "MotusFuture",
    "MotusPipeline",
    "MotusRequest",
    "MotusResult",
    "ProgressCallback",
    "RequestCancelled",
    "parse_mode",
]

logger = logging.getLogger(__name__)


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
    """A request in flight: its future, and (once the worker prepared it) the pipeline's data."""

    request: MotusRequest
    future: MotusFuture
    progress: ProgressCallback | None
    submitted: float
    item: PreparedRequest | None = None


_STOP = object()


class MotusEngine:
    """Serves a ``MotusPipeline`` in the five modes from one worker thread.

    Build it from a pipeline (``MotusEngine(pipeline)``), from the pipeline's components
    (``MotusEngine(model, codec, normalizer, text_encoder, vlm)``), or with ``from_pretrained`` /
    ``from_config`` / ``from_preset`` (same arguments as the pipeline's, plus ``max_batch``).

    Args:
        pipeline: a ``MotusPipeline``, or a ``MotusModel`` followed by ``codec, normalizer, text_encoder, vlm``.
        device: where the model runs (components form only).
        max_batch: most requests sampled together.
        naive: recompute the noise-independent work (VLM, text, prepare_conditioning,
            conditioning-frame latents) every denoising step, as the reference does. Benchmark only.
        max_instruction_chars: longer instructions are rejected at submit (components form only).
    """

    def __init__(
        self,
        pipeline: MotusPipeline | Any,
        codec: Any = None,
        normalizer: Any = None,
        text_encoder: Any = None,
        vlm: Any = None,
        device: torch.device | str = "cpu",
        max_batch: int = 4,
        naive: bool = False,
        max_instruction_chars: int = 2000,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if not isinstance(pipeline, MotusPipeline):
            pipeline = MotusPipeline(
                pipeline,
                codec,
                normalizer,
                text_encoder,
                vlm,
                device=device,
                max_instruction_chars=max_instruction_chars,
            )
        self.pipeline = pipeline
        self.max_batch = int(max_batch)
        self.naive = naive
        self._counters = {
            "requests": 0,
            "completed": 0,
            "failed": 0,
            "cancelled": 0,
            "batches": 0,
            "batched_requests": 0,
        }
        self._stats_lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue()
        self._closed = False
        self._close_lock = threading.Lock()
        self._worker = threading.Thread(target=self._worker_loop, name="motus-engine-worker", daemon=True)
        self._worker.start()

    # ------------------------------------------------------------------------------------
    # Construction (delegated to the pipeline)
    # ------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, path: str | Path, max_batch: int = 4, naive: bool = False, **kwargs: Any) -> MotusEngine:
        """``MotusPipeline.from_pretrained(path, **kwargs)`` served by an engine."""
        return cls(MotusPipeline.from_pretrained(path, **kwargs), max_batch=max_batch, naive=naive)

    @classmethod
    def from_config(
        cls, config: MotusConfig, seed: int = 0, max_batch: int = 4, naive: bool = False, **kwargs: Any
    ) -> MotusEngine:
        """RANDOM weights everywhere (``MotusPipeline.from_config``): tests, benchmarks and bring-up only."""
        return cls(MotusPipeline.from_config(config, seed=seed, **kwargs), max_batch=max_batch, naive=naive)

    @classmethod
    def from_preset(cls, name: str, seed: int = 0, **kwargs: Any) -> MotusEngine:
        """``from_config(MotusConfig.preset(name))``: random weights, see ``MotusPipeline.from_config``."""
        return cls.from_config(MotusConfig.preset(name), seed=seed, **kwargs)

    def save_pretrained(self, directory: str | Path) -> Path:
        """``MotusPipeline.save_pretrained``."""
        return self.pipeline.save_pretrained(directory)

    # The pipeline's components, for callers that reach them through the engine.
    @property
    def config(self) -> MotusConfig:
        return self.pipeline.config

    @property
    def model(self) -> Any:
        return self.pipeline.model

    @property
    def codec(self) -> Any:
        return self.pipeline.codec

    @property
    def normalizer(self) -> Any:
        return self.pipeline.normalizer

    @property
    def text(self) -> Any:
        return self.pipeline.text

    @property
    def vlm(self) -> Any:
        return self.pipeline.vlm

    @property
    def device(self) -> torch.device:
        return self.pipeline.device

    def _composite(self, images: Any) -> Any:
        return self.pipeline._composite(images)

    # ------------------------------------------------------------------------------------
    # Public API
    # ------------------------------------------------------------------------------------

    @property
    def stats(self) -> dict[str, int]:
        """Counters: requests, completed, failed, cancelled, batches, batched_requests, and the pipeline's
        (vlm_calls, text_encoder_calls, text_cache_hits, prepare_conditioning_calls, encode_calls,
        decode_calls, model_forward_calls)."""
        with self._stats_lock:
            counters = dict(self._counters)
        counters.update(self.pipeline.counters)
        return counters

    def submit(self, request: MotusRequest, progress: ProgressCallback | None = None) -> MotusFuture:
        """Queue a request; returns a future of `MotusResult`.

        `progress(step, total)` is called from the worker after each denoising step.
        An invalid request gives a future that raises ValueError (nothing is queued).
        """
        future = MotusFuture()
        self._count("requests")
        try:
            self.pipeline.check_inputs(request)
        except ValueError as error:
            self._count("failed")
            future.set_running_or_notify_cancel()
            future.set_exception(error)
            return future
        with self._close_lock:
            if self._closed:
                raise RuntimeError("MotusEngine is closed")
            self._queue.put(_Job(request, future, progress, submitted=time.perf_counter()))
        return future

    def infer(
        self, request: MotusRequest, progress: ProgressCallback | None = None, timeout: float | None = None
    ) -> MotusResult:
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

    def __enter__(self) -> MotusEngine:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

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
            first_key = self._key(first.request)
            for job in list(pending):
                if len(batch) >= self.max_batch:
                    break
                if self._key(job.request) == first_key:
                    batch.append(job)
                    pending.remove(job)
            try:
                self._run_batch(batch)
            except Exception:  # a bug, not a bad request: fail the batch, keep serving
                logger.exception("engine batch failed")
                for job in batch:
                    self._fail(job, RuntimeError("internal engine error; see the server log"))

    def _key(self, request: MotusRequest) -> tuple:
        """The batch key of a queued (already checked) request: (mode, steps)."""
        steps = self.config.schedule.inference_steps if request.steps is None else int(request.steps)
        return parse_mode(request.mode), steps

    def _fail(self, job: _Job, error: BaseException) -> None:
        if not job.future.done():
            job.future.set_exception(error)
            self._count("cancelled" if isinstance(error, CancelledError) else "failed")

    def _run_batch(self, jobs: list[_Job]) -> None:
        live: list[_Job] = []
        for job in jobs:
            if not job.future.set_running_or_notify_cancel():
                self._count("cancelled")
                continue
            started = time.perf_counter()
            try:
                mode, steps, seed = self.pipeline.check_inputs(job.request)  # draws the seed when none was given
                job.item = self.pipeline.prepare(job.request, mode, steps, seed)
            except Exception as error:  # this request's own failure (bad input, too long...): it fails alone
                if not isinstance(error, ValueError):
                    logger.exception("preparing a request failed")
                self._fail(job, error)
                continue
            job.item.timing_ms["queue"] = (started - job.submitted) * 1e3
            live.append(job)
        if live:
            self._count("batches")
            self._count("batched_requests", len(live))
            self._sample(live)

    def _sample(self, jobs: list[_Job]) -> None:
        """Denoise the batch with the pipeline; between steps, cancelled requests leave the batch."""
        by_item = {id(job.item): job for job in jobs}

        def drop_cancelled(step: int, steps: int, state: DenoiseState) -> None:
            keep = []
            for index, item in enumerate(state.items):
                job = by_item[id(item)]
                if job.future.cancel_requested:
                    self._fail(job, RequestCancelled(f"cancelled before denoising step {step + 1} of {steps}"))
                else:
                    keep.append(index)
            state.select(keep)

        def report_progress(step: int, steps: int, state: DenoiseState) -> None:
            for item in state.items:
                job = by_item[id(item)]
                if job.progress is not None:
                    try:
                        job.progress(step, steps)
                    except Exception:  # a client's callback must not take down the batch
                        logger.exception("progress callback failed")

        started = time.perf_counter()
        state = self.pipeline.denoise(
            [job.item for job in jobs],
            on_step_begin=drop_cancelled,
            callback_on_step_end=report_progress,
            recompute_every_step=self.naive,
        )
        sampled = time.perf_counter()
        outputs = self.pipeline.postprocess(state)
        finished = time.perf_counter()
        for item, (actions, frames) in zip(state.items, outputs):
            job = by_item[id(item)]
            item.timing_ms["sampling"] = (sampled - started) * 1e3
            item.timing_ms["decode"] = (finished - sampled) * 1e3 if frames is not None else 0.0
            item.timing_ms["total"] = (finished - job.submitted) * 1e3
            result = MotusResult(
                actions=actions,
                frames=frames,
                timing_ms=dict(item.timing_ms),
                steps=item.steps,
                mode=item.mode,
                seed=item.seed,
                batch_size=len(state.items),
            )
            if not job.future.done():
                job.future.set_result(result)
                self._count("completed")
