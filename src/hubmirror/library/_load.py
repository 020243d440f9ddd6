"""Load the whole library at a commit, parsing each distinct blob only once (a cache keyed by blob id)."""

from __future__ import annotations

from collections.abc import Iterable

from .._errors import LibraryError
from ._git import LibrarySource, TreeFile
from ._model import Library, Repository
from ._parser import is_image_file, parse_library_file


class ParseCache:
    """Parsed library files by (blob id, name): unchanged files are never parsed twice across commits."""

    def __init__(self) -> None:
        self._parsed: dict[tuple[str, str], Repository | LibraryError] = {}

    def __len__(self) -> int:
        return len(self._parsed)

    def get(self, blob: str, name: str) -> Repository | LibraryError | None:
        return self._parsed.get((blob, name))

    def parse(self, blob: str, name: str, data: bytes) -> Repository | LibraryError:
        """Parse *data* (the blob *blob* of ``library/<name>``), or return the earlier result."""
        key = (blob, name)
        hit = self._parsed.get(key)
        if hit is None:
            try:
                hit = parse_library_file(data, name)
            except LibraryError as err:
                hit = err
            self._parsed[key] = hit
        return hit

    async def parse_files(
        self, source: LibrarySource, files: Iterable[TreeFile]
    ) -> dict[str, Repository | LibraryError]:
        """Parse *files* (reading only blobs not seen before, in one ``git cat-file`` process)."""
        files = list(files)
        missing = [f.blob for f in files if (f.blob, f.name) not in self._parsed]
        blobs = await source.read_blobs(missing) if missing else {}
        result: dict[str, Repository | LibraryError] = {}
        for f in files:
            hit = self._parsed.get((f.blob, f.name))
            if hit is None:
                data = blobs.get(f.blob)
                if data is None:
                    raise LibraryError(f"blob {f.blob} of library/{f.name} is missing from {source.spec}")
                hit = self.parse(f.blob, f.name, data)
            result[f.name] = hit
        return result


async def load_library(source: LibrarySource, rev: str | None = None, *, cache: ParseCache | None = None) -> Library:
    """Parse every image file in ``library/`` at *rev* (default: the source's default branch).

    A file that fails to parse becomes an entry of ``Library.errors``; the others are still parsed.
    Non-image files such as ``MAINTAINERS`` are listed in ``Library.skipped``.
    """
    commit = await source.resolve(rev)
    files = await source.list_files(commit)
    images = [f for f in files if is_image_file(f.name)]
    parsed = await (cache if cache is not None else ParseCache()).parse_files(source, images)
    repos = {name: r for name, r in parsed.items() if isinstance(r, Repository)}
    errors = tuple(r for r in parsed.values() if isinstance(r, LibraryError))
    return Library(
        commit=commit,
        repositories=dict(sorted(repos.items())),
        errors=errors,
        skipped=tuple(f.name for f in files if not is_image_file(f.name)),
        files=len(files),
    )
