"""A SkyPilot task YAML for the same job, so GCP and Azure users get SkyPilot's optimizer, spot recovery
and autostop (`sky launch task.yaml`, or `sky jobs launch task.yaml` for managed spot jobs)."""

from __future__ import annotations

from typing import Any

from lenstrt.cloud.package import Install

CLOUDS = ("aws", "gcp", "azure")


WHEEL_DIR = "/lenstrt/wheels"


def task(accelerator: str, bundle: str, input_url: str, out_url: str, *, spot: bool = True,
         clouds: tuple[str, ...] = CLOUDS, job: str = "lenstrt-serve", idle_minutes: int = 10,
         install: Install | None = None, serve_args: str = "") -> dict[str, Any]:
    """`install`: what the task installs (cloud/package.py); its wheel, if any, is a file mount, so the
    cluster runs the lenstrt the user wrote the task with."""
    install = install or Install(None, "lenstrt[trt,gpu]", "?")
    mounts: dict[str, Any] = {}
    if install.wheel is not None:
        mounts[f"{WHEEL_DIR}/{install.wheel.name}"] = str(install.wheel.resolve())
    return {
        "name": job,
        "resources": {
            "accelerators": accelerator,
            "use_spot": spot,
            "any_of": [{"infra": c} for c in clouds],
            "autostop": {"idle_minutes": idle_minutes},
            "job_recovery": "FAILOVER" if spot else "none",
        },
        "envs": {"LENSTRT_SPEC": install.pip_arg(WHEEL_DIR)},
        "file_mounts": {
            **mounts,
            "/lenstrt/bundle_src": bundle,
            "/lenstrt/input": input_url,
            "/lenstrt/out": {"source": out_url, "mode": "MOUNT"},
        },
        "setup": "python3 -m venv ~/lenstrt-venv\n. ~/lenstrt-venv/bin/activate\n"
                 "pip install -q --upgrade pip\npip install -q \"$LENSTRT_SPEC\"\nlenstrt info\n",
        "run": ". ~/lenstrt-venv/bin/activate\n"
               "# engines are tied to the GPU: build them on this machine\n"
               "lenstrt export --checkpoint /lenstrt/bundle_src/checkpoints --fp16 --fuse --require-trt "
               "--out ~/bundle -q\n"
               "# the output lives on the mounted bucket, so a recovered spot job resumes from its ledger\n"
               f"lenstrt serve --bundle ~/bundle --input /lenstrt/input --out /lenstrt/out/serve {serve_args} -q\n",
    }


def to_yaml(spec: dict[str, Any]) -> str:
    import yaml

    class _Literal(str):
        pass

    def literal(dumper, data):
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")

    yaml.add_representer(_Literal, literal, Dumper=yaml.SafeDumper)
    spec = {**spec, "setup": _Literal(spec["setup"]), "run": _Literal(spec["run"])}
    return yaml.safe_dump(spec, sort_keys=False)
