"""URIs for everything the product reads and writes: local paths, ``file://`` and ``s3://``.

All I/O goes through fsspec so the same code serves a workstation and object storage. Writes that
other readers may observe are atomic: a local file is written under a temporary name and renamed; an
object store gets one PUT of the whole payload.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import fsspec
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem


class StorageError(RuntimeError):
    """Storage could not be reached or refused the request; the message names the URI.

    Never a per-sample problem: a run stops rather than skip samples because a bucket is down.
    """


@contextmanager
def access(uri: str) -> Iterator[None]:
    """Maps what a filesystem raises for ``uri`` to FileNotFoundError or StorageError naming it."""
    try:
        yield
    except FileNotFoundError:
        raise FileNotFoundError(f"not found: {uri}") from None
    except (StorageError, IsADirectoryError, NotADirectoryError):
        raise
    except Exception as err:  # botocore/aiohttp/pyarrow errors share no base class
        raise StorageError(f"cannot access {uri}: {type(err).__name__}: {err}") from err


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


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def write_bytes_atomic(uri: str, data: bytes) -> None:
    """Makes ``uri`` hold ``data`` with no moment where a reader sees a partial file."""
    fs, path = filesystem(uri)
    if isinstance(fs, LocalFileSystem):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = f"{path}{TEMP_MARKER}{uuid.uuid4().hex[:8]}"
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    else:
        with access(uri):
            fs.pipe_file(path, data)


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
