import json
import os
from dataclasses import replace

import numpy as np
import pytest
import torch

from lenstrt import checkpoint as ck
from lenstrt.config import DataConfig, TrainingConfig
from lenstrt.train.hardware import choose_precision
from lenstrt.train.trainer import Trainer, load_training_data, predict_logits, split


def test_training_lowers_the_loss(sim_dir, run_dir):
    data = load_training_data([str(sim_dir)])
    c = ck.load(run_dir / "resnet18-s0" / "best.pt")
    trained = ck.build_model(c)
    torch.manual_seed(0)
    from lenstrt.models import create_model

    fresh = create_model("resnet18", 3, 64, **c["arch_kwargs"]).eval()
    y = data.labels.astype(np.float64)

    def bce(model):
        z = predict_logits(model, data.images, "cpu")
        return float(np.mean(np.logaddexp(0, z) - y * z))

    assert bce(trained) < 0.9 * bce(fresh)


def test_checkpoint_round_trip_and_contents(sim_dir, run_dir):
    manifest = json.loads((run_dir / "ensemble.json").read_text())
    assert [m["name"] for m in manifest["members"]] == ["resnet18-s0", "vit_tiny-s1000"]
    assert ck.resolve(run_dir) == [run_dir / "resnet18-s0/best.pt", run_dir / "vit_tiny-s1000/best.pt"]
    c = torch.load(run_dir / "resnet18-s0" / "best.pt", weights_only=True)
    for key in ("arch", "arch_kwargs", "bands", "image_size", "survey", "preprocess", "temperature", "metrics",
                "config", "seed", "versions", "data_hash"):
        assert key in c, key
    assert c["bands"] == ["g", "r", "i"] and c["survey"] == "lsst-gri" and c["temperature"] > 0
    # where it trained: a time budget's step count depends on the machine
    assert c["host"] == manifest["host"] and c["host"]["cpu_cores"] == os.cpu_count()
    assert c["host"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability() and "gpu" not in c["host"]
    # the metrics are those of the calibrated validation split, recomputed here with scikit-learn
    from sklearn.metrics import roc_auc_score

    _, va = split(load_training_data([str(sim_dir)]), c["config"]["val_fraction"], c["config"]["seed"])
    p = 1 / (1 + np.exp(-predict_logits(ck.build_model(c), va.images, "cpu").astype(np.float64) / c["temperature"]))
    assert c["metrics"]["n"] == len(va.labels) > 0 and c["metrics"]["n_lenses"] == int(va.labels.sum())
    assert c["metrics"]["roc_auc"] == pytest.approx(roc_auc_score(va.labels, p), abs=1e-9)
    # the AUC cannot tell calibrated from raw probabilities; the ECE (15 equal-width bins) can
    bins = np.minimum((p * 15).astype(int), 14)
    ece = sum(np.sum(bins == b) / len(p) * abs(p[bins == b].mean() - va.labels[bins == b].mean())
              for b in range(15) if np.any(bins == b))
    assert c["metrics"]["ece"] == pytest.approx(ece, abs=1e-6)  # float32 vs float64 probabilities at bin edges
    m1, m2 = ck.build_model(c), ck.build_model(ck.load(run_dir / "resnet18-s0" / "best.pt"))
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(m1(x), m2(x))


def test_resume_continues_exactly(sim_dir, tmp_path):
    cfg = TrainingConfig(arch=("vit_tiny",), max_steps=6, batch_size=8, val_every=3, warmup_steps=2, amp=False)
    data = load_training_data([str(sim_dir)])
    tr, va = split(data, 0.2, 0)
    t = Trainer(cfg, DataConfig(), "cpu", progress=False)
    t.train_member("vit_tiny", 5, tr, va, tmp_path / "a")
    t.train_member("vit_tiny", 5, tr, va, tmp_path / "b", _stop_at_step=3)  # "crash" after step 3
    assert ck.load(tmp_path / "b" / "last.pt")["step"] == 3
    t.train_member("vit_tiny", 5, tr, va, tmp_path / "b", resume=True)
    a, b = ck.load(tmp_path / "a" / "last.pt"), ck.load(tmp_path / "b" / "last.pt")
    assert a["step"] == b["step"] == 6
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k


def test_precision_choice():
    assert choose_precision(TrainingConfig(amp=False), "cpu").dtype == "float32"
    assert choose_precision(TrainingConfig(amp=True), "cpu").dtype == "bfloat16"
    p = choose_precision(TrainingConfig(), "cuda")
    assert p.dtype == "float16" and p.grad_scaler
    assert choose_precision(TrainingConfig(amp_dtype="bf16"), "cuda").dtype == "bfloat16"


def test_evaluate_writes_metrics_and_plots(sim_dir, run_dir, tmp_path):
    from click.testing import CliRunner

    from lenstrt.cli.main import cli
    from lenstrt.data.readers import load_all

    res = CliRunner().invoke(cli, ["evaluate", "--checkpoint", str(run_dir), "--data", str(sim_dir),
                                   "--out", str(tmp_path / "ev"), "-q"])
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["label"] == "ensemble" and set(m["members"]) == {"resnet18-s0", "vit_tiny-s1000"}
    for key in ("roc_auc", "tpr_at_fpr_1e-2", "tpr_at_fpr_1e-3", "tpr0", "tpr10", "ece"):
        assert key in m["ensemble"]
    kinds = set(load_all(str(sim_dir), extra=("kind",))["kind"].astype(str)) - {"lens"}
    assert kinds == {"galaxy", "companion"} and set(m["false_positive_rate_by_kind"]["p>0.5"]) == kinds
    assert set(m["negatives"]) == kinds and (tmp_path / "ev" / "report.md").is_file()
    assert "completeness_vs_theta_e" in m
    c = ck.load(run_dir / "resnet18-s0" / "best.pt")
    assert m["training"]["resnet18-s0"] == {"steps": c["metrics"]["train_steps"], "seconds": c["metrics"]["train_time_s"],
                                           "images_seen": c["metrics"]["images_seen"], "host": c["host"]}
    assert f"training of resnet18-s0: {c['metrics']['train_steps']:,} steps" in (tmp_path / "ev" / "report.md").read_text()
    for name in ("roc", "reliability", "completeness_theta_e", "completeness_arc_snr", "top_non_lenses"):
        p = tmp_path / "ev" / f"{name}.png"
        assert p.is_file() and p.read_bytes()[:4] == b"\x89PNG"


def test_train_cli_rejects_bad_data(tmp_path):
    from click.testing import CliRunner

    from lenstrt.cli.main import cli

    np.save(tmp_path / "x.npy", np.zeros((4, 3, 64, 64), np.float32))
    res = CliRunner().invoke(cli, ["train", "--data", str(tmp_path / "x.npy"), "--out", str(tmp_path / "r"), "-q"])
    assert res.exit_code == 1 and "no 'labels'" in res.output and "x.npy" in res.output


def test_training_on_the_fly_simulation(sim_dir, tmp_path):
    from lenstrt.config import DataConfig, TrainingConfig
    from lenstrt.train.trainer import train

    cfg = TrainingConfig(arch=("vit_tiny",), max_steps=4, batch_size=8, val_every=2, warmup_steps=1)
    m = train(cfg, DataConfig(simulate_on_the_fly=True, num_workers=1, survey="lsst-gri-survey"), [str(sim_dir)],
              tmp_path, device="cpu", progress=False)
    assert m["loader"]["num_workers"] == 1 and m["members"][0]["metrics"]["train_steps"] == 4
    assert (tmp_path / "vit_tiny-s0" / "best.pt").is_file()
    # the checkpoint records the preset the batches came from, not the validation files'
    c = ck.load(tmp_path / "vit_tiny-s0" / "best.pt")
    assert m["data"]["survey"] == c["survey"] == "lsst-gri-survey" and c["pixel_scale"] == 0.2
    from lenstrt.errors import ConfigError

    with pytest.raises(ConfigError, match="bands g,r,i, but --simulate-on-the-fly draws euclid-vis's VIS"):
        train(cfg, DataConfig(simulate_on_the_fly=True, survey="euclid-vis"), [str(sim_dir)], tmp_path / "e",
              device="cpu", progress=False)


def test_init_starts_from_the_checkpoints_weights(sim_dir, run_dir, tmp_path):
    import hashlib

    from lenstrt.train.trainer import train

    # lr 0: the weights cannot move, so a warm-started run ends exactly where --init left off
    cfg = TrainingConfig(arch=("vit_tiny",), max_steps=2, batch_size=8, val_every=2, lr=0.0, init=str(run_dir))
    manifest = train(cfg, DataConfig(), [str(sim_dir)], tmp_path / "ft", device="cpu", progress=False)
    src_path = (run_dir / "vit_tiny-s1000" / "best.pt").resolve()
    rec = manifest["init"][0]
    assert rec["path"] == str(src_path) and rec["sha256"] == hashlib.sha256(src_path.read_bytes()).hexdigest()
    src = ck.load(src_path)
    got = ck.load(tmp_path / "ft" / "vit_tiny-s0" / "best.pt")
    assert got["init"] == rec and got["config"]["init"] == str(run_dir) and rec["step"] == src["step"]
    assert got["step"] == 2 and got["history"][0]["step"] == 0  # a fresh count, from the source validated
    for k in src["state_dict"]:
        assert torch.equal(src["state_dict"][k], got["state_dict"][k]), k
    # without --init the same run starts from random weights
    fresh = train(replace(cfg, init=None), DataConfig(), [str(sim_dir)], tmp_path / "fresh", device="cpu",
                  progress=False)
    assert fresh["init"] is None
    other = ck.load(tmp_path / "fresh" / "vit_tiny-s0" / "best.pt")
    assert other["init"] is None and not all(torch.equal(src["state_dict"][k], other["state_dict"][k]) for k in src["state_dict"])


def test_init_sources_per_member(run_dir):
    from lenstrt.errors import ConfigError
    from lenstrt.train import init as winit

    r, v = (str((run_dir / f"{m}/best.pt").resolve()) for m in ("resnet18-s0", "vit_tiny-s1000"))
    plan = [("resnet18", 0), ("resnet18", 1), ("vit_tiny", 1000)]
    metas, notes = winit.resolve(str(run_dir), plan)
    assert [m["path"] for m in metas] == [r, r, v] and "state_dict" not in metas[0]
    assert notes == [f"--init {run_dir}: 2 resnet18 member(s) share 1 checkpoint(s): some start from the same weights"]
    metas, notes = winit.resolve(r, [("resnet18", 5)])  # a single checkpoint file
    assert [m["path"] for m in metas] == [r] and notes == []
    with pytest.raises(ConfigError, match="holds no mobilenet_v3_small checkpoint.*resnet18, vit_tiny"):
        winit.resolve(str(run_dir), [("mobilenet_v3_small", 0)])


def test_init_mismatches_are_one_config_error(sim_dir, run_dir, tmp_path):
    import hashlib
    import os

    from lenstrt.errors import ConfigError
    from lenstrt.models import create_model
    from lenstrt.models.preprocess import PREPROCESS_SPEC
    from lenstrt.train import init as winit
    from lenstrt.train.trainer import train

    data = load_training_data([str(sim_dir)])
    (meta,), _ = winit.resolve(str(run_dir), [("resnet18", 0)])
    kw = dict(meta["arch_kwargs"])
    assert winit.check(meta, "resnet18", {**kw, "dropout": 0.3}, data, PREPROCESS_SPEC) == []  # weightless: fine
    with pytest.raises(ConfigError, match="bands g,r at 64 px, the data are g,r,i at 64 px"):
        winit.check({**meta, "bands": ["g", "r"]}, "resnet18", kw, data, PREPROCESS_SPEC)
    with pytest.raises(ConfigError, match="built otherwise \\(keep_stem_resolution: True there, False here\\)"):
        winit.check(meta, "resnet18", {**kw, "keep_stem_resolution": False}, data, PREPROCESS_SPEC)
    with pytest.raises(ConfigError, match="its preprocessing"):
        winit.check({**meta, "preprocess": {**meta["preprocess"], "frame": 2}}, "resnet18", kw, data, PREPROCESS_SPEC)
    assert winit.check({**meta, "survey": "euclid-vis", "pixel_scale": 0.1}, "resnet18", kw, data,
                       PREPROCESS_SPEC) == [f"--init {meta['path']}: trained on euclid-vis (0.1\"/px), fine-tuning on "
                                            "lsst-gri (0.2\"/px)"]
    c = ck.load(meta["path"])
    part = ck.save(tmp_path / "part.pt", {**c, "state_dict": {k: v for k, v in c["state_dict"].items()
                                                             if not k.startswith("backbone.fc")}})
    model = create_model("resnet18", 3, 64, **kw)
    winit.check_fit(model, meta)  # from the shapes resolve kept: no second read of the source
    with pytest.raises(ConfigError, match="weights do not fit this config's model \\(2 tensor\\(s\\) missing"):
        winit.check_fit(model, {**meta, "shapes": {k: v for k, v in meta["shapes"].items() if "fc" not in k}})
    with pytest.raises(ConfigError, match="part.pt: changed since this run checked it"):
        winit.load_weights(model, {**meta, "path": str(part)})  # the bytes checked were the source's
    with pytest.raises(ConfigError, match="part.pt: its resnet18 weights do not fit"):
        winit.load_weights(model, {**meta, "path": str(part), "sha256": hashlib.sha256(part.read_bytes()).hexdigest()})
    # an ensemble's second member that cannot start fails before the first one trains
    src = tmp_path / "src"
    for m in ("resnet18-s0", "vit_tiny-s1000"):
        c = ck.load(run_dir / m / "best.pt")
        ck.save(src / m / "best.pt", {**c, "bands": ["g", "r", "z"]} if m.startswith("vit") else c)
    cfg = TrainingConfig(arch=("resnet18", "vit_tiny"), max_steps=1, batch_size=8, init=str(src))
    with pytest.raises(ConfigError, match="vit_tiny-s1000/best.pt: trained on bands g,r,z"):
        train(cfg, DataConfig(), [str(sim_dir)], tmp_path / "ens", device="cpu", progress=False)
    assert not (tmp_path / "ens" / "resnet18-s0").exists()
    with pytest.raises(ConfigError, match="init 5"):
        TrainingConfig(init=5)  # type: ignore[arg-type]
    assert TrainingConfig(init=tmp_path).init == os.fspath(tmp_path)


def test_resume_continues_the_members_own_lineage(sim_dir, run_dir, tmp_path):
    import shutil

    from lenstrt.errors import ConfigError
    from lenstrt.train import init as winit

    cfg = TrainingConfig(arch=("vit_tiny",), max_steps=4, batch_size=8, val_every=2, amp=False)
    tr, va = split(load_training_data([str(sim_dir)]), 0.2, 0)
    t = Trainer(cfg, DataConfig(), "cpu", progress=False)
    shutil.copy(run_dir / "vit_tiny-s1000" / "best.pt", tmp_path / "src.pt")
    (meta,), _ = winit.resolve(str(tmp_path / "src.pt"), [("vit_tiny", 3)])
    t.train_member("vit_tiny", 3, tr, va, tmp_path / "b", _stop_at_step=2, init=meta)  # "crash" after step 2
    t.train_member("vit_tiny", 3, tr, va, tmp_path / "a", init=meta)                   # uninterrupted
    (tmp_path / "src.pt").write_bytes(b"moved away")  # the resume must not read the source again
    t.train_member("vit_tiny", 3, tr, va, tmp_path / "b", resume=True, init=meta)
    a, b = ck.load(tmp_path / "a" / "last.pt"), ck.load(tmp_path / "b" / "last.pt")
    assert b["step"] == 4 and b["init"] == winit.record(meta)
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    with pytest.raises(ConfigError, match="started from --init .*src.pt; resume with that --init"):
        t.train_member("vit_tiny", 3, tr, va, tmp_path / "b", resume=True)
    t.train_member("vit_tiny", 3, tr, va, tmp_path / "c", _stop_at_step=2)
    with pytest.raises(ConfigError, match="started from random weights; resume without --init"):
        t.train_member("vit_tiny", 3, tr, va, tmp_path / "c", resume=True, init=meta)


def test_resume_of_a_warm_started_run_needs_no_source(sim_dir, run_dir, tmp_path):
    import shutil

    from lenstrt.errors import ConfigError
    from lenstrt.train.trainer import train

    src = tmp_path / "src" / "vit_tiny-s1000" / "best.pt"
    src.parent.mkdir(parents=True)
    shutil.copy(run_dir / "vit_tiny-s1000" / "best.pt", src)
    cfg = TrainingConfig(arch=("vit_tiny",), max_steps=2, batch_size=8, val_every=2, init=str(tmp_path / "src"))
    first = train(cfg, DataConfig(), [str(sim_dir)], tmp_path / "r", device="cpu", progress=False)
    shutil.rmtree(tmp_path / "src")  # moved away after the run
    again = train(cfg, DataConfig(), [str(sim_dir)], tmp_path / "r", device="cpu", resume=True, progress=False)
    assert again["init"] == first["init"] and first["init"][0]["path"] == str(src.resolve())
    with pytest.raises(ConfigError, match="vit_tiny-s0/last.pt: this member started from --init .*; resume with"):
        train(replace(cfg, init=None), DataConfig(), [str(sim_dir)], tmp_path / "r", device="cpu", resume=True,
              progress=False)
    with pytest.raises(ConfigError, match="src not found|no ensemble.json or best.pt"):
        train(cfg, DataConfig(), [str(sim_dir)], tmp_path / "new", device="cpu", progress=False)


def test_warm_start_keeps_the_source_when_training_only_gets_worse(sim_dir, run_dir, tmp_path, monkeypatch):
    from lenstrt.train import init as winit

    aucs = iter([0.9] + [0.2] * 10)  # the source validates best; every later validation is worse
    monkeypatch.setattr(Trainer, "_validate", lambda self, model, val, amp: (next(aucs), 1.0))
    cfg = TrainingConfig(arch=("vit_tiny",), max_steps=4, batch_size=8, val_every=2, lr=1e-2, amp=False)
    tr, va = split(load_training_data([str(sim_dir)]), 0.2, 0)
    (meta,), _ = winit.resolve(str(run_dir), [("vit_tiny", 3)])
    Trainer(cfg, DataConfig(), "cpu", progress=False).train_member("vit_tiny", 3, tr, va, tmp_path / "w", init=meta)
    best, last = ck.load(tmp_path / "w" / "best.pt"), ck.load(tmp_path / "w" / "last.pt")
    src = ck.load(meta["path"])["state_dict"]
    assert best["step"] == 0 and last["step"] == 4 and best["init"] == winit.record(meta)
    assert all(torch.equal(src[k], best["state_dict"][k]) for k in src)
    assert not all(torch.equal(src[k], last["state_dict"][k]) for k in src)  # it did train
