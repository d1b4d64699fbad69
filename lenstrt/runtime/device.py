"""Sharing one uploaded batch between the members of an ensemble on a GPU.

A batch is copied to the GPU once, on an upload stream, and every member reads that one device tensor
on its own stream. Two rules make that safe (PyTorch's CUDA semantics notes):
- ordering: a member's stream waits for the upload stream before its first kernel reads the batch;
- lifetime: the caching allocator may hand the batch's memory to the upload stream's next batch as soon
  as Python drops it, while a member still reads it; `record_stream` on each member stream keeps the
  block until that member's work is done.
Only torch calls are made here (streams, events, tensors); the logic is tested with stand-ins.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def hand_over(x: Any, producer: Any, consumers: list[Any]) -> None:
    """Make every consumer stream wait for the producer's work on `x`, and keep `x` alive for each."""
    for s in consumers:
        s.wait_stream(producer)
        x.record_stream(s)


class Uploader:
    """Host-to-device copies of whole batches on a stream of their own, so the next batch's copy can run
    while the members still compute on the current one."""

    def __init__(self, device: str):
        import torch

        self.device = device
        self.stream = torch.cuda.Stream(device=device)

    def __call__(self, images: Any, consumers: list[Any]) -> Any:
        import torch

        t = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(images))
        with torch.cuda.stream(self.stream):
            x = t.to(self.device, non_blocking=True)  # asynchronous only from pinned memory (serve pins)
        hand_over(x, self.stream, consumers)
        return x
