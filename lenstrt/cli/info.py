from __future__ import annotations

import json

import click


@click.command("info")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def command(as_json: bool) -> None:
    """Versions, backends and hardware: paste this into bug reports."""
    from lenstrt.envinfo import collect

    info = collect()
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="lenstrt environment", show_header=False)
    for key, value in info.items():
        if isinstance(value, (list, dict)):
            value = json.dumps(value)
        table.add_row(key, escape(str(value)))  # "lenstrt[trt]" is text, not rich markup
    Console().print(table)
