"""Streaming training data (lenstrt/train/stream.py): disjoint parts per rank and worker, reproducible
epochs, exact resume, the pixels of the rows the plan names, and the in-memory / streamed choice."""

import json

import numpy as np
import pytest
import torch

from lenstrt import checkpoint as ck
from lenstrt.config import DataConfig, TrainingConfig
from lenstrt.train import stream as st


@pytest.fixture(scope="module")
def index(sim_dir):
    return st.build_index([str(sim_dir)], 0.2, 0, None, chunk=16)


def _take(ds, n, workers=0):
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers,
                                         generator=torch.Generator().manual_seed(0))
    out = []
    for x, y in loader:
        out.append((x, y))
        if len(out) == n:
            break
    return out


def test_validation_rows_are_the_in_memory_split(sim_dir, index):
    from lenstrt.train.trainer import load_training_data, split

    _, va = split(load_training_data([str(sim_dir)]), 0.2, 0)
    vx, vy = st.read_rows(index, np.flatnonzero(index.is_val))
    np.testing.assert_array_equal(vx, va.images)
    np.testing.assert_array_equal(vy, va.labels)
    assert index.n_train == 96 - len(vy)


def test_ranks_and_workers_read_disjoint_rows(index):
    seen = []
    for rank in range(2):
        ds = st.ShardStream(index, 4, seed=3, buffer=8, rank=rank, world_size=2)
        m = ds.batches_per_worker(0, 2)
        for w in range(2):
            order = ds.epoch_order(0, w, 2)
            assert len(order) == m * 4  # every worker of every rank: the same number of batches
            seen.append(order)
    allrows = np.concatenate(seen)
    assert len(np.unique(allrows)) == len(allrows)
    assert not index.is_val[allrows].any()
    # another epoch, another rank: another order
    ds0, ds1 = (st.ShardStream(index, 4, seed=3, buffer=8, rank=r, world_size=2) for r in (0, 1))
    assert not np.array_equal(ds0.epoch_order(0, 0, 1), ds0.epoch_order(1, 0, 1))
    assert set(ds0.epoch_order(0, 0, 1)).isdisjoint(ds1.epoch_order(0, 0, 1))


@pytest.mark.parametrize("open_files", [1, 32])
def test_batches_hold_the_planned_rows(sim_dir, index, monkeypatch, open_files):
    """Also with one shard open at a time (thousands of shards: the least recently used is closed)."""
    from lenstrt.data.readers import load_all

    monkeypatch.setattr(st, "OPEN_FILES", open_files)

    full = load_all([str(sim_dir)])
    ds = st.ShardStream(index, 8, seed=1, buffer=20)
    order = np.concatenate([ds.epoch_order(0, 0, 1), ds.epoch_order(1, 0, 1)])
    batches = _take(ds, len(order) // 8)
    x = torch.cat([b[0] for b in batches]).numpy()
    y = torch.cat([b[1] for b in batches]).numpy()
    np.testing.assert_array_equal(x, full["images"][order])
    np.testing.assert_array_equal(y, full["labels"][order])


@pytest.mark.parametrize("workers", [0, 2])
def test_a_resumed_stream_continues_exactly(index, workers):
    full = _take(st.ShardStream(index, 8, seed=2, buffer=16), 17, workers)
    for start in (5, 9):  # mid-epoch and past an epoch boundary (8 batches per epoch here)
        rest = _take(st.ShardStream(index, 8, seed=2, buffer=16, start_step=start), 17 - start, workers)
        for (xa, ya), (xb, yb) in zip(full[start:], rest):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_shuffle_buffer_is_a_permutation():
    rng = np.random.default_rng(0)
    rows = np.arange(1000)
    out = st.shuffle_buffer_order(rows, 64, rng)
    assert sorted(out.tolist()) == rows.tolist() and not np.array_equal(out, rows)


def test_memory_choice(sim_dir, monkeypatch):
    assert st.choose_streaming([str(sim_dir)], True)[0] is True
    assert st.choose_streaming([str(sim_dir)], False)[0] is False
    monkeypatch.setattr(st, "available_memory", lambda: 10**12)
    stream, why = st.choose_streaming([str(sim_dir)], None)
    assert not stream and "fits" in why
    monkeypatch.setattr(st, "available_memory", lambda: 10**6)
    stream, why = st.choose_streaming([str(sim_dir)], None)
    assert stream and "would not fit" in why


def test_streamed_training_resumes_exactly(sim_dir, tmp_path):
    from lenstrt.train.trainer import Trainer, load_streamed_data

    cfg = TrainingConfig(arch=("vit_tiny",), max_steps=6, batch_size=8, val_every=3, warmup_steps=2, amp=False,
                         val_fraction=0.2)
    dcfg = DataConfig(stream=True, num_workers=1, shuffle_buffer=16, stream_chunk=16)
    tr, va = load_streamed_data([str(sim_dir)], cfg, dcfg)
    t = Trainer(cfg, dcfg, "cpu", progress=False)
    t.train_member("vit_tiny", 5, tr, va, tmp_path / "a")
    t.train_member("vit_tiny", 5, tr, va, tmp_path / "b", _stop_at_step=3)  # "crash" after step 3
    t.train_member("vit_tiny", 5, tr, va, tmp_path / "b", resume=True)
    a, b = ck.load(tmp_path / "a" / "last.pt"), ck.load(tmp_path / "b" / "last.pt")
    assert a["step"] == b["step"] == 6
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k


def test_train_cli_streams(sim_dir, tmp_path):
    from click.testing import CliRunner

    from lenstrt.cli.main import cli

    res = CliRunner().invoke(cli, ["train", "--data", str(sim_dir), "--arch", "vit_tiny", "--max-steps", "3",
                                   "--batch-size", "8", "--val-every", "3", "--stream", "--workers", "0",
                                   "--out", str(tmp_path / "r"), "-q"])
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "r" / "ensemble.json").read_text())
    assert m["data"]["streamed"] is True and "--stream" in m["data"]["why"]
    assert m["data"]["n_train"] + m["data"]["n_val"] == 96
    assert "data: streamed" in res.output


def test_shard_attributes_as_the_readers_parse_them(tmp_path):
    """Bands stored as a JSON string or as an HDF5 string array (both written by other tools)."""
    import h5py

    for k, bands in enumerate(('["g", "r", "i"]', np.array([b"g", b"r", b"i"]))):
        p = tmp_path / f"s{k}.h5"
        with h5py.File(p, "w") as f:
            f.create_dataset("images", data=np.zeros((2, 3, 8, 8), np.float32))
            f.attrs["bands"], f.attrs["survey"], f.attrs["pixel_scale"] = bands, "lsst-gri", 0.2
        assert st.bands_survey_scale(str(p)) == (["g", "r", "i"], "lsst-gri", pytest.approx(0.2))
