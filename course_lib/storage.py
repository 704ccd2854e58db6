"""Files the course writes and reads back: written atomically (a crash, Ctrl-C or full disk mid-write never
leaves a half-written cache, checkpoint or notebook), checked for room first, and verified when read."""
from __future__ import annotations

import errno
import glob
import hashlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Callable

import torch

CHECKSUM_KEY = "sha256"
SAVE_OVERHEAD = 1 << 20  # bytes a torch.save file needs beyond its tensors' (zip entries, pickled structure)
ABANDONED_AFTER_S = 3600  # a temporary file untouched this long belongs to no running write


class NoSpaceError(OSError):
    """The disk has no room for a file; the message says how much is needed, how much is free, and what to do."""


class DamagedFileError(ValueError):
    """A file that does not read back as it was written: cut short, overwritten, or not written by the course."""


def atomic_write(path: str | Path, write: Callable[[Path], None], size: int | None = None) -> Path:
    """Call `write(tmp_path)` on a temporary file beside `path`, then rename it into place.

    `size`, the bytes it will take when known, is checked against the free space first, so that a full disk
    is named before minutes of work are lost; a disk that fills during the write is named all the same.
    Temporary files that killed writes of `path` left beside it are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned_temporaries(path.parent, glob.escape(path.name))
    if size is not None:
        check_space(path.parent, size)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, 0o644)  # mkstemp's 0600 would hide shared caches from other users
        os.replace(tmp_path, path)
    except BaseException as e:
        written = tmp_path.stat().st_size if tmp_path.exists() else 0
        tmp_path.unlink(missing_ok=True)
        if _disk_full(e):
            raise _no_space(path.parent, max(size or 0, written), at_least=size is None) from e
        raise
    return path


def _disk_full(e: BaseException) -> bool:
    # torch.save's zip writer reports a short write as "unexpected pos N vs M", not as ENOSPC
    return ((isinstance(e, OSError) and e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)))
            or (isinstance(e, RuntimeError) and "unexpected pos" in str(e)))


def _no_space(folder: Path, needed: int, at_least: bool = False) -> NoSpaceError:
    """The error for `needed` bytes that do not fit in `folder`, with the fix."""
    from .config import DATA_DIR_ENV

    free = shutil.disk_usage(folder).free
    return NoSpaceError(f"no space left on {folder}: {'at least ' * at_least}{_mb(needed)} MB needed, "
                        f"{_mb(free)} MB free; free space there, or set {DATA_DIR_ENV} to a folder on a disk with "
                        "room (datasets, caches and checkpoints go there)")


def check_space(folder: str | Path, needed: int) -> None:
    """NoSpaceError, before any work, when `folder`'s disk has less than `needed` bytes free."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if shutil.disk_usage(folder).free < needed:
        raise _no_space(folder, needed)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f}"


def remove_abandoned_temporaries(folder: Path, name: str) -> list[Path]:
    """Delete the temporary files that killed writes (SIGKILL, a kernel restart, a power cut) of the files
    named `name` (a glob pattern) left in `folder`: those whose writing process (its id is in the name) no
    longer runs, and any untouched for an hour. A running write keeps its file; other files are not looked at."""
    removed = []
    for tmp in folder.glob(f".{name}.*.tmp"):
        try:
            writer = re.search(r"\.(\d+)-[^.]+\.tmp$", tmp.name)
            if time.time() - tmp.stat().st_mtime > ABANDONED_AFTER_S or (writer and not _running(int(writer[1]))):
                tmp.unlink()
                removed.append(tmp)
        except FileNotFoundError:  # its writer renamed or removed it meanwhile
            pass
    return removed


def _running(pid: int) -> bool:
    if os.name != "posix":  # os.kill(pid, 0) would terminate it on Windows; the age rule alone applies there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _tensor_bytes(obj) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.nelement() * obj.element_size()
    if isinstance(obj, Mapping):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def atomic_torch_save(obj, path: str | Path) -> Path:
    """torch.save, atomically, after checking that the disk has room for it."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp), size=_tensor_bytes(obj) + SAVE_OVERHEAD)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write a text file atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def content_checksum(obj) -> str:
    """SHA-256 of a saved structure's content: every tensor's dtype, shape and bytes, and every other value,
    in order. The same after a torch.save/torch.load round trip; any changed byte changes it."""
    h = hashlib.sha256()

    def add(x):
        if isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous()
            h.update(f"tensor {t.dtype} {tuple(t.shape)}\n".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().data)
        elif isinstance(x, Mapping):
            h.update(f"mapping {len(x)}\n".encode())
            for k, v in x.items():
                add(k)
                add(v)
        elif isinstance(x, (list, tuple)):
            h.update(f"sequence {len(x)}\n".encode())
            for v in x:
                add(v)
        else:  # what torch.load(weights_only=True) gives back: str, numbers, None, dtypes, sizes; reprs are exact
            h.update(f"{type(x).__name__} {x!r}\n".encode())

    add(obj)
    return h.hexdigest()


def save_verified(blob: dict, path: str | Path) -> Path:
    """torch.save a dict atomically, with the checksum of its content, for load_verified."""
    return atomic_torch_save({**blob, CHECKSUM_KEY: content_checksum(blob)}, path)


def load_verified(path: str | Path, **load_args) -> dict:
    """A dict written by save_verified, or DamagedFileError (saying what is wrong) when it does not read
    back exactly as written: a file that loads can still hold overwritten bytes."""
    try:
        blob = torch.load(path, weights_only=True, **load_args)
    except Exception as e:  # zip, pickle and storage errors come in many types
        raise DamagedFileError(f"it cannot be read: {type(e).__name__}: {str(e)[:200]}") from e
    if not isinstance(blob, dict) or CHECKSUM_KEY not in blob:
        raise DamagedFileError("it carries no checksum: it is not a file this version of the course wrote")
    expected = blob.pop(CHECKSUM_KEY)
    if content_checksum(blob) != expected:
        raise DamagedFileError("its content does not match its checksum: bytes in it were changed after it was written")
    return blob


def fingerprint(path: str | Path) -> str:
    """A cheap identity for a file or folder: paths, sizes and modification times (no content hashing)."""
    path = Path(path).resolve()
    h = hashlib.sha256(str(path).encode())
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.is_file():
                st = p.stat()
                h.update(f"{p.relative_to(path)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    else:
        st = path.stat()
        h.update(f"{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]
