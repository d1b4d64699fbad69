"""lenstrt.metrics against a second implementation: scikit-learn, SciPy, brute force over every threshold,
or numbers worked out by hand. These tests are the ones `make mutation` runs for lenstrt/metrics.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import minimize_scalar
from scipy.special import expit, logit
from sklearn.calibration import calibration_curve
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from lenstrt import metrics as M


def _data(seed: int, n: int, ties: bool):
    rng = np.random.default_rng(seed)
    y = (rng.uniform(size=n) < 0.3).astype(int)
    s = rng.normal(size=n) + 1.2 * y
    if ties:
        s = np.round(s, 1)  # many equal scores, across classes
    return y, s


# -- ROC --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed,n,ties", [(0, 50, False), (1, 400, True), (2, 7, True), (3, 1000, False)])
def test_roc_curve_and_auc_match_sklearn(seed, n, ties):
    y, s = _data(seed, n, ties)
    fpr, tpr, thr = M.roc_curve(y, s)
    sk_fpr, sk_tpr, sk_thr = sk_roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr, rtol=0, atol=1e-15)
    np.testing.assert_allclose(tpr, sk_tpr, rtol=0, atol=1e-15)
    assert thr[0] == np.inf and np.array_equal(thr[1:], sk_thr[1:])
    assert M.roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    # labels may come as bool or float, scores as float32 or lists
    assert M.roc_auc(y.astype(bool), s.astype(np.float32).tolist()) == pytest.approx(
        roc_auc_score(y, s.astype(np.float32)), abs=1e-12)


def test_roc_curve_by_hand_with_one_positive():
    # one lens (0.6), three non-lenses; thresholds at the distinct scores, decreasing
    fpr, tpr, thr = M.roc_curve(np.array([0, 1, 0, 0]), np.array([0.9, 0.6, 0.6, 0.1]))
    assert thr.tolist() == [np.inf, 0.9, 0.6, 0.1]
    assert fpr.tolist() == [0.0, 1 / 3, 2 / 3, 1.0]
    assert tpr.tolist() == [0.0, 0.0, 1.0, 1.0]


def test_roc_curve_one_class_only_does_not_divide_by_zero():
    fpr, tpr, _ = M.roc_curve(np.ones(3), np.array([0.3, 0.2, 0.1]))
    assert fpr.tolist() == [0, 0, 0, 0] and tpr.tolist() == [0, 1 / 3, 2 / 3, 1]
    fpr, tpr, _ = M.roc_curve(np.zeros(2), np.array([0.3, 0.1]))
    assert fpr.tolist() == [0, 0.5, 1] and tpr.tolist() == [0, 0, 0]
    fpr, tpr, _ = M.roc_curve(np.array([1, 0]), np.array([0.9, 0.1]))   # exactly one of each
    assert fpr.tolist() == [0, 0, 1] and tpr.tolist() == [0, 1, 1]


def test_float32_scores_are_ranked_in_float64():
    """Scores arrive as float32 (ONNX Runtime, Parquet); thresholds and the AUC are computed in float64."""
    y = np.array([1, 0, 1, 0])
    s = np.array([0.7, 0.3, 0.30000001, 0.1], np.float32)
    _, _, thr = M.roc_curve(y, s)
    assert thr.dtype == np.float64 and thr[1:].tolist() == sorted(set(s.astype(np.float64).tolist()), reverse=True)
    assert M.tpr_before_k_false_positives(np.array([1, 0]), np.array([2**24 + 1, 2**24], np.int64), 1) == 1.0


def _brute_tpr_at_fpr(y, s, max_fpr):
    best = 0.0
    for t in np.r_[np.inf, np.unique(s)]:
        flagged = s >= t
        fpr = (flagged & (y == 0)).sum() / max((y == 0).sum(), 1)
        tpr = (flagged & (y == 1)).sum() / max((y == 1).sum(), 1)
        if fpr <= max_fpr:
            best = max(best, tpr)
    return best


@pytest.mark.parametrize("seed,ties", [(0, False), (1, True), (5, True)])
@pytest.mark.parametrize("max_fpr", [0.0, 0.01, 0.05, 0.2, 1.0])
def test_tpr_at_fpr_equals_brute_force(seed, ties, max_fpr):
    y, s = _data(seed, 300, ties)
    assert M.tpr_at_fpr(y, s, max_fpr) == pytest.approx(_brute_tpr_at_fpr(y, s, max_fpr), abs=1e-15)


def test_tpr_at_fpr_boundaries():
    # 1000 non-lenses: FPR 1e-3 is exactly one false positive and must be allowed (<=, with float slack)
    y = np.r_[np.ones(4), np.zeros(1000)]
    s = np.r_[[0.99, 0.98, 0.2, 0.1], [0.985], np.linspace(0, 0.3, 999)]
    assert M.tpr_at_fpr(y, s, 1e-3) == 0.5
    assert M.tpr_at_fpr(y, s, np.nextafter(1e-3, 0)) == 0.5   # 0.001 with a rounding error
    assert M.tpr_at_fpr(y, s, 0.0009) == 0.25
    assert M.tpr_at_fpr(y, s, 0.0021) == 0.5 and M.tpr_at_fpr(y, s, 0.5) == 0.75
    assert M.tpr_at_fpr(y, s, -1.0) == 0.0          # nothing qualifies
    # an FPR equal to the bound including the float slack still qualifies
    y2, s2 = np.array([1, 1, 0, 0]), np.array([0.9, 0.4, 0.5, 0.1])
    assert M.tpr_at_fpr(y2, s2, 0.5 - 1e-12) == 1.0 and M.tpr_at_fpr(y2, s2, 0.5 - 2e-12) == 0.5


def _brute_tpr_before_k(y, s, k):
    best = 0.0
    for t in np.r_[np.inf, np.unique(s)]:
        if ((s >= t) & (y == 0)).sum() < k:
            best = max(best, ((s >= t) & (y == 1)).sum() / max((y == 1).sum(), 1))
    return best


@pytest.mark.parametrize("seed,ties", [(0, False), (1, True), (7, True)])
@pytest.mark.parametrize("k", [1, 2, 10])
def test_tpr_before_k_false_positives_equals_brute_force(seed, ties, k):
    y, s = _data(seed, 200, ties)
    assert M.tpr_before_k_false_positives(y, s, k) == pytest.approx(_brute_tpr_before_k(y, s, k), abs=1e-15)


def test_tpr_before_k_false_positives_edges():
    y = np.array([1, 1, 0, 0])
    s = np.array([0.9, 0.2, 0.5, 0.3])
    assert M.tpr_before_k_false_positives(y, s, 1) == 0.5    # above the top non-lens (0.5)
    assert M.tpr_before_k_false_positives(y, s, 2) == 0.5    # k = number of non-lenses: above 0.3
    assert M.tpr_before_k_false_positives(y, s, 3) == 1.0    # fewer non-lenses than k: every lens
    assert M.tpr_before_k_false_positives(np.array([1, 0]), np.array([0.5, 0.5]), 1) == 0.0  # a tie is not above
    assert M.tpr_before_k_false_positives(np.array([0, 0]), np.array([0.5, 0.4]), 1) == 0.0  # no lenses
    assert M.tpr_before_k_false_positives(np.array([0]), np.array([0.5]), 2) == 0.0          # no lenses, k > n
    assert M.tpr_before_k_false_positives(np.array([1, 0]), np.array([0.1, 0.5]), 2) == 1.0  # one lens, k > n


# -- calibration ------------------------------------------------------------------------------------------

def _sk_ece(y, p, bins):
    """ECE from scikit-learn's per-bin means (it drops empty bins) and numpy's bin counts."""
    prob_true, prob_pred = calibration_curve(y, p, n_bins=bins, strategy="uniform")
    counts = np.histogram(p, bins=np.linspace(0, 1, bins + 1))[0]
    return float(np.sum(counts[counts > 0] / len(p) * np.abs(prob_true - prob_pred))), prob_true, prob_pred, counts


def test_expected_calibration_error_matches_sklearn_bins():
    rng = np.random.default_rng(4)
    p = rng.uniform(size=3000)
    y = (rng.uniform(size=3000) < np.clip(p + 0.2 * np.sin(9 * p), 0, 1)).astype(int)  # over and under
    ece, conf, acc, count = M.expected_calibration_error(y, p)   # 15 bins by default
    want, prob_true, prob_pred, counts = _sk_ece(y, p, 15)
    assert count.tolist() == counts.tolist() and len(conf) == len(acc) == 15
    np.testing.assert_allclose(conf[counts > 0], prob_pred, atol=1e-12)
    np.testing.assert_allclose(acc[counts > 0], prob_true, atol=1e-12)
    assert ece == pytest.approx(want, abs=1e-12)
    assert M.expected_calibration_error(y, p, bins=10)[0] == pytest.approx(_sk_ece(y, p, 10)[0], abs=1e-12)
    assert abs(_sk_ece(y, p, 10)[0] - want) > 1e-4  # the bin count matters on this data


def test_expected_calibration_error_by_hand():
    # p = 1.0 belongs to the top bin, p = 0 to the first; a one-member bin is its own mean
    ece, conf, acc, count = M.expected_calibration_error(np.array([1, 0, 1]), np.array([1.0, 0.0, 0.35]), bins=4)
    assert count.tolist() == [1, 1, 0, 1] and conf.tolist() == [0.0, 0.35, 0.0, 1.0] and acc.tolist() == [0, 1, 0, 1]
    assert ece == pytest.approx(0.65 / 3)
    assert M.expected_calibration_error(np.array([1]), np.array([0.3]))[0] == pytest.approx(0.7)
    # probabilities a hair outside [0, 1] (rounding) land in the end bins
    _, _, _, count = M.expected_calibration_error(np.array([0, 1]), np.array([-0.3, 1.2]), bins=4)
    assert count.tolist() == [1, 0, 0, 1]


def test_completeness_binned_by_hand():
    edges = np.array([0.0, 1.0, 3.0, 4.0])
    values = np.array([-0.5, 0.0, 0.5, 2.0, 2.9, 3.0, 4.0, 9.0])
    detected = np.array([1, 1, 0, 1, 1, 0, 1, 1])
    centers, comp, counts = M.completeness_binned(values, detected, edges)
    assert centers.tolist() == [0.5, 2.0, 3.5] and counts.tolist() == [2, 2, 1]   # 4.0 and beyond: outside
    assert comp.tolist() == [0.5, 1.0, 0.0]
    _, comp, counts = M.completeness_binned(np.array([0.5]), np.array([True]), edges)
    assert counts.tolist() == [1, 0, 0] and comp[0] == 1.0 and np.isnan(comp[1:]).all()
    _, comp, counts = M.completeness_binned(np.array([0.5, 1.5]), np.array([True, False]), edges)
    assert counts.tolist() == [1, 1, 0] and comp[:2].tolist() == [1.0, 0.0] and np.isnan(comp[2])


def test_sigmoid_matches_scipy():
    x = np.array([-40.0, -3.0, -0.5, 0.0, 0.25, 2.0, 30.0])
    np.testing.assert_allclose(M.sigmoid(x), expit(x), rtol=1e-15, atol=0)
    assert M.sigmoid([0, 1]).dtype == np.float64 and M.sigmoid(1)[()] == pytest.approx(1 / (1 + math.e ** -1))
    x32 = np.array([-20.0, 0.3, 9.0], np.float32)   # float32 logits are converted first: float64 results
    assert M.sigmoid(x32).dtype == np.float64
    np.testing.assert_array_equal(M.sigmoid(x32), expit(x32.astype(np.float64)))


def _nll(y, z, t):
    a = z / t
    return float(np.mean(np.logaddexp(0, a) - y * a))


@pytest.mark.parametrize("true_t", [0.3, 1.0, 3.0, 9.0])
def test_fit_temperature_matches_logistic_regression_and_scipy(true_t):
    rng = np.random.default_rng(int(true_t * 10))
    z_true = rng.normal(0, 2.5, 4000)
    y = (rng.uniform(size=z_true.size) < expit(z_true)).astype(int)
    z = z_true * true_t  # a model off by a factor true_t
    t = M.fit_temperature(y, z)
    lr = LogisticRegression(fit_intercept=False, C=np.inf, tol=1e-12, max_iter=10_000).fit(z[:, None], y)
    assert t == pytest.approx(1 / lr.coef_[0, 0], rel=1e-5)
    sp = minimize_scalar(lambda lt: _nll(y, z, math.exp(lt)), bounds=(math.log(0.05), math.log(20)), method="bounded",
                         options={"xatol": 1e-10})
    assert t == pytest.approx(math.exp(sp.x), rel=1e-5)
    assert t == pytest.approx(true_t, rel=0.15)


def test_fit_temperature_of_float32_logits_is_fitted_in_float64():
    rng = np.random.default_rng(3)
    z = rng.normal(0, 4, 3000).astype(np.float32)
    y = (rng.uniform(size=3000) < expit(z / 2.5)).astype(int)
    assert M.fit_temperature(y, z) == M.fit_temperature(y.astype(float), z.astype(np.float64))


def test_fit_temperature_search_limits():
    y = np.array([0, 0, 1, 1] * 10)
    separable = np.array([-2.0, -1.0, 1.0, 2.0] * 10)
    assert M.fit_temperature(y, separable) == pytest.approx(0.05, rel=1e-6)     # NLL falls as T -> 0
    assert M.fit_temperature(y, -separable) == pytest.approx(20.0, rel=1e-6)    # anti-correlated: T -> inf
    assert M.fit_temperature(y.tolist(), separable.tolist()) == pytest.approx(0.05, rel=1e-6)


# -- prevalence -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("train_prev", [0.2, 0.35, 0.5, 0.8])
@pytest.mark.parametrize("prev", [1e-4, 1e-3, 0.3, 0.9])
def test_prevalence_correct_is_a_shift_of_the_log_odds(train_prev, prev):
    """Bayes: the posterior odds scale with the prior odds, so logit(p') = logit(p) - logit(pi_train) + logit(pi)."""
    p = np.array([1e-6, 0.01, 0.2, 0.5, 0.77, 0.99, 1 - 1e-6])
    want = expit(logit(p) - logit(train_prev) + logit(prev))
    np.testing.assert_allclose(M.prevalence_correct(p, train_prev, prev), want, rtol=1e-9)


def test_prevalence_correct_default_edges_and_by_hand():
    p = np.array([0.0, 0.5, 0.9, 1.0])
    np.testing.assert_array_equal(M.prevalence_correct(p, 0.5), M.prevalence_correct(p, 0.5, 1e-3))  # default 1e-3
    out = M.prevalence_correct(p, 0.25, 0.01)
    # p = 0.9 trained at 25% lenses: odds 9 / 3 = 3 at even prior; times 0.01/0.99 -> 3/99 -> 3/102
    # trained at 25% lenses, a score p has likelihood ratio (p / (1 - p)) / (1 / 3); at 1% prevalence the
    # posterior odds are that times 1/99: p = 0.5 -> 3/99, p = 0.9 -> 27/99
    assert out.tolist() == pytest.approx([0.0, 3 / 102, 27 / 126, 1.0], rel=1e-12)
    assert M.prevalence_correct([0.7], 0.3, 0.3)[0] == pytest.approx(0.7)  # same prevalence: unchanged
    p32 = np.array([0.3, 0.999], np.float32)   # catalog scores are float32; the correction is float64
    out32 = M.prevalence_correct(p32, 0.35, 1e-4)
    assert out32.dtype == np.float64
    np.testing.assert_array_equal(out32, M.prevalence_correct(p32.astype(np.float64), 0.35, 1e-4))
    assert M.prevalence_correct([1.0], 0.5, 0.0)[0] == 0.0                  # 0/0 guarded


def test_summary_is_the_sum_of_its_parts():
    rng = np.random.default_rng(9)
    y = np.r_[np.ones(40), np.zeros(2012)].astype(int)
    p = np.r_[rng.uniform(0.3, 1.0, 40), rng.beta(1, 6, 2000), 0.985 - 0.03 * np.arange(12)]  # 12 high non-lenses
    s = M.summary(y, p)
    assert s == {
        "roc_auc": pytest.approx(roc_auc_score(y, p), abs=1e-12),
        "tpr_at_fpr_1e-2": _brute_tpr_at_fpr(y, p, 1e-2), "tpr_at_fpr_1e-3": _brute_tpr_at_fpr(y, p, 1e-3),
        "tpr0": _brute_tpr_before_k(y, p, 1), "tpr10": _brute_tpr_before_k(y, p, 10),
        "ece": pytest.approx(M.expected_calibration_error(y, p, bins=15)[0], abs=0), "n": 2052, "n_lenses": 40,
    }
    # the operating points differ, so a swapped key or a shifted k would be noticed
    assert len({s["tpr_at_fpr_1e-2"], s["tpr_at_fpr_1e-3"]}) == 2 and len({s["tpr0"], s["tpr10"]}) == 2
    assert s["tpr10"] != _brute_tpr_before_k(y, p, 11)
    assert _brute_tpr_before_k(y, p, 2) != s["tpr0"]
