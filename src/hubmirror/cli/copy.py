"""`hubmirror copy SRC DST`: copy one image (all platforms, or the selected ones) between registries and
OCI layouts, with progress on stderr and an optional JSON summary on stdout."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from ._app import ContentMirrorOption, NoContentMirrorsOption, app, console, fail, out, say

if TYPE_CHECKING:
    from ..copy import CopyResult
    from ..registry.tls import TLSSettings


def _tls_flags(
    ca_files: list[str] | None, cert_files: list[str] | None, key_files: list[str] | None
) -> dict[str, TLSSettings]:
    """``--ca-file [REGISTRY=]FILE`` and friends → TLS settings per registry (``""``: both registries)."""
    from ..reference import normalize_registry
    from ..registry.tls import TLSSettings

    fields: dict[str, dict[str, str]] = {}
    for name, values in (("ca_file", ca_files), ("cert_file", cert_files), ("key_file", key_files)):
        for value in values or []:
            registry, sep, path = value.partition("=")
            if not sep or not registry or "/" in registry:
                registry, path = "", value
            fields.setdefault(normalize_registry(registry) if registry else "", {})[name] = path
    both = fields.get("", {})
    for registry, kw in fields.items():  # a registry's own flags add to (and override) those for both
        fields[registry] = {**both, **kw}
    return {
        registry: TLSSettings(ca_file=kw.get("ca_file"), cert_file=kw.get("cert_file"), key_file=kw.get("key_file"))
        for registry, kw in fields.items()
    }


def _summary(res: CopyResult, src: str, dst: str) -> None:
    from rich.filesize import decimal

    if res.skipped is not None:
        say(f"nothing copied: {res.skipped}")
        return
    state = "already up to date" if res.up_to_date else "copied"
    say(f"{src} → {dst}: {state}, {res.digest}")
    if res.tags:
        say(f"  tags: {', '.join(res.tags)} ({len(res.tags_written)} written)")
    say(
        f"  blobs: {res.blobs_copied} copied, {res.blobs_skipped} skipped, {res.blobs_mounted} mounted, "
        f"{decimal(res.bytes_copied)}; manifests: {res.manifests_copied} copied, {res.manifests_skipped} skipped; "
        f"source: {res.source_manifest_gets} manifest GETs, {res.source_manifest_heads} HEADs"
    )
    for src_stats in res.sources:
        if src_stats["role"] != "mirror":
            continue
        line = (
            f"  content mirror {src_stats['name']}: {src_stats['manifests']} manifests, "
            f"{decimal(src_stats['bytes'])} of blobs"
        )
        if src_stats["mismatches"]:
            line += f", {src_stats['mismatches']} digest mismatch(es) (taken from the next source)"
        if src_stats["dropped"]:
            line += f"; dropped: {src_stats['dropped']}"
        say(line)
    if res.filtered:
        say(
            f"  note: --platform filtering changed the digest: upstream {res.source_digest}, "
            f"mirror {res.digest} (@sha256 pins of the upstream image will not resolve here)"
        )
    if res.foreign_layers:
        say(f"  {len(res.foreign_layers)} foreign layer(s) not copied (clients fetch them from their URLs):")
        for digest in res.foreign_layers:
            say(f"    {digest}")


def _mirrors(given: list[str] | None, off: bool) -> list[str] | None:
    """``--content-mirror`` values (validated), ``[]`` for ``--no-content-mirrors``, None for the defaults."""
    from .._errors import ConfigError
    from ..config import SyncConfig

    if off and given:
        raise ConfigError("give either --content-mirror or --no-content-mirrors, not both")
    if off:
        return []
    if not given:
        return None
    return SyncConfig().merge({"content_mirrors": given}).content_mirrors


@app.command("copy")
def copy_command(
    src: Annotated[
        str, typer.Argument(help="Source: an image reference (python:3.12, host/repo:tag) or oci:PATH:TAG.")
    ],
    dst: Annotated[
        str, typer.Argument(help="Destination: an image reference or oci:PATH[:TAG] (no tag: the source's).")
    ],
    platform: Annotated[
        list[str] | None,
        typer.Option("--platform", help="Copy only this platform (OS/ARCH[/VARIANT]); repeatable. Changes the digest."),
    ] = None,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", help="Also point this destination tag at the image.")
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the result as one JSON document on stdout.")
    ] = False,
    authfile: Annotated[
        str | None, typer.Option("--authfile", help="Docker config.json with registry credentials.")
    ] = None,
    insecure: Annotated[
        list[str] | None, typer.Option("--insecure", help="Registry host to reach over plain HTTP; repeatable.")
    ] = None,
    ca_file: Annotated[
        list[str] | None,
        typer.Option(
            "--ca-file",
            metavar="[REGISTRY=]FILE",
            help="Trust this CA (PEM) for REGISTRY, or for both registries; repeatable. Loopback registries "
            "are then reached over verified HTTPS too.",
        ),
    ] = None,
    cert_file: Annotated[
        list[str] | None,
        typer.Option(
            "--cert-file", metavar="[REGISTRY=]FILE", help="Client certificate (PEM) for REGISTRY, or for both."
        ),
    ] = None,
    key_file: Annotated[
        list[str] | None,
        typer.Option("--key-file", metavar="[REGISTRY=]FILE", help="Key of the client certificate, if not in it."),
    ] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, help="Parallel blob transfers.")] = 8,
    content_mirror: ContentMirrorOption = None,
    no_content_mirrors: NoContentMirrorsOption = False,
) -> None:
    """Copy one image from SRC to DST: indexes byte for byte, blobs verified, tags written last."""
    import asyncio
    import json

    import aiohttp
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    from .._errors import HubmirrorError
    from ..copy import copy_location
    from ..platform import Platform
    from ._progress import BlobProgress

    try:
        platforms = [Platform.parse(p) for p in platform or []] or None
        mirrors = _mirrors(content_mirror, no_content_mirrors)
    except HubmirrorError as e:
        fail(e)
        raise typer.Exit(2) from None
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )
    try:
        with progress:
            res = asyncio.run(
                copy_location(
                    src,
                    dst,
                    platforms=platforms,
                    extra_tags=tag or [],
                    authfile=authfile,
                    insecure=insecure or [],
                    tls=_tls_flags(ca_file, cert_file, key_file),
                    concurrency=concurrency,
                    events=BlobProgress(progress),
                    content_mirrors=mirrors,
                )
            )
    except HubmirrorError as e:
        fail(f"copy {src} → {dst} failed: {e}")
        say("no destination tag was changed by the failed copy")
        raise typer.Exit(1) from None
    except (TimeoutError, aiohttp.ClientError, OSError) as e:
        fail(f"copy {src} → {dst} failed: {type(e).__name__}: {e}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        say("interrupted: no destination tag was changed")
        raise typer.Exit(130) from None
    if json_output:
        doc = {"source": src, "destination": dst, **res.as_dict()}
        out.print(json.dumps(doc, indent=2), markup=False, highlight=False, soft_wrap=True)
    _summary(res, src, dst)
    if res.skipped is not None:
        raise typer.Exit(1)
