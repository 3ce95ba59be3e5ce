"""Atomic file writes: a reader sees the old file or the new one, never a half-written one.

The data goes to a temporary file in the target's own folder (so ``os.replace`` is a rename on
one file system), is flushed and fsync'ed, then renamed over the target; the folder is fsync'ed
so the rename itself survives a power cut. An exception or interrupt mid-write removes the
temporary file; a killed process may leave one behind, which ``remove_stale_temporaries``
clears later.
"""
import hashlib
import os
import tempfile
import time
from pathlib import Path

TEMP_SUFFIX = ".partial"


def atomic_write(path, data_or_writer) -> Path:
    """Write ``bytes`` (or call ``writer(binary_file)``) to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data_or_writer):
                data_or_writer(f)
            else:
                f.write(data_or_writer)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 -> what open() would have made
        os.replace(tmp, path)
    except BaseException:
        # KeyboardInterrupt too: never leave the temporary behind when we can help it.
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open folders; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temporaries(folder, older_than_s: float = 3600.0) -> None:
    """Delete temporaries that a killed writer left in ``folder`` (older than an hour, so a
    concurrent writer's live temporary is never touched)."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    now = time.time()
    for tmp in folder.glob(f".*{TEMP_SUFFIX}"):
        try:
            if now - tmp.stat().st_mtime > older_than_s:
                tmp.unlink()
        except OSError:
            pass


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()

