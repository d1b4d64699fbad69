"""Served scores of the good model, recomputed another way.

Member logits come straight from an onnxruntime.InferenceSession on the member's ONNX file (or from
PyTorch on its checkpoint), not through lenstrt's runners; the temperature is the one in the bundle
manifest; fusion, spread and the prevalence correction are the formulas written out here.
"""

from __future__ import annotations

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy.special import expit, logit
from sklearn.metrics import roc_auc_score

from lenstrt.bundle import Bundle
from lenstrt.serve.pipeline import ServeOptions, serve

MEMBERS = ["vit_tiny-s0", "vit_tiny-s1"]


def _quiet(*a):
    pass


def _catalog(out) -> pa.Table:
    """Parts in unit order: the order the rows were scored in."""
    return pa.concat_tables([pq.read_table(p) for p in sorted((out / "catalog").glob("part-*.parquet"))])


def _inputs(t: pa.Table):
    """The catalog rows' cutouts and labels, read from the input files."""
    images, labels = [], []
    for src, idx in zip(t.column("source").to_pylist(), t.column("index").to_pylist()):
        with h5py.File(src) as f:
            images.append(f["images"][idx])
            labels.append(int(f["labels"][idx]))
    return np.stack(images), np.array(labels)


def _ort_logits(bundle: Bundle, name: str, images: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    m = next(m for m in bundle.members if m.name == name)
    sess = ort.InferenceSession(str(bundle.root / m.entry["artifacts"]["onnx"]["path"]),
                                providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: images})[0][:, 0].astype(np.float64)


@pytest.fixture(scope="module")
def served(good_bundle_dir, good_test_dir, tmp_path_factory):
    outs = {}
    for name, opts in {"ort": ServeOptions(backend="ort", unit_rows=50, batch_size=16),
                       "fused": ServeOptions(backend="ort", fused=True, unit_rows=50, batch_size=16),
                       "torch": ServeOptions(backend="torch", unit_rows=50, batch_size=16),
                       "survey": ServeOptions(backend="ort", unit_rows=50, batch_size=16, prevalence=1e-3)}.items():
        out = tmp_path_factory.mktemp(f"good_{name}")
        serve(good_bundle_dir, [str(good_test_dir)], out, opts, progress=False, log=_quiet)
        outs[name] = _catalog(out)
    return outs


@pytest.fixture(scope="module")
def reference(served, good_bundle_dir):
    """Per row of the ort catalog: the cutouts, labels and each member's logit by onnxruntime directly."""
    b = Bundle(good_bundle_dir)
    images, labels = _inputs(served["ort"])
    return images, labels, {n: _ort_logits(b, n, images) for n in MEMBERS}, {m.name: m.temperature for m in b.members}


def test_served_score_is_the_mean_of_sigmoid_logit_over_t(served, reference):
    _, labels, logits, temps = reference
    t = served["ort"]
    p = np.stack([expit(logits[n] / temps[n]) for n in MEMBERS], 1)
    for j, n in enumerate(MEMBERS):
        np.testing.assert_allclose(t.column(f"score_{n}").to_numpy(), p[:, j], atol=2e-6, rtol=0, err_msg=n)
        # the temperature matters here: uncalibrated probabilities differ by much more than the tolerance
        assert np.abs(expit(logits[n]) - p[:, j]).max() > 1e-3
    np.testing.assert_allclose(t.column("score").to_numpy(), p.mean(1), atol=2e-6, rtol=0)
    np.testing.assert_allclose(t.column("score_std").to_numpy(), np.sqrt(((p - p.mean(1, keepdims=True)) ** 2).mean(1)),
                               atol=2e-6, rtol=0)
    assert roc_auc_score(labels, t.column("score").to_numpy()) > 0.95   # a working classifier, served


def test_torch_and_fused_serve_the_same_scores(served, reference):
    _, _, logits, temps = reference
    p = np.stack([expit(logits[n] / temps[n]) for n in MEMBERS], 1)
    for name in ("torch", "fused"):
        t = served[name]
        assert t.column("id").to_pylist() == served["ort"].column("id").to_pylist()
        np.testing.assert_allclose(t.column("score").to_numpy(), p.mean(1), atol=2e-5, rtol=0, err_msg=name)
        for j, n in enumerate(MEMBERS):
            np.testing.assert_allclose(t.column(f"score_{n}").to_numpy(), p[:, j], atol=2e-5, rtol=0, err_msg=name)


def test_score_survey_is_the_bayes_prevalence_correction(served, good_bundle_dir):
    b = Bundle(good_bundle_dir)
    train_frac = float(np.mean([m.entry["train_lens_fraction"] for m in b.members]))
    assert abs(train_frac - 0.5) > 0.1   # a correction that assumed 50% training lenses would show
    t = served["survey"]
    score = t.column("score").to_numpy().astype(np.float64)
    want = expit(logit(score) - logit(train_frac) + logit(1e-3))
    np.testing.assert_allclose(t.column("score_survey").to_numpy(), want, rtol=2e-5, atol=1e-12)
    np.testing.assert_array_equal(score, served["ort"].column("score").to_numpy())  # the score itself unchanged
    assert "score_survey" not in served["ort"].column_names


def test_mc_dropout_uncertainty_weighted_scores(good_bundle_dir, good_test_dir, tmp_path, monkeypatch):
    """Serve with MC dropout, recording each member's K x N dropout logits as the torch runner returns
    them; the catalog must hold the inverse-variance weighted mean computed from those samples here."""
    from lenstrt.runtime.torch import TorchRunner

    samples: dict[str, list[np.ndarray]] = {n: [] for n in MEMBERS}
    real = TorchRunner.infer_mc

    def recording(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        samples[self.name].append(np.array(out, np.float64, copy=True))
        return out

    monkeypatch.setattr(TorchRunner, "infer_mc", recording)
    s = serve(good_bundle_dir, [str(good_test_dir / "shard-00000.h5")], tmp_path,
              ServeOptions(backend="torch", mc_samples=6, fusion="uncertainty_weighted", batch_size=32),
              progress=False, log=_quiet)
    assert s["ensemble"]["mc_samples"] == 6 and s["ensemble"]["fusion"] == "uncertainty_weighted"
    temps = {m.name: m.temperature for m in Bundle(good_bundle_dir).members}
    t = _catalog(tmp_path)
    assert t.num_rows == 128
    mu, var = [], []
    for n in MEMBERS:
        z = np.concatenate(samples[n], axis=1)   # [K, N] in scoring order
        assert z.shape == (6, 128)
        q = expit(z / temps[n])
        mu.append(q.mean(0))
        var.append(q.var(0))
    mu, var = np.stack(mu, 1), np.stack(var, 1)
    w = 1.0 / (var + 1e-6)
    score = (w * mu).sum(1) / w.sum(1)
    std = np.sqrt((w * (mu - score[:, None]) ** 2).sum(1) / w.sum(1))
    for j, n in enumerate(MEMBERS):
        np.testing.assert_allclose(t.column(f"score_{n}").to_numpy(), mu[:, j], atol=2e-6, rtol=0)
    np.testing.assert_allclose(t.column("score").to_numpy(), score, atol=2e-6, rtol=0)
    np.testing.assert_allclose(t.column("score_std").to_numpy(), std, atol=2e-6, rtol=0)
    # dropout does vary the members here, and the weighting moves the score away from the plain mean
    assert var.max() > 1e-4 and np.abs(score - mu.mean(1)).max() > 1e-3
