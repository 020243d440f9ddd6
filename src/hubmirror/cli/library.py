"""`hubmirror library stats|list|diff`: inspect the official-images library at any commit."""

from __future__ import annotations

import json
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from .._defaults import DEFAULT_LIBRARY
from ._app import app, console, fail, out, warn

if TYPE_CHECKING:
    from ..library import LibrarySource

library_app = typer.Typer(help="Inspect the official-images library: stats, tag groups, diffs.", no_args_is_help=True)
app.add_typer(library_app, name="library")

T = TypeVar("T")

LibraryOpt = Annotated[
    str, typer.Option("--library", help="official-images git URL, local clone or bundle file.", show_default=True)
]
#: ``--source`` was these commands' name for ``--library`` (``sync --source`` is the image registry): kept,
#: hidden, so that old command lines still work.
SourceAlias = Annotated[str | None, typer.Option("--source", hidden=True, help="Old name of --library.")]
CacheOpt = Annotated[
    Path | None, typer.Option("--cache-dir", help="Cache directory (default $XDG_CACHE_HOME/hubmirror).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]


async def _open(library: str, source: str | None, cache_dir: Path | None) -> LibrarySource:
    from ..library import LibrarySource

    return await LibrarySource.open(source or library, cache_dir)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run *coro*; a hubmirror error becomes a one-line message and exit status 1."""
    import asyncio

    from .._errors import HubmirrorError

    try:
        return asyncio.run(coro)
    except HubmirrorError as err:
        fail(err)
        raise typer.Exit(1) from None


def _print_errors(errors: list[str]) -> None:
    for e in errors:
        warn(e)


@library_app.command()
def stats(
    library: LibraryOpt = DEFAULT_LIBRARY,
    commit: Annotated[str | None, typer.Option("--commit", help="Commit or rev (default: branch tip).")] = None,
    cache_dir: CacheOpt = None,
    as_json: JsonOpt = False,
    source: SourceAlias = None,
) -> None:
    """Count files, entries, tags and platform images at one commit."""
    from ..library import load_library

    async def go() -> tuple[dict[str, Any], list[str]]:
        src = await _open(library, source, cache_dir)
        lib = await load_library(src, commit)
        return dict(lib.stats().as_dict()), [str(e) for e in lib.errors]

    data, errors = _run(go())
    if as_json:
        out.print(json.dumps(data, indent=2), highlight=False, markup=False)
    else:
        from rich.table import Table

        table = Table(title=f"library at {data['commit'][:12]}")
        table.add_column("count")
        table.add_column("value", justify="right")
        for k, v in data.items():
            if k != "commit":
                table.add_row(k, str(v))
        console.print(table)
    _print_errors(errors)


@library_app.command("list")
def list_(
    library: LibraryOpt = DEFAULT_LIBRARY,
    commit: Annotated[str | None, typer.Option("--commit", help="Commit or rev (default: branch tip).")] = None,
    images: Annotated[str, typer.Option("--images", help="Comma-separated repository names or globs.")] = "",
    images_file: Annotated[Path | None, typer.Option("--images-file", help="File with one name per line.")] = None,
    include: Annotated[list[str] | None, typer.Option("--include", help="Tag regex to keep (repeatable).")] = None,
    exclude: Annotated[list[str] | None, typer.Option("--exclude", help="Tag regex to drop (repeatable).")] = None,
    platform: Annotated[list[str] | None, typer.Option("--platform", help="Platform to keep (repeatable).")] = None,
    windows: Annotated[bool, typer.Option("--windows", help="Include Windows platforms.")] = False,
    cache_dir: CacheOpt = None,
    as_json: JsonOpt = False,
    source: SourceAlias = None,
) -> None:
    """One line per tag group (tags resolving to one manifest): repository, tags, platforms."""
    from ..library import LibraryFilter, load_library

    async def go() -> tuple[list[dict[str, Any]], list[str]]:
        flt = LibraryFilter.build(
            images=images.split(","),
            images_file=images_file,
            include=include or (),
            exclude=exclude or (),
            platforms=platform or (),
            windows=windows,
        )
        src = await _open(library, source, cache_dir)
        lib = await load_library(src, commit)
        rows = [
            {
                "repo": g.repo,
                "tags": list(g.tags),
                "platforms": [str(p) for p in g.platforms],
                "upstream_platforms": [str(p) for p in g.upstream_platforms],
                "shared": g.shared,
                "windows": g.windows,
            }
            for g in flt.apply(lib.tag_groups())
        ]
        return rows, [str(e) for e in lib.errors if flt.match_repository(e.file.rsplit("/", 1)[-1] if e.file else "")]

    rows, errors = _run(go())
    if as_json:
        out.print(json.dumps(rows, indent=2), highlight=False, markup=False)
    else:
        for r in rows:
            out.print(
                f"{r['repo']}  {', '.join(r['tags'])}  [{', '.join(r['platforms'])}]", highlight=False, markup=False
            )
    _print_errors(errors)


@library_app.command()
def diff(
    old: Annotated[str, typer.Argument(help="Old commit or rev.")],
    new: Annotated[str, typer.Argument(help="New commit or rev.")],
    library: LibraryOpt = DEFAULT_LIBRARY,
    cache_dir: CacheOpt = None,
    as_json: JsonOpt = False,
    source: SourceAlias = None,
) -> None:
    """Tag groups added, removed and changed between two commits."""
    from ..library import diff_library

    async def go() -> dict[str, Any]:
        src = await _open(library, source, cache_dir)
        return (await diff_library(src, old, new)).as_dict()

    data = _run(go())
    if as_json:
        out.print(json.dumps(data, indent=2), highlight=False, markup=False)
        return
    out.print(f"diff {data['old'][:12]}..{data['new'][:12]}", highlight=False, markup=False)
    for name in data["repositories_added"]:
        out.print(f"+ repository {name}", highlight=False, markup=False)
    for name in data["repositories_removed"]:
        out.print(f"- repository {name}", highlight=False, markup=False)
    for g in data["added"]:
        out.print(f"+ {g['repo']}:{','.join(g['tags'])}  [{', '.join(g['platforms'])}]", highlight=False, markup=False)
    for g in data["removed"]:
        out.print(f"- {g['repo']}:{','.join(g['tags'])}", highlight=False, markup=False)
    for c in data["changed"]:
        what = [k for k in ("tags_changed", "platforms_changed", "rebuild") if c[k]]
        out.print(
            f"~ {c['new']['repo']}:{','.join(c['new']['tags'])}  ({', '.join(what)})"
            + (f"  was {','.join(c['old']['tags'])}" if c["tags_changed"] else ""),
            highlight=False,
        )
    _print_errors(data["errors"])
