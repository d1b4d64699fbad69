"""Test-time augmentation (lenstrt/runtime/tta.py): the 8 dihedral views, and the ensemble wrapper's
scores (every cutout, or the cascade above a gate) against sums worked out here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lenstrt.runtime.base import Runner
from lenstrt.runtime.ensemble import Ensemble
from lenstrt.runtime.tta import VIEWS, TTAEnsemble, view, views_mean
from lenstrt.serve.pipeline import catalog_columns


def _asym(n=3, c=2, h=5):
    return np.arange(n * c * h * h, dtype=np.float32).reshape(n, c, h, h) ** 1.5


def test_views_are_the_eight_dihedral_transforms():
    x = _asym()
    vs = [view(x, k) for k in range(VIEWS)]
    assert len({v.tobytes() for v in vs}) == 8                     # all different
    assert all(v.shape == x.shape and v.flags.c_contiguous for v in vs)
    for v in vs:                                                    # each moves pixels within a band only
        np.testing.assert_array_equal(np.sort(v.reshape(3, 2, -1)), np.sort(x.reshape(3, 2, -1)))
    np.testing.assert_array_equal(vs[1][..., 0, :], x[..., :, -1])  # 90 degrees: the top row was the right column
    np.testing.assert_array_equal(vs[4], x[..., ::-1])              # the flip alone
    for k in range(VIEWS):  # torch the same, and on the tensor's own device
        np.testing.assert_array_equal(view(torch.from_numpy(x), k).numpy(), vs[k])
    assert view(torch.empty(2, 3, 4, 4, device="meta"), 5).device.type == "meta"
    with pytest.raises(ValueError, match="8 dihedral views"):
        view(x, 8)


def _logit(x: np.ndarray) -> np.ndarray:
    """Depends on orientation: the top-left pixel of band 0 and its right-hand neighbour."""
    return (x[:, 0, 0, 0] - x[:, 0, 0, 1]) / 40.0


class Pixels(Runner):
    backend = "pixels"

    def __init__(self, name, scale):
        super().__init__(name)
        self.scale, self.calls = scale, 0

    def infer(self, images):
        self.calls += 1
        return (self.scale * _logit(np.asarray(images))).astype(np.float32)


def sig(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


TEMPS = [1.5, 0.7]
SCALES = [1.0, -0.5]


def _by_hand(x):
    """[N, M] member probabilities in one view and averaged over the 8; [N] the members' spread (population
    std) in one view and averaged over the 8."""
    def probs(i, k):
        return [sig(s * _logit(view(x[i:i + 1], k))[0] / t) for s, t in zip(SCALES, TEMPS)]

    def spread(p):
        m = sum(p) / len(p)
        return math.sqrt(sum((q - m) ** 2 for q in p) / len(p))

    one = np.array([probs(i, 0) for i in range(len(x))])
    eight = np.array([[sum(probs(i, k)[j] for k in range(8)) / 8 for j in range(len(SCALES))] for i in range(len(x))])
    std1 = np.array([spread(probs(i, 0)) for i in range(len(x))])
    std8 = np.array([sum(spread(probs(i, k)) for k in range(8)) / 8 for i in range(len(x))])
    return one, eight, std1, std8


def _ens():
    runners = [Pixels("a", SCALES[0]), Pixels("b", SCALES[1])]
    return runners, Ensemble(runners, ["a", "b"], TEMPS)


@pytest.mark.parametrize("gate", [None, "4th", 1.0])
def test_tta_scores_by_hand(gate):
    x = np.random.default_rng(0).normal(0, 30, (6, 2, 4, 4)).astype(np.float32)
    one, eight, std1, std8 = _by_hand(x)
    with _ens()[1] as plain:  # a gate equal to a first-pass score: that cutout is rescored (>=)
        fourth = float(np.sort(plain.infer(x).score)[3])
    above = {None: None, "4th": fourth, 1.0: 1.0}[gate]
    runners, inner = _ens()
    with TTAEnsemble(inner, above) as ens:
        s = ens.infer(x)
    hit = np.ones(6, bool) if above is None else one.mean(1) >= above - 1e-9
    want = np.where(hit[:, None], eight, one)
    np.testing.assert_allclose(s.members, want, rtol=1e-6)
    np.testing.assert_allclose(s.score, want.mean(1), rtol=1e-6)
    np.testing.assert_allclose(s.score_std, np.where(hit, std8, std1), rtol=1e-6)  # the mean of the views' spreads
    np.testing.assert_array_equal(s.views, np.where(hit, 8, 1))
    assert s.views.dtype == np.int8
    with TTAEnsemble(_ens()[1], above) as t:  # torch input (serve's pinned batches): the same scores
        np.testing.assert_allclose(t.infer(torch.from_numpy(x)).score, s.score, rtol=1e-6)
        t.infer(x)
        assert t.rescored == 2 * hit.sum()  # counted over batches
    assert ens.rescored == hit.sum() and ens.info["tta"] == {"views": 8, "above": above, "rescored": int(hit.sum())}
    assert all(r.calls == (8 if hit.any() else 1) for r in runners)  # the 7 other views only where needed
    if gate == "4th":
        assert hit.sum() == 3
    # every cutout: the score no longer depends on the orientation it was observed in
    if above is None:
        with TTAEnsemble(_ens()[1]) as ens:
            np.testing.assert_allclose(ens.infer(view(x, 3)).score, s.score, rtol=1e-6)
        assert not np.allclose(one.mean(1), _by_hand(view(x, 3))[0].mean(1))  # one view does


def test_views_mean_and_the_catalog_column():
    x = _asym()
    got = views_mean(lambda v: v[:, 0, 0, 0], x)
    np.testing.assert_allclose(got, np.mean([view(x, k)[:, 0, 0, 0] for k in range(8)], axis=0))
    assert got.dtype == np.float64
    with TTAEnsemble(_ens()[1], above=0.0) as ens:
        s = ens.infer(x)

    class B:  # a serve batch: what catalog_columns reads
        ids, source, index, flags, columns = ["p", "q", "r"], "f.h5", np.arange(3), np.zeros(3), {}

        def __len__(self):
            return 3

    cols = catalog_columns([(B(), s)], ["a", "b"], "tag")
    assert cols["tta_views"].dtype == np.int8 and list(cols["tta_views"]) == [8, 8, 8]
    s.views = None
    assert "tta_views" not in catalog_columns([(B(), s)], ["a", "b"], "tag")
    with pytest.raises(ValueError, match="probability"):
        TTAEnsemble(_ens()[1], above=1.5)
