"""``hubmirror demo``: the offline demo of the main job (see `hubmirror.demo`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._app import app, console, fail


@app.command()
def demo(
    workdir: Annotated[Path | None, typer.Option(help="Keep the demo's registries and state here.")] = None,
    keep: Annotated[bool, typer.Option(help="Do not delete the temporary directory.")] = False,
) -> None:
    """Run an offline demo: a Docker Hub emulator and a mirror registry on loopback, then sync four times:
    copy, no-op, a rebuilt image, and a fresh destination filled from a content mirror with 0 Hub pulls."""
    from .._errors import HubmirrorError
    from ..demo import run_demo

    try:
        code = run_demo(console, workdir, keep=keep)
    except HubmirrorError as e:
        fail(e)
        raise typer.Exit(1) from None
    raise typer.Exit(code)
