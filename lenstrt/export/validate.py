"""Every export ends here: the artifact against its PyTorch reference, on simulated cutouts."""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from lenstrt.errors import ExportError


def run_onnx_guarded(model: str | Path, images: np.ndarray, opt_level: str = "all", timeout: float = 600,
                     child: list[str] | None = None) -> list[np.ndarray]:
    """Outputs of `model` on `images` computed by ONNX Runtime in a child process (`child` replaces the
    child's command, for tests)."""
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.npy", Path(tmp) / "out.npz"
        np.save(src, images)
        cmd = child or [sys.executable, "-m", "lenstrt.export._ort_child"]
        proc = subprocess.run([*cmd, str(model), str(src), str(dst), opt_level], capture_output=True, text=True,
                              timeout=timeout)
        if proc.returncode < 0:
            sig = signal.Signals(-proc.returncode).name
            raise ExportError(f"{Path(model).name}: ONNX Runtime crashed ({sig}) running this graph at optimisation "
                              f"level '{opt_level}'; try a lower level or export without --fp16")
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["?"])[-1]
            raise ExportError(f"{Path(model).name}: ONNX Runtime failed ({last})")
        with np.load(dst) as z:
            return [z[f"arr_{i}"] for i in range(len(z.files))]


def run_openvino(model: str | Path, images: np.ndarray, batch: int = 128) -> np.ndarray | None:
    """The graph's first output ([N]: logits, or the fused graph's score) computed by OpenVINO's CPU plugin,
    as `--backend openvino` runs it (fp32 hint: an INT8 graph's Q/DQ pairs become its INT8 kernels); None
    where OpenVINO is not installed."""
    import importlib.util

    if importlib.util.find_spec("openvino") is None:
        return None
    from lenstrt.runtime.openvino import OpenVinoRunner

    def first(out):  # one array for a member, a tuple (score, ...) for the fused graph
        return np.asarray(out[0] if isinstance(out, tuple) else out)

    r = OpenVinoRunner(Path(model).stem, model, "int8")
    r.activate()
    try:
        return np.concatenate([first(r.infer(np.ascontiguousarray(images[i:i + batch], np.float32)))
                               for i in range(0, len(images), batch)])
    finally:
        r.deactivate()


def agreement(ref_logits: np.ndarray, logits: np.ndarray, temperature: float, labels: np.ndarray | None) -> dict:
    from lenstrt.metrics import roc_auc, sigmoid

    ref_p, p = sigmoid(ref_logits / temperature), sigmoid(logits / temperature)
    diff = np.abs(ref_logits - logits)
    out = {
        "n": int(len(ref_logits)),
        "max_abs_logit_diff": float(np.max(diff)),
        "max_rel_logit_diff": float(np.max(diff / np.maximum(np.abs(ref_logits), 1e-12))),
        "max_abs_ref_logit": float(np.max(np.abs(ref_logits))),
        "max_abs_prob_diff": float(np.max(np.abs(ref_p - p))),
        "mean_abs_prob_diff": float(np.mean(np.abs(ref_p - p))),
    }
    if labels is not None and 0 < labels.sum() < len(labels):
        out["auc_reference"] = roc_auc(labels, ref_p)
        out["auc"] = roc_auc(labels, p)
        out["auc_drop"] = out["auc_reference"] - out["auc"]
    return out


def within(ref: np.ndarray, got: np.ndarray, atol: float, rtol: float) -> bool:
    """numpy.allclose semantics (|got - ref| <= atol + rtol |ref|), as Polygraphy compares outputs."""
    return bool(np.all(np.abs(got - ref) <= atol + rtol * np.abs(ref)))
