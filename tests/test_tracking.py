"""Experiment tracking (`--log`): one short run logs to every installed backend; each log is read back
with the library's own reader. W&B runs offline and MLflow writes a file store under tmp: nothing
reaches the network."""

import glob
import importlib.util
import json
from pathlib import Path

import pytest

from lenstrt.config import DataConfig, TrainingConfig
from lenstrt.errors import ConfigError
from lenstrt.train import tracking

INSTALLED = tuple(k for k in tracking.KINDS if importlib.util.find_spec(tracking._NEEDS[k][0]))


@pytest.fixture(scope="module")
def logged_run(sim_dir, tmp_path_factory):
    if not INSTALLED:
        pytest.skip("no tracking library installed (pip install 'lenstrt[track]')")
    from lenstrt.train.trainer import train

    out = tmp_path_factory.mktemp("tracked")
    mp = pytest.MonkeyPatch()
    mp.setenv("WANDB_MODE", "offline")
    mp.setenv("WANDB_SILENT", "true")
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    mp.setenv("MLFLOW_ALLOW_FILE_STORE", "")  # the trainer opts in itself; undo() then restores the original
    try:
        cfg = TrainingConfig(arch=("vit_tiny",), max_steps=4, batch_size=8, val_every=2, warmup_steps=1, amp=False,
                             log=INSTALLED)
        train(cfg, DataConfig(), [str(sim_dir)], out, device="cpu", progress=False)
    finally:
        mp.undo()
    return out


def test_missing_library_is_one_line_with_the_pip_command(monkeypatch):
    real = tracking.importlib.util.find_spec
    monkeypatch.setattr(tracking.importlib.util, "find_spec", lambda name: None if name == "wandb" else real(name))
    with pytest.raises(ConfigError, match=r"pip install wandb") as e:
        tracking.check_available(("wandb",))
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="unknown tracker"):
        tracking.check_available(("neptune",))


def test_cli_reports_a_missing_tracker(sim_dir, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from lenstrt.cli.main import cli

    monkeypatch.setattr(tracking.importlib.util, "find_spec", lambda name: None)
    res = CliRunner().invoke(cli, ["train", "--data", str(sim_dir), "--log", "mlflow", "--out", str(tmp_path / "r"),
                                   "-q"])
    assert res.exit_code == 1 and "pip install mlflow-skinny" in res.output
    assert not (tmp_path / "r" / "ensemble.json").exists()


def test_tensorboard_events_read_back(logged_run):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logged_run / "vit_tiny-s0" / "tb"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    tags = acc.Tags()
    for tag in ("train/loss", "train/lr", "val/auc", "val/loss", "calibrated/roc_auc", "calibrated/temperature"):
        assert tag in tags["scalars"], tag
    assert [e.step for e in acc.Scalars("val/auc")] == [2, 4, 4]
    assert {"val/roc", "val/reliability"} <= set(tags["images"])
    text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert json.loads(text.strip("`\n"))["training"]["max_steps"] == 4


def _wandb_records(path: Path):
    """The records of an offline run's .wandb file (LevelDB log format: 32 KiB blocks of records with a
    7-byte header crc32/length/type, after a 7-byte file header), parsed with W&B's own protobuf."""
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    data, block, pos, buf, out = path.read_bytes(), 32768, 7, b"", []
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pos += 7
        buf += data[pos:pos + n]
        pos += n
        if kind in (1, 4):  # FULL or LAST
            rec = pb.Record()
            rec.ParseFromString(buf)
            out.append(rec)
            buf = b""
    return out


def test_wandb_offline_run_reads_back(logged_run):
    pytest.importorskip("wandb")
    runs = glob.glob(str(logged_run / "vit_tiny-s0" / "wandb" / "offline-run-*"))
    assert len(runs) == 1
    recs = _wandb_records(next(Path(runs[0]).glob("run-*.wandb")))
    run = next(r.run for r in recs if r.WhichOneof("record_type") == "run")
    assert run.display_name == "vit_tiny-s0"
    config = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in run.config.update}
    assert config["training"]["max_steps"] == 4 and config["world_size"] == 1
    history = [{i.key or "/".join(i.nested_key): i.value_json for i in r.history.item}
               for r in recs if r.WhichOneof("record_type") == "history"]
    assert [int(h["_step"]) for h in history if "val/auc" in h] == [2, 4]
    assert any("train/loss" in h for h in history) and any("calibrated/roc_auc" in h for h in history)
    assert list((Path(runs[0]) / "files" / "media" / "images").rglob("*.png"))


def test_mlflow_file_store_reads_back(logged_run, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient((logged_run / "mlruns").resolve().as_uri())
    exp = client.get_experiment_by_name("lenstrt")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.run_name == "vit_tiny-s0" and run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/auc")] == [2, 4, 4]
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) >= 1
    assert run.data.params["training.max_steps"] == "4"
    assert "calibrated/roc_auc" in run.data.metrics
    names = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert names == {"plots/val_roc.png", "plots/val_reliability.png"}
