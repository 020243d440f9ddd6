"""``hubmirror check``: do the source, the content mirrors and the destination answer as hubmirror expects?"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ._app import ContentMirrorOption, NoContentMirrorsOption, app, fail, load_sync_config, out, say


@app.command()
def check(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file (as for sync).")] = None,
    dest: Annotated[str | None, typer.Option(help="REGISTRY/NAMESPACE or oci:PATH.")] = None,
    source: Annotated[str | None, typer.Option(help="Registry to read docker.io content from.")] = None,
    images: Annotated[list[str] | None, typer.Option("--images", help="Image whose tags the checks look at.")] = None,
    list_file: Annotated[
        Path | None, typer.Option("--list", help="File of image references (the first is used).")
    ] = None,
    prune: Annotated[bool | None, typer.Option("--prune", help="Also check that deletes are allowed.")] = None,
    hub_api: Annotated[str | None, typer.Option(help="Docker Hub's tags API (default https://hub.docker.com).")] = None,
    insecure: Annotated[list[str] | None, typer.Option(help="Registry to reach over plain HTTP.")] = None,
    content_mirror: ContentMirrorOption = None,
    no_content_mirrors: NoContentMirrorsOption = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the checks as JSON on stdout.")] = False,
) -> None:
    """Check, before a first sync, that the source (token, quota left from a free HEAD, the tags API), each
    content mirror (token, a sample digest) and the destination (credentials, push, mount; delete with
    --prune) answer as hubmirror expects. One line per check with what to do when it fails.

    Writes a 2-byte blob and a probe manifest under NAMESPACE/hubmirror-check. Exit 1 if a needed check fails.
    """
    import asyncio
    import json
    import logging
    from dataclasses import asdict

    from .._errors import HubmirrorError
    from ..preflight import run_checks

    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    cli: dict[str, Any] = {
        "dest": dest,
        "source": source,
        "images": [v.strip() for i in images or [] for v in i.split(",") if v.strip()] or None,
        "list": list_file,
        "prune": prune,
        "hub_api": hub_api,
        "insecure": insecure,
    }
    try:
        cfg = load_sync_config(config, cli, content_mirror=content_mirror, no_content_mirrors=no_content_mirrors)
        report = asyncio.run(run_checks(cfg))
    except HubmirrorError as e:
        fail(e)
        raise typer.Exit(1) from None
    for c in report.checks:
        say(c.line())
    failed = [c for c in report.checks if c.status == "fail" and c.needed]
    say("check: all needed checks passed" if not failed else f"check: {len(failed)} needed check(s) failed")
    if json_out:
        out.print(json.dumps([asdict(c) for c in report.checks], indent=2), markup=False)
    raise typer.Exit(report.exit_code)
