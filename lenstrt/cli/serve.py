from __future__ import annotations

import click


@click.command("serve")
def command():
    """(not yet available)"""
    raise click.ClickException("'lenstrt serve' is not implemented yet")
