"""An ensemble composed of Runners: members run concurrently, their calibrated probabilities fused.

Concurrency: `streams` (GPU: every member enqueued on its own CUDA stream before any is waited on, the
batch uploaded once and shared; members without a stream, ONNX Runtime's, run in threads),
`threads` (members in parallel threads, cores split between them), `sequential` (each member with
all cores: the CPU default, measured faster than threads on CPUs), or a single fused graph that
holds every member (shared preprocessing, one call: the fastest on a CPU with ONNX Runtime).
Fusion: `mean` of member probabilities, or `uncertainty_weighted` (inverse-variance weights from
MC-dropout samples, torch backend).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from lenstrt.errors import ConfigError
from lenstrt.metrics import sigmoid
from lenstrt.runtime.base import Runner, batch_ranges
from lenstrt.runtime.registry import on_gpu


@dataclass
class Scores:
    score: np.ndarray          # [N] fused calibrated probability
    score_std: np.ndarray      # [N] spread between members (or MC-dropout spread for one member)
    members: np.ndarray        # [N, M] calibrated probability per member
    views: np.ndarray | None = None  # [N] dihedral views each score averages (runtime/tta.py); None: one


class Ensemble:
    def __init__(self, runners: list[Runner], names: list[str], temperatures: list[float], fusion: str = "mean",
                 concurrency: str = "sequential", fused: bool = False, mc_samples: int = 0, device: str = "cpu"):
        if fusion not in ("mean", "uncertainty_weighted"):
            raise ConfigError(f"fusion_method must be 'mean' or 'uncertainty_weighted', not '{fusion}'")
        if fusion == "uncertainty_weighted" and not mc_samples:
            raise ConfigError("fusion 'uncertainty_weighted' needs MC-dropout variances: --mc-samples K (torch backend)")
        self.runners, self.names, self.fused = runners, names, fused
        self.inv_t = 1.0 / np.asarray(temperatures, dtype=np.float64)
        self.fusion, self.concurrency, self.mc, self.device = fusion, concurrency, mc_samples, device
        threaded = concurrency == "threads" or (concurrency == "streams" and any(not r.asynchronous for r in runners))
        self._pool = ThreadPoolExecutor(len(runners)) if threaded and len(runners) > 1 else None
        self._upload = None

    def __enter__(self):
        for r in self.runners:
            r.__enter__()
        # One host-to-device copy per batch, shared by the members, where every member has a CUDA stream
        # (torch, TensorRT); ONNX Runtime members take host arrays and copy them themselves.
        streams = [r.stream for r in self.runners]
        if self.concurrency == "streams" and on_gpu(self.device) and all(streams) \
                and not self.mc and len(self.runners) > 1:
            from lenstrt.runtime.device import Uploader

            self._upload = Uploader("cuda" if self.device == "trt" else self.device)
        return self

    def __exit__(self, *exc):
        for r in self.runners:
            r.__exit__(*exc)
        if self._pool:
            self._pool.shutdown()

    @property
    def info(self) -> dict:
        return {"members": self.names, "fused": self.fused, "concurrency": self.concurrency, "fusion": self.fusion,
                "mc_samples": self.mc, "shared_upload": self._upload is not None,
                "max_batch": self.max_batch, "runners": [r.info for r in self.runners]}

    @property
    def max_batch(self) -> int | None:
        """The largest batch every runner takes in one call (TensorRT profiles); larger ones are split."""
        caps = [r.max_batch for r in self.runners if r.max_batch]
        return min(caps) if caps else None

    # -- submit / result: serve keeps two batches in flight, so the next batch's copy and enqueue
    #    overlap the current one's compute on a GPU. On a CPU submit computes and result only fuses.
    def submit(self, images) -> list:
        """Starts `images` through every runner; returns a handle for `result`. Batches larger than
        `max_batch` are split into slices the runners accept."""
        n = len(images)
        return [self._submit_slice(images[a:b]) for a, b in batch_ranges(n, self.max_batch)]

    def _submit_slice(self, images) -> list:
        rs = self.runners
        if self.concurrency == "streams":
            x = self._upload(images, [r.stream for r in rs]) if self._upload else images
            # every member enqueued (or started in a thread) before any is waited on
            return [("async", r, r.infer_async(x)) if r.asynchronous or self._pool is None
                    else ("future", r, self._pool.submit(r.infer, x)) for r in rs]
        if self._pool is not None:
            return [("done", r, out) for r, out in zip(rs, self._pool.map(lambda r: r.infer(images), rs))]
        return [("done", r, r.infer(images)) for r in rs]

    def result(self, handle: list) -> Scores:
        parts = [self._fuse([_collect(h) for h in slice_]) for slice_ in handle]
        if len(parts) == 1:
            return parts[0]
        return Scores(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("score", "score_std", "members")))

    def raw(self, images) -> list:
        """Each runner's raw output for one batch no larger than max_batch."""
        return [_collect(h) for h in self._submit_slice(images)]

    def infer(self, images) -> Scores:
        return self.result(self.submit(images))

    def _fuse(self, outs: list) -> Scores:
        if self.fused:
            score, std, per = outs[0]
            return Scores(np.asarray(score, np.float64), np.asarray(std, np.float64), np.asarray(per, np.float64))
        if self.mc:  # each output is [K, N] logits
            samples = [sigmoid(o * t) for o, t in zip(outs, self.inv_t)]
            probs = np.stack([s.mean(0) for s in samples], axis=1)
            var = np.stack([s.var(0) for s in samples], axis=1)
        else:
            probs = np.stack([sigmoid(o * t) for o, t in zip(outs, self.inv_t)], axis=1)
            var = None
        if self.fusion == "uncertainty_weighted" and var is not None:
            w = 1.0 / (var + 1e-6)
            score = (w * probs).sum(1) / w.sum(1)
            std = np.sqrt((w * (probs - score[:, None]) ** 2).sum(1) / w.sum(1))
        else:
            score = probs.mean(1)
            std = probs.std(1) if probs.shape[1] > 1 else (np.sqrt(var[:, 0]) if var is not None else np.zeros(len(score)))
        return Scores(score, std, probs)


def _collect(h: tuple) -> Any:
    kind, runner, value = h
    if kind == "async":
        return runner.collect(value)
    if kind == "future":
        return value.result()
    return value
