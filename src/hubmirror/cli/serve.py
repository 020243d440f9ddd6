"""``hubmirror serve``: the sync on its schedule and on triggers, with a status page and an API."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from ._app import app, fail, say

DEFAULT_LISTEN = "127.0.0.1:8080"


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6) → (host, port); `ConfigError` otherwise."""
    from .._errors import ConfigError

    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^:\[\]]+):(\d{1,5})", value.strip())
    port = int((m.group(2) or m.group(4)) if m else 0)
    if m is None or not 0 < port < 65536:
        raise ConfigError(f"--listen {value!r}: expected HOST:PORT, e.g. 127.0.0.1:8080 or 0.0.0.0:8080")
    return (m.group(1) or m.group(3)), port


@app.command()
def serve(
    config: Annotated[Path, typer.Option("--config", "-c", help="YAML config file (as for sync, plus schedule:).")],
    listen: Annotated[str, typer.Option(help="HOST:PORT to listen on.")] = DEFAULT_LISTEN,
) -> None:
    """Run the sync on the config's schedule and on webhooks, one run at a time, with a status page.

    Endpoints: GET / (status page), GET /api/status, POST /api/sync (Bearer token from HUBMIRROR_API_TOKEN),
    POST /hooks/github (signed with HUBMIRROR_WEBHOOK_SECRET), GET /metrics, /healthz, /readyz.
    SIGTERM: a run in progress finishes its items in flight and records its state, then exit 0.
    """
    import asyncio
    import logging
    import os

    from .._errors import HubmirrorError
    from ..config import load_config
    from ..server import API_TOKEN_ENV, WEBHOOK_SECRET_ENV, Secrets
    from ..server import serve as run_server

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(config)
        cfg.check_consistency()  # what sync checks once its flags are merged: here the file alone
        host, port = parse_listen(listen)
    except HubmirrorError as e:
        fail(e)
        raise typer.Exit(1) from None
    if cfg.dest is None:
        fail(f"{config}: no destination: add dest: REGISTRY/NAMESPACE or dest: oci:PATH")
        raise typer.Exit(1)
    secrets = Secrets(os.environ.get(WEBHOOK_SECRET_ENV) or None, os.environ.get(API_TOKEN_ENV) or None)
    try:
        code = asyncio.run(
            run_server(cfg, host=host, port=port, secrets=secrets, on_listen=lambda u: say(f"listening on {u}"))
        )
    except OSError as e:
        fail(f"cannot listen on {listen}: {e.strerror or e}")
        raise typer.Exit(1) from None
    raise typer.Exit(code)
