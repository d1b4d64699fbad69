"""Export tolerances keyed by precision: what each reduced-precision artifact must meet against its fp32
reference. Built from the architecture's `ExportSpec` (models/registry.py) and written into the manifest
per member (`tolerances`), so a bundle says which gates its artifacts passed.

fp32 compares logits (allclose semantics); fp16 and bf16 the probabilities and the AUC; int8 what a lens
search keeps (AUC, top-100, mean |Δp|) with a loose max |Δp| against gross breakage (docs/export.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Tolerance:
    atol_logit: float | None = None      # |Δlogit| <= atol + rtol |logit| (fp32)
    rtol_logit: float | None = None
    max_abs_prob: float | None = None    # max |Δ calibrated probability|
    mean_abs_prob: float | None = None   # mean |Δp|
    max_auc_drop: float | None = None    # working classifiers only (reference AUC >= 0.9)
    min_top100: float | None = None      # top-100 overlap (validation sets of >= 200 rows)

    def as_dict(self) -> dict[str, float]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def tolerances(spec: Any) -> dict[str, Tolerance]:
    """Per precision, from an ExportSpec. bf16 is not an export artifact (a runtime hint over the fp32
    graph) but gets fp16's gate for anyone validating it."""
    fp16 = Tolerance(max_abs_prob=spec.atol_fp16_prob, max_auc_drop=spec.max_auc_drop_fp16)
    return {"fp32": Tolerance(atol_logit=spec.atol_fp32, rtol_logit=spec.rtol_fp32), "fp16": fp16, "bf16": fp16,
            "int8": Tolerance(max_abs_prob=spec.atol_int8_prob, mean_abs_prob=spec.mean_int8_prob,
                              max_auc_drop=spec.max_auc_drop_int8, min_top100=spec.min_top100_int8)}


def gate(agree: dict[str, Any], tol: Tolerance) -> str | None:
    """Why an artifact with these agreement figures fails `tol`, or None (one gate for every reduced
    precision: fp16 / bf16 and int8 differ only in which bounds they set)."""
    if tol.min_top100 is not None or tol.mean_abs_prob is not None:
        from lenstrt.export.int8 import int8_gate_failure

        return int8_gate_failure(agree, tol.max_abs_prob if tol.max_abs_prob is not None else float("inf"),
                                 tol.mean_abs_prob if tol.mean_abs_prob is not None else float("inf"),
                                 tol.max_auc_drop if tol.max_auc_drop is not None else float("inf"),
                                 tol.min_top100 if tol.min_top100 is not None else 0.0)
    from lenstrt.export.pipeline import gate_failure

    return gate_failure(agree, tol.max_abs_prob if tol.max_abs_prob is not None else float("inf"),
                        tol.max_auc_drop if tol.max_auc_drop is not None else float("inf"))
