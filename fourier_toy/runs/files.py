"""Low-level run-directory I/O: atomic writes, metrics JSONL, RNG state (safetensors: runs/tensors.py).

Every file in a run directory is written atomically: the bytes go to a temporary file in the same
directory, which is flushed, fsynced and then renamed over the target, so a crash leaves either the
old file or the new one, never a mix. ``metrics.jsonl`` is the exception that is appended to; its
reader tolerates the one thing an interrupted append can leave behind, a partial last line.

No pickle: tensors go through safetensors, the RNG state through JSON text stored as uint8 bytes.
(The file names of a run directory are in runs/layout.py.)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

try:
    import fcntl
except ImportError:  # not on Windows: the O_EXCL file alone
    fcntl = None

from fourier_toy.config import regular_file
from fourier_toy.errors import CheckpointError, DataError, FourierToyError

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "replace_durably",
    "file_sha256",
    "remove_leftovers",
    "append_jsonl",
    "read_jsonl",
    "truncate_jsonl",
    "rng_state_to_array",
    "rng_from_array",
    "DirLock",
    "regular_file",
]

# Bit generators whose state is a JSON-representable dict of ints (no arrays).
_JSON_BIT_GENERATORS = ("PCG64", "PCG64DXSM")


# --------------------------------------------------------------------------- atomic writes

def _read_bytes(path: Path) -> bytes:
    regular_file(path, "run file", CheckpointError)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable; silently skipped where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, flush, fsync, rename, fsync dir).

    On any failure the target keeps its previous content, the temporary file is removed, and an
    OSError is re-raised as CheckpointError naming the path.
    """
    path = Path(path)
    directory = path.parent
    tmp_name = None
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o644)  # mkstemp makes 0600; run files are ordinary files
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
        tmp_name = None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot write ({exc.strerror or exc})") from exc
    finally:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass
    fsync_dir(directory)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` as UTF-8 to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(obj: Any) -> Any:
    """Let numpy scalars/arrays and paths through json; everything else stays an error."""
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serializable")


def _dumps(obj: Any, where: str, indent: int | None) -> str:
    """Strict JSON text (sorted keys, no NaN/inf); CheckpointError naming ``where`` otherwise."""
    try:
        return json.dumps(obj, sort_keys=True, indent=indent, allow_nan=False, default=_json_default)
    except ValueError as exc:
        if "Out of range float" in str(exc):
            raise CheckpointError(
                f"{where}: cannot encode a NaN or infinite float as JSON (store None or a string instead)"
            ) from None
        raise CheckpointError(f"{where}: cannot encode as JSON ({exc})") from None
    except TypeError as exc:
        raise CheckpointError(f"{where}: cannot encode as JSON ({exc})") from None


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as JSON (sorted keys, indent 2, trailing newline) to ``path`` atomically.

    NaN/inf floats and unencodable objects raise CheckpointError before anything is written.
    """
    atomic_write_text(path, _dumps(obj, str(path), indent=2) + "\n")


def replace_durably(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Rename ``src`` over ``dst`` (atomic on POSIX) and fsync the directory; CheckpointError naming
    ``dst`` on failure."""
    src, dst = Path(src), Path(dst)
    try:
        os.replace(src, dst)
    except OSError as exc:
        raise CheckpointError(f"{dst}: cannot rename {src.name} over it ({exc.strerror or exc})") from None
    fsync_dir(dst.parent)


def file_sha256(path: str | os.PathLike) -> str:
    """The hex sha256 of a file's bytes; CheckpointError naming the path when it cannot be read."""
    path = Path(path)
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return digest.hexdigest()


def remove_leftovers(directory: str | os.PathLike, names) -> list[str]:
    """Delete the temporary files ``atomic_write_bytes`` leaves behind when a process is killed
    mid-write (``.{name}.XXXXXXXX.tmp`` for each of ``names``); returns the names removed. Only the
    directory's single writer may call this: another writer's file in progress would go too."""
    directory = Path(directory)
    removed = []
    try:
        entries = list(directory.iterdir())
    except OSError:
        return removed
    prefixes = tuple(f".{name}." for name in names)
    for entry in entries:
        if entry.name.startswith(prefixes) and entry.name.endswith(".tmp"):
            try:
                entry.unlink()
                removed.append(entry.name)
            except OSError:
                pass
    return removed


# --------------------------------------------------------------------------- JSON lines

def _parse_line(raw: bytes) -> dict | None:
    """The JSON object on one line, or None when the bytes are not one."""
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: nested too deeply
        return None
    return obj if isinstance(obj, dict) else None


def _tail_start(f, size: int) -> int:
    """Offset just after the last newline in the open binary file ``f`` of ``size`` bytes (0 if none)."""
    pos = size
    block = 1 << 16
    while pos > 0:
        start = max(0, pos - block)
        f.seek(start)
        chunk = f.read(pos - start)
        idx = chunk.rfind(b"\n")
        if idx >= 0:
            return start + idx + 1
        pos = start
    return 0


def append_jsonl(path: str | os.PathLike, record: Mapping[str, Any]) -> None:
    """Append ``record`` as one JSON line (sorted keys, strict floats), flushed and fsynced.

    If an earlier append was interrupted, its partial last line is first removed (or, if it
    is a complete object that only lacks its newline, terminated), matching ``read_jsonl``.
    """
    path = Path(path)
    if not isinstance(record, Mapping):
        raise DataError(f"{path}: a JSONL record must be a dict, got {type(record).__name__}")
    line = (_dumps(dict(record), str(path), indent=None) + "\n").encode("utf-8")
    try:
        with open(path, "a+b") as f:
            size = f.seek(0, os.SEEK_END)
            if size > 0:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    start = _tail_start(f, size)
                    f.seek(start)
                    if _parse_line(f.read(size - start)) is None:
                        f.truncate(start)
                    else:
                        f.write(b"\n")  # append mode: always lands at the end
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot append ({exc.strerror or exc})") from None


def read_json_object(path: str | os.PathLike, what: str = "a JSON object",
                     error: type[FourierToyError] = DataError) -> dict:
    """A file holding one JSON object (a vocab.json, a run's config.json); `error` in one line naming
    the file when it cannot be read, does not parse or holds something else (`what` says what was
    expected)."""
    regular_file(path, "JSON file", error)
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise error(f"{path}: not valid JSON ({' '.join(str(e).split())})") from None
    except RecursionError:
        raise error(f"{path}: not valid JSON (nested too deeply to read)") from None
    if not isinstance(obj, dict):
        raise error(f"{path}: expected {what}")
    return obj


def read_jsonl(path: str | os.PathLike, check: Callable[[dict], str | None] | None = None) -> list[dict]:
    """All records of a JSONL file, in order.

    Blank lines are skipped. A final line without its newline that does not parse is the trace
    of an interrupted append and is dropped silently; any other line that is not a JSON object
    raises CheckpointError naming the file and the 1-based line number. A missing file raises too.
    `check(record)`, when given, says what is wrong with a record (None: nothing), which raises
    CheckpointError naming the file, the line and the problem.
    """
    path = Path(path)
    data = _read_bytes(path)
    lines = data.split(b"\n")
    # After split the last element is b"" when the file ends with a newline, else the unterminated tail.
    records = []
    last = len(lines) - 1
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        obj = _parse_line(raw)
        if obj is None:
            if number - 1 == last:
                break  # unterminated final line: an interrupted append
            raise CheckpointError(f"{path}: line {number} is not a JSON object")
        problem = check(obj) if check is not None else None
        if problem is not None:
            raise CheckpointError(f"{path}: line {number}: {problem}")
        records.append(obj)
    return records


def truncate_jsonl(path: str | os.PathLike, keep: Callable[[dict], bool]) -> list[dict]:
    """Rewrite ``path`` atomically with only the records for which ``keep(record)`` is true.

    Used on resume to drop evaluations logged after the checkpoint. Returns the kept records.
    """
    kept = [record for record in read_jsonl(path) if keep(record)]
    text = "".join(_dumps(record, str(path), indent=None) + "\n" for record in kept)
    atomic_write_text(path, text)
    return kept


# --------------------------------------------------------------------------- RNG state

def rng_state_to_array(gen: np.random.Generator) -> np.ndarray:
    """The generator's bit-generator state as a uint8 (k,) array of JSON text.

    The PCG64 state holds 128-bit integers, which JSON keeps exactly. The SeedSequence is not part
    of the state, so ``spawn`` on a restored generator does not repeat the original's children.
    """
    if not isinstance(gen, np.random.Generator):
        raise DataError(f"rng state: expected a numpy.random.Generator, got {type(gen).__name__}")
    state = gen.bit_generator.state
    name = state.get("bit_generator")
    if name not in _JSON_BIT_GENERATORS:
        raise DataError(
            f"rng state: bit generator must be one of {', '.join(_JSON_BIT_GENERATORS)}, got {name!r}"
        )
    text = json.dumps(state, sort_keys=True, allow_nan=False)
    return np.frombuffer(text.encode("ascii"), dtype=np.uint8).copy()


def rng_from_array(arr: np.ndarray) -> np.random.Generator:
    """A Generator continuing exactly where the one given to ``rng_state_to_array`` was."""
    arr = np.asarray(arr)
    if arr.dtype != np.uint8 or arr.ndim != 1:
        raise CheckpointError(f"rng state: expected a 1-D uint8 array, got {arr.dtype} {arr.shape}")
    try:
        state = json.loads(arr.tobytes().decode("ascii"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise CheckpointError("rng state: stored bytes are not valid JSON") from None
    name = state.get("bit_generator") if isinstance(state, dict) else None
    if name not in _JSON_BIT_GENERATORS:
        raise CheckpointError(
            f"rng state: bit generator must be one of {', '.join(_JSON_BIT_GENERATORS)}, got {name!r}"
        )
    bit_generator = getattr(np.random, name)()
    try:
        bit_generator.state = state
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"rng state: invalid {name} state ({exc})") from None
    return np.random.Generator(bit_generator)


# --------------------------------------------------------------------------- one writer per directory

def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    except OSError:
        return True
    return True


def _lock_holder(text: str) -> tuple[int | None, str]:
    """(pid, host) from a lock file's "pid host" text; (None, "") when it is not that."""
    parts = text.split()
    if len(parts) >= 2 and parts[0].isdigit():
        return int(parts[0]), parts[1]
    return None, ""


class DirLock:
    """An exclusive writer's lock on a directory: the file ``lock_path`` holding "PID HOST".

    Created with O_CREAT|O_EXCL and held (with flock on Unix) until ``release``. A lock file left
    by a process that is dead on this host is taken over; any other existing lock raises
    CheckpointError naming its holder. ``what`` names the flag/path in the message.
    """

    def __init__(self, lock_path: str | os.PathLike, what: str):
        self.path = Path(lock_path)
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> "DirLock":
        host = socket.gethostname()
        me = f"{os.getpid()} {host}\n".encode()
        for _ in range(20):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                fd = self._take_over_stale(host)
                if fd is None:
                    continue  # the file went away meanwhile: try to create it again
            except OSError as exc:
                raise CheckpointError(f"{self.what}: cannot create the lock {self.path} "
                                      f"({exc.strerror or exc})") from None
            else:
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX)  # ours: only a stale-lock check can hold it briefly
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, me, 0)
                os.fsync(fd)
            except OSError as exc:  # a full disk: no lock is better than an unreadable one
                os.close(fd)
                with contextlib.suppress(OSError):
                    os.unlink(self.path)
                raise CheckpointError(f"{self.what}: cannot write the lock {self.path} "
                                      f"({exc.strerror or exc})") from None
            self._fd = fd
            return self
        raise CheckpointError(f"{self.what}: cannot take the lock {self.path}; it keeps changing")

    def _take_over_stale(self, host: str) -> int | None:
        """An fd holding the existing lock file if its holder is dead on this host (None: the
        file vanished); CheckpointError naming the holder otherwise."""
        try:
            fd = os.open(self.path, os.O_RDWR)
        except FileNotFoundError:
            return None
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    self._refuse(os.pread(fd, 256, 0).decode("utf-8", "replace"))
            if os.fstat(fd).st_ino != os.stat(self.path).st_ino:
                os.close(fd)
                return None  # released and re-created meanwhile
            pid, holder_host = _lock_holder(os.pread(fd, 256, 0).decode("utf-8", "replace"))
            if pid is None or holder_host != host or _pid_alive(pid):
                self._refuse(os.pread(fd, 256, 0).decode("utf-8", "replace"))
            return fd  # stale: its holder died without removing it
        except FileNotFoundError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise

    def _refuse(self, text: str):
        pid, host = _lock_holder(text)
        holder = f"process {pid} on {host}" if pid is not None else "another process"
        raise CheckpointError(f"{self.what}: in use by {holder} (lock {self.path}); one writer at a time "
                              f"(if that process is gone, remove the lock file)")

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "DirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
