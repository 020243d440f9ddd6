"""``hubmirror verify``: read back what the state says is mirrored; ``--repair`` copies back what is missing."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ._app import ContentMirrorOption, NoContentMirrorsOption, app, console, fail, load_sync_config, out, say


@app.command()
def verify(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file (as for sync).")] = None,
    dest: Annotated[str | None, typer.Option(help="REGISTRY/NAMESPACE or oci:PATH.")] = None,
    state: Annotated[
        str | None, typer.Option(help="State: a SQLite file (PATH or sqlite:///PATH) or postgresql://… URL.")
    ] = None,
    source: Annotated[str | None, typer.Option(help="Registry to read docker.io content from (--repair).")] = None,
    deep: Annotated[bool, typer.Option("--deep", help="Download every blob and check its digest.")] = False,
    repair: Annotated[
        bool, typer.Option("--repair", help="Copy back what is missing or wrong (within the pull budget).")
    ] = False,
    max_pulls: Annotated[int | None, typer.Option(help="--repair: spend at most N source manifest GETs.")] = None,
    insecure: Annotated[list[str] | None, typer.Option(help="Registry to reach over plain HTTP.")] = None,
    content_mirror: ContentMirrorOption = None,
    no_content_mirrors: NoContentMirrorsOption = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
) -> None:
    """Check that DEST holds what the state says hubmirror mirrored there: every tag's digest, every child
    manifest by digest, every blob by HEAD (--deep: downloaded and hashed).

    One line per problem, naming the tag and the digest. Exit codes: 0 all there (or all repaired); 1 problems.
    """
    import asyncio
    import json
    import logging

    from .._errors import ConfigError, HubmirrorError
    from ..verify import verify as run_verify

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    cli: dict[str, Any] = {
        "dest": dest,
        "state": state,
        "source": source,
        "max_pulls": max_pulls,
        "insecure": insecure,
    }
    try:
        cfg = load_sync_config(config, cli, content_mirror=content_mirror, no_content_mirrors=no_content_mirrors)
        if not cfg.dest:
            raise ConfigError("no destination: give --dest REGISTRY/NAMESPACE or --dest oci:PATH (or dest: in config)")
        report = asyncio.run(run_verify(cfg, deep=deep, repair=repair))
    except HubmirrorError as e:
        fail(e)
        raise typer.Exit(1) from None
    for p in report.problems:
        fail(p.line(), prefix="problem:" if p.repaired != "repaired" else "repaired:")
    looked = f"{report.tags} tags, {report.manifests} manifests, {report.blobs} blobs"
    if deep:
        looked += f", {report.bytes_hashed:,} bytes hashed"
    bad = sum(1 for p in report.problems if p.repaired != "repaired")
    if not report.problems:
        say(f"verify: {looked}: everything the state records is at {cfg.dest}")
    elif bad == 0:
        say(f"verify: {looked}: {report.repaired} problems, all repaired")
    else:
        hint = "" if repair else "; --repair copies back what is missing"
        console.print(f"verify: {looked}: {bad} problems{hint}", markup=False, highlight=False)
    if json_out:
        out.print(json.dumps(report.to_dict(), indent=2), markup=False)
    raise typer.Exit(report.exit_code)
