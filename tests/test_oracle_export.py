"""The export's validation figures and gates (lenstrt/export/validate.py `agreement`, `within`;
lenstrt/export/pipeline.py `auc_drop_fails`, `gate_failure`), against numbers worked out here and
scikit-learn / numpy's own allclose. Exports of a working model that must fail these gates are in
test_oracle_calibration.py."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit
from sklearn.metrics import roc_auc_score

from lenstrt.export.pipeline import AUC_GATE_MIN_REFERENCE, auc_drop_fails, gate_failure
from lenstrt.export.validate import agreement, within


def test_agreement_by_hand():
    ref = np.array([-2.0, 0.0, 1.0, 4.0])
    got = np.array([-2.0, 0.5, 1.25, 4.0])
    a = agreement(ref, got, 2.0, None)
    assert a == {
        "n": 4, "max_abs_logit_diff": 0.5,
        "max_rel_logit_diff": 0.5 / 1e-12,        # |diff| / |ref| with |ref| floored at 1e-12 (ref = 0 here)
        "max_abs_ref_logit": 4.0,
        "max_abs_prob_diff": pytest.approx(expit(0.25) - 0.5, abs=1e-15),   # T = 2: sigmoid(0.5 / 2)
        "mean_abs_prob_diff": pytest.approx(((expit(0.25) - 0.5) + (expit(0.625) - expit(0.5))) / 4, abs=1e-15),
    }
    b = agreement(np.array([-4.0, 2.0]), np.array([-3.0, 2.5]), 1.0, None)
    assert b["max_rel_logit_diff"] == pytest.approx(0.25) and b["max_abs_ref_logit"] == 4.0


def test_agreement_auc_against_sklearn():
    rng = np.random.default_rng(0)
    labels = (rng.uniform(size=200) < 0.4).astype(int)
    ref = rng.normal(size=200) + 2 * labels
    got = ref + rng.normal(0, 0.8, 200)   # a damaged graph: it ranks worse
    a = agreement(ref, got, 1.7, labels)
    assert a["auc_reference"] == pytest.approx(roc_auc_score(labels, ref), abs=1e-12)
    assert a["auc"] == pytest.approx(roc_auc_score(labels, got), abs=1e-12)
    assert a["auc_drop"] == pytest.approx(a["auc_reference"] - a["auc"], abs=0) and a["auc_drop"] > 0.01
    # no AUC where the labels cannot give one
    for lab in (None, np.zeros(200, int), np.ones(200, int)):
        assert "auc" not in agreement(ref, got, 1.7, lab)
    one_lens = np.zeros(200, int)
    one_lens[3] = 1
    assert "auc" in agreement(ref, got, 1.7, one_lens)


@pytest.mark.parametrize("seed", range(5))
def test_within_is_numpy_allclose(seed):
    rng = np.random.default_rng(seed)
    ref = rng.normal(0, 10, 500)
    got = ref + rng.normal(0, 1e-4, 500) * (1 + np.abs(ref) * 0.1)
    for atol, rtol in ((1e-4, 1e-5), (1e-3, 0.0), (0.0, 1e-4), (1e-5, 1e-5)):
        assert within(ref, got, atol, rtol) == np.allclose(got, ref, rtol=rtol, atol=atol)


def test_within_boundaries():
    ref = np.array([0.0, 10.0])
    assert within(ref, ref + np.array([0.5, 1.5]), atol=0.5, rtol=0.1)        # exactly at the bound: passes
    assert not within(ref, ref + np.array([0.5, 1.5 + 1e-9]), atol=0.5, rtol=0.1)
    assert not within(ref, ref - np.array([0.5 + 1e-9, 0.0]), atol=0.5, rtol=0.1)  # both directions count
    assert within(np.array([-10.0]), np.array([-11.0]), atol=0.0, rtol=0.1)    # |ref|, not ref
    assert isinstance(within(ref, ref, 0.0, 0.0), bool)


def test_auc_gate_enforced_only_for_working_classifiers():
    assert AUC_GATE_MIN_REFERENCE == 0.9
    at = {"auc_reference": 0.9, "auc_drop": 0.0021}
    assert auc_drop_fails(at, 0.002) and at["auc_drop_enforced"] is True      # 0.9 itself is a working model
    below = {"auc_reference": 0.8999, "auc_drop": 0.5}
    assert not auc_drop_fails(below, 0.002) and below["auc_drop_enforced"] is False
    edge = {"auc_reference": 0.95, "auc_drop": 0.002}
    assert not auc_drop_fails(edge, 0.002) and edge["auc_drop_enforced"] is True  # a drop equal to the tolerance passes
    assert auc_drop_fails({"auc_reference": 0.95, "auc_drop": 0.0}, -0.1)
    unlabelled = {"max_abs_prob_diff": 0.0}
    assert not auc_drop_fails(unlabelled, 0.002) and "auc_drop_enforced" not in unlabelled


def test_gate_failure_names_the_figures():
    ok = {"max_abs_prob_diff": 0.01, "auc_reference": 0.99, "auc_drop": 0.002}
    assert gate_failure(ok, 0.01, 0.002) is None                         # both exactly at tolerance
    why = gate_failure({**ok, "max_abs_prob_diff": 0.0125}, 0.01, 0.002)
    assert why == "max |prob diff| 1.25e-02 (tol 0.01), AUC drop 0.0020 (tol 0.002)"
    why = gate_failure({**ok, "auc_drop": 0.0031}, 0.01, 0.002)
    assert why == "max |prob diff| 1.00e-02 (tol 0.01), AUC drop 0.0031 (tol 0.002)"
    assert gate_failure({"max_abs_prob_diff": 0.5}, 0.01, 0.002) == \
        "max |prob diff| 5.00e-01 (tol 0.01), AUC drop 0.0000 (tol 0.002)"   # unlabelled: no AUC figures
    assert gate_failure({"max_abs_prob_diff": 0.0, "auc_reference": 0.5, "auc_drop": 0.3}, 0.01, 0.002) is None


def test_tolerances_per_precision_come_from_the_export_spec():
    from lenstrt.export.tolerances import Tolerance, tolerances
    from lenstrt.models.registry import ExportSpec

    spec = ExportSpec(atol_fp32=1e-3, rtol_fp32=2e-5, atol_fp16_prob=3e-2, max_auc_drop_fp16=0.004,
                      atol_int8_prob=0.4, mean_int8_prob=0.03, max_auc_drop_int8=0.005, min_top100_int8=0.9)
    t = tolerances(spec)
    assert set(t) == {"fp32", "fp16", "bf16", "int8"}
    assert t["fp32"] == Tolerance(atol_logit=1e-3, rtol_logit=2e-5)
    assert t["fp16"] == t["bf16"] == Tolerance(max_abs_prob=3e-2, max_auc_drop=0.004)
    assert t["int8"] == Tolerance(max_abs_prob=0.4, mean_abs_prob=0.03, max_auc_drop=0.005, min_top100=0.9)
    assert t["fp16"].as_dict() == {"max_abs_prob": 3e-2, "max_auc_drop": 0.004}  # unset bounds left out


def _agree(**kw):
    base = {"n": 500, "max_abs_prob_diff": 0.01, "mean_abs_prob_diff": 0.001, "auc_reference": 0.95,
            "auc_drop": 0.0, "top100_overlap": 1.0}
    return {**base, **kw}


@pytest.mark.parametrize("precision,figures,fails", [
    ("fp16", {}, None),
    ("fp16", {"max_abs_prob_diff": 0.031}, "max |prob diff|"),
    ("fp16", {"auc_drop": 0.0041}, "AUC drop"),
    ("fp16", {"auc_drop": 0.0041, "auc_reference": 0.8}, None),      # AUC gate only for working classifiers
    ("fp16", {"mean_abs_prob_diff": 0.2, "top100_overlap": 0.1}, None),   # not fp16's bounds
    ("int8", {"max_abs_prob_diff": 0.3}, None),                          # loose max |Δp| for INT8 ...
    ("int8", {"max_abs_prob_diff": 0.41}, "max |prob diff|"),            # ... but a bound
    ("int8", {"mean_abs_prob_diff": 0.031}, "mean |prob diff|"),
    ("int8", {"auc_drop": 0.0051}, "AUC drop"),
    ("int8", {"top100_overlap": 0.89}, "top-100 overlap"),
    ("int8", {"top100_overlap": 0.89, "n": 199}, None),                  # top-100 of < 200 rows says nothing
])
def test_one_gate_for_every_precision(precision, figures, fails):
    from lenstrt.export.tolerances import gate, tolerances
    from lenstrt.models.registry import ExportSpec

    spec = ExportSpec(atol_fp16_prob=3e-2, max_auc_drop_fp16=0.004, atol_int8_prob=0.4, mean_int8_prob=0.03,
                      max_auc_drop_int8=0.005, min_top100_int8=0.9)
    why = gate(_agree(**figures), tolerances(spec)[precision])
    assert (why is None) if fails is None else (fails in why), why


def test_a_tolerance_without_bounds_passes_anything():
    from lenstrt.export.tolerances import Tolerance, gate

    assert gate(_agree(max_abs_prob_diff=0.9, auc_drop=0.5), Tolerance()) is None
    assert gate(_agree(top100_overlap=0.0), Tolerance(mean_abs_prob=1.0)) is None  # int8 path, top-100 unbounded


def test_the_gate_dispatches_on_which_bounds_are_set():
    """fp16-like bounds go to `gate_failure`, any int8-only bound (mean |Δp|, top-100) to
    `int8_gate_failure`, each with unset bounds as no bound: same messages as calling them directly."""
    from lenstrt.export.int8 import int8_gate_failure
    from lenstrt.export.pipeline import gate_failure
    from lenstrt.export.tolerances import Tolerance, gate

    inf = float("inf")
    bad = _agree(max_abs_prob_diff=0.05, mean_abs_prob_diff=0.03, auc_drop=0.01, top100_overlap=0.5)
    assert gate(dict(bad), Tolerance(max_abs_prob=0.02, max_auc_drop=0.002)) == gate_failure(dict(bad), 0.02, 0.002)
    assert gate(dict(bad), Tolerance(max_abs_prob=0.02)) == gate_failure(dict(bad), 0.02, inf)
    assert gate(dict(bad), Tolerance(min_top100=0.9)) == int8_gate_failure(dict(bad), inf, inf, inf, 0.9)
    assert "top-100 overlap" in gate(dict(bad), Tolerance(min_top100=0.9))
    assert gate(dict(bad), Tolerance(mean_abs_prob=0.01)) == int8_gate_failure(dict(bad), inf, 0.01, inf, 0.0)
    assert gate(dict(bad), Tolerance(mean_abs_prob=0.01)).startswith("mean |prob diff|")  # max |Δp| unbounded


@pytest.mark.parametrize("refused,runtimes,logged", [
    ({}, ["onnxruntime", "openvino"], False),                      # both passed: nothing to say
    ({"onnxruntime": "mean |prob diff| 3.75e-02 (tol 0.02)"}, ["openvino"], True),
    ({"openvino": "top-100 overlap 0.90 (min 0.95)"}, ["onnxruntime"], True),
    ({"onnxruntime": "a", "openvino": "b"}, [], False),          # the caller raises; no "validated" line
])
def test_int8_runtime_verdicts(refused, runtimes, logged):
    """The INT8 graph's verdict per CPU runtime (export/pipeline.py `_runtime_verdicts`): the runtimes it passed
    on, in the order measured, the refusals with their reasons, and one log line naming both sides."""
    from lenstrt.export.pipeline import CPU_INT8_RUNTIMES, _runtime_verdicts

    lines: list[str] = []
    got = _runtime_verdicts("member m", {"onnxruntime": {}, "openvino": {}}, refused, lines.append)
    assert got == {"runtimes": runtimes, **({"refused": refused} if refused else {})}
    assert len(lines) == int(logged)
    if logged:
        (rt, why), = refused.items()
        assert lines[0] == (f"member m: INT8 graph validated for {runtimes[0]} only; {rt} refused: {why} "
                            f"(serve it with --backend {CPU_INT8_RUNTIMES[runtimes[0]]}; auto picks it)")
    # only the runtimes measured count: ONNX Runtime alone (OpenVINO not installed) passes or not by itself
    assert _runtime_verdicts("x", {"onnxruntime": {}}, {}, lines.append) == {"runtimes": ["onnxruntime"]}
