"""Every user error is one line naming what is wrong and the fix (issue #14): a sweep of each command
with bad arguments and bad files."""

import pytest
from click.testing import CliRunner

from lenstrt.cli.main import cli


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    (d / "a_file").write_text("not a directory, not a checkpoint, not cutouts")
    (d / "empty").mkdir()
    return d


CASES = [  # (argv with {d} for the fixture dir, text the line must hold)
    (["simulate", "--n", "4", "--out", "/proc/lenstrt-nope"], "/proc/lenstrt-nope: cannot be used as --out"),
    (["simulate", "--n", "4", "--out", "{d}/a_file"], "a_file' is a file"),
    (["simulate", "--n", "0", "--out", "{d}/s"], "--n"),
    (["train", "--data", "{d}/missing", "--out", "{d}/t1", "--max-steps", "1"], "missing: no such file or directory"),
    (["train", "--data", "{d}/a_file", "--out", "{d}/t2"], "a_file: unsupported file type"),
    (["train", "--data", "{d}/empty", "--out", "/proc/lenstrt-nope"], "cannot be used as --out"),
    (["train", "--data", "{d}/empty", "--out", "{d}/t3", "--lr", "-1"], "lr -1.0: need a learning rate >= 0"),
    (["evaluate", "--checkpoint", "{d}/missing", "--data", "{d}/empty", "--out", "/proc/lenstrt-nope"],
     "cannot be used as --out"),
    (["evaluate", "--checkpoint", "{d}/missing", "--data", "{d}/empty", "--out", "{d}/e"], "empty: no cutout files"),
    (["export", "--checkpoint", "{d}/missing", "--out", "{d}/x"], "missing: checkpoint not found"),
    (["export", "--checkpoint", "{d}/a_file", "--out", "{d}/x"], "a_file: not a loadable lenstrt checkpoint"),
    (["export", "--checkpoint", "{d}/a_file", "--out", "/proc/lenstrt-nope/b"], "cannot be used as --out's parent"),
    (["export", "--checkpoint", "{d}/a_file", "--batch", "64,1"], "--batch"),
    (["serve", "--bundle", "{d}/missing", "--input", "{d}", "--out", "{d}/o"], "missing: no manifest.json"),
    (["serve", "--bundle", "{d}/empty", "--input", "{d}", "--out", "/proc/lenstrt-nope"], "cannot be used as --out"),
    (["serve", "--bundle", "{d}/empty", "--input", "{d}", "--out", "{d}/o2", "--batch-size", "0"], "--batch-size"),
    (["bench", "--bundle", "{d}/missing"], "missing: no manifest.json"),
    (["bench", "--bundle", "{d}/empty", "--output-dir", "/proc/lenstrt-nope"], "cannot be used as --output-dir"),
    (["verify", "{d}/missing"], "missing: no manifest.json"),
    (["preview", "{d}/missing"], "missing: no such file or directory"),
    (["cloud", "estimate", "--cutouts", "-5"], "--cutouts"),
    (["cloud", "estimate", "--cutouts", "1e6", "--instance", "m5.nope"], "unknown instance(s) m5.nope"),
    (["serve", "--bogus"], "No such option '--bogus'"),
]


@pytest.mark.parametrize("argv,expect", CASES, ids=[" ".join(c[0][:2]) + f"-{i}" for i, c in enumerate(CASES)])
def test_each_command_fails_in_one_line(bad, argv, expect):
    res = CliRunner().invoke(cli, [a.format(d=bad) for a in argv])
    assert res.exit_code in (1, 2), res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    assert expect.format(d=bad) in lines[0]
