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
    import torch

    from lenstrt.envinfo import host

    # `info` names the host the way checkpoints record it, so a user can match a run to this machine
    assert {k: info[k] for k in host("cpu")} == host("cpu")
    assert info["cpu_capability"] == torch.backends.cpu.get_cpu_capability()


def test_user_error_is_one_line(tmp_path):
    res = CliRunner().invoke(cli, ["simulate", "--n", "4", "--survey", "no-such-survey", "--out", str(tmp_path)])
    assert res.exit_code == 1
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: unknown survey 'no-such-survey'")
    assert "lsst-gri" in lines[0]
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    res = CliRunner().invoke(cli, ["simulate", "--n", "4", "--survey", str(empty), "--out", str(tmp_path / "o")])
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 1 and len(lines) == 1 and lines[0].startswith(f"error: {empty}: invalid survey preset")
    assert "not a mapping" in lines[0]


def test_simulate_preview_and_preview_command(tmp_path):
    res = CliRunner().invoke(cli, ["simulate", "--n", "24", "--seed", "1", "--out", str(tmp_path / "d"), "--preview",
                                   "-q"])
    assert res.exit_code == 0, res.output
    assert "24 lsst-gri cutouts" in res.output and (tmp_path / "d" / "gallery.png").read_bytes()[:4] == b"\x89PNG"
    res = CliRunner().invoke(cli, ["preview", str(tmp_path / "d"), "--out", str(tmp_path / "g.png"), "--per-kind", "2"])
    assert res.exit_code == 0 and (tmp_path / "g.png").is_file()


def test_serve_reads_inference_config(tmp_path, monkeypatch):
    import lenstrt.serve.pipeline as pipeline

    seen = {}
    monkeypatch.setattr(pipeline, "serve", lambda bundle, inputs, out, opts, **kw: seen.setdefault("opts", opts) and {
        "counts": {"rows_this_run": 0, "catalog_rows": 0, "input_rows": 0, "errors_recorded": 0},
        "throughput": {"end_to_end_img_s": None, "inference_img_s": None}, "catalog": "c", "candidates": None})
    cfg = tmp_path / "inf.yaml"
    cfg.write_text("inference:\n  batch_size: 32\n  backend: torch\nensemble:\n  fusion_method: mean\n")
    res = CliRunner().invoke(cli, ["serve", "--bundle", "b", "--input", "x", "--out", str(tmp_path / "o"),
                                   "--config", str(cfg), "--batch-size", "16", "-q"])
    assert res.exit_code == 0, res.output
    assert seen["opts"].batch_size == 16 and seen["opts"].backend == "torch"  # flag wins, file fills the rest
