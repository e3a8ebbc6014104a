"""File-system helpers: atomic writes, and sets of files that appear all at once or not at all.

One file (:func:`atomic_write_bytes`) is written to a temporary file in the target's folder and
renamed over the target, so a reader sees the old file or the whole new one.

A set of files (:class:`OutputSet`, e.g. ``model.tflite``, ``labels.txt``, ``report.json`` and
``confusion.png`` of one run) is staged as temporary files in the folder, then committed under an
exclusive lock on the folder: a small journal (``.lastlayer-commit.json``) listing the renames is
written atomically, the renames run with SIGINT / SIGTERM / SIGHUP held back, and the journal is
removed. A run killed between two renames leaves the journal behind; the next run writing to the
folder finishes those renames first (roll forward: every staged file was complete and synced
before the journal existed), so the folder always ends up holding one complete set.

Temporary files are named ``.<name>.<pid>.<token>.tmp``; a later writer removes those whose
process is gone (never a live process's, so concurrent runs do not disturb each other). Files get
the permissions a plain ``open()`` gives under the umask; a replaced file keeps its mode.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import stat
import threading
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Callable, Iterator, Union

from lastlayer.errors import OutputError

try:  # POSIX only; elsewhere commits are not serialised between processes
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

PathLike = Union[str, "os.PathLike[str]"]

JOURNAL_NAME = ".lastlayer-commit.json"
TEMP_PATTERN = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.(?P<token>[0-9a-f]{8})\.tmp$")
_HELD_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


def _fail(target: Path, exc: OSError) -> OutputError:
    return OutputError(f"cannot write {target}: {exc.strerror or exc}; choose a writable output path", subject="output")


def temp_name(name: str) -> str:
    """A temporary file name for ``name``: hidden, with this process's id and a random token."""
    return f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"


def pid_alive(pid: int) -> bool:
    """True when a process ``pid`` exists (this process counts: its other threads may be writing)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def remove_stale_temps(folder: PathLike, name: str | None = None) -> list[Path]:
    """Delete lastlayer temp files in ``folder`` (only of ``name`` if given) whose writer process is gone."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = TEMP_PATTERN.match(entry.name)
        if not match or (name is not None and match["name"] != name) or pid_alive(int(match["pid"])):
            continue
        try:
            os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            pass
    return removed


def _remove_quietly(path: Path) -> None:
    """Delete ``path`` if it exists; a failure is ignored (on a read-only file system even a missing file's
    unlink fails, and the error being reported is the write that failed)."""
    with suppress(OSError):
        path.unlink(missing_ok=True)


def _mode_of(path: Path) -> int | None:
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return None


def _write_temp(path: Path, data: bytes, mode: int | None) -> None:
    """Create ``path`` (must not exist) with ``data``, synced; mode from the umask, or ``mode`` exactly."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_target(target: Path) -> Path:
    folder = target.parent if str(target.parent) else Path(".")
    if target.is_dir():
        raise OutputError(f"output path {target} is a folder; give a file name inside it, e.g. {target / 'model.tflite'}", subject="output")
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise OutputError(f"cannot write {target}: folder {folder} {what}; create it or choose another output path", subject="output")
    return folder


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    Either the whole new file is there afterwards, or the old one (if any) is untouched. A new file
    gets the umask's permissions, a replaced one keeps its mode. Stale temp files of ``path`` left
    by killed processes are removed. Raises :class:`OutputError` naming the path when the folder
    is missing or not writable, or ``path`` is a folder.
    """
    target = Path(path)
    folder = _check_target(target)
    remove_stale_temps(folder, target.name)
    tmp = folder / temp_name(target.name)
    try:
        _write_temp(tmp, bytes(data), _mode_of(target))
        os.replace(tmp, target)
    except OSError as exc:
        _remove_quietly(tmp)
        raise _fail(target, exc) from None
    except BaseException:
        _remove_quietly(tmp)
        raise
    return target


def atomic_write_text(path: PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` atomically; see :func:`atomic_write_bytes`."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def ensure_output_dir(path: PathLike) -> Path:
    """Create the output folder ``path`` (and parents) or raise :class:`OutputError` saying why not."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"output folder {folder} is a file, not a folder; choose another output folder or remove the file",
                          subject="output")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {folder}: {exc.strerror or exc}; choose a writable path", subject="output") from None
    if not os.access(folder, os.W_OK):
        raise OutputError(f"output folder {folder} is not writable; choose a writable path", subject="output")
    return folder


def check_output_dir(path: PathLike) -> Path:
    """Raise :class:`OutputError` now when the output folder ``path`` could not be made or written later (it is a
    file, or sits below a file or a folder that is not writable); creates nothing. For jobs that work long
    before they write: the path is refused before the work, not after it."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"output folder {folder} is a file, not a folder; choose another output folder or remove the file",
                          subject="output")
    existing = next((candidate for candidate in [folder, *folder.parents] if candidate.exists()), Path("."))
    if not existing.is_dir():
        raise OutputError(f"cannot create output folder {folder}: {existing} is a file; choose another output folder",
                          subject="output")
    if not os.access(existing, os.W_OK):
        raise OutputError(f"output folder {folder} cannot be written ({existing} is not writable); choose a writable path",
                          subject="output")
    return folder


def _missing_parents(folder: Path) -> list[Path]:
    """``folder`` and its ancestors that do not exist yet, deepest first."""
    missing = []
    for candidate in [folder, *folder.parents]:
        if candidate.exists() or candidate == candidate.parent:
            break
        missing.append(candidate)
    return missing


@contextmanager
def signals_held() -> Iterator[None]:
    """Hold back SIGINT, SIGTERM and SIGHUP for the block; a signal that arrived is delivered after it.

    Works at the level of Python handlers (which always run in the main thread), so it is effective
    whichever thread the kernel picks; outside the main thread the block cannot be interrupted by them.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous: dict[int, Callable | int] = {}
    for signum in _HELD_SIGNALS:
        handler = signal.getsignal(signum)
        if handler is None or handler == signal.SIG_IGN:
            continue  # installed outside Python, or ignored: leave alone
        previous[signum] = handler
        signal.signal(signum, lambda number, frame: pending.append(number))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(pending):
            signal.raise_signal(signum)


@contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``folder`` itself (no lock file is left behind)."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _sync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _apply(folder: Path, renames: list[tuple[str, str]], removals: list[str]) -> None:
    for tmp, final in renames:
        if (folder / tmp).exists():
            os.replace(folder / tmp, folder / final)
    for name in removals:
        (folder / name).unlink(missing_ok=True)
    _sync_folder(folder)


def recover_folder(folder: PathLike) -> bool:
    """Finish a commit that a killed run left half done in ``folder`` and drop its stale temp files.

    Call with the folder lock held (:class:`OutputSet` does). Returns True when a commit was rolled forward.
    """
    folder = Path(folder)
    journal = folder / JOURNAL_NAME
    rolled = False
    if journal.is_file():
        try:
            plan = json.loads(journal.read_text(encoding="utf-8"))
            renames = [(str(a), str(b)) for a, b in plan["renames"]]
            removals = [str(n) for n in plan.get("removals", [])]
        except (OSError, ValueError, KeyError, TypeError):
            renames, removals = [], []  # an unreadable journal was never complete: nothing to finish
        safe = all("/" not in a + b and a.startswith(".") for a, b in renames) and all("/" not in n for n in removals)
        if safe:
            _apply(folder, renames, removals)
            rolled = bool(renames)
        journal.unlink(missing_ok=True)
    remove_stale_temps(folder)
    return rolled


class OutputSet:
    """Files of one run, written into one folder all at once (see the module docstring).

    Usage::

        with OutputSet(folder) as out:
            out.add_bytes("model.tflite", data)
            out.add_text("labels.txt", text)
            save_png(out.staging_path("confusion.png"))   # any writer that wants a path
            out.remove("old.png")                          # dropped in the same commit
            paths = out.commit()

    The folder (and missing parents) is created by the ``with``; leaving the block without a
    commit (an error, Ctrl-C) deletes the staged files and any folder this set created.
    """

    def __init__(self, folder: PathLike) -> None:
        self.folder = Path(folder)
        self._created: list[Path] = []
        self._staged: dict[str, str] = {}
        self._removals: list[str] = []
        self._committed = False

    def __enter__(self) -> OutputSet:
        self._created = _missing_parents(self.folder)
        ensure_output_dir(self.folder)
        try:
            with folder_lock(self.folder):
                recover_folder(self.folder)
        except OSError as exc:
            self.discard()
            raise _fail(self.folder, exc) from None
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self._committed:
            self.discard()

    def staging_path(self, name: str) -> Path:
        """A temp path in the folder that becomes ``name`` at commit; the caller writes the file there."""
        if "/" in name or name in ("", ".", ".."):
            raise OutputError(f"invalid output file name {name!r}", subject="output")
        self._staged[name] = temp_name(name)
        if name in self._removals:
            self._removals.remove(name)
        return self.folder / self._staged[name]

    def add_bytes(self, name: str, data: bytes) -> Path:
        """Stage ``data`` as ``name``; returns the final path."""
        tmp = self.staging_path(name)
        try:
            _write_temp(tmp, bytes(data), None)
        except OSError as exc:
            raise _fail(self.folder / name, exc) from None
        return self.folder / name

    def add_text(self, name: str, text: str) -> Path:
        """Stage UTF-8 ``text`` as ``name``."""
        return self.add_bytes(name, text.encode("utf-8"))

    def remove(self, name: str) -> None:
        """Delete ``name`` (if present) in the same commit, e.g. an old file the new set does not have."""
        if name not in self._staged and name not in self._removals:
            self._removals.append(name)

    def commit(self) -> dict[str, Path]:
        """Put every staged file in place at once; returns ``{name: final path}``."""
        renames = [(tmp, name) for name, tmp in self._staged.items() if (self.folder / tmp).exists()]
        try:
            for tmp, name in renames:
                mode = _mode_of(self.folder / name)
                if mode is not None:
                    os.chmod(self.folder / tmp, mode)  # a replaced file keeps its permissions
            with folder_lock(self.folder):
                recover_folder(self.folder)
                journal = {"pid": os.getpid(), "renames": renames, "removals": self._removals}
                with signals_held():
                    atomic_write_text(self.folder / JOURNAL_NAME, json.dumps(journal))
                    self._committed = True  # from here on the journal owns the staged files
                    _apply(self.folder, renames, self._removals)
                    (self.folder / JOURNAL_NAME).unlink()
                    _sync_folder(self.folder)
        except OutputError:
            raise
        except OSError as exc:
            raise _fail(self.folder, exc) from None
        return {name: self.folder / name for _, name in renames}

    def discard(self) -> None:
        """Delete the staged files and the folders this set created (when empty)."""
        for tmp in self._staged.values():
            _remove_quietly(self.folder / tmp)
        self._staged.clear()
        for folder in self._created:
            try:
                folder.rmdir()
            except OSError:
                break
        self._created = []
