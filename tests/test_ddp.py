"""DistributedDataParallel on this machine's CPUs: two gloo ranks started by torchrun (the real launcher,
as a user starts it). Each launch pays two interpreter + torch start-ups, so the ranks do all their
checks in one script; the single-process twin runs in the test process."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from lenstrt import checkpoint as ck
from lenstrt.config import DataConfig, TrainingConfig

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
# Dropout off: the ranks draw distinct dropout masks by design, so only then can two processes with a
# batch of 4 each match one process with a batch of 8 to float tolerance.
CFG = dict(arch=("vit_tiny",), max_steps=4, batch_size=4, val_every=2, warmup_steps=1, amp=False, dropout=0.0,
           val_fraction=0.2, ddp_timeout_s=60)

RANKS = textwrap.dedent("""
    import sys
    from pathlib import Path

    import torch

    from lenstrt.config import DataConfig, TrainingConfig
    from lenstrt.train import distributed as ddp
    from lenstrt.train.trainer import Trainer, load_training_data, split

    data, out, cfg = sys.argv[1], Path(sys.argv[2]), eval(sys.argv[3])
    dist, dev = ddp.init_from_env("cpu", 60)
    assert dist.world == 2 and dist.backend == "gloo"
    tr, va = split(load_training_data([data]), cfg["val_fraction"], 0)
    t = Trainer(TrainingConfig(**cfg), DataConfig(), dev, progress=False, dist=dist)
    t.train_member("vit_tiny", 5, tr, va, out / "a")
    torch.save(t.model.state_dict(), out / f"rank{dist.rank}.pt")      # every rank's weights
    t.train_member("vit_tiny", 5, tr, va, out / "b", _stop_at_step=2)   # a "crash" after step 2 ...
    t.train_member("vit_tiny", 5, tr, va, out / "b", resume=True)       # ... and the resume
    ddp.shutdown(dist)
""")


def _run(args, tmp_path, timeout=600):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([*TORCHRUN, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_two_gloo_ranks_agree_match_one_process_and_resume(sim_dir, tmp_path):
    from lenstrt.train.trainer import Trainer, load_training_data, split

    script = tmp_path / "ranks.py"
    script.write_text(RANKS)
    res = _run([str(script), str(sim_dir), str(tmp_path), repr(CFG)], tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    # the same weights on every rank
    w0, w1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    # rank 0 alone wrote checkpoints, with both ranks' generators for the resume
    a = ck.load(tmp_path / "a" / "last.pt")
    assert a["step"] == 4 and len(a["rng_states"]) == 2 and a["temperature"] == 1.0
    assert ck.load(tmp_path / "a" / "best.pt")["temperature"] != 1.0  # calibrated (rank 0)
    # the resumed run continued exactly
    b = ck.load(tmp_path / "b" / "last.pt")
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    # one process with the same effective batch (8) takes the same steps, to float tolerance
    cfg = TrainingConfig(**{**CFG, "batch_size": 8})
    tr, va = split(load_training_data([str(sim_dir)]), cfg.val_fraction, 0)
    Trainer(cfg, DataConfig(), "cpu", progress=False).train_member("vit_tiny", 5, tr, va, tmp_path / "one")
    one = ck.load(tmp_path / "one" / "last.pt")["state_dict"]
    for k in one:
        x, y = one[k], a["state_dict"][k]
        if k.endswith("in_proj_bias"):
            # The key bias has an exactly-zero gradient (softmax ignores a constant per query), so Adam
            # turns rounding noise (different summation orders) into updates: compare q and v only.
            n = len(x) // 3
            x, y = torch.cat([x[:n], x[2 * n:]]), torch.cat([y[:n], y[2 * n:]])
        assert torch.allclose(x, y, rtol=1e-4, atol=1e-5), k


FAILING = textwrap.dedent("""
    import torch.distributed as dist

    from lenstrt.train import distributed as ddp

    info, _ = ddp.init_from_env("cpu", 30)
    if info.rank == 1:
        raise RuntimeError("rank 1 failed on purpose")
    dist.barrier()  # rank 0 waits on a peer that is gone
""")


@pytest.mark.slow
def test_a_failing_rank_ends_the_job(tmp_path):
    script = tmp_path / "fail.py"
    script.write_text(FAILING)
    res = _run([str(script)], tmp_path, timeout=300)  # a hang would raise TimeoutExpired here
    assert res.returncode != 0
    assert "rank 1 failed on purpose" in res.stdout + res.stderr


@pytest.mark.slow
def test_train_cli_nproc(sim_dir, tmp_path):
    out = tmp_path / "r"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "lenstrt.cli.train", "--data", str(sim_dir), "--arch", "vit_tiny",
                          "--max-steps", "2", "--batch-size", "4", "--val-every", "2", "--nproc", "2",
                          "--out", str(out), "-q"], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    m = json.loads((out / "ensemble.json").read_text())
    assert m["distributed"] == {"world_size": 2, "backend": "gloo", "mode": "ddp", "effective_batch": 8}
    assert m["members"][0]["metrics"]["images_seen"] == 16
    assert res.stdout.count("vit_tiny-s0: val AUROC") == 1  # rank 0 reports, once


@pytest.mark.slow
def test_member_parallel_trains_each_member_whole_on_one_rank(sim_dir, tmp_path):
    """`--member-parallel`: the two members of an ensemble trained at once, one per rank, each exactly as
    a single process trains it (no gradient sync), collected by rank 0 into one ensemble.json."""
    from lenstrt.train.trainer import train

    out = tmp_path / "mp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["--data", str(sim_dir), "--arch", "vit_tiny", "--members", "2", "--max-steps", "3", "--batch-size", "4",
            "--val-every", "3", "--no-amp"]
    res = subprocess.run([sys.executable, "-m", "lenstrt.cli.train", *args, "--nproc", "2", "--member-parallel",
                          "--out", str(out), "-q"], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    m = json.loads((out / "ensemble.json").read_text())
    assert m["distributed"]["mode"] == "member-parallel" and m["distributed"]["effective_batch"] == 4
    assert [x["name"] for x in m["members"]] == ["vit_tiny-s0", "vit_tiny-s1"]
    assert [x["rank"] for x in m["members"]] == [0, 1]
    torch.set_num_threads(1)
    one = tmp_path / "one"
    train(TrainingConfig(arch=("vit_tiny",), members=2, max_steps=3, batch_size=4, val_every=3, amp=False),
          DataConfig(), [str(sim_dir)], one, device="cpu", progress=False)
    for name in ("vit_tiny-s0", "vit_tiny-s1"):
        a, b = ck.load(out / name / "best.pt"), ck.load(one / name / "best.pt")
        assert a["temperature"] == pytest.approx(b["temperature"], rel=1e-4)
        for k in a["state_dict"]:
            assert torch.allclose(a["state_dict"][k], b["state_dict"][k], rtol=1e-4, atol=1e-6), (name, k)


def test_nproc_argv_drops_nproc():
    from lenstrt.cli.train import _argv_without_nproc, command

    ctx = command.make_context("train", ["--data", "a", "--data", "b", "--nproc", "2", "--no-amp", "--stream",
                                         "--out", "x", "--max-steps", "3"])
    assert _argv_without_nproc(ctx) == ["--data", "a", "--data", "b", "--max-steps", "3", "--no-amp", "--stream",
                                        "--out", "x"]


def test_batches_and_augmentation_split_the_global_batch():
    from lenstrt.train.data import ResumableBatches, augment

    one = iter(ResumableBatches(40, 8, seed=3))
    parts = [iter(ResumableBatches(40, 4, seed=3, rank=r, world=2)) for r in range(2)]
    for _ in range(7):  # across an epoch boundary
        assert next(one) == next(parts[0]) + next(parts[1])
    x = torch.randn(8, 3, 16, 16)
    whole = augment(x, 5, 1)
    halves = torch.cat([augment(x[:4], 5, 1, (0, 2)), augment(x[4:], 5, 1, (1, 2))])
    assert torch.equal(whole, halves)


def test_member_parallel_without_nproc_is_one_line(tmp_path):
    res = subprocess.run([sys.executable, "-m", "lenstrt", "train", "--data", str(tmp_path), "--arch", "resnet18",
                          "--member-parallel", "--out", str(tmp_path / "r")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stderr.strip().count("\n") == 0
    assert "--member-parallel" in res.stderr and "--nproc" in res.stderr
