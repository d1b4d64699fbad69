import numpy as np
import pytest

from lenstrt import metrics as M


def test_roc_auc_hand_computed():
    y = np.array([0, 0, 1, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8])
    assert M.roc_auc(y, s) == pytest.approx(0.75)
    assert M.roc_auc(y, -s) == pytest.approx(0.25)
    assert M.roc_auc(y, np.ones(4)) == pytest.approx(0.5)  # ties: one threshold step


def test_tpr_at_fpr_and_challenge_metrics():
    # 10 lenses scored 0.91..1.0; 1000 non-lenses, two of them very high
    lens = np.linspace(0.91, 1.0, 10)
    neg = np.r_[np.linspace(0.0, 0.5, 998), 0.955, 0.995]
    y = np.r_[np.ones(10), np.zeros(1000)]
    s = np.r_[lens, neg]
    # TPR0: strictest threshold before the first FP (0.995) -> only the 1.0 lens
    assert M.tpr_before_k_false_positives(y, s, 1) == pytest.approx(0.1)
    # TPR10: fewer than 10 FPs: threshold above the 10th-highest negative (~0.5) -> all lenses
    assert M.tpr_before_k_false_positives(y, s, 10) == pytest.approx(1.0)
    # FPR <= 1e-3 allows one false positive (0.995): lenses above 0.955 -> 0.96 ... 1.0
    assert M.tpr_at_fpr(y, s, 1e-3) == pytest.approx(0.5)
    assert M.tpr_at_fpr(y, s, 2e-3) == pytest.approx(1.0)
    assert M.tpr_at_fpr(y, s, 0.0) == pytest.approx(0.1)


def test_ece_and_temperature():
    rng = np.random.default_rng(0)
    true_logit = rng.normal(0, 3, 20000)
    y = (rng.uniform(size=true_logit.size) < M.sigmoid(true_logit)).astype(int)
    over = true_logit * 3  # overconfident model: T should come back ~3
    t = M.fit_temperature(y, over)
    assert t == pytest.approx(3.0, rel=0.1)
    ece_before = M.expected_calibration_error(y, M.sigmoid(over))[0]
    ece_after = M.expected_calibration_error(y, M.sigmoid(over / t))[0]
    assert ece_after < 0.02 < ece_before


def test_prevalence_correction():
    p = np.array([0.5, 0.999])
    c = M.prevalence_correct(p, train_prevalence=0.5, prevalence=1e-3)
    assert c[0] == pytest.approx(1e-3, rel=1e-6)
    assert c[1] < 0.999 and c[1] > 0.4


def test_completeness_binned():
    centers, comp, counts = M.completeness_binned(np.array([0.5, 0.6, 1.5, 1.6]), np.array([1, 0, 1, 1]),
                                                  np.array([0.0, 1.0, 2.0]))
    assert list(centers) == [0.5, 1.5] and list(comp) == [0.5, 1.0] and list(counts) == [2, 2]


def test_survey_operating_points():
    from lenstrt.train.evaluate import operating_points

    labels = np.r_[np.ones(100), np.zeros(1000)].astype(int)
    probs = np.r_[np.linspace(0.5, 1.0, 100), np.linspace(0.0, 0.6, 1000)]
    (op,) = operating_points(labels, probs, prevalence=1e-3, fprs=(1e-2,))
    assert op["fpr"] <= 1e-2 and 0 < op["tpr"] < 1
    flagged = op["tpr"] * 1e-3 + op["fpr"] * (1 - 1e-3)
    assert op["candidates_per_million"] == pytest.approx(1e6 * flagged)
    assert op["purity"] == pytest.approx(op["tpr"] * 1e-3 / flagged)
    assert operating_points(labels, probs, 1e-3, fprs=(1e-4,)) == []  # 1000 negatives cannot measure 1e-4
