"""`lenstrt train`: one or more ensemble members, each written as best.pt / last.pt checkpoints.

Schedule: linear warm-up, then cosine decay to zero at the end of the run, where "the end" is the
step budget or, with a time budget, the wall-clock budget (the decay then tracks elapsed time, so a
run is fully decayed exactly when its time is up: measured to matter a lot at strict thresholds).
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, replace
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
    images: np.ndarray | None          # None when streamed (`stream` says from where)
    labels: np.ndarray | None
    bands: list[str]
    survey: str
    image_size: int
    data_hash: str
    lens_fraction: float
    pixel_scale: float | None = None  # arcsec/px of the training cutouts; serve checks inputs against it
    stream: Any = None                # train/stream.py ShardIndex of a streamed training split

    @property
    def n(self) -> int:
        return self.stream.n_train if self.stream is not None else len(self.labels)  # type: ignore[arg-type]


def load_training_data(paths: list[str]) -> Dataset:
    from lenstrt.data.readers import expand_paths, load_all
    from lenstrt.train.data import data_hash
    from lenstrt.train.stream import bands_survey_scale

    files = expand_paths(paths)
    d = load_all(files)
    # the same names, survey and scale as streamed training reads (FITS band headers too), so a
    # checkpoint records the same bands however its data were loaded
    names, survey, scale = bands_survey_scale(str(files[0]))
    bands = names or [f"band{i}" for i in range(d["images"].shape[1])]
    return Dataset(d["images"], d["labels"], bands, survey, int(d["images"].shape[-1]), data_hash(files),
                   float(d["labels"].mean()), scale)


def load_streamed_data(paths: list[str], cfg: TrainingConfig, dcfg: DataConfig) -> tuple[Dataset, Dataset]:
    """(train, val): the training rows as a `ShardIndex` read in slices while training; the validation
    rows (the in-memory split's rows, at most `data.stream_val_max`) read into memory."""
    from lenstrt.data.readers import expand_paths, inspect
    from lenstrt.train.data import data_hash
    from lenstrt.train.stream import bands_survey_scale, build_index, read_rows

    files = expand_paths(paths)
    index = build_index([str(f) for f in files], cfg.val_fraction, cfg.seed, dcfg.stream_val_max, dcfg.stream_chunk)
    first = inspect(files[:1]).files[0]
    names, survey, scale = bands_survey_scale(str(files[0]))
    bands = list(names or first.band_names or [f"band{i}" for i in range(first.bands)])
    scale = scale if scale is not None else first.pixel_scale
    vx, vy = read_rows(index, np.flatnonzero(index.is_val))
    h = data_hash(files)
    train = Dataset(None, None, bands, survey, int(first.width), h, index.train_lens_fraction, scale, stream=index)
    val = Dataset(vx, vy, bands, survey, int(first.width), h, float(vy.mean()), scale)
    return train, val


LOG_EVERY = 10  # steps between training-loss points sent to the trackers


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


def arch_kwargs(arch: str, cfg: TrainingConfig) -> dict[str, Any]:
    """The model-builder arguments a training config implies for one architecture (what `lenstrt train`
    builds; benchmarks/gpu_check.py times the same model)."""
    kw: dict[str, Any] = {"dropout": cfg.dropout}
    if arch.startswith("resnet"):
        kw["keep_stem_resolution"] = cfg.keep_stem_resolution
    if arch.startswith("vit") and cfg.grad_checkpointing:
        kw["grad_checkpointing"] = True
    return kw


def forward_loss(model, x, y, device: str, step: int, seed: int, augment: bool, channels_last: bool, amp_dtype,
                 part: tuple[int, int] = (0, 1), band_jitter: float = 0.0):
    """One training step's forward pass: batch to the device, augmentation, autocast forward, loss.
    `part` (rank, world): this rank's slice of the global batch's augmentation draws.

    Everything that meets the batch is created on (or moved to) `device`, which the device-placement
    tests exercise with `meta` tensors: a CPU tensor mixed in raises there exactly as on CUDA."""
    import torch
    import torch.nn.functional as F

    from lenstrt.train.data import augment as augment_batch

    x = x.to(device, non_blocking=True)
    y = y.to(device, non_blocking=True)
    if augment:
        x = augment_batch(x, step, seed, part, band_jitter)
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
    def __init__(self, cfg: TrainingConfig, dcfg: DataConfig, device: str, progress: bool = True, dist=None):
        from lenstrt.envinfo import host
        from lenstrt.train.distributed import SINGLE
        from lenstrt.train.hardware import choose_precision

        if cfg.scheduler not in ("cosine", "plateau"):
            raise ConfigError(f"scheduler must be 'cosine' or 'plateau', not '{cfg.scheduler}'")
        self.cfg, self.dcfg, self.device, self.progress = cfg, dcfg, device, progress
        self.dist = dist or SINGLE  # rank 0 alone validates, calibrates and writes checkpoints
        self.precision = choose_precision(cfg, device)
        self.host = host(device)

    # -- one member ---------------------------------------------------------------------------
    def train_member(self, arch: str, seed: int, train: Dataset, val: Dataset, out: Path, resume: bool = False,
                     _stop_at_step: int | None = None, init: dict[str, Any] | None = None) -> dict[str, Any]:
        """`init`: the source (`lenstrt.train.init.resolve`) whose weights the model starts from
        (`--init`); a resumed member continues from its own last.pt, which must come from the same source."""
        import torch

        from lenstrt.models import create_model, prefers_channels_last
        from lenstrt.progress import progress_bar
        from lenstrt.train import init as winit
        from lenstrt.train.data import InMemoryCutouts, ResumableBatches, SimulatedStream, collate_batched
        from lenstrt.train.distributed import broadcast, gather
        from lenstrt.train.hardware import loader_settings
        from lenstrt.train.stream import ShardStream

        cfg, dev, prec, dist = self.cfg, self.device, self.precision, self.dist
        out.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(seed)
        kw = arch_kwargs(arch, cfg)
        model = create_model(arch, len(train.bands), train.image_size, **kw)
        warm = init is not None and not (resume and (out / "last.pt").is_file())
        if warm:
            winit.check(init, arch, kw, train, PREPROCESS_SPEC)  # type: ignore[arg-type]
            winit.load_weights(model, init)  # type: ignore[arg-type]
        self._init = winit.record(init)
        model = model.to(dev)
        channels_last = cfg.channels_last and prefers_channels_last(arch)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        scaler = torch.amp.GradScaler("cuda", enabled=prec.grad_scaler)
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=2) \
            if cfg.scheduler == "plateau" else None

        on_the_fly = self.dcfg.simulate_on_the_fly
        # One step consumes batch_size x world rows (the effective batch).
        steps_per_epoch = max(1, train.n // (cfg.batch_size * dist.world)) if not on_the_fly else 1000
        total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch
        budget_s = cfg.time_budget_min * 60 if cfg.time_budget_min else None
        step, elapsed_before, best_auc, history = 0, 0.0, -1.0, []
        last_path, best_path = out / "last.pt", out / "best.pt"
        saved_rng = None
        if resume and last_path.is_file():
            state = ck.load(last_path)
            winit.same_lineage(last_path, state.get("init"), init)
            self._init = state.get("init")  # what the member started from, not what that path holds now
            model.load_state_dict(state["state_dict"])
            opt.load_state_dict(state["optimizer"])
            if state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            step, elapsed_before = state["step"], state["elapsed_s"]
            best_auc, history = state["best_val_auc"], state["history"]
            per_rank = state.get("rng_states")
            saved_rng = per_rank[dist.rank] if per_rank and len(per_rank) == dist.world else state["rng_state"]
            if step >= total_steps:
                if not dist.main:
                    return {"arch": arch, "seed": seed, "rank": dist.rank}
                return self._finish(model, arch, kw, seed, train, val, out, history, step, elapsed_before)
        net = model
        if dist.active:
            from torch.nn.parallel import DistributedDataParallel

            # Same init on every rank (seeded above; DDP also broadcasts rank 0's weights), then a
            # distinct stream per rank so dropout masks differ between ranks.
            net = DistributedDataParallel(model, device_ids=[dev] if dev.startswith("cuda") else None)
            torch.manual_seed(seed + 7919 * dist.rank)
        if saved_rng is not None:
            restore_rng_state(saved_rng, dev)

        ls = loader_settings(self.dcfg, dev, in_memory=not on_the_fly and train.stream is None,
                             streaming=train.stream is not None)
        # The loader draws its worker base seed from this generator, not the global RNG that dropout
        # uses, so a resumed run's dropout masks match an uninterrupted one.
        lgen = torch.Generator().manual_seed(seed)
        if train.stream is not None:
            ds = ShardStream(train.stream, cfg.batch_size, seed, self.dcfg.shuffle_buffer, rank=dist.rank,
                             world_size=dist.world, start_step=step)
            loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=ls.num_workers,
                                                 pin_memory=ls.pin_memory, persistent_workers=ls.persistent_workers,
                                                 prefetch_factor=ls.prefetch_factor, generator=lgen)
        elif on_the_fly:
            ds = SimulatedStream(self.dcfg.survey, cfg.batch_size, seed, train.image_size, train.lens_fraction,
                                 rank=dist.rank)
            loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=ls.num_workers,
                                                 pin_memory=ls.pin_memory, persistent_workers=ls.persistent_workers,
                                                 prefetch_factor=ls.prefetch_factor, generator=lgen)
        else:
            ds = InMemoryCutouts(train.images, train.labels)
            if dist.active and len(ds) < cfg.batch_size * dist.world:  # an empty rank batch: NaN on all ranks
                raise ConfigError(f"{len(ds)} training rows cannot fill one batch of {cfg.batch_size} per rank on "
                                 f"{dist.world} rank(s); lower --batch-size")
            batches = ResumableBatches(len(ds), cfg.batch_size, seed, step, rank=dist.rank, world=dist.world)
            loader = torch.utils.data.DataLoader(ds, batch_sampler=batches,
                                                 collate_fn=collate_batched, num_workers=ls.num_workers,
                                                 pin_memory=ls.pin_memory, persistent_workers=ls.persistent_workers,
                                                 prefetch_factor=ls.prefetch_factor, generator=lgen)
        writer = self._tracker(out) if dist.main else None
        amp_dtype = getattr(torch, prec.dtype) if prec.enabled else None
        t_start = time.perf_counter()  # before the baseline validation: the budget counts every validation
        if warm and dist.main:  # the source is the baseline: best.pt is never worse than where --init started
            best_auc, vloss = self._validate(model, val, amp_dtype)
            history.append({"step": 0, "val_auc": best_auc, "val_loss": vloss, "elapsed_s": 0.0})
            ck.save(best_path, self._payload(model, arch, kw, seed, train, step, history))
            if writer:
                writer.scalars({"val/auc": best_auc, "val/loss": vloss}, 0)
        seen, t_rate, last_auc = 0, time.perf_counter(), float("nan")
        bar_total = int(budget_s) if budget_s else total_steps
        fields = "loss {task.fields[loss]} AUROC {task.fields[auc]} {task.fields[ips]} img/s"
        with progress_bar(f"{arch} s{seed}", total=bar_total, unit="steps" if not budget_s else "s",
                          enabled=self.progress and dist.main, fields=fields) as bar:
            bar.update(completed=int(elapsed_before) if budget_s else step)
            net.train()
            for x, y in loader:
                elapsed = elapsed_before + time.perf_counter() - t_start
                if budget_s and dist.active:  # rank 0's clock: the same schedule and stop on every rank
                    elapsed = broadcast(dist, elapsed)
                if step >= total_steps and not budget_s or (budget_s and elapsed >= budget_s):
                    break
                if cfg.max_steps and step >= cfg.max_steps:
                    break
                progress = elapsed / budget_s if budget_s else step / total_steps
                if plateau is None:
                    for g in opt.param_groups:
                        g["lr"] = cfg.lr * _lr_factor(progress, step, cfg.warmup_steps)
                loss = forward_loss(net, x, y, dev, step, seed, cfg.augment, channels_last, amp_dtype,
                                    (dist.rank, dist.world), cfg.band_jitter)
                optimizer_step(loss, model, opt, scaler, cfg.gradient_clip)
                step += 1
                seen += len(y) * dist.world
                now = time.perf_counter()
                if now - t_rate > 2:
                    ips = seen / (now - t_rate)
                    bar.update(ips=f"{ips:.0f}", loss=f"{loss.item():.4f}")
                    if writer:
                        writer.scalars({"train/images_per_s": ips}, step)
                    seen, t_rate = 0, now
                bar.update(completed=int(elapsed) if budget_s else step)
                if writer and (step % LOG_EVERY == 0 or step == 1):
                    writer.scalars({"train/loss": loss.item(), "train/lr": opt.param_groups[0]["lr"]}, step)
                if step % cfg.val_every == 0 or step == _stop_at_step:
                    rngs = gather(dist, rng_state(dev))  # every rank's generators, for an exact resume
                    if dist.main:
                        last_auc, vloss = self._validate(model, val, amp_dtype)
                        history.append({"step": step, "val_auc": last_auc, "val_loss": vloss,
                                        "elapsed_s": round(elapsed_before + time.perf_counter() - t_start, 2)})
                        bar.update(auc=f"{last_auc:.4f}")
                        if writer:
                            writer.scalars({"val/auc": last_auc, "val/loss": vloss}, step)
                        if last_auc > best_auc:
                            best_auc = last_auc
                            ck.save(best_path, self._payload(model, arch, kw, seed, train, step, history))
                        ck.save(last_path, {
                            **self._payload(model, arch, kw, seed, train, step, history),
                            "optimizer": opt.state_dict(), "scaler": scaler.state_dict() if prec.grad_scaler else {},
                            "elapsed_s": elapsed_before + time.perf_counter() - t_start,
                            "best_val_auc": best_auc, **self._rng_entry(rngs),
                        })
                    net.train()
                    # rank 0's AUC reaches every rank (the plateau schedule needs it); the broadcast
                    # also holds the others until the checkpoint is written.
                    last_auc = broadcast(dist, last_auc)
                    if plateau is not None:
                        plateau.step(last_auc)
                    if step == _stop_at_step:
                        if writer:
                            writer.close()
                        return {"stopped_at": step}
        elapsed = elapsed_before + time.perf_counter() - t_start
        self.model = model  # the trained module (not the DDP wrapper): the DDP tests compare ranks' weights
        rngs = gather(dist, rng_state(dev))
        if not dist.main:
            broadcast(dist, None)  # wait for rank 0's checkpoints and calibration
            return {"arch": arch, "seed": seed, "rank": dist.rank}
        last_auc, vloss = self._validate(model, val, amp_dtype)
        history.append({"step": step, "val_auc": last_auc, "val_loss": vloss, "elapsed_s": round(elapsed, 2)})
        if last_auc >= best_auc or not best_path.exists():
            ck.save(best_path, self._payload(model, arch, kw, seed, train, step, history))
        ck.save(last_path, {
            **self._payload(model, arch, kw, seed, train, step, history),
            "optimizer": opt.state_dict(), "scaler": scaler.state_dict() if prec.grad_scaler else {},
            "elapsed_s": elapsed, "best_val_auc": max(best_auc, last_auc), **self._rng_entry(rngs),
        })
        if writer:
            writer.scalars({"val/auc": last_auc, "val/loss": vloss}, step)
        result = self._finish(model, arch, kw, seed, train, val, out, history, step, elapsed, writer)
        if writer:
            writer.close()
        broadcast(dist, None)
        return result

    def _rng_entry(self, rngs: list[dict[str, Any]]) -> dict[str, Any]:
        """`rng_state` (this rank's: what single-process checkpoints always held) and, under DDP, every
        rank's in rank order."""
        return {"rng_state": rngs[0], **({"rng_states": rngs} if self.dist.active else {})}

    def _finish(self, model, arch, arch_kwargs, seed, train, val, out, history, step, elapsed,
                tracker=None) -> dict[str, Any]:
        """Reload the best weights, fit the temperature on the validation split, write best.pt."""
        best = ck.load(out / "best.pt")
        if best.get("init") and best["step"] == 0:
            print(f"note: {arch}-s{seed}: no validation beat the --init source; best.pt holds its weights "
                  "(recalibrated)", file=sys.stderr, flush=True)
        model = ck.build_model(best).to(self.device)
        logits = predict_logits(model, val.images, self.device)
        temperature = fit_temperature(val.labels, logits)
        probs = sigmoid(logits / temperature)
        from lenstrt.metrics import summary

        metrics = {**summary(val.labels, probs), "train_steps": step, "train_time_s": round(elapsed, 1),
                   "images_seen": step * self.cfg.batch_size * self.dist.world}
        best.update(temperature=temperature, metrics=metrics)
        ck.save(out / "best.pt", best)
        if tracker:  # the calibrated best model's validation metrics and plots
            from lenstrt.train.tracking import plot_validation

            tracker.scalars({f"calibrated/{k}": float(v) for k, v in metrics.items()
                             if isinstance(v, (int, float)) and not isinstance(v, bool)}
                            | {"calibrated/temperature": temperature}, step)
            for name, path in plot_validation(val.labels, probs, out / "plots").items():
                tracker.image(name, path, step)
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
            "precision": self.precision.dtype, "init": getattr(self, "_init", None), "host": self.host,
        }

    def _tracker(self, out: Path):
        """The member's experiment trackers (`--log`), named after the member (its directory)."""
        kinds = tuple(self.cfg.log) + (("tensorboard",) if self.cfg.tensorboard else ())
        if not kinds:
            return None
        from lenstrt.train.tracking import Tracker

        cfg = {"training": asdict(self.cfg), "data": asdict(self.dcfg), "device": self.device,
               "precision": asdict(self.precision), "world_size": self.dist.world}
        return Tracker(kinds, out, out.name, cfg)


def _simulated_population(train: Dataset, survey_name: str, data: list[str]) -> Dataset:
    """With --simulate-on-the-fly the batches come from the preset and only validation from the files:
    the checkpoint records the preset (survey, pixel scale), and files of other bands cannot validate it."""
    from lenstrt.data.simulate.presets import load_survey

    survey = load_survey(survey_name, train.image_size)
    named = not all(b == f"band{i}" for i, b in enumerate(train.bands))
    if len(survey.band_names) != len(train.bands) or named and survey.band_names != list(train.bands):
        raise ConfigError(f"{data[0]}: bands {','.join(train.bands)}, but --simulate-on-the-fly draws "
                          f"{survey.name}'s {','.join(survey.band_names)}; validate on cutouts of that preset "
                          f"(`lenstrt simulate --survey {survey_name}`)")
    return replace(train, bands=survey.band_names, survey=survey.name, pixel_scale=survey.pixel_scale)


def _member_sources(cfg: TrainingConfig, plan, out: Path, resume: bool) -> tuple[list[dict[str, Any] | None],
                                                                                   list[bool], list[str]]:
    """(each member's source, whether it resumes from its own last.pt, notes). A resumed member keeps the
    source its last.pt records (and must be resumed the way it started); `--init` is read only when some
    member still has to start, so a finished or moved source does not block a resume."""
    from lenstrt.train import init as winit

    lasts = [out / f"{a}-s{s}" / "last.pt" for a, s in plan]
    resuming = [resume and p.is_file() for p in lasts]
    recorded = [ck.load(p).get("init") if r else None for p, r in zip(lasts, resuming)]
    metas, notes = ([None] * len(plan), [])
    if cfg.init and not all(resuming):
        metas, notes = winit.resolve(cfg.init, plan)  # type: ignore[assignment]
    for i, r in enumerate(resuming):
        if not r:
            continue
        if not cfg.init:
            now = None
        elif metas[i] is not None:
            now = metas[i]
        else:  # every member resumes, so --init was not read: only that one was given can be checked
            now = recorded[i] or {"path": cfg.init}
        winit.same_lineage(lasts[i], recorded[i], now)
    return [rec if r else m for rec, m, r in zip(recorded, metas, resuming)], resuming, notes


def _check_inits(cfg: TrainingConfig, plan, inits, resuming: list[bool], train: Dataset) -> list[str]:
    """One ConfigError for a source that cannot start its member (metadata, then the weights' fit, each
    distinct source once); the notes to print. Members that resume from their own last.pt are skipped."""
    from lenstrt.models import create_model
    from lenstrt.train import init as winit

    notes: list[str] = []
    fitted: set[tuple[str, str]] = set()
    for (arch, _), meta, r in zip(plan, inits, resuming):
        if meta is None or r:
            continue
        kw = arch_kwargs(arch, cfg)
        notes += winit.check(meta, arch, kw, train, PREPROCESS_SPEC)
        if (arch, meta["path"]) not in fitted:
            winit.check_fit(create_model(arch, len(train.bands), train.image_size, **kw), meta)
            fitted.add((arch, meta["path"]))
    return notes


def peak_rss_mb() -> dict[str, float] | None:
    """Peak resident memory of this process and of its largest finished child (loader workers), MiB."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    kb = 1 / 1024 if sys.platform == "darwin" else 1  # ru_maxrss: KiB on Linux, bytes on macOS
    return {"main": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * kb / 1024, 1),
            "children": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * kb / 1024, 1)}


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
    from lenstrt.train import distributed as ddp
    from lenstrt.train.hardware import pick_device

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not resume and (out / "ensemble.json").exists():
        raise ConfigError(f"{out}: already holds a trained run; pass --resume to continue it or choose another --out")
    from lenstrt.train.tracking import check_available

    check_available(tuple(cfg.log) + (("tensorboard",) if cfg.tensorboard else ()))  # before any work
    dist, dev = ddp.init_from_env(pick_device(device), cfg.ddp_timeout_s)
    try:
        return _train(cfg, dcfg, data, out, dev, resume, progress, dist)
    finally:
        ddp.shutdown(dist)


def _wait_for_json(path: Path, token: str | None, poll_s: float = 1.0) -> dict[str, Any]:
    """The member result another rank writes (atomically) when its member is done."""
    while True:
        if path.exists():
            got = json.loads(path.read_text())
            if got.pop("launch", None) == token:
                return got
        time.sleep(poll_s)


def _train(cfg: TrainingConfig, dcfg: DataConfig, data: list[str], out: Path, dev: str, resume: bool, progress: bool,
           dist) -> dict[str, Any]:
    from lenstrt.train import distributed as ddp
    from lenstrt.train import init as winit
    from lenstrt.train.hardware import loader_settings
    from lenstrt.train.stream import choose_streaming

    progress = progress and dist.main
    plan = [(arch, cfg.seed + 1000 * a_i + m) for a_i, arch in enumerate(cfg.arch) for m in range(cfg.members)]
    inits, resuming, notes = _member_sources(cfg, plan, out, resume)  # before the data load
    streaming, data_why = (False, "simulated on the fly") if dcfg.simulate_on_the_fly else \
        choose_streaming(list(data), dcfg.stream, processes=dist.world)
    streaming, data_why = ddp.broadcast(dist, (streaming, data_why))  # every rank must load the same way
    if progress:
        print(f"training data: {data_why}", flush=True)
    if streaming:
        tr, va = load_streamed_data(list(data), cfg, dcfg)
    else:
        tr, va = split(load_training_data(data), cfg.val_fraction, cfg.seed)
    if dcfg.simulate_on_the_fly:
        tr = _simulated_population(tr, dcfg.survey, data)
    notes += _check_inits(cfg, plan, inits, resuming, tr)  # every member's source, before the first trains
    for note in dict.fromkeys(notes) if dist.main else ():
        print(f"note: {note}", file=sys.stderr, flush=True)
    by_member = cfg.member_parallel and dist.active
    # Member-parallel: each rank trains its members whole and alone (no gradient sync: a single-process
    # Trainer), on its own GPU; rank 0 collects the results from files, as members may take hours longer
    # than a collective's timeout. torchrun ends the job if a rank fails, so the wait cannot hang.
    trainer = Trainer(cfg, dcfg, dev, progress, ddp.SINGLE if by_member else dist)
    ls = loader_settings(dcfg, dev, in_memory=not dcfg.simulate_on_the_fly and not streaming, streaming=streaming)
    members = []
    # this launch's token: rank 0 waits for results written by this launch, not a stale file of an earlier one
    token = ddp.broadcast(dist, f"{time.time_ns()}") if by_member else None
    for i, (arch, seed) in enumerate(plan):
        name = f"{arch}-s{seed}"
        if by_member and i % dist.world != dist.rank:
            continue
        res = trainer.train_member(arch, seed, tr, va, out / name, resume=resume, init=inits[i])
        if by_member:
            write_json(out / name / "member.json", {**res, "rank": dist.rank, "launch": token})
        members.append({"name": name, "checkpoint": f"{name}/best.pt", **res})
    if by_member and dist.main:
        members = [{"name": f"{a}-s{s}", "checkpoint": f"{a}-s{s}/best.pt",
                    **_wait_for_json(out / f"{a}-s{s}" / "member.json", token)} for a, s in plan]
    manifest = {
        "schema": "lenstrt-run/1", "members": members, "device": dev,
        "precision": asdict(trainer.precision), "loader": asdict(ls),
        "data": {"paths": [str(p) for p in data], "hash": tr.data_hash, "n_train": tr.n,
                 "n_val": va.n, "survey": tr.survey, "bands": tr.bands, "streamed": streaming, "why": data_why},
        "distributed": {"world_size": dist.world, "backend": dist.backend or None,
                        "mode": "member-parallel" if by_member else ("ddp" if dist.active else None),
                        "effective_batch": cfg.batch_size * (1 if by_member else dist.world)},
        "lenstrt_version": __version__, "peak_rss_mb": peak_rss_mb(), "host": trainer.host,
        "init": [winit.record(m) for m in inits] if any(m is not None for m in inits) else None,
    }
    if dist.main:
        write_json(out / "ensemble.json", manifest)
    return manifest
