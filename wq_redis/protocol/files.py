"""Files on the wire: the hash-field prefixes of input and output files, and directories
packed as tar.

How inputs travel (hash fields of the task):
  ``in:NAME``    a file's bytes, inline in the task hash (the default);
  ``cin:NAME``   the SHA-256 of a file declared with ``cache=True``; its bytes are stored
                 once under ``file:DIGEST`` and kept by each worker in its LRU cache;
  ``tin:NAME``   a directory packed as tar, inline;
  ``ctin:NAME``  the SHA-256 of a directory's tar, stored once like a cached file.
  ``url:NAME``  a URL the worker fetches (``curl:NAME`` kept in its cache by URL);
  ``fcmd:NAME`` a shell command that makes the file (``cfcmd:NAME`` cached by command).
Outputs come back as ``o:NAME`` (a file) and ``od:NAME`` (a directory as tar).

Permission bits travel as Work Queue's do (its ``put`` message carries the mode): a file
whose mode is not the usual 0644 has ``im:NAME`` (input) or ``om:NAME`` (output), octal
text; tar keeps the modes of a directory's files.  As Work Queue's worker does, the owner
may always read and write (``mode | 0600``), and only the permission bits travel.

Directories are packed deterministically (sorted, owner and group cleared) so an unchanged
tree packs to the same bytes and a cached directory is stored once.  The manager packs
input trees (client/files.py), the worker unpacks them and packs output trees.
"""

from __future__ import annotations

import hashlib
import io
import os
from typing import TYPE_CHECKING, Any

from .sizes import show_size

if TYPE_CHECKING:
    import tarfile

DEFAULT_MODE = 0o644  # a file's mode when no ``im:``/``om:`` field says otherwise
OWNER_RW = 0o600  # what Work Queue's worker adds to every mode it is sent
PERMISSION_BITS = 0o777


def transferred_mode(st_mode: int) -> int:
    """The mode a file travels with: its permission bits, the owner's read and write added."""
    return (st_mode & PERMISSION_BITS) | OWNER_RW


def mode_text(mode: int) -> str:
    return f"{mode:o}"


def parse_mode(value: bytes) -> int:
    """The mode of an ``im:``/``om:`` field; ValueError for anything but 1 to 3 octal digits
    (another client's garbage never becomes setuid bits)."""
    if not 1 <= len(value) <= 3 or value.strip(b"01234567"):
        raise ValueError(f"not a file mode: {value[:20]!r}")
    return int(value, 8)


class FileTooLarge(ValueError):
    """An input file, or a task's inputs together, exceed the queue's size limits."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- directories as tar ---------------------------------------------------------------
def _walk(root: str) -> list[tuple[str, str]]:
    """(absolute path, name inside the tar) of every entry under ``root``, sorted."""
    out = []
    for directory, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(dirs) + sorted(files):
            path = os.path.join(directory, name)
            out.append((path, os.path.relpath(path, root)))
    return out


def tree_signature(root: str) -> tuple[Any, ...]:
    """A cheap fingerprint of a tree (names, sizes, mtimes): equal trees need no repacking."""
    entries = []
    for path, name in _walk(root):
        st = os.lstat(path)
        entries.append((name, st.st_mode, st.st_size, st.st_mtime_ns))
    return tuple(entries)


def pack_directory(root: str, recursive: bool = True, max_file_bytes: int | None = None) -> bytes:
    """The tree under ``root`` as an uncompressed tar (just the empty directory when not
    ``recursive``).  Regular files, directories and symbolic links; nothing else."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"directory {root!r} of the task does not exist")
    import tarfile  # here and in unpack_directory: only tasks with directories need it

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, name in _walk(root) if recursive else []:
            info = tar.gettarinfo(path, arcname=name)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if info.isfile():
                if max_file_bytes is not None and info.size > max_file_bytes:
                    raise FileTooLarge(
                        f"file {path!r} ({show_size(info.size)}) exceeds the limit of "
                        f"{show_size(max_file_bytes)} per input file"
                    )
                with open(path, "rb") as handle:
                    tar.addfile(info, handle)
            elif info.isdir() or info.issym():
                tar.addfile(info)
    return buffer.getvalue()


def unpack_directory(data: bytes | str, destination: str) -> None:
    """Unpack a tar made by ``pack_directory`` (its bytes, or the path of a file holding
    them) into ``destination`` (created), refusing entries that would land outside it.
    Raises OSError for anything that cannot be unpacked."""
    import tarfile

    os.makedirs(destination, exist_ok=True)
    try:
        opened = (
            tarfile.open(data, mode="r:")
            if isinstance(data, str)
            else tarfile.open(fileobj=io.BytesIO(data), mode="r:")
        )
        with opened as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(destination, filter="data")
                return
            _check_members(tar, destination)
            tar.extractall(destination)
    except (tarfile.TarError, ValueError) as exc:
        raise OSError(f"cannot unpack directory into {destination!r}: {exc}") from None


def _check_members(tar: tarfile.TarFile, destination: str) -> None:
    """What the 'data' filter of newer Pythons refuses: paths and links leaving the tree."""
    root = os.path.realpath(destination)
    for member in tar.getmembers():
        target = os.path.realpath(os.path.join(destination, member.name))
        if os.path.commonpath([root, target]) != root or member.islnk() or member.isdev():
            raise ValueError(f"refusing tar entry {member.name!r}: it leaves {destination!r}")
        if member.issym() and (os.path.isabs(member.linkname) or ".." in member.linkname.split("/")):
            raise ValueError(f"refusing symbolic link {member.name!r} -> {member.linkname!r}")
