"""``hubmirror serve``: the sync on its schedule and on triggers, with a status page and an API."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from ._app import LogFormat, LogFormatOption, app, fail

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
    header_timeout: Annotated[
        float,
        typer.Option(
            min=0.1, help="Seconds a connection has to send a complete request head (idle connections close then)."
        ),
    ] = 20.0,
    body_timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds a webhook delivery has to send its whole body.")
    ] = 60.0,
    max_connections: Annotated[
        int,
        typer.Option(
            min=1, help="Open connections at most (the longest idle one is closed for a new one; capped by ulimit -n)."
        ),
    ] = 256,
    max_webhook_reads: Annotated[
        int, typer.Option(min=1, help="Webhook bodies read at the same time at most (more get 503).")
    ] = 2,
    log_format: LogFormatOption = LogFormat.text,
) -> None:
    """Run the sync on the config's schedule and on webhooks, one run at a time, with a status page.

    Endpoints: GET / (status page), GET /api/status, POST /api/sync (Bearer token from HUBMIRROR_API_TOKEN),
    POST /hooks/github (signed with HUBMIRROR_WEBHOOK_SECRET), GET /metrics, /healthz, /readyz.
    SIGTERM: a run in progress finishes its items in flight and records its state, then exit 0.
    The log (stderr) has a line per run start and end, per failed item and per quota wait.
    """
    import asyncio
    import logging
    import os

    from .._errors import HubmirrorError
    from ..config import load_config
    from ..redact import install_log_filter
    from ..runlog import setup_logging
    from ..server import API_TOKEN_ENV, WEBHOOK_SECRET_ENV, Limits, Secrets
    from ..server import serve as run_server

    setup_logging(log_format.value, level=logging.INFO)
    install_log_filter()  # no credential in a URL reaches the log (defence in depth: messages omit them)
    limits = Limits(
        header_timeout=header_timeout,
        body_timeout=body_timeout,
        max_connections=max_connections,
        max_webhook_reads=max_webhook_reads,
    )
    log = logging.getLogger("hubmirror.server")

    def error(message: object) -> None:
        if log_format is LogFormat.json:
            log.error("%s", message, extra={"fields": {"event": "error"}})
        else:
            fail(message)

    try:
        cfg = load_config(config)
        cfg.check_consistency()  # what sync checks once its flags are merged: here the file alone
        host, port = parse_listen(listen)
    except HubmirrorError as e:
        error(e)
        raise typer.Exit(1) from None
    if cfg.dest is None:
        error(f"{config}: no destination: add dest: REGISTRY/NAMESPACE or dest: oci:PATH")
        raise typer.Exit(1)
    secrets = Secrets(os.environ.get(WEBHOOK_SECRET_ENV) or None, os.environ.get(API_TOKEN_ENV) or None)

    def listening(url: str) -> None:
        log.info("listening on %s", url, extra={"fields": {"event": "listening", "url": url}})

    try:
        code = asyncio.run(run_server(cfg, host=host, port=port, secrets=secrets, limits=limits, on_listen=listening))
    except OSError as e:
        error(f"cannot listen on {listen}: {e.strerror or e}")
        raise typer.Exit(1) from None
    raise typer.Exit(code)
