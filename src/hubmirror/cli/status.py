"""``hubmirror status``: what the sync state knows: tags tracked, library commits, deferred work, runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._app import app, console, fail, out, say


@app.command()
def status(
    state: Annotated[Path | None, typer.Option(help="SQLite state file (default: the config's).")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file naming the state.")] = None,
    runs: Annotated[int, typer.Option(help="How many recent runs to show.")] = 5,
    json_out: Annotated[bool, typer.Option("--json", help="Print as JSON on stdout.")] = False,
) -> None:
    """Show what the sync state knows: tags tracked, synced library commits, deferred work, recent runs."""
    import json

    from rich.table import Table

    from .._errors import HubmirrorError
    from .._units import size_text
    from ..config import default_state_path, load_config
    from ..state import State

    try:
        path = state or (load_config(config).state if config else default_state_path())
        if not path.exists():
            say(f"no state at {path}: no sync has run with it yet")
            raise typer.Exit(1)
        with State.open(path) as st:
            info = st.overview(runs)
    except HubmirrorError as e:
        fail(e)
        raise typer.Exit(1) from None
    if json_out:
        out.print(json.dumps(info, indent=2), markup=False)
        return
    console.print(
        f"state {info['state']}: {info['tags']} tags in {info['repositories']} repositories "
        f"({info['tags_created']} created by hubmirror)"
    )
    for library, commit in info["libraries"].items():
        console.print(f"library {library}: last synced at {commit[:12]}", markup=False)
    if info["deferred"]:
        console.print(f"[yellow]{len(info['deferred'])} deferred[/] (the next sync takes them first):")
        for d in info["deferred"]:
            console.print(f"  {d['source']} → {d['dest']} ({', '.join(d['tags'])}): {d['reason']}", markup=False)
    table = Table(title="recent runs", title_justify="left")
    for col in ("run", "started", "status", "commit", "pulls", "bytes"):
        table.add_column(col)
    for r in info["runs"]:
        summary = r["summary"] or {}
        table.add_row(
            str(r["id"]),
            r["started"][:19],
            r["status"],
            (r["commit"] or "")[:12],
            str(summary.get("manifest_gets", "")),
            size_text(summary["bytes"]) if "bytes" in summary else "",
        )
    console.print(table)
