"""`lenstrt train`: one or more ensemble members, each written as best.pt / last.pt checkpoints.

Schedule: linear warm-up, then cosine decay to zero at the end of the run, where "the end" is the
step budget or, with a time budget, the wall-clock budget (the decay then tracks elapsed time, so a
run is fully decayed exactly when its time is up: measured to matter a lot at strict thresholds).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lenstrt import __version__
from lenstrt import checkpoint as ck
from lenstrt.config import DataConfig, TrainingConfig
from lenstrt.errors import ConfigError
from lenstrt.io import write_json
from lenstrt.metrics import fit_temperature, roc_auc, sigmoid
from lenstrt.models.preprocess import PREPROCESS_SPEC


@dataclass
class Dataset:
    images: np.ndarray
    labels: np.ndarray
    bands: list[str]
    survey: str
    image_size: int
    data_hash: str
    lens_fraction: float
    pixel_scale: float | None = None  # arcsec/px of the training cutouts; serve checks inputs against it


def load_training_data(paths: list[str]) -> Dataset:
    import h5py

    from lenstrt.data.readers import expand_paths, load_all
    from lenstrt.train.data import data_hash

    files = expand_paths(paths)
    d = load_all(files)
    bands, survey = [f"band{i}" for i in range(d["images"].shape[1])], "unknown"
    scale = None
    if files[0].suffix in (".h5", ".hdf5"):
        with h5py.File(files[0], "r") as f:
            if "bands" in f.attrs:
                bands = json.loads(f.attrs["bands"])
            survey = str(f.attrs.get("survey", survey))
            scale = float(f.attrs["pixel_scale"]) if f.attrs.get("pixel_scale") else None
    return Dataset(d["images"], d["labels"], bands, survey, int(d["images"].shape[-1]), data_hash(files),
                   float(d["labels"].mean()), scale)


def _lr_factor(progress: float, step: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def autocast(device: str, dtype):
    """torch.autocast for `device` when `dtype` is a torch dtype; a no-op context for None (and so for
    devices autocast does not know, such as `meta` in the device-placement tests)."""
    import contextlib

    import torch

    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.split(":")[0], dtype=dtype)


def logits_on_device(model, images: np.ndarray, device: str, batch_size: int = 256, amp_dtype=None):
    """Yields the model's logits batch by batch, left on `device` (the part of prediction that runs there)."""
    import torch

    model.eval()
    with torch.inference_mode():
        for i in range(0, len(images), batch_size):
            x = torch.from_numpy(images[i:i + batch_size]).to(device)
            with autocast(device, amp_dtype):
                yield model(x).float().squeeze(1)


def predict_logits(model, images: np.ndarray, device: str, batch_size: int = 256, amp_dtype=None):
    """Logits [N] in batches; `amp_dtype` (a torch dtype) autocasts, None runs in the model's precision."""
    out = [t.cpu().numpy() for t in logits_on_device(model, images, device, batch_size, amp_dtype)]
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def forward_loss(model, x, y, device: str, step: int, seed: int, augment: bool, channels_last: bool, amp_dtype):
    """One training step's forward pass: batch to the device, augmentation, autocast forward, loss.

    Everything that meets the batch is created on (or moved to) `device`, which the device-placement
    tests exercise with `meta` tensors: a CPU tensor mixed in raises there exactly as on CUDA."""
    import torch
    import torch.nn.functional as F

    from lenstrt.train.data import augment as augment_batch

    x = x.to(device, non_blocking=True)
    y = y.to(device, non_blocking=True)
    if augment:
        x = augment_batch(x, step, seed)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(device, amp_dtype):
        logits = model(x).squeeze(1)
    return F.binary_cross_entropy_with_logits(logits.float(), y)


def optimizer_step(loss, model, opt, scaler, clip: float | None) -> None:
    """Backward and update through the GradScaler (a no-op scaler off fp16), clipping the unscaled grads."""
    import torch

    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if clip:
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    scaler.step(opt)
    scaler.update()


def rng_state(device: str) -> dict[str, Any]:
    """The generators dropout and initialisation draw from: the CPU's and, on CUDA, the training GPU's
    (dropout on a CUDA tensor draws from the CUDA generator, so the CPU state alone does not make a CUDA
    resume exact). Only the training device's: a resume with other GPUs visible must still work."""
    import torch

    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if device.startswith("cuda"):
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng_state(saved: dict[str, Any] | Any, device: str) -> None:
    """Inverse of `rng_state`, onto the device this run trains on; also reads checkpoints that saved the
    bare CPU state."""
    import torch

    if not isinstance(saved, dict):  # checkpoints written before the CUDA state was saved
        saved = {"cpu": saved}
    torch.set_rng_state(saved["cpu"])
    if device.startswith("cuda") and "cuda" in saved:
        torch.cuda.set_rng_state(saved["cuda"], device)


class Trainer:
    def __init__(self, cfg: TrainingConfig, dcfg: DataConfig, device: str, progress: bool = True):
        from lenstrt.train.hardware import choose_precision

        if cfg.scheduler not in ("cosine", "plateau"):
            raise ConfigError(f"scheduler must be 'cosine' or 'plateau', not '{cfg.scheduler}'")
        self.cfg, self.dcfg, self.device, self.progress = cfg, dcfg, device, progress
        self.precision = choose_precision(cfg, device)

    # -- one member ---------------------------------------------------------------------------
    def train_member(self, arch: str, seed: int, train: Dataset, val: Dataset, out: Path, resume: bool = False,
                     _stop_at_step: int | None = None) -> dict[str, Any]:
        import torch

        from lenstrt.models import create_model
        from lenstrt.progress import progress_bar
        from lenstrt.train.data import InMemoryCutouts, ResumableBatches, SimulatedStream, collate_batched
        from lenstrt.train.hardware import loader_settings

        cfg, dev, prec = self.cfg, self.device, self.precision
        out.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(seed)
        arch_kwargs: dict[str, Any] = {"dropout": cfg.dropout}
        if arch.startswith("resnet"):
            arch_kwargs["keep_stem_resolution"] = cfg.keep_stem_resolution
        if arch.startswith("vit") and cfg.grad_checkpointing:
            arch_kwargs["grad_checkpointing"] = True
        model = create_model(arch, len(train.bands), train.image_size, **arch_kwargs).to(dev)
        channels_last = cfg.channels_last and arch.startswith("resnet")
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        scaler = torch.amp.GradScaler("cuda", enabled=prec.grad_scaler)
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=2) \
            if cfg.scheduler == "plateau" else None

        on_the_fly = self.dcfg.simulate_on_the_fly
        steps_per_epoch = max(1, len(train.labels) // cfg.batch_size) if not on_the_fly else 1000
        total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch
        budget_s = cfg.time_budget_min * 60 if cfg.time_budget_min else None
        step, elapsed_before, best_auc, history = 0, 0.0, -1.0, []
        last_path, best_path = out / "last.pt", out / "best.pt"
        if resume and last_path.is_file():
            state = ck.load(last_path)
            model.load_state_dict(state["state_dict"])
            opt.load_state_dict(state["optimizer"])
            if state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            step, elapsed_before = state["step"], state["elapsed_s"]
            best_auc, history = state["best_val_auc"], state["history"]
            restore_rng_state(state["rng_state"], dev)
            if step >= total_steps:
                return self._finish(model, arch, arch_kwargs, seed, train, val, out, history, step, elapsed_before)

        ls = loader_settings(self.dcfg, dev, in_memory=not on_the_fly)
        # The loader draws its worker base seed from this generator, not the global RNG that dropout
        # uses, so a resumed run's dropout masks match an uninterrupted one.
        lgen = torch.Generator().manual_seed(seed)
        if on_the_fly:
            ds = SimulatedStream(self.dcfg.survey, cfg.batch_size, seed, train.image_size, train.lens_fraction)
            loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=ls.num_workers,
                                                 pin_memory=ls.pin_memory, persistent_workers=ls.persistent_workers,
                                                 prefetch_factor=ls.prefetch_factor, generator=lgen)
        else:
            ds = InMemoryCutouts(train.images, train.labels)
            loader = torch.utils.data.DataLoader(ds, batch_sampler=ResumableBatches(len(ds), cfg.batch_size, seed, step),
                                                 collate_fn=collate_batched, num_workers=ls.num_workers,
                                                 pin_memory=ls.pin_memory, persistent_workers=ls.persistent_workers,
                                                 prefetch_factor=ls.prefetch_factor, generator=lgen)
        writer = self._tensorboard(out)
        amp_dtype = getattr(torch, prec.dtype) if prec.enabled else None
        t_start = time.perf_counter()
        seen, t_rate, last_auc = 0, time.perf_counter(), float("nan")
        bar_total = int(budget_s) if budget_s else total_steps
        fields = "loss {task.fields[loss]} AUROC {task.fields[auc]} {task.fields[ips]} img/s"
        with progress_bar(f"{arch} s{seed}", total=bar_total, unit="steps" if not budget_s else "s",
                          enabled=self.progress, fields=fields) as bar:
            bar.update(completed=int(elapsed_before) if budget_s else step)
            model.train()
            for x, y in loader:
                elapsed = elapsed_before + time.perf_counter() - t_start
                if step >= total_steps and not budget_s or (budget_s and elapsed >= budget_s):
                    break
                if cfg.max_steps and step >= cfg.max_steps:
                    break
                progress = elapsed / budget_s if budget_s else step / total_steps
                if plateau is None:
                    for g in opt.param_groups:
                        g["lr"] = cfg.lr * _lr_factor(progress, step, cfg.warmup_steps)
                loss = forward_loss(model, x, y, dev, step, seed, cfg.augment, channels_last, amp_dtype)
                optimizer_step(loss, model, opt, scaler, cfg.gradient_clip)
                step += 1
                seen += len(y)
                now = time.perf_counter()
                if now - t_rate > 2:
                    bar.update(ips=f"{seen / (now - t_rate):.0f}", loss=f"{loss.item():.4f}")
                    seen, t_rate = 0, now
                bar.update(completed=int(elapsed) if budget_s else step)
                if writer:
                    writer.add_scalar("train/loss", loss.item(), step)
                    writer.add_scalar("train/lr", opt.param_groups[0]["lr"], step)
                if step % cfg.val_every == 0 or step == _stop_at_step:
                    last_auc, vloss = self._validate(model, val, amp_dtype)
                    model.train()
                    history.append({"step": step, "val_auc": last_auc, "val_loss": vloss,
                                    "elapsed_s": round(elapsed_before + time.perf_counter() - t_start, 2)})
                    bar.update(auc=f"{last_auc:.4f}")
                    if writer:
                        writer.add_scalar("val/auc", last_auc, step)
                    if plateau is not None:
                        plateau.step(last_auc)
                    if last_auc > best_auc:
                        best_auc = last_auc
                        ck.save(best_path, self._payload(model, arch, arch_kwargs, seed, train, step, history))
                    ck.save(last_path, {
                        **self._payload(model, arch, arch_kwargs, seed, train, step, history),
                        "optimizer": opt.state_dict(), "scaler": scaler.state_dict() if prec.grad_scaler else {},
                        "elapsed_s": elapsed_before + time.perf_counter() - t_start,
                        "best_val_auc": best_auc, "rng_state": rng_state(dev),
                    })
                    if step == _stop_at_step:
                        return {"stopped_at": step}
        elapsed = elapsed_before + time.perf_counter() - t_start
        last_auc, vloss = self._validate(model, val, amp_dtype)
        history.append({"step": step, "val_auc": last_auc, "val_loss": vloss, "elapsed_s": round(elapsed, 2)})
        if last_auc >= best_auc or not best_path.exists():
            ck.save(best_path, self._payload(model, arch, arch_kwargs, seed, train, step, history))
        ck.save(last_path, {
            **self._payload(model, arch, arch_kwargs, seed, train, step, history),
            "optimizer": opt.state_dict(), "scaler": scaler.state_dict() if prec.grad_scaler else {},
            "elapsed_s": elapsed, "best_val_auc": max(best_auc, last_auc), "rng_state": rng_state(dev),
        })
        if writer:
            writer.close()
        return self._finish(model, arch, arch_kwargs, seed, train, val, out, history, step, elapsed)

    def _finish(self, model, arch, arch_kwargs, seed, train, val, out, history, step, elapsed) -> dict[str, Any]:
        """Reload the best weights, fit the temperature on the validation split, write best.pt."""
        best = ck.load(out / "best.pt")
        model = ck.build_model(best).to(self.device)
        logits = predict_logits(model, val.images, self.device)
        temperature = fit_temperature(val.labels, logits)
        probs = sigmoid(logits / temperature)
        from lenstrt.metrics import summary

        metrics = {**summary(val.labels, probs), "train_steps": step, "train_time_s": round(elapsed, 1),
                   "images_seen": step * self.cfg.batch_size}
        best.update(temperature=temperature, metrics=metrics)
        ck.save(out / "best.pt", best)
        return {"arch": arch, "seed": seed, "temperature": temperature, "metrics": metrics}

    def _validate(self, model, val: Dataset, amp_dtype) -> tuple[float, float]:
        logits = predict_logits(model, val.images, self.device, amp_dtype=amp_dtype)
        y = val.labels.astype(np.float64)
        loss = float(np.mean(np.logaddexp(0, logits) - y * logits))
        return roc_auc(val.labels, logits), loss

    def _payload(self, model, arch, arch_kwargs, seed, train: Dataset, step, history) -> dict[str, Any]:
        import torch

        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        cfg = asdict(self.cfg)
        cfg["arch"] = list(cfg["arch"])
        return {
            "state_dict": state, "arch": arch, "arch_kwargs": arch_kwargs, "bands": list(train.bands),
            "image_size": train.image_size, "survey": train.survey, "pixel_scale": train.pixel_scale,
            "preprocess": dict(PREPROCESS_SPEC),
            "temperature": 1.0, "metrics": {}, "config": cfg, "seed": seed, "step": step,
            "train_lens_fraction": train.lens_fraction, "history": list(history),
            "versions": {"lenstrt": __version__, "torch": str(torch.__version__)}, "data_hash": train.data_hash,
            "precision": self.precision.dtype,
        }

    def _tensorboard(self, out: Path):
        if not self.cfg.tensorboard:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return None
        return SummaryWriter(str(out / "tb"))


def split(data: Dataset, val_fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    rng = np.random.default_rng([seed, 99])
    perm = rng.permutation(len(data.labels))
    n_val = max(1, int(round(len(perm) * val_fraction)))
    vi, ti = np.sort(perm[:n_val]), np.sort(perm[n_val:])

    def sub(idx):
        return Dataset(data.images[idx], data.labels[idx], data.bands, data.survey, data.image_size,
                       data.data_hash, float(data.labels[idx].mean()) if len(idx) else 0.5, data.pixel_scale)

    return sub(ti), sub(vi)


def train(cfg: TrainingConfig, dcfg: DataConfig, data: list[str], out: str | Path, device: str | None = None,
          resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Trains every member (each arch x `members` seeds) into `out`; writes out/ensemble.json."""
    from lenstrt.train.hardware import loader_settings, pick_device

    dev = pick_device(device)
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not resume and (out / "ensemble.json").exists():
        raise ConfigError(f"{out}: already holds a trained run; pass --resume to continue it or choose another --out")
    full = load_training_data(data)
    tr, va = split(full, cfg.val_fraction, cfg.seed)
    trainer = Trainer(cfg, dcfg, dev, progress)
    ls = loader_settings(dcfg, dev, in_memory=not dcfg.simulate_on_the_fly)
    members = []
    for a_i, arch in enumerate(cfg.arch):
        for m in range(cfg.members):
            seed = cfg.seed + 1000 * a_i + m
            name = f"{arch}-s{seed}"
            res = trainer.train_member(arch, seed, tr, va, out / name, resume=resume)
            members.append({"name": name, "checkpoint": f"{name}/best.pt", **res})
    manifest = {
        "schema": "lenstrt-run/1", "members": members, "device": dev,
        "precision": asdict(trainer.precision), "loader": asdict(ls),
        "data": {"paths": [str(p) for p in data], "hash": full.data_hash, "n_train": len(tr.labels),
                 "n_val": len(va.labels), "survey": full.survey, "bands": full.bands},
        "lenstrt_version": __version__,
    }
    write_json(out / "ensemble.json", manifest)
    return manifest
