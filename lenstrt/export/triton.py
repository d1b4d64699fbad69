"""A Triton Inference Server model repository for a bundle: one model per member plus the fused one.

Layout: REPO/<model>/config.pbtxt and REPO/<model>/1/model.{onnx,plan}. Inputs exclude the batch
dimension (max_batch_size > 0 makes it implicit); dynamic batching prefers the bundle's opt batch.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from lenstrt.bundle import Bundle, find, precisions


def _config(name: str, platform: str, max_batch: int, opt_batch: int, input_name: str, chw: list[int],
            outputs: list[tuple[str, list[int]]], gpu: bool) -> str:
    outs = ",\n".join(f'  {{ name: "{n}" data_type: TYPE_FP32 dims: [ {", ".join(map(str, d))} ] }}' for n, d in outputs)
    kind = "KIND_GPU" if gpu else "KIND_CPU"
    return (f'name: "{name}"\nplatform: "{platform}"\nmax_batch_size: {max_batch}\n'
            f'input [\n  {{ name: "{input_name}" data_type: TYPE_FP32 dims: [ {", ".join(map(str, chw))} ] }}\n]\n'
            f"output [\n{outs}\n]\n"
            f"dynamic_batching {{\n  preferred_batch_size: [ {opt_batch} ]\n  max_queue_delay_microseconds: 200\n}}\n"
            f"instance_group [\n  {{ count: 1 kind: {kind} }}\n]\n")


def write_repository(bundle_dir: str | Path, repo: str | Path, gpu: bool = True) -> list[str]:
    b = Bundle(bundle_dir)
    repo = Path(repo)
    inp = b.input
    chw = list(inp["shape"][1:])
    batch = b.manifest["batch"]
    written = []

    def add(name: str, arts: dict[str, Any], outputs: list[tuple[str, list[int]]]) -> None:
        plan = next((find(arts, "plan", p) for p in precisions(arts, "plan") if p != "int8"), None)
        if plan:
            src, platform, fname = plan, "tensorrt_plan", "model.plan"
        else:
            src = (gpu and find(arts, "onnx", "fp16")) or find(arts, "onnx", "fp32") or {}
            platform, fname = "onnxruntime_onnx", "model.onnx"
        d = repo / name
        (d / "1").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(b.path(src, verify=True), d / "1" / fname)
        (d / "config.pbtxt").write_text(_config(name, platform, batch["max"], batch["opt"], inp["name"], chw,
                                                outputs, gpu))
        written.append(name)

    for m in b.members:
        add(m.name, m.entry["artifacts"], [(b.manifest["output"]["name"], [1])])
    if b.fused:
        add("ensemble_fused", b.fused["artifacts"], [("score", [1]), ("score_std", [1]),
                                                     ("member_scores", [len(b.members)])])
    return written
