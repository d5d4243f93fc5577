"""Writing a file so that a reader only ever finds the old whole file or the new whole file.

The bytes go to a temporary file of a unique name in the same folder, are flushed to the disk (fsync), and the
temporary file is then renamed over the target (os.replace, atomic on one file system). A unique name matters:
two writers of one path (two runs, two threads of the page) with one fixed temporary name rename each other's
half-written file, or find it gone. The name carries the writer's process id, so that a killed writer's leftover
can be told from a live one's (photo_cache sweeps them).

A file that cannot be written (a full disk, a quota, a read-only folder, a file-size limit) stops the command with
one line naming the folder and the space needed (exit_when_cannot_write); the file it would have replaced is
unchanged, since only the temporary file was being written.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

TEMPORARY_MARK = ".tmp-"  # <name>.tmp-<pid>-<random>
# mkstemp makes files only their owner can read: the finished file gets the usual permissions instead (as open()
# would give it). The umask can only be read by setting it: once, at import.
UMASK = os.umask(0o022)
os.umask(UMASK)


# The errors that say the disk, not the program, is the problem, in the words of the one line.
WRITE_PROBLEMS = {errno.ENOSPC: "the disk is full", errno.EFBIG: "the file is larger than this disk or a limit allows",
                  errno.EROFS: "the disk is read-only", errno.EACCES: "the folder is read-only (no permission to write)",
                  errno.EPERM: "the folder is read-only (no permission to write)"}
if hasattr(errno, "EDQUOT"):  # not on Windows
    WRITE_PROBLEMS[errno.EDQUOT] = "the disk quota is used up"


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


class _KeepsWriteErrors:
    """A binary file for a writer that swallows the system's error: torch.save reports a full disk as
    'unexpected pos 704 vs 598'. The OSError it was is kept here, to be raised instead."""

    def __init__(self, file: BinaryIO) -> None:
        self.file, self.error = file, None

    def write(self, data: bytes) -> int:
        try:
            return self.file.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        self.file.flush()


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """atomic_path's temporary file, open for writing in binary; a write the disk refuses is raised as its OSError
    (errno ENOSPC, EFBIG, …), whatever the writer made of it."""
    with atomic_path(path) as temporary, open(temporary, "wb") as file:
        kept = _KeepsWriteErrors(file)
        try:
            yield kept
        except Exception as error:
            if kept.error is not None and kept.error is not error:
                raise kept.error from error
            raise


def cannot_write_line(error: OSError, path: str | os.PathLike, needed_bytes: int | None = None, then: str = "") -> str | None:
    """The one line for a file the disk refused (WRITE_PROBLEMS): what, where, the space needed and free there, and
    what to do; None for any other error."""
    problem = WRITE_PROBLEMS.get(error.errno)
    if problem is None:
        return None
    target = Path(path).resolve()
    folder, name = (target, "") if target.is_dir() else (target.parent, target.name.split(TEMPORARY_MARK)[0] + " ")
    details = []
    if needed_bytes:
        size = f"{needed_bytes / 1e6:,.0f} MB" if needed_bytes >= 1e6 else f"{needed_bytes / 1e3:,.0f} kB"
        details.append(f"about {size} needed")
    try:
        details.append(f"{shutil.disk_usage(folder).free / 1e6:,.0f} MB free there")
    except OSError:
        pass
    said = f" ({', '.join(details)})" if details else ""
    return f"cannot write {name}into {folder}: {problem}{said}. {then}".rstrip()


@contextmanager
def exit_when_cannot_write(path: str | os.PathLike, needed_bytes: int | None = None, then: str = "") -> Iterator[None]:
    """Stop the command with cannot_write_line when the block's writing of `path` (or of a file in its folder) is
    refused by the disk; other errors pass as they are."""
    try:
        yield
    except OSError as error:
        failing = Path(error.filename2 or error.filename or path).resolve()
        target = Path(path).resolve()
        folder = target if target.is_dir() else target.parent
        if error.errno in (errno.EACCES, errno.EPERM) and folder not in (failing, *failing.parents):
            raise  # a file that could not be read (a photo copied from elsewhere), not the folder written to
        line = cannot_write_line(error, failing, needed_bytes, then)
        if line is None:
            raise
        raise SystemExit(line) from None


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
