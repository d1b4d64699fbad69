from __future__ import annotations

import click


@click.command("evaluate")
def command():
    """(not yet available)"""
    raise click.ClickException("'lenstrt evaluate' is not implemented yet")
