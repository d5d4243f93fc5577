"""Writing a file so that a reader only ever finds the old whole file or the new whole file.

The bytes go to a temporary file of a unique name in the same folder, are flushed to the disk (fsync), and the
temporary file is then renamed over the target (os.replace, atomic on one file system). A unique name matters:
two writers of one path (two runs, two threads of the page) with one fixed temporary name rename each other's
half-written file, or find it gone. The name carries the writer's process id, so that a killed writer's leftover
can be told from a live one's (photo_cache sweeps them).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TEMPORARY_MARK = ".tmp-"  # <name>.tmp-<pid>-<random>
# mkstemp makes files only their owner can read: the finished file gets the usual permissions instead (as open()
# would give it). The umask can only be read by setting it: once, at import.
UMASK = os.umask(0o022)
os.umask(UMASK)


def writer_pid(path: Path) -> int | None:
    """The process id in a temporary file's name, None for any other file."""
    tail = path.name.rpartition(TEMPORARY_MARK)[2].split("-")[0] if TEMPORARY_MARK in path.name else ""
    return int(tail) if tail.isdigit() else None


@contextmanager
def atomic_path(path: str | os.PathLike, keep_suffix: bool = False) -> Iterator[Path]:
    """A temporary path beside `path` for a writer that wants a file name (torch.save, an ONNX export). When the
    block ends, the file is flushed and renamed to `path`; if the block fails, it is removed and `path` is untouched.
    keep_suffix: the temporary name ends with `path`'s suffix (<stem>.tmp-<pid>-<random>.onnx), for writers that
    look at it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(dir=path.parent, suffix=path.suffix if keep_suffix else "",
                                        prefix=f"{path.stem if keep_suffix else path.name}{TEMPORARY_MARK}{os.getpid()}-")
    os.close(descriptor)
    temporary = Path(name)
    os.chmod(temporary, 0o666 & ~UMASK)
    try:
        yield temporary
        flush_to_disk(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)  # only left when the block failed


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8", newline: str | None = None) -> None:
    """`newline=""` writes the text's line endings as they are (CSV files)."""
    with atomic_path(path) as temporary, open(temporary, "w", encoding=encoding, newline=newline) as file:
        file.write(text)


def flush_to_disk(path: Path) -> None:
    """Without fsync a power cut soon after the rename can leave the new name with no bytes behind it."""
    descriptor = os.open(path, os.O_RDWR | getattr(os, "O_BINARY", 0))
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
