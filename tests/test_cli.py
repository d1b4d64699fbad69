import json
import subprocess
import sys
import time

from click.testing import CliRunner

from lenstrt.cli.main import cli


def test_help_is_fast_and_lazy():
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", "import sys; from lenstrt.cli.main import cli; "
                          "sys.argv=['lenstrt','--help']\ntry:\n cli()\nexcept SystemExit: pass\n"
                          "print('torch' in sys.modules, 'onnxruntime' in sys.modules)"],
                         capture_output=True, text=True, check=True)
    assert time.perf_counter() - t0 < 5
    assert "simulate" in out.stdout
    assert out.stdout.strip().endswith("False False"), out.stdout


def test_info_json():
    res = CliRunner().invoke(cli, ["info", "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    for key in ("python", "torch", "onnxruntime", "onnxruntime_providers", "tensorrt", "gpus", "cpu_cores"):
        assert key in info
    assert "CPUExecutionProvider" in info["onnxruntime_providers"]


def test_user_error_is_one_line(tmp_path):
    res = CliRunner().invoke(cli, ["simulate", "--n", "4", "--survey", "no-such-survey", "--out", str(tmp_path)])
    assert res.exit_code == 1
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: unknown survey 'no-such-survey'")
    assert "lsst-gri" in lines[0]
