"""Experiment tracking (`--log tensorboard|wandb|mlflow`, repeatable), each through the library's own API.

Every backend is optional and imported only when asked for; a missing one is a one-line error naming the
pip command, raised before any training. Nothing here picks a server: TensorBoard writes event files in
the member's directory, W&B follows its own environment (WANDB_MODE=offline writes under the run
directory and sends nothing), MLflow uses MLFLOW_TRACKING_URI or else a file store in the run directory.
Only rank 0 logs.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

from lenstrt.errors import ConfigError

KINDS = ("tensorboard", "wandb", "mlflow")
_NEEDS = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb"),
          "mlflow": ("mlflow", "mlflow-skinny")}


def check_available(kinds: tuple[str, ...]) -> None:
    for kind in kinds:
        if kind not in KINDS:
            raise ConfigError(f"--log {kind}: unknown tracker; choose from {', '.join(KINDS)}")
        module, package = _NEEDS[kind]
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"--log {kind} needs the {package} package: pip install {package} "
                              "(or pip install 'lenstrt[track]')")


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


class _TensorBoard:
    def __init__(self, out: Path, name: str, config: dict[str, Any]):
        from torch.utils.tensorboard import SummaryWriter

        self.w = SummaryWriter(str(out / "tb"))
        self.w.add_text("config", f"```\n{json.dumps(config, indent=1, default=str)}\n```", 0)

    def scalars(self, values: dict[str, float], step: int) -> None:
        for k, v in values.items():
            self.w.add_scalar(k, v, step)

    def image(self, name: str, path: Path, step: int) -> None:
        import matplotlib.image

        self.w.add_image(name, matplotlib.image.imread(str(path))[..., :3], step, dataformats="HWC")

    def close(self) -> None:
        self.w.close()


class _WandB:
    def __init__(self, out: Path, name: str, config: dict[str, Any]):
        import wandb

        self.wandb = wandb
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "lenstrt"), name=name, dir=str(out),
                              config=config, reinit="finish_previous")

    def scalars(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def image(self, name: str, path: Path, step: int) -> None:
        self.run.log({name: self.wandb.Image(str(path))}, step=step)

    def close(self) -> None:
        self.run.finish()


class _MLflow:
    def __init__(self, out: Path, name: str, config: dict[str, Any]):
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            # No server named: a file store beside the members (one experiment per run directory).
            # MLflow 3 keeps the file store in maintenance mode behind this opt-in; the SQLite store
            # would need SQLAlchemy, which mlflow-skinny leaves out.
            uri = (out.parent / "mlruns").resolve().as_uri()
            if not os.environ.get("MLFLOW_ALLOW_FILE_STORE"):
                os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
        self.client = MlflowClient(uri)
        exp_name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "lenstrt")
        exp = self.client.get_experiment_by_name(exp_name)
        exp_id = exp.experiment_id if exp else self.client.create_experiment(exp_name)
        self.run_id = self.client.create_run(exp_id, run_name=name).info.run_id
        for k, v in _flat(config).items():
            self.client.log_param(self.run_id, k, str(v)[:500])  # MLflow's limit on a parameter value

    def scalars(self, values: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k.replace("@", "_at_"), float(v), now, step)
                                                    for k, v in values.items()])

    def image(self, name: str, path: Path, step: int) -> None:
        self.client.log_artifact(self.run_id, str(path), "plots")

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


class Tracker:
    """Fans each call out to the chosen backends; with none, every call is a no-op."""

    def __init__(self, kinds: tuple[str, ...], out: Path, name: str, config: dict[str, Any]):
        check_available(kinds)
        make = {"tensorboard": _TensorBoard, "wandb": _WandB, "mlflow": _MLflow}
        self.backends = [make[k](out, name, config) for k in dict.fromkeys(kinds)]

    def __bool__(self) -> bool:
        return bool(self.backends)

    def scalars(self, values: dict[str, float], step: int) -> None:
        for b in self.backends:
            b.scalars(values, step)

    def image(self, name: str, path: Path, step: int) -> None:
        for b in self.backends:
            b.image(name, path, step)

    def close(self) -> None:
        for b in self.backends:
            b.close()


def plot_validation(labels, probs, out: Path) -> dict[str, Path]:
    """The ROC and reliability plots of calibrated validation probabilities (as `lenstrt evaluate`)."""
    from lenstrt.metrics import expected_calibration_error, roc_curve
    from lenstrt.plots import reliability, roc

    out.mkdir(parents=True, exist_ok=True)
    ece, conf, acc, cnt = expected_calibration_error(labels, probs)
    return {"val/roc": roc({"validation": roc_curve(labels, probs)[:2]}, out / "val_roc.png"),
            "val/reliability": reliability(conf, acc, cnt, ece, out / "val_reliability.png")}
