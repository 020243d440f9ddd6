"""The Typer application and the consoles every command prints through.

Start-up is kept short (``hubmirror --help`` and ``--version`` import no aiohttp, pydantic or the sync
machinery): command modules import only typer, rich's console and the standard library at module level,
and import what a command does at the start of its body. ``tests/test_cli_help.py`` checks this.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from .. import __version__

if TYPE_CHECKING:
    from ..config import SyncConfig

app = typer.Typer(
    name="hubmirror",
    help="Mirror Docker Hub's Official Images (or any image list) into your registry, within the pull quota.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Help texts are plain text: 'OS/ARCH[/VARIANT]' or '[brackets]' must never be read as rich markup.
    rich_markup_mode=None,
)

#: Human output (progress, tables) goes to stderr so that stdout stays clean for --json.
console = Console(stderr=True)
#: Off a terminal (a log, a pipe, CI) lines are as wide as they need: rich would cut tables at 80 columns
#: (or $COLUMNS), and a reference cut short is no use in a log.
LOG_WIDTH = 4096
if not console.is_terminal:
    console.width = max(console.width, LOG_WIDTH)
#: Machine output (--json) goes to stdout.
out = Console(highlight=False, soft_wrap=True)


def _print_version(value: bool) -> None:
    if value:
        print(__version__)
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print hubmirror's version and exit."),
    ] = False,
) -> None:
    """Mirror Docker Hub's Official Images (or any image list) into your registry, within the pull quota."""


@app.command()
def version() -> None:
    """Print hubmirror's version."""
    out.print(__version__, markup=False)


#: ``--content-mirror`` and ``--no-content-mirrors``, shared by ``sync`` and ``copy``.
ContentMirrorOption = Annotated[
    list[str] | None,
    typer.Option(
        "--content-mirror",
        metavar="REGISTRY[/PREFIX][,rate=N][,stall_timeout=S][,min_speed=B]",
        help="Read content by digest from this mirror first (repeatable; replaces the defaults). Options: rate="
        "requests/s (public.ecr.aws: 1), stall_timeout=seconds without a byte (20s), min_speed=bytes/s (32k).",
    ),
]
NoContentMirrorsOption = Annotated[
    bool, typer.Option("--no-content-mirrors", help="Use no content mirrors (not even the defaults).")
]


class LogFormat(StrEnum):
    """``--log-format``: log lines as text, or one JSON object per line."""

    text = "text"
    json = "json"


#: ``--log-format``, shared by ``serve`` and ``sync`` (and ``sync --daemon``).
LogFormatOption = Annotated[
    LogFormat,
    typer.Option(
        "--log-format",
        help="Log lines as text, or as one JSON object per line on stderr (json: run start and end with outcome"
        " and exit_code, failed items, deferrals, quota waits; no progress bars or table).",
    ),
]


def say(text: str) -> None:
    """Print *text* to stderr as it is: no rich markup or highlighting (it may hold [brackets] or paths)."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def fail(message: object, prefix: str = "error:") -> None:
    """Print an error to stderr; *message* is shown as it is (brackets in it are not rich markup), except
    that URLs in it lose their credentials (`hubmirror.redact`)."""
    from ..redact import redact_text

    text = redact_text(str(message))
    console.print(Text.assemble((prefix, "red"), " ", text), highlight=False, soft_wrap=True)


def warn(message: object) -> None:
    """Print a warning to stderr; *message* is shown as it is (URLs without credentials)."""
    from ..redact import redact_text

    text = redact_text(str(message))
    console.print(Text.assemble(("warning:", "yellow"), " ", text), highlight=False, soft_wrap=True)


def load_sync_config(
    config: Path | None, cli: dict[str, Any], *, content_mirror: list[str] | None, no_content_mirrors: bool
) -> SyncConfig:
    """The config file (if any) with the command's flags laid over it (`SyncConfig.merge`), as `check` and
    `verify` read it: ``--content-mirror`` and ``--no-content-mirrors`` together are refused."""
    from .._errors import ConfigError
    from ..config import SyncConfig as Config
    from ..config import load_config

    if no_content_mirrors and content_mirror:
        raise ConfigError("give either --content-mirror or --no-content-mirrors, not both")
    base = load_config(config) if config is not None else Config()
    cfg = base.merge({**cli, "content_mirrors": content_mirror})
    return cfg.without_content_mirrors() if no_content_mirrors else cfg
