"""`hubmirror login`: verify credentials against a registry and store them like ``docker login``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ._app import app, fail, out, say

if TYPE_CHECKING:
    from ..registry.credentials import Credentials


async def _verify(registry: str, credentials: Credentials, insecure: bool | None) -> None:
    from ..registry.client import RegistryClient

    async with RegistryClient(registry, credentials=credentials, insecure=insecure) as client:
        await client.check_login()


@app.command()
def login(
    registry: Annotated[str, typer.Argument(help="Registry to log in to, e.g. docker.io or registry.example:5000.")],
    username: Annotated[str | None, typer.Option("--username", "-u", help="User name (prompted if absent).")] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password (or access token) from stdin.")
    ] = False,
    authfile: Annotated[
        Path | None,
        typer.Option(help="Auth file to write (default $REGISTRY_AUTH_FILE, else ~/.docker/config.json)."),
    ] = None,
    insecure: Annotated[bool, typer.Option("--insecure", help="Allow plain HTTP / unverified TLS.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
) -> None:
    """Check a user name and password against REGISTRY, then store them like `docker login`.

    The password is never a flag: pipe it with --password-stdin, or type it at the prompt.
    """
    import asyncio
    import getpass
    import json

    from .._errors import HubmirrorError
    from ..reference import api_host, normalize_registry
    from ..registry.credentials import Credentials, store_login

    reg = normalize_registry(registry)
    if username is None:
        if password_stdin or not sys.stdin.isatty():
            fail("--username is required with --password-stdin")
            raise typer.Exit(2)
        username = typer.prompt("Username", err=True)
    if password_stdin:
        password = sys.stdin.read().rstrip("\r\n")
    elif sys.stdin.isatty():
        password = getpass.getpass("Password: ")
    else:
        fail("no terminal to prompt for the password; use --password-stdin")
        raise typer.Exit(2)
    if not password:
        fail("empty password")
        raise typer.Exit(2)
    try:
        asyncio.run(_verify(reg, Credentials(username, password, "this login"), True if insecure else None))
        path = store_login(reg, username, password, authfile)
    except HubmirrorError as e:
        fail(e, prefix=f"login to {reg} failed:")
        raise typer.Exit(1) from None
    if as_json:
        out.print(json.dumps({"registry": reg, "host": api_host(reg), "username": username, "authfile": str(path)}))
    else:
        say(f"Login Succeeded: {username} at {reg}; credentials stored in {path}")
