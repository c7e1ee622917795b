"""Files and the machine they live on: atomic writes, the one wording of a failed write,
file hashes, folder locks, paths as UTF-8 text, and how much memory and how many CPUs a
command may use.

Every output goes through `atomic_path` (or `write_bytes_atomic`, `write_csv_atomic`,
`imageio.save_image`), so a crash, Ctrl-C or full disk never leaves half a file where the user
had a whole one.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import hashlib
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from colorize_cli.errors import UserError

# Longest file name (bytes) most file systems allow (ext4, XFS, btrfs, APFS, NTFS in UTF-16 units).
NAME_MAX = 255
# The process's umask, read once at import: reading it means setting it, which is not safe while
# other threads (prep's workers) create files.
_UMASK = os.umask(0)
os.umask(_UMASK)


class WriteError(UserError):
    """An output that cannot be written (read-only folder, disk full, ...): the message names
    the file and the reason. Not an OSError on purpose: a batch skips the one file, except when
    `stops_everything` says every later write would fail the same way."""

    def __init__(self, message: str, errno_: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno_

    @property
    def stops_everything(self) -> bool:
        """A full disk or a read-only file system: going on would fail the same way on every file."""
        return self.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def write_error(path: str | os.PathLike, e: OSError) -> WriteError:
    """The one wording of a failed write; a full disk says so in plain words."""
    reason = e.strerror or str(e)
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        reason = f"disk full: {reason}"
    return WriteError(f"{path}: cannot write ({reason})", e.errno)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it is renamed over `path`.

    A crash, Ctrl-C or full disk leaves the old file (or nothing) in place, never half a file.
    Any OSError on the way (making the folder, writing, renaming) becomes a WriteError naming
    `path`, after the temporary file is removed.
    """
    path = Path(path)
    # mkstemp adds 8 random characters and ".tmp" to ".NAME."; the name is cut so that the
    # whole temporary name stays within NAME_MAX bytes, even when NAME itself nearly fills it.
    stem = os.fsdecode(os.fsencode(path.name)[:NAME_MAX - 14])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise write_error(path, e) from None
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp makes the file owner-only (0600); give it the permissions a normal write would.
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise write_error(path, e) from None
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_csv_atomic(path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """A UTF-8 CSV file, header first, written as `atomic_path` writes."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def make_folder(path: Path) -> None:
    """Make an output folder and its parents; a read-only place or a full disk is one
    WriteError naming the folder, not the same failure repeated for every file put in it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_error(path, e) from None


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_reason(e: OSError) -> str:
    """The one wording of a failed read (no permission, a symlink loop, an I/O error)."""
    return f"cannot read ({e.strerror or e})"


def sha256_or_reason(path: str | os.PathLike) -> tuple[str, str]:
    """(sha256, "") or ("", why the file cannot be read): batch jobs skip it with that reason."""
    try:
        return sha256_file(path), ""
    except OSError as e:
        return "", read_reason(e)


@contextlib.contextmanager
def exclusive_lock(folder: Path, name: str, what: str) -> Iterator[None]:
    """Hold FOLDER/NAME exclusively while `what` runs, or refuse at once, saying which process has it.

    An flock dies with its process, so a crash never leaves a stale lock; the holder's PID and
    command line are written into the file so that the refusal can name them.
    """
    lock = folder / name
    try:
        f = open(lock, "a+", encoding="utf-8")
    except OSError as e:
        raise UserError(f"{folder}: cannot write here ({e.strerror or e})") from None
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = " ".join(f.read().split())[:200] or "another process"
            raise UserError(f"{folder}: {what} is already running here ({holder}); "
                            f"wait for it to end, or use another folder") from None
        f.seek(0)
        f.truncate()
        f.write(f"process {os.getpid()}: {path_text(' '.join(sys.argv))}\n")
        f.flush()
        yield


def real_path(path: str | os.PathLike) -> Path:
    """The absolute path with links followed; unlike Path.resolve on Python 3.11 it does not
    raise for a symlink loop (a bad input, reported when it is read)."""
    return Path(os.path.realpath(path))


def path_text(path: str | os.PathLike) -> str:
    """A path as text that any UTF-8 file (CSV, JSON, HTML) can hold: bytes of a file name that
    are not valid UTF-8 (os.fsdecode keeps them as lone surrogates) appear as \\xNN escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def available_memory() -> int:
    """Bytes of RAM a new allocation can get without swapping (Linux: MemAvailable), or the
    physical memory where that is not known."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def ensure_memory(needed: float, what: str) -> None:
    """Refuse, before allocating, work whose estimated memory exceeds what the machine has free:
    a clear message instead of the OOM killer or a raw allocator error."""
    free = available_memory()
    if needed > free:
        raise UserError(f"{what} needs about {needed / 2**30:.1f} GiB of memory; "
                        f"this machine has {free / 2**30:.1f} GiB free")


def usable_cpus() -> int:
    """Every CPU this process may use (its affinity mask where the system has one, as under
    taskset or a container's cpuset): prep's and train's default parallelism."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
