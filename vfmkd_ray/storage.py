"""URIs for everything the product reads and writes: local paths, ``file://`` and ``s3://``.

All I/O goes through fsspec so the same code serves a workstation and object storage. Writes that
other readers may observe are atomic: a local file is written under a temporary name and renamed; an
object store gets one PUT of the whole payload. A failed write leaves what was there before and no
temporary file, and raises ``StorageError`` naming the URI and the cause (a full disk, a refused
permission, an endpoint that is down), so a relaunch once the cause is fixed resumes.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import fsspec
import pyarrow as pa
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem


class StorageError(RuntimeError):
    """Storage could not be reached or refused the request; the message names the URI.

    Never a per-sample problem: a run stops rather than skip samples because a bucket is down.
    """


@contextmanager
def access(uri: str, action: str = "access") -> Iterator[None]:
    """Maps what a filesystem raises for ``uri`` to FileNotFoundError or StorageError naming it
    (``cannot <action> <uri>: <cause>``)."""
    try:
        yield
    except FileNotFoundError:
        raise FileNotFoundError(f"not found: {uri}") from None
    except (StorageError, IsADirectoryError, NotADirectoryError):
        raise
    except Exception as err:  # botocore/aiohttp/pyarrow errors share no base class
        raise StorageError(f"cannot {action} {uri}: {describe(err)}") from err


def describe(err: BaseException) -> str:
    """The cause of a storage error in one line: ``[Errno 28] No space left on device`` for the
    operating system's errors (their file name is a temporary one, or repeats the URI), the message
    of a plain ``OSError`` (pyarrow's), else ``Name: message``."""
    if type(err).__module__ == "builtins" and isinstance(err, OSError):
        text = f"[Errno {err.errno}] {err.strerror}" if err.errno and err.strerror else str(err)
    else:
        text = f"{type(err).__name__}: {err}"
    return " ".join(text.split()) or type(err).__name__


def is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def absolute(uri: str) -> str:
    """Local paths become absolute (Ray workers do not share the driver's cwd); URIs pass through."""
    if uri.startswith("file://"):
        return str(Path(uri[len("file://") :]).resolve())
    return uri if is_remote(uri) else str(Path(uri).expanduser().resolve())


def join(uri: str, *parts: str) -> str:
    return "/".join([uri.rstrip("/"), *(p.strip("/") for p in parts)])


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    return url_to_fs(uri)


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    with access(uri):
        fs.invalidate_cache(path)  # s3fs caches listings; another process may have written since
        return fs.exists(path)


def is_dir(uri: str) -> bool:
    fs, path = filesystem(uri)
    with access(uri):
        fs.invalidate_cache(path)
        return fs.isdir(path)


def size(uri: str) -> int:
    """The object's or file's size in bytes."""
    fs, path = filesystem(uri)
    with access(uri):
        return int(fs.size(path))


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem(uri)
    with access(uri):
        return fs.cat_file(path)


@contextmanager
def open_random_access(uri: str) -> Iterator[object]:
    """``uri`` opened for random reads (a Parquet file's footer, then its column chunks): a local
    file is memory-mapped, so a reader decodes straight from the page cache instead of copying
    every byte through a Python file object first (a third less CPU per stored SAM row,
    ``benchmarks/data_plane``); an object is fsspec's buffered file."""
    fs, path = filesystem(uri)
    with access(uri, "read"):
        handle = pa.memory_map(path) if isinstance(fs, LocalFileSystem) else fs.open(path, "rb")
    with handle:
        yield handle


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def write_bytes_atomic(uri: str, data: bytes, exclusive: bool = False) -> bool:
    """Makes ``uri`` hold ``data`` with no moment where a reader sees a partial file. With
    ``exclusive``, only if nothing is there yet, decided by the storage so that one of several
    racing writers wins: locally a hard link of the complete temporary file (fails when the name
    exists, NFS included), on object storage a PUT with ``If-None-Match: *`` (fsspec's
    ``mode="create"``; AWS S3, MinIO and moto honour it).

    Returns:
        False when ``exclusive`` and something was there (another writer won); True otherwise.

    Raises:
        StorageError: the write failed (``cannot write <uri>: <cause>``); ``uri`` is as it was.
    """
    fs, path = filesystem(uri)
    if not isinstance(fs, LocalFileSystem):
        try:
            with access(uri, "write"):
                fs.pipe_file(path, data, **({"mode": "create"} if exclusive else {}))
        except StorageError as err:
            if exclusive and _lost_a_race(err.__cause__):
                return False
            raise
        return True
    tmp = f"{path}{TEMP_MARKER}{uuid.uuid4().hex[:8]}"
    try:
        with access(uri, "write"):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            if not exclusive:
                os.replace(tmp, path)
                return True
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            return True
    finally:
        # A failure keeps no half-written copy (a full disk gets its space back); the old file stays.
        with suppress(OSError):
            os.unlink(tmp)


def _lost_a_race(err: BaseException | None) -> bool:
    """An exclusive PUT refused because the object exists (412), or because another conditional
    write to it was under way (S3's 409 ConditionalRequestConflict)."""
    return isinstance(err, FileExistsError) or "ConditionalRequestConflict" in str(err)


TEMP_MARKER = ".tmp-"


def remove_temporaries(uri: str) -> int:
    """Deletes what interrupted local atomic writes left in the folder ``uri``; returns the count."""
    leftovers = [u for u in list_files(uri, "*") if TEMP_MARKER in u.rsplit("/", 1)[-1]]
    for leftover in leftovers:
        fs, path = filesystem(leftover)
        fs.rm(path)
    return len(leftovers)


def write_text_atomic(uri: str, text: str) -> None:
    write_bytes_atomic(uri, text.encode("utf-8"))


def remove_tree(uri: str) -> None:
    """Deletes the folder (or prefix) ``uri`` and everything under it."""
    fs, path = filesystem(uri)
    with access(uri):
        fs.rm(path, recursive=True)
        fs.invalidate_cache(path)


def list_files(uri: str, pattern: str) -> list[str]:
    """URIs of the files directly under ``uri`` matching the glob ``pattern``, sorted."""
    fs, path = filesystem(uri)
    with access(uri):
        fs.invalidate_cache(path)
        if not fs.exists(path):
            return []
        matches = fs.glob(f"{path.rstrip('/')}/{pattern}")
    protocol = uri.split("://", 1)[0] + "://" if is_remote(uri) else ""
    return sorted(protocol + match if protocol else match for match in matches)
