"""`OCILayoutStore`: images in OCI image-layout directories (``oci-layout``, ``index.json``, ``blobs/``).

Repository ``""`` is the root directory itself; any other repository is a sub-directory layout
(``root/<repo>``), which is how a sync mirrors many repositories into one ``oci:PATH``.

Writes are crash-safe: blobs go to a temporary file in the blob directory, are fsync'd, verified
(size and digest) and only then renamed into place. ``index.json`` only ever names manifests whose
content is already stored, and each descriptor in it carries the media type of the bytes it points
to (a Docker schema2 manifest is listed as one). Every change to ``index.json`` is a
read-modify-write under an exclusive ``fcntl.flock`` on the layout's lock file (``.hubmirror.lock``),
so concurrent writers — other coroutines, threads or processes — never lose each other's tags.

Temporary files are named ``.tmp-<owner>-…`` where the owner is this machine and process (pid). The
first write into a layout removes, under the lock, the temporary files left by writers that are gone
(a kill -9): those of a dead process (or of a pid since reused), and those of another machine or of
an older hubmirror only once they are long untouched. A live writer's files are never removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import hashlib
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .._errors import DigestMismatch, NotFound, StoreError
from ..digest import hasher, is_digest, verify_bytes
from ..media import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    MAX_MANIFEST_SIZE,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    Manifest,
    detect_media_type,
)
from ..transfer import TransferStats
from ._base import BlobStream

if TYPE_CHECKING:
    from ..registry.ratelimit import RateLimit

REF_NAME = "org.opencontainers.image.ref.name"
LAYOUT_FILE = "oci-layout"
LAYOUT_VERSION = {"imageLayoutVersion": "1.0.0"}
#: The file writers of a layout lock (``fcntl.flock``) to change ``index.json``.
LOCK_FILE = ".hubmirror.lock"
TMP_PREFIX = ".tmp-"
CHUNK = 1024 * 1024
#: Temporary files of another machine, or of a hubmirror that did not name its files' owner, are
#: removed only once untouched this long (their writer's liveness cannot be checked from here).
FOREIGN_TMP_AGE = 24 * 3600.0
LEGACY_TMP_AGE = 3600.0
#: The OCI type an older hubmirror wrongly listed Docker manifests under in ``index.json``.
_OCI_TWIN = {DOCKER_LIST: OCI_INDEX, DOCKER_MANIFEST: OCI_MANIFEST}

T = TypeVar("T")

_REPO_PART = re.compile(r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")


class OCILayoutStore:
    """A `Store` over OCI image-layout directories under *root*."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.name = f"oci:{self.root}"
        self.stats = TransferStats()
        self._locks: dict[Path, asyncio.Lock] = {}
        self._prepared: set[Path] = set()

    def __repr__(self) -> str:
        return f"OCILayoutStore({str(self.root)!r})"

    @property
    def ratelimit(self) -> RateLimit | None:
        return None

    # -- paths -------------------------------------------------------------------------------------

    def layout(self, repo: str) -> Path:
        """The layout directory of *repo* (the root for ``""``)."""
        if not repo:
            return self.root
        parts = repo.split("/")
        if parts[0] == "blobs" or not all(_REPO_PART.match(p) for p in parts):
            raise StoreError(f"{self.name}: invalid repository name {repo!r}")
        return self.root.joinpath(*parts)

    def _blob_path(self, repo: str, digest: str) -> Path:
        if not is_digest(digest):
            raise StoreError(f"{self.name}: invalid digest {digest!r}")
        algo, hexpart = digest.split(":", 1)
        return self.layout(repo) / "blobs" / algo / hexpart

    def _lock(self, layout: Path) -> asyncio.Lock:
        lock = self._locks.get(layout)
        if lock is None:
            lock = self._locks[layout] = asyncio.Lock()
        return lock

    # -- index.json --------------------------------------------------------------------------------

    def _read_index(self, layout: Path) -> dict[str, Any]:
        path = layout / "index.json"
        try:
            obj = json.loads(path.read_bytes())
        except FileNotFoundError:
            return {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []}
        except (OSError, ValueError) as e:
            raise StoreError(f"{path}: cannot read the layout index: {e}") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("manifests", []), list):
            raise StoreError(f"{path}: not an OCI image index")
        obj.setdefault("manifests", [])
        return obj

    def _write_index(self, layout: Path, index: dict[str, Any]) -> None:
        data = json.dumps(index, indent=2).encode() + b"\n"
        _atomic_write(layout / "index.json", data)

    async def _update_index(self, layout: Path, change: Callable[[dict[str, Any]], bool]) -> None:
        """Apply *change* to ``index.json`` as one read-modify-write under the layout's lock.

        *change* edits the index in place and returns whether it changed anything. It runs in one
        thread call with the lock, so a cancelled caller cannot leave the lock held.
        """
        await self._prepare(layout)
        async with self._lock(layout):
            await _settled(self._update_index_sync, layout, change)

    def _update_index_sync(self, layout: Path, change: Callable[[dict[str, Any]], bool]) -> None:
        with _flocked(layout):
            index = self._read_index(layout)  # re-read: another process may have changed it
            if change(index):
                self._write_index(layout, index)

    async def _prepare(self, layout: Path) -> None:
        """Before this store's first write into *layout*: create it, and (under the lock) remove
        the temp files of writers that are gone and relabel Docker manifests listed as OCI ones."""
        if layout in self._prepared:
            return
        async with self._lock(layout):
            if layout not in self._prepared:
                await _settled(self._prepare_sync, layout)
                self._prepared.add(layout)

    def _prepare_sync(self, layout: Path) -> None:
        self._ensure_layout(layout)
        with _flocked(layout):
            remove_stale_temp_files(layout)
            index = self._read_index(layout)
            if self._relabel(layout, index):
                self._write_index(layout, index)

    def _ensure_layout(self, layout: Path) -> None:
        marker = layout / LAYOUT_FILE
        if marker.exists():
            return
        try:
            layout.mkdir(parents=True, exist_ok=True)
            if not marker.exists():
                _atomic_write(marker, json.dumps(LAYOUT_VERSION).encode())
        except OSError as e:
            raise StoreError(f"{layout}: cannot create an OCI layout: {e}") from None

    def _relabel(self, layout: Path, index: dict[str, Any]) -> bool:
        """Give entries an older hubmirror listed under an OCI type the Docker type of their bytes."""
        changed = False
        actual_types: dict[str, str | None] = {}  # many tags share a digest: read each manifest once
        for entry in index["manifests"]:
            if not isinstance(entry, dict) or entry.get("mediaType") not in (OCI_INDEX, OCI_MANIFEST):
                continue
            digest = entry.get("digest")
            if not isinstance(digest, str) or not is_digest(digest):
                continue
            if digest not in actual_types:
                actual_types[digest] = _stored_media_type(layout / "blobs" / digest.replace(":", "/", 1))
            actual = actual_types[digest]
            if actual in _OCI_TWIN and _OCI_TWIN[actual] == entry["mediaType"]:
                entry["mediaType"] = actual
                changed = True
        return changed

    def _find_tag(self, layout: Path, tag: str) -> dict[str, Any] | None:
        for entry in self._read_index(layout)["manifests"]:
            if isinstance(entry, dict) and (entry.get("annotations") or {}).get(REF_NAME) == tag:
                return entry
        return None

    # -- manifests ---------------------------------------------------------------------------------

    async def head_manifest(self, repo: str, ref: str) -> Descriptor | None:
        self.stats.manifest_heads += 1
        return await asyncio.to_thread(self._head_manifest, repo, ref)

    def _head_manifest(self, repo: str, ref: str) -> Descriptor | None:
        layout = self.layout(repo)
        if is_digest(ref):
            path = self._blob_path(repo, ref)
            try:
                data = path.read_bytes() if path.stat().st_size <= MAX_MANIFEST_SIZE else b""
            except FileNotFoundError:
                return None
            media_type = self._media_type_of(layout, ref, data)
            return Descriptor(media_type, ref, path.stat().st_size)
        entry = self._find_tag(layout, ref)
        if entry is None:
            return None
        desc = Descriptor.from_json(entry)
        path = self._blob_path(repo, desc.digest)
        try:
            data = path.read_bytes() if path.stat().st_size <= MAX_MANIFEST_SIZE else b""
        except FileNotFoundError:
            return None
        return Descriptor(detect_media_type(data, desc.media_type), desc.digest, len(data) or desc.size)

    def _media_type_of(self, layout: Path, digest: str, data: bytes) -> str:
        declared = None
        for entry in self._read_index(layout)["manifests"]:
            if isinstance(entry, dict) and entry.get("digest") == digest and entry.get("mediaType"):
                declared = str(entry["mediaType"])
        return detect_media_type(data, declared)

    async def get_manifest(self, repo: str, ref: str) -> Manifest:
        self.stats.manifest_gets += 1
        return await asyncio.to_thread(self._get_manifest, repo, ref)

    def _get_manifest(self, repo: str, ref: str) -> Manifest:
        layout = self.layout(repo)
        declared: str | None = None
        if is_digest(ref):
            digest = ref
        else:
            entry = self._find_tag(layout, ref)
            if entry is None:
                raise NotFound(f"{self.name}: {_where(repo)}tag {ref!r} not found", repository=repo)
            digest = str(entry.get("digest", ""))
            declared = str(entry.get("mediaType") or "") or None
        path = self._blob_path(repo, digest)
        try:
            if path.stat().st_size > MAX_MANIFEST_SIZE:
                raise StoreError(f"{path}: manifest larger than {MAX_MANIFEST_SIZE} bytes")
            data = path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"{self.name}: {_where(repo)}manifest {ref} not found", repository=repo) from None
        verify_bytes(data, digest, f"{path}")
        if declared is None:
            declared = self._media_type_of(layout, digest, data)
        return Manifest(data, detect_media_type(data, declared))

    async def put_manifest(self, repo: str, ref: str, manifest: Manifest) -> None:
        self.stats.manifest_puts += 1
        if is_digest(ref):
            if ref != manifest.digest:
                raise DigestMismatch(f"{self.name}: manifest {manifest.digest} put under digest {ref}")
        elif not _TAG.match(ref):
            raise StoreError(f"{self.name}: invalid tag {ref!r}")
        await asyncio.to_thread(self._check_referenced, repo, manifest)
        layout = self.layout(repo)
        await self._prepare(layout)
        path = self._blob_path(repo, manifest.digest)
        if not path.exists():
            await _settled(self._write_blob_bytes, path, manifest.data)
        if is_digest(ref):
            return
        await self._update_index(layout, functools.partial(_set_tag, tag=ref, manifest=manifest))

    def _check_referenced(self, repo: str, manifest: Manifest) -> None:
        """Refuse a manifest whose children or blobs are missing, as a registry would."""
        needed = manifest.children if manifest.is_index else manifest.blobs
        for desc in needed:
            if desc.is_foreign:
                continue
            if not self._blob_path(repo, desc.digest).exists():
                raise StoreError(
                    f"{self.name}: {_where(repo)}manifest {manifest.digest} references {desc.digest}, "
                    "which is not stored"
                )

    async def delete_manifest(self, repo: str, ref: str) -> None:
        """Untag *ref*, or remove every index entry for a digest. Blobs stay (no garbage collection)."""
        layout = self.layout(repo)

        def delete(index: dict[str, Any]) -> bool:
            if is_digest(ref):
                keep = [e for e in index["manifests"] if e.get("digest") != ref]
            else:
                keep = [e for e in index["manifests"] if (e.get("annotations") or {}).get(REF_NAME) != ref]
            if len(keep) == len(index["manifests"]):
                raise NotFound(f"{self.name}: {_where(repo)}{ref} not found", repository=repo)
            index["manifests"] = keep
            return True

        await self._update_index(layout, delete)

    async def list_tags(self, repo: str) -> list[str]:
        def read() -> list[str]:
            tags: list[str] = []
            for e in self._read_index(self.layout(repo))["manifests"]:
                name = (e.get("annotations") or {}).get(REF_NAME) if isinstance(e, dict) else None
                if isinstance(name, str) and name not in tags:
                    tags.append(name)
            return sorted(tags)

        return await asyncio.to_thread(read)

    # -- blobs -------------------------------------------------------------------------------------

    async def has_blob(self, repo: str, desc: Descriptor) -> bool:
        self.stats.blob_heads += 1
        path = self._blob_path(repo, desc.digest)
        try:
            size = (await asyncio.to_thread(path.stat)).st_size
        except FileNotFoundError:
            return False
        return size == desc.size or desc.size <= 0

    def open_blob(self, repo: str, desc: Descriptor) -> BlobStream:
        return self._open_blob(repo, desc)

    @contextlib.asynccontextmanager
    async def _open_blob(self, repo: str, desc: Descriptor) -> AsyncIterator[AsyncIterator[bytes]]:
        path = self._blob_path(repo, desc.digest)
        try:
            f = await asyncio.to_thread(path.open, "rb")
        except FileNotFoundError:
            raise NotFound(f"{self.name}: {_where(repo)}blob {desc.digest} not found", repository=repo) from None
        self.stats.blob_gets += 1

        async def chunks() -> AsyncIterator[bytes]:
            while True:
                chunk = await asyncio.to_thread(f.read, CHUNK)
                if not chunk:
                    return
                self.stats.blob_bytes_read += len(chunk)
                yield chunk

        try:
            yield chunks()
        finally:
            f.close()

    async def put_blob(self, repo: str, desc: Descriptor, chunks: AsyncIterator[bytes]) -> None:
        """Write the stream to a temp file, verify size and digest, fsync, and rename into place."""
        path = self._blob_path(repo, desc.digest)
        await self._prepare(self.layout(repo))
        await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
        tmp = _tmp_beside(path)
        f = tmp.open("wb")  # not in a thread: a cancelled await there would leave the file behind
        h = hasher(desc.digest)
        total = 0
        try:
            try:
                buf: list[bytes] = []
                buffered = 0
                async for chunk in chunks:
                    h.update(chunk)
                    total += len(chunk)
                    buf.append(chunk)
                    buffered += len(chunk)
                    if buffered >= CHUNK:
                        await asyncio.to_thread(f.writelines, buf)
                        buf, buffered = [], 0
                if buf:
                    await asyncio.to_thread(f.writelines, buf)
                await asyncio.to_thread(_flush_sync, f)
            finally:
                f.close()
            got = f"{desc.digest.split(':', 1)[0]}:{h.hexdigest()}"
            if desc.size >= 0 and total != desc.size:
                raise DigestMismatch(f"{self.name}: blob {desc.digest}: got {total} bytes, expected {desc.size}")
            if got != desc.digest:
                raise DigestMismatch(f"{self.name}: blob {desc.digest}: content hashes to {got}")
            await _settled(_commit, tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        self.stats.blob_uploads += 1
        self.stats.blob_bytes_written += total

    def _write_blob_bytes(self, path: Path, data: bytes) -> None:
        self._ensure_layout(path.parent.parent.parent)
        path.parent.mkdir(parents=True, exist_ok=True)
        with _staged(path) as tmp, tmp.open("wb") as f:
            f.write(data)
            _flush_sync(f)

    async def mount_blob(self, repo: str, desc: Descriptor, from_repo: str) -> bool:
        """Hard-link (or copy) the blob from *from_repo*'s layout; False if that layout lacks it."""
        src = self._blob_path(from_repo, desc.digest)
        dst = self._blob_path(repo, desc.digest)
        await self._prepare(self.layout(repo))
        ok = await _settled(self._mount, src, dst, desc)
        if ok:
            self.stats.blob_mounts += 1
        return ok

    def _mount(self, src: Path, dst: Path, desc: Descriptor) -> bool:
        try:
            if src.stat().st_size != desc.size and desc.size >= 0:
                return False
        except FileNotFoundError:
            return False
        if dst.exists():
            return True
        self._ensure_layout(dst.parent.parent.parent)
        dst.parent.mkdir(parents=True, exist_ok=True)
        with _staged(dst) as tmp:
            try:
                os.link(src, tmp)
            except OSError:
                shutil.copyfile(src, tmp)
                with tmp.open("rb+") as f:
                    _flush_sync(f)
        return True

    async def close(self) -> None:
        return None


def _stored_media_type(path: Path) -> str | None:
    """The media type a stored manifest declares (None if unreadable or too large to be one)."""
    try:
        if path.stat().st_size > MAX_MANIFEST_SIZE:
            return None
        return detect_media_type(path.read_bytes(), None)
    except OSError:
        return None


async def _settled(fn: Callable[..., T], *args: Any) -> T:
    """``asyncio.to_thread(fn, *args)``, except that a cancelled caller waits for the thread to end
    before the cancellation goes on: a write in flight is finished (or cleaned up) by the time the
    caller's error is seen, so no temporary file outlives the operation that made it."""
    future = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await future
        raise


def _where(repo: str) -> str:
    return f"{repo}: " if repo else ""


def _set_tag(index: dict[str, Any], *, tag: str, manifest: Manifest) -> bool:
    """Point *tag* at *manifest*. The descriptor carries the media type of the stored bytes: a
    Docker manifest or list is listed as one, never as its OCI twin (whose readers would then
    mistake its bytes for OCI content)."""
    entry: dict[str, Any] = {
        "mediaType": manifest.media_type,
        "digest": manifest.digest,
        "size": manifest.size,
        "annotations": {REF_NAME: tag},
    }
    manifests = [e for e in index["manifests"] if (e.get("annotations") or {}).get(REF_NAME) != tag]
    manifests.append(entry)
    index["manifests"] = manifests
    return True


@contextlib.contextmanager
def _flocked(layout: Path) -> Iterator[None]:
    """Hold the exclusive ``flock`` of *layout* (blocking until other writers release it)."""
    path = layout / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise StoreError(f"{path}: cannot open the layout's lock file: {e}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


# -- temporary files ------------------------------------------------------------------------------


@functools.cache
def _machine() -> str:
    """This machine (boot) and PID namespace, so a pid in a temp file's name is only checked where
    it means the same process."""
    parts = []
    for path in ("/proc/sys/kernel/random/boot_id", "/proc/self/ns/pid"):
        try:
            parts.append(os.readlink(path) if path.endswith("/pid") else Path(path).read_text().strip())
        except OSError:
            parts.append(os.uname().nodename)
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:8]


def _owner() -> str:
    return f"{_machine()}.{os.getpid()}"


_OWNED_TMP = re.compile(r"^\.tmp-([0-9a-f]{8})\.([0-9]+)-")


def _process_start(pid: int) -> float | None:
    """When process *pid* started (epoch seconds), if /proc tells."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = int(stat.rpartition(")")[2].split()[19])  # field 22, starttime
        btime = next(
            int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime ")
        )
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return btime + ticks / os.sysconf("SC_CLK_TCK")


def _writer_alive(pid: int, since: float) -> bool:
    """Whether the process *pid*, which last wrote its file at *since*, may still be writing it."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    start = _process_start(pid)
    # A process that started after the file was last written is not its writer: the pid was reused.
    return start is None or start <= since + 5


def is_stale_temp(path: Path, now: float | None = None) -> bool:
    """Whether *path*, a ``.tmp-`` file, was left by a writer that is gone."""
    try:
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return False
    age = (time.time() if now is None else now) - mtime
    m = _OWNED_TMP.match(path.name)
    if m is None:
        return age > LEGACY_TMP_AGE
    if m.group(1) != _machine():
        return age > FOREIGN_TMP_AGE
    return not _writer_alive(int(m.group(2)), mtime)


def remove_stale_temp_files(layout: Path) -> list[Path]:
    """Remove the temp files of gone writers from *layout* (call with the layout locked)."""
    removed: list[Path] = []
    dirs = [layout]
    blobs = layout / "blobs"
    with contextlib.suppress(OSError):
        dirs += [d for d in blobs.iterdir() if d.is_dir()]
    for d in dirs:
        try:
            names = [e.name for e in os.scandir(d) if e.name.startswith(TMP_PREFIX)]
        except OSError:
            continue
        for name in names:
            path = d / name
            if is_stale_temp(path):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed.append(path)
    return removed


def _flush_sync(f: Any) -> None:
    f.flush()
    os.fsync(f.fileno())


def _commit(tmp: Path, final: Path) -> None:
    """Rename *tmp* to *final* and fsync the directory, so the name survives a crash."""
    os.replace(tmp, final)
    try:
        fd = os.open(final.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes) -> None:
    with _staged(path) as tmp, tmp.open("wb") as f:
        f.write(data)
        _flush_sync(f)


def _tmp_beside(final: Path) -> Path:
    """A unique temporary name in *final*'s directory (same file system, so the rename is atomic)."""
    return final.parent / f"{TMP_PREFIX}{_owner()}-{final.name[:16]}-{uuid.uuid4().hex}"


@contextlib.contextmanager
def _staged(final: Path) -> Iterator[Path]:
    """A temporary path to write *final*'s content to: renamed into place when the block succeeds,
    removed when it fails, so *final* never names half-written content."""
    tmp = _tmp_beside(final)
    try:
        yield tmp
        _commit(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
