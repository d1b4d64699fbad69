"""The `lenstrt` command group. Command modules import only click at module level so that
`lenstrt --help` stays instant; torch, onnxruntime and tensorrt load inside the commands."""

from __future__ import annotations

import sys

import click

from lenstrt import __version__
from lenstrt.errors import LenstrtError


class _Group(click.Group):
    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        """Click's own usage errors (a bad option value, a missing argument) as one line too, like ours."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx else "lenstrt"
            click.secho(f"error: {exc.format_message()} (see `{where} --help`)", fg="red", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except LenstrtError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(getattr(exc, "exit_code", 1))  # 130/143 for a run stopped by SIGINT/SIGTERM


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lenstrt")
def cli() -> None:
    """Strong-lens finding from simulation to fast inference: simulate -> train -> export -> serve -> bench."""


def _register() -> None:
    from lenstrt.cli import bench, cloud, evaluate, export, info, preview, serve, simulate, train, verify
    from lenstrt.cli import cutout as cutout_cmd
    from lenstrt.cli import inspect as inspect_cmd

    for mod in (info, simulate, preview, train, evaluate, export, cutout_cmd, serve, inspect_cmd, bench, cloud,
                verify):
        cli.add_command(mod.command)


_register()


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
