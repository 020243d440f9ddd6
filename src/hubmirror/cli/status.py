"""``hubmirror status``: what the sync state knows: tags tracked, the jobs and what each owns, library commits,
deferred work, runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._app import app, console, fail, out, say


@app.command()
def status(
    state: Annotated[
        str | None, typer.Option(help="State: SQLite PATH or postgresql:// URL (default: the config's).")
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file naming the state.")] = None,
    runs: Annotated[int, typer.Option(help="How many recent runs to show.")] = 5,
    json_out: Annotated[bool, typer.Option("--json", help="Print as JSON on stdout.")] = False,
) -> None:
    """Show what the sync state knows: tags tracked, jobs and the tags each owns, synced library commits,
    deferred work, recent runs."""
    import json

    from rich.table import Table

    from .._errors import HubmirrorError
    from .._units import size_text
    from ..config import default_state_path, load_config
    from ..state import State, StateLocation

    try:
        where = state or (load_config(config).state if config else default_state_path())
        location = StateLocation.parse(where)
        if location.path is not None and not location.path.exists():
            say(f"no state at {location}: no sync has run with it yet")
            raise typer.Exit(1)
        with State.open(where) as st:
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
    if info["jobs"]:
        # One line a job (not a table: a job named by a file's path is long, and must stay whole to be found).
        console.print(f"{len(info['jobs'])} jobs (prune deletes only the tags of the job that runs):")
        for j in info["jobs"]:
            run = j["last_run"]
            last = f"; last run {run['id']} {run['status']} at {run['started'][:19]}" if run else ""
            console.print(
                f"  {j['name']}: {j['tags']} tags: {_owned_text(j['owned'])}{last}", markup=False, soft_wrap=True
            )
    unowned = info["unowned"]
    if unowned["tags"]:
        console.print(
            f"{unowned['tags']} tags no job owns (recorded before jobs were tracked; a job that selects one "
            f"claims it; prune never deletes the others): {_owned_text(unowned['owned'])}",
            markup=False,
            soft_wrap=True,
        )
    for library, commit in info["libraries"].items():
        console.print(f"library {library}: last synced at {commit[:12]}", markup=False)
    if info["deferred"]:
        console.print(f"[yellow]{len(info['deferred'])} deferred[/] (the next sync takes them first):")
        for d in info["deferred"]:
            console.print(f"  {d['source']} → {d['dest']} ({', '.join(d['tags'])}): {d['reason']}", markup=False)
    for w in info.get("work", []):  # workers sharing a run of a PostgreSQL state
        units = ", ".join(f"{n} {k}" for k, n in sorted(w["units"].items()))
        console.print(f"run {w['run']} ({w['status']}) of {w['job']}: {units}", markup=False)
        for worker in w["workers"]:
            lease = "lease ran out" if worker["lease_left"] < 0 else f"lease {worker['lease_left']:.0f}s left"
            console.print(f"  worker {worker['worker']}: {worker['status']}, {lease}", markup=False)
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


def _owned_text(owned: dict[str, list[str]], limit: int = 4) -> str:
    """``repo (N tags), …`` for the first *limit* repositories, then how many more."""
    parts = [f"{repo} ({len(tags)})" if len(tags) > 1 else f"{repo}:{tags[0]}" for repo, tags in owned.items()]
    more = f", … {len(parts) - limit} more" if len(parts) > limit else ""
    return ", ".join(parts[:limit]) + more
