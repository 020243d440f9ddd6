"""The Typer application and the consoles every command prints through."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.text import Text

from .. import __version__

app = typer.Typer(
    name="hubmirror",
    help="Mirror Docker Hub's Official Images (or any image list) into your registry, within the pull quota.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

#: Human output (progress, tables) goes to stderr so that stdout stays clean for --json.
console = Console(stderr=True)
#: Machine output (--json) goes to stdout.
out = Console(highlight=False, soft_wrap=True)


@app.command()
def version() -> None:
    """Print hubmirror's version."""
    out.print(__version__)


def say(text: str) -> None:
    """Print *text* to stderr as it is: no rich markup or highlighting (it may hold [brackets] or paths)."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def fail(message: object, prefix: str = "error:") -> None:
    """Print an error to stderr; *message* is shown as it is (brackets in it are not rich markup)."""
    console.print(Text.assemble((prefix, "red"), " ", str(message)), highlight=False, soft_wrap=True)
