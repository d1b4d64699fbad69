"""Ensemble fusion (lenstrt/runtime/ensemble.py) against the formulas worked out element by element.

Stub runners return known logits, so every fused number has a value computed here with plain Python
floats: member probability sigmoid(logit / T), the mean and population spread between members, MC-dropout
means and variances, and the inverse-variance weighting of `uncertainty_weighted`.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from lenstrt.errors import ConfigError
from lenstrt.runtime.base import Runner
from lenstrt.runtime.ensemble import Ensemble


class Stub(Runner):
    """Returns fixed outputs for the rows asked for: the "images" are row numbers."""
    backend = "stub"

    def __init__(self, name: str, out):
        super().__init__(name)
        self.out = out
        self.calls = 0

    def infer(self, images):
        self.calls += 1
        rows = np.asarray(images, dtype=int)
        if isinstance(self.out, tuple):  # fused graph: (score, std, member scores)
            return tuple(np.asarray(o)[rows] for o in self.out)
        out = np.asarray(self.out, np.float32)
        return out[:, rows] if out.ndim == 2 else out[rows]   # [K, N] MC samples or [N] logits


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


LOGITS = [[-3.0, 0.0, 2.5, 7.0], [1.0, -0.5, 0.25, 4.0], [0.0, 3.0, -6.0, 1.5]]   # 3 members x 4 rows
TEMPS = [0.5, 2.0, 1.3]
ROWS = np.arange(4)


def _by_hand_mean(logits, temps):
    score, std, members = [], [], []
    for i in range(len(logits[0])):
        p = [sig(logits[j][i] / temps[j]) for j in range(len(temps))]
        m = sum(p) / len(p)
        score.append(m)
        std.append(math.sqrt(sum((q - m) ** 2 for q in p) / len(p)))
        members.append(p)
    return np.array(score), np.array(std), np.array(members)


@pytest.mark.parametrize("concurrency", ["sequential", "threads", "streams"])
def test_mean_fusion_by_hand(concurrency):
    runners = [Stub(f"m{j}", LOGITS[j]) for j in range(3)]
    with Ensemble(runners, ["m0", "m1", "m2"], TEMPS, "mean", concurrency) as ens:
        s = ens.infer(ROWS)
    score, std, members = _by_hand_mean(LOGITS, TEMPS)
    np.testing.assert_allclose(s.members, members, rtol=1e-6)
    np.testing.assert_allclose(s.score, score, rtol=1e-6)
    np.testing.assert_allclose(s.score_std, std, rtol=1e-5, atol=1e-9)
    assert s.score.shape == s.score_std.shape == (4,) and s.members.shape == (4, 3)
    assert all(r.calls == 1 for r in runners)


def test_one_member_has_zero_spread_and_its_own_probability():
    with Ensemble([Stub("a", LOGITS[0])], ["a"], [0.5]) as ens:
        s = ens.infer(ROWS)
    np.testing.assert_allclose(s.score, [sig(z / 0.5) for z in LOGITS[0]], rtol=1e-6)
    assert s.score_std.tolist() == [0.0] * 4


# MC dropout: K = 3 samples per member; member "a" is confident (small spread), "b" is not
MC_A = [[2.0, -1.0, 0.1], [2.2, -1.1, 0.1], [2.1, -0.9, 0.1]]   # [K, N]: row 2 has zero variance
MC_B = [[-1.0, 3.0, 1.0], [1.5, -2.0, -1.0], [0.0, 1.0, 2.0]]
MC_T = [1.5, 0.8]


def _mc_by_hand(samples, temps):
    """Per member and row: the mean and the population variance of the K calibrated probabilities."""
    means, variances = [], []
    for s, t in zip(samples, temps):
        cols = list(zip(*s))  # per row, its K logits
        ps = [[sig(z / t) for z in col] for col in cols]
        mu = [sum(p) / len(p) for p in ps]
        means.append(mu)
        variances.append([sum((q - m) ** 2 for q in p) / len(p) for p, m in zip(ps, mu)])
    return np.array(means).T, np.array(variances).T   # [N, M]


def test_uncertainty_weighted_fusion_by_hand():
    with Ensemble([Stub("a", MC_A), Stub("b", MC_B)], ["a", "b"], MC_T, "uncertainty_weighted", mc_samples=3) as ens:
        s = ens.infer(np.arange(3))
    mu, var = _mc_by_hand([MC_A, MC_B], MC_T)
    score, std = [], []
    for i in range(3):
        w = [1.0 / (var[i, j] + 1e-6) for j in range(2)]
        m = sum(wj * mu[i, j] for j, wj in enumerate(w)) / sum(w)
        score.append(m)
        std.append(math.sqrt(sum(wj * (mu[i, j] - m) ** 2 for j, wj in enumerate(w)) / sum(w)))
    np.testing.assert_allclose(s.members, mu, rtol=1e-6)
    np.testing.assert_allclose(s.score, score, rtol=1e-6)
    np.testing.assert_allclose(s.score_std, std, rtol=1e-5)
    # the confident member dominates: the fused score sits near it, far from the plain mean
    assert np.all(np.abs(s.score - mu[:, 0]) < np.abs(s.score - mu.mean(1)))
    assert s.score[2] == pytest.approx(mu[2, 0], abs=1e-4)   # zero variance: (almost) all the weight


def test_mc_mean_fusion_spread_is_between_members():
    with Ensemble([Stub("a", MC_A), Stub("b", MC_B)], ["a", "b"], MC_T, "mean", mc_samples=3) as ens:
        s = ens.infer(np.arange(3))
    mu, _ = _mc_by_hand([MC_A, MC_B], MC_T)
    np.testing.assert_allclose(s.score, mu.mean(1), rtol=1e-6)
    np.testing.assert_allclose(s.score_std, [abs(a - b) / 2 for a, b in mu], rtol=1e-5)


def test_mc_single_member_spread_is_the_dropout_spread():
    with Ensemble([Stub("b", MC_B)], ["b"], [MC_T[1]], "mean", mc_samples=3) as ens:
        s = ens.infer(np.arange(3))
    mu, var = _mc_by_hand([MC_B], [MC_T[1]])
    np.testing.assert_allclose(s.score, mu[:, 0], rtol=1e-6)
    np.testing.assert_allclose(s.score_std, np.sqrt(var[:, 0]), rtol=1e-5)


def test_fused_graph_outputs_pass_through():
    out = (np.array([[0.2], [0.9]], np.float32)[:, 0], np.array([0.01, 0.02], np.float32),
           np.array([[0.1, 0.3], [0.85, 0.95]], np.float32))
    with Ensemble([Stub("fused", out)], ["a", "b"], [1.0, 1.0], "mean", fused=True) as ens:
        s = ens.infer(np.arange(2))
        assert ens.info["fused"] is True
    np.testing.assert_allclose(s.score, [0.2, 0.9], rtol=1e-7)
    np.testing.assert_allclose(s.score_std, [0.01, 0.02], rtol=1e-7)
    np.testing.assert_allclose(s.members, out[2], rtol=1e-7)
    assert s.score.dtype == s.score_std.dtype == s.members.dtype == np.float64


def test_configuration_errors_and_info():
    with pytest.raises(ConfigError, match="fusion_method must be 'mean' or 'uncertainty_weighted', not 'max'"):
        Ensemble([Stub("a", [0.0])], ["a"], [1.0], fusion="max")
    with pytest.raises(ConfigError) as ei:
        Ensemble([Stub("a", [0.0])], ["a"], [1.0], fusion="uncertainty_weighted")
    assert str(ei.value) == "fusion 'uncertainty_weighted' needs MC-dropout variances: --mc-samples K (torch backend)"
    ens = Ensemble([Stub("a", [0.0]), Stub("b", [0.0])], ["a", "b"], [1.0, 2.0], "uncertainty_weighted", "threads",
                   mc_samples=5)
    info = ens.info
    assert {k: info[k] for k in ("members", "fused", "concurrency", "fusion", "mc_samples")} == {
        "members": ["a", "b"], "fused": False, "concurrency": "threads", "fusion": "uncertainty_weighted",
        "mc_samples": 5}
    assert [r["backend"] for r in info["runners"]] == ["stub", "stub"]
    assert ens._pool is not None and ens._pool._max_workers == 2   # members in threads, one each


def test_raw_is_each_runners_output():
    runners = [Stub("a", LOGITS[0]), Stub("b", LOGITS[1])]
    with Ensemble(runners, ["a", "b"], TEMPS[:2]) as ens:
        raw = ens.raw(np.array([2, 0]))
    assert [r.tolist() for r in raw] == [[2.5, -3.0], [0.25, 1.0]]


def test_runners_are_activated_and_released():
    runners = [Stub("a", [0.0]), Stub("b", [0.0])]
    with Ensemble(runners, ["a", "b"], [1.0, 1.0], concurrency="threads"):
        assert all(r.active for r in runners)
    assert not any(r.active for r in runners)


class Capped(Stub):
    """A runner that takes at most `cap` rows per call (a TensorRT profile's maximum)."""

    def __init__(self, name, out, cap):
        super().__init__(name, out)
        self.max_batch, self.sizes = cap, []

    def infer(self, images):
        assert len(images) <= self.max_batch
        self.sizes.append(len(images))
        return super().infer(images)


def test_batches_larger_than_a_runner_takes_are_split_and_rejoined():
    runners = [Capped("a", LOGITS[0] * 2, 3), Stub("b", LOGITS[1] * 2), Capped("c", LOGITS[2] * 2, 5)]
    ens = Ensemble(runners, ["a", "b", "c"], TEMPS)
    assert ens.max_batch == 3 and ens.info["max_batch"] == 3
    with ens:
        s = ens.infer(np.arange(8))
    assert runners[0].sizes == runners[2].sizes == [3, 3, 2] and runners[1].calls == 3
    score, std, members = _by_hand_mean([z * 2 for z in LOGITS], TEMPS)
    np.testing.assert_allclose(s.score, score, rtol=1e-6)
    np.testing.assert_allclose(s.score_std, std, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(s.members, members, rtol=1e-6)
    assert Ensemble([Stub("x", [0.0])], ["x"], [1.0]).max_batch is None


class Async(Stub):
    """A runner that enqueues (infer_async) and is waited on later (collect), logging both."""
    asynchronous = True

    def __init__(self, name, out, log):
        super().__init__(name, out)
        self.log = log

    def infer_async(self, images):
        self.log.append(("enqueue", self.name))
        return ("handle", images)

    def collect(self, handle):
        self.log.append(("collect", self.name))
        return self.infer(handle[1])


def test_streams_enqueue_every_member_before_waiting_on_any():
    log: list = []
    runners = [Async("a", LOGITS[0], log), Async("b", LOGITS[1], log)]
    with Ensemble(runners, ["a", "b"], TEMPS[:2], concurrency="streams") as ens:
        assert ens._pool is None   # every member is asynchronous: no threads needed
        s = ens.infer(ROWS)
    assert log == [("enqueue", "a"), ("enqueue", "b"), ("collect", "a"), ("collect", "b")]
    np.testing.assert_allclose(s.score, _by_hand_mean(LOGITS[:2], TEMPS[:2])[0], rtol=1e-6)
    # a member without a stream of its own (ONNX Runtime) runs in a thread beside the others
    mixed = Ensemble([Async("a", LOGITS[0], []), Stub("b", LOGITS[1])], ["a", "b"], TEMPS[:2], concurrency="streams")
    assert mixed._pool is not None
    with mixed:
        np.testing.assert_allclose(mixed.infer(ROWS).score, s.score, rtol=1e-12)
    assert Ensemble([Stub("a", [0.0])], ["a"], [1.0], concurrency="threads")._pool is None   # one member: no pool


class FakeUploader:
    made: list = []
    uploads: list = []

    def __init__(self, device):
        self.device = device
        FakeUploader.made.append(device)

    def __call__(self, images, consumers):
        FakeUploader.uploads.append(len(consumers))
        return np.array(images)   # "on the device": a copy with the same rows


@pytest.mark.parametrize("device,concurrency,streams,mc,n,want", [
    ("cuda:1", "streams", True, 0, 2, "cuda:1"), ("trt", "streams", True, 0, 2, "cuda"),
    ("cpu", "streams", True, 0, 2, None), ("cuda", "sequential", True, 0, 2, None),
    ("cuda", "streams", False, 0, 2, None), ("cuda", "streams", True, 4, 2, None), ("cuda", "streams", True, 0, 1, None),
])
def test_one_shared_upload_only_where_every_member_has_a_stream(monkeypatch, device, concurrency, streams, mc, n, want):
    import lenstrt.runtime.device as dev

    monkeypatch.setattr(dev, "Uploader", FakeUploader)
    FakeUploader.made, FakeUploader.uploads = [], []
    runners = [Async(f"m{j}", LOGITS[j], []) for j in range(n)]
    for r in runners:
        r.stream = object() if streams else None
    fusion = "mean"
    ens = Ensemble(runners, [r.name for r in runners], TEMPS[:n], fusion, concurrency, mc_samples=mc, device=device)
    with ens:
        assert ens.info["shared_upload"] is (want is not None) and FakeUploader.made == ([want] if want else [])
        if not mc:
            np.testing.assert_allclose(ens.infer(ROWS).score, _by_hand_mean(LOGITS[:n], TEMPS[:n])[0], rtol=1e-6)
            assert FakeUploader.uploads == ([n] if want else [])   # one copy per batch, for all members
