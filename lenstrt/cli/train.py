from __future__ import annotations

import os

import click

from lenstrt.cli import options


@click.command("train")
@click.option("--data", multiple=True, required=True, help="Training cutouts (files, directories, globs).")
@click.option("--arch", multiple=True, help="Architecture (repeat for an ensemble): resnet18, vit_b_16, vit_small, ...")
@click.option("--members", type=click.IntRange(min=1), default=None, help="Members per architecture (different seeds).")
@click.option("--epochs", type=click.IntRange(min=1), default=None)
@click.option("--max-steps", type=click.IntRange(min=1), default=None)
@click.option("--time-budget", "time_budget_min", type=click.FloatRange(min=0.01), default=None,
              help="Minutes per member; the LR schedule then decays to zero exactly when time is up.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None)
@click.option("--lr", type=float, default=None)
@click.option("--amp/--no-amp", default=None, help="Mixed precision (default: auto, see docs/training.md).")
@click.option("--amp-dtype", type=click.Choice(["auto", "fp16", "bf16"]), default=None)
@click.option("--grad-checkpointing/--no-grad-checkpointing", default=None, help="ViT: recompute activations.")
@click.option("--scheduler", type=click.Choice(["cosine", "plateau"]), default=None)
@click.option("--val-every", type=click.IntRange(min=1), default=None)
@click.option("--seed", type=int, default=None)
@click.option("--simulate-on-the-fly", is_flag=True, default=None, help="Train on freshly simulated batches.")
@click.option("--stream/--in-memory", "stream", default=None,
              help="Stream training shards in slices, or load them into RAM (default: chosen from the data "
                   "size and the available memory).")
@click.option("--shuffle-buffer", type=click.IntRange(min=1), default=None, help="Rows in the streaming shuffle buffer.")
@click.option("--workers", "num_workers", type=click.IntRange(min=0), default=None,
              help="DataLoader worker processes (default: tuned to the machine).")
@click.option("--log", "log", multiple=True, type=click.Choice(["tensorboard", "wandb", "mlflow"]),
              help="Experiment tracking (repeatable): losses, LR, validation metrics, throughput, plots, config.")
@click.option("--nproc", type=click.IntRange(min=1), default=None,
              help="Train one model on N processes of this node (DDP via torchrun: one per GPU, or gloo on CPU).")
@click.option("--member-parallel/--no-member-parallel", default=None,
              help="With --nproc N: the ensemble's members are trained at once, each whole on one rank (one GPU "
                   "each), instead of every member on all N ranks with DDP.")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoints.")
@click.option("--init", "init", type=click.Path(), default=None,
              help="Start from the weights of this checkpoint or run directory (fine-tuning); optimizer and "
                   "LR schedule start fresh.")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Run directory.")
@options.config
@options.quiet
def command(data, arch, members, epochs, max_steps, time_budget_min, batch_size, lr, amp, amp_dtype,
            grad_checkpointing, scheduler, val_every, seed, simulate_on_the_fly, stream, shuffle_buffer, num_workers,
            log, nproc, member_parallel, device, resume, init, out, config_path, quiet):
    """Train lens classifiers (an ensemble with several --arch / --members) with AMP and calibration."""
    from lenstrt.io import writable_dir

    writable_dir(out, "--out")  # before any work: an unusable output is one line

    from lenstrt.config import load_config, override
    from lenstrt.train.trainer import train

    cfg = load_config(config_path)
    nproc = nproc or cfg.training.nproc
    if member_parallel and nproc <= 1 and int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
        raise click.UsageError("--member-parallel trains members on several processes: add --nproc N (N > 1)")
    if nproc > 1 and int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:  # a rank (WORLD_SIZE set) trains
        from lenstrt.train.distributed import launch

        rc = launch(nproc, _argv_without_nproc(click.get_current_context()))
        if rc:
            raise click.ClickException(f"torchrun: a rank failed (exit status {rc}); its error is printed above")
        return
    tcfg = override(cfg.training, arch=tuple(arch), members=members, epochs=epochs, max_steps=max_steps,
                    time_budget_min=time_budget_min, batch_size=batch_size, lr=lr, amp=amp, amp_dtype=amp_dtype,
                    grad_checkpointing=grad_checkpointing, scheduler=scheduler, val_every=val_every, seed=seed,
                    log=tuple(log), member_parallel=member_parallel, init=init)
    dcfg = override(cfg.data, simulate_on_the_fly=simulate_on_the_fly, stream=stream, shuffle_buffer=shuffle_buffer,
                    num_workers=num_workers)
    manifest = train(tcfg, dcfg, list(data), out, device=device, resume=resume, progress=not quiet)
    if manifest["distributed"]["world_size"] > 1 and "RANK" in os.environ and os.environ["RANK"] != "0":
        return  # rank 0 reports
    click.echo(f"device {manifest['device']}, {manifest['precision']['why']}; data: {manifest['data']['why']}; "
               f"loader: {manifest['loader']['why']}")
    for m in manifest["members"]:
        mt = m["metrics"]
        click.echo(f"{m['name']}: val AUROC {mt['roc_auc']:.4f}, TPR@FPR1e-3 {mt['tpr_at_fpr_1e-3']:.3f}, "
                   f"T={m['temperature']:.2f}, {mt['train_steps']} steps in {mt['train_time_s']:.0f} s")
    click.echo(f"run: {out}/ensemble.json")


def _argv_without_nproc(ctx: click.Context) -> list[str]:
    """This command's options as given (defaults left out), for the ranks; without --nproc, so they do
    not launch again (torchrun sets WORLD_SIZE, which the trainer joins)."""
    argv: list[str] = []
    for p in ctx.command.params:
        value = ctx.params.get(p.name)
        if p.name == "nproc" or not isinstance(p, click.Option) or value is None or value == ():
            continue
        if p.name == "device" and value == "auto":
            continue
        if p.is_flag and p.secondary_opts:
            argv.append(p.opts[0] if value else p.secondary_opts[0])
        elif p.is_flag:
            if value:
                argv.append(p.opts[0])
        else:
            for v in value if p.multiple else (value,):
                argv += [p.opts[0], str(v)]
    return argv


if __name__ == "__main__":  # torchrun -m lenstrt.cli.train ...: one rank
    command(prog_name="lenstrt train")
