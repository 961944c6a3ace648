"""Files that must never be half-written or written by two processes at once: atomic writers and directory locks.

- `write_text_atomic` / `write_json_atomic`: a temporary file beside the target (PID in its name), fsync,
  rename; readers see the old file or the new one. Only regular files (or new paths) are written this way:
  a device, FIFO or symlink target is refused, so an output named /dev/stdout never replaces the device.
- `DirLock`: an exclusive OS lock (flock) on DIR/.lock, held while one process writes a run or a results
  directory; released when the process exits, however it exits. A second process is refused with the
  holder's PID.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import stat
from pathlib import Path

from nmt.errors import UsageError


def check_regular_target(path) -> Path:
    """`path` if it is a regular file or does not exist yet; a UsageError for a directory, a symlink, a device
    or a FIFO (write to stdout with '-')."""
    path = Path(path)
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):  # a new file (or one under a file: the writability check says)
        return path
    if stat.S_ISLNK(st.st_mode):
        raise UsageError(f"{path}: a symbolic link; outputs are written as new regular files (use '-' for stdout)")
    if stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{path}: a directory, not a file; choose a file name")
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{path}: a device or pipe, not a regular file (use '-' for stdout)")
    return path


def write_text_atomic(path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, fsync, then rename. A failure (disk full) names the file
    and leaves `path` as it was."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path, data: bytes) -> None:
    """`write_text_atomic` for bytes."""
    path = check_regular_target(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise OSError(e.errno, f"cannot write ({e.strerror or e})", str(path)) from None
    finally:
        tmp.unlink(missing_ok=True)


def named_os_errors(path, write):
    """`write()` (which writes `path`), with an OSError that does not say which file (a full disk in a library's
    own writer: matplotlib, SentencePiece, CTranslate2) raised again naming `path`."""
    try:
        return write()
    except OSError as e:
        if getattr(e, "filename", None):
            raise
        raise OSError(e.errno, f"cannot write ({e.strerror or e})", str(path)) from None


def save_figure(fig, path, dpi: int = 120) -> None:
    """A matplotlib figure to `path`; a failed write names the file."""
    named_os_errors(path, lambda: fig.savefig(path, dpi=dpi))


def write_json_atomic(obj, path) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2) + "\n")


JSON_MAX_BYTES = 256 * 2 ** 20  # the largest JSON file nmt reads (a study's comparison.json is a few MB)


def _non_finite(name: str):
    raise ValueError(f"{name} is not a number nmt accepts (only finite numbers)")


def read_json(path, what: str = "JSON file", max_bytes: int = JSON_MAX_BYTES) -> dict:
    """A JSON object from `path`, or a UsageError naming the file and what is wrong (never a traceback): larger
    than `max_bytes`, not JSON, NaN or Infinity anywhere, nested too deeply, or not an object."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise UsageError(f"{path}: not found (expected a {what})") from None
    if size > max_bytes:
        raise UsageError(f"{path}: {size} bytes, more than the {max_bytes} a {what} may have")
    try:
        data = json.loads(path.read_text(encoding="utf-8"), parse_constant=_non_finite)
    except FileNotFoundError:
        raise UsageError(f"{path}: not found (expected a {what})") from None
    except RecursionError:
        raise UsageError(f"{path}: nested too deeply to be a {what}") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: not a valid {what} ({e})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a JSON object, not {type(data).__name__} (a {what})")
    return data


class DirLock:
    """An exclusive OS lock (flock) on DIR/.lock, held while one process writes DIR; released when it exits,
    however it exits. A second process is refused with the holder's PID (a UsageError)."""

    def __init__(self, directory, what: str = "run", flag: str = "--run-dir"):
        self.path = Path(directory) / ".lock"
        self.what, self.flag = what, flag
        self.fd = None

    def acquire(self) -> "DirLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise UsageError(f"{self.path.parent}: another process (PID {holder}) is writing this {self.what}; wait "
                             f"for it to end, or choose another {self.flag}") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


RunLock = DirLock  # the run directory's lock (nmt.train)


def file_sha256(path) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
