"""`catalog_columns`, the contract of a catalog part, against a table written out by hand: every column's
name, order, dtype and values for a unit read in two batches, with and without a survey prevalence, and
input columns that collide with ours. `make mutation` runs this for `catalog_columns`; the end-to-end
serve tests cover it too but are too slow to run per mutant."""

from __future__ import annotations

import numpy as np
import pytest

from lenstrt.data.readers import Batch
from lenstrt.runtime.ensemble import Scores
from lenstrt.serve.pipeline import catalog_columns


def _parts():
    b1 = Batch(np.zeros((2, 1, 2, 2), np.float32), ["a", "b"], "/data/s0.h5", np.array([4, 5]),
               np.array([0, 1], np.int32), columns={"ra": np.array([10.0, 10.5]), "score": np.array([7, 8])})
    b2 = Batch(np.zeros((1, 1, 2, 2), np.float32), ["c"], "/data/s0.h5", np.array([6]), np.array([4], np.int32),
               columns={"ra": np.array([11.0]), "score": np.array([9])})
    s1 = Scores(np.array([0.9, 0.2]), np.array([0.05, 0.1]), np.array([[0.95, 0.85], [0.1, 0.3]]))
    s2 = Scores(np.array([0.5]), np.array([0.0]), np.array([[0.5, 0.5]]))
    return [(b1, s1), (b2, s2)]


def test_columns_by_hand():
    cols = catalog_columns(_parts(), ["resnet18-s0", "vit-s1"], "abc123")
    assert list(cols) == ["id", "source", "index", "score", "score_std", "score_resnet18-s0", "score_vit-s1", "flags",
                          "bundle", "ra", "input_score"]
    assert cols["id"] == ["a", "b", "c"]
    assert cols["source"] == ["/data/s0.h5"] * 3
    assert cols["bundle"] == ["abc123"] * 3
    np.testing.assert_array_equal(cols["index"], [4, 5, 6])
    expect = {"score": [0.9, 0.2, 0.5], "score_std": [0.05, 0.1, 0.0], "score_resnet18-s0": [0.95, 0.1, 0.5],
              "score_vit-s1": [0.85, 0.3, 0.5]}
    for k, v in expect.items():
        assert cols[k].dtype == np.float32, k  # the catalog stores float32 (half the bytes of float64)
        np.testing.assert_array_equal(cols[k], np.float32(v))
    assert cols["flags"].dtype == np.int32
    np.testing.assert_array_equal(cols["flags"], [0, 1, 4])
    np.testing.assert_array_equal(cols["ra"], [10.0, 10.5, 11.0])
    np.testing.assert_array_equal(cols["input_score"], [7, 8, 9])  # an input column named like ours is kept
    assert "score_survey" not in cols


@pytest.mark.parametrize("train_frac", [0.5, 0.35])
def test_score_survey_is_bayes_at_the_training_fraction(train_frac):
    pi = 4e-3  # not prevalence_correct's default, so a dropped argument shows
    cols = catalog_columns(_parts(), ["resnet18-s0", "vit-s1"], "abc123", prevalence=pi, train_frac=train_frac)
    p = np.array([0.9, 0.2, 0.5])
    # odds times the ratio of prior odds, written out
    odds = p / (1 - p) * (pi / (1 - pi)) / (train_frac / (1 - train_frac))
    assert cols["score_survey"].dtype == np.float32
    np.testing.assert_allclose(cols["score_survey"], odds / (1 + odds), rtol=1e-6)
    assert list(cols).index("score_survey") == list(cols).index("bundle") + 1  # ours first, inputs after


def test_default_training_fraction_is_one_half():
    a = catalog_columns(_parts(), ["m0", "m1"], "t", prevalence=0.01)
    b = catalog_columns(_parts(), ["m0", "m1"], "t", prevalence=0.01, train_frac=0.5)
    np.testing.assert_array_equal(a["score_survey"], b["score_survey"])
