"""Output files that never lose anything: temporaries with short names, publication without
clobbering, cleanup after signals, and "is this output one of my inputs?".

Standard library only, so every layer (container, io, cli) may use it.

Every temporary is *registered before it is created*: whatever instant a signal arrives at,
``discard_all()`` finds every temporary that exists.  Names are ``.<final name>.<6 chars>`` in
the destination folder (one filesystem, so publishing is a rename); the final name is cut so
that the whole name stays within 255 bytes, the usual file-name limit.

A killed process (SIGKILL, the out-of-memory killer) runs no cleanup, so while temporaries
exist a small separate process, ``fsreaper.py``, knows them too and removes them once this
process is gone without publishing or discarding them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import signal
import subprocess
import sys

from .errors import InputError

NAME_MAX = 255  # bytes per file name on ext4, XFS, btrfs, APFS, NTFS (UTF-16 units)
_TOKEN = 6
_live: set[str] = set()  # temporaries created and not yet published or discarded
_reaper: subprocess.Popen | None = None  # fsreaper.py, running while _live holds a reapable name
_REAPER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fsreaper.py")
SIGNALS = tuple(getattr(signal, s) for s in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, s))


def temp_path(final: str) -> str:
    """A fresh hidden name next to ``final``: ``.<name>.<random>``, at most 255 bytes."""
    folder, name = os.path.split(os.path.abspath(final))
    room = NAME_MAX - 2 - _TOKEN
    stem = os.fsdecode(os.fsencode(name)[:room])  # a cut UTF-8 sequence stays bytes (surrogateescape)
    token = secrets.token_hex(_TOKEN // 2)
    return os.path.join(folder, f".{stem}.{token}")


def create_temp_file(final: str) -> str:
    """Create an empty temporary file for ``final``; returns its path."""
    return _create(final, lambda p: os.close(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)))


def create_temp_dir(final: str, reap: bool = True) -> str:
    """Create an empty temporary folder for ``final``; returns its path. ``reap=False``: the
    reaper leaves it alone should this process be killed (it will hold the user's data)."""
    return _create(final, lambda p: os.mkdir(p, 0o777), reap)


def _create(final: str, make, reap: bool = True) -> str:
    for _ in range(100):
        path = temp_path(final)
        _register(path, reap)  # before creating: a signal in between cannot orphan it
        try:
            make(path)
            return path
        except FileExistsError:
            _unregister(path)
        except BaseException:
            _unregister(path)
            raise
    raise InputError(f"{final}: cannot create a temporary name next to it")


def _register(path: str, reap: bool) -> None:
    global _reaper
    _live.add(path)
    if reap:
        if _reaper is None:
            _reaper = _start_reaper()
        _tell_reaper(b"+", path)


def _unregister(path: str) -> None:
    global _reaper
    _live.discard(path)
    _tell_reaper(b"-", path)
    if not _live and _reaper is not None:
        # Nothing left to guard: end-of-file lets it exit with nothing to remove.
        reaper, _reaper = _reaper, None
        reaper.stdin.close()
        try:
            reaper.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def _start_reaper() -> subprocess.Popen | None:
    """fsreaper.py as a process of its own session, or None where it cannot run (then only the
    in-process cleanup after catchable signals remains)."""
    if not sys.executable or os.environ.get("SVC_REAPER") == "0":
        return None
    try:
        return subprocess.Popen([sys.executable, "-I", "-S", _REAPER_SCRIPT], stdin=subprocess.PIPE, bufsize=0,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError:
        return None


def _tell_reaper(op: bytes, path: str) -> None:
    global _reaper
    if _reaper is None:
        return
    record = memoryview(op + os.fsencode(path) + b"\0")
    try:
        while record:
            record = record[os.write(_reaper.stdin.fileno(), record):]
    except (OSError, ValueError):  # the reaper is gone: carry on without it
        _reaper = None


def discard(path: str) -> None:
    """Remove a temporary (file or folder) if it exists."""
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.remove(path)
    except FileNotFoundError:
        pass
    _unregister(path)


def discard_all() -> None:
    """Remove every temporary still registered (last resort after an interruption)."""
    for path in list(_live):
        discard(path)


def forget(path: str) -> None:
    """``path`` was renamed into place: it is no longer a temporary."""
    _unregister(path)


@contextlib.contextmanager
def signals_deferred():
    """Hold SIGINT/SIGTERM/SIGHUP back (they are delivered on exit) so that a group of renames
    completes as a whole: a set of outputs is either all published or not at all."""
    try:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    except (AttributeError, ValueError, OSError):  # not POSIX, or not the main thread
        old = None
    try:
        yield
    finally:
        if old is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)


def publish(tmp: str, final: str, overwrite: bool) -> None:
    """Move a finished temporary onto ``final``. Without ``overwrite`` an existing ``final`` is
    never replaced, even one that appeared while we worked (a hard link is atomic about it)."""
    if overwrite:
        if os.path.isdir(tmp) and os.path.isdir(final) and not os.path.islink(final):
            _replace_folder(tmp, final)
        else:
            os.replace(tmp, final)
        forget(tmp)
        return
    if os.path.isdir(tmp):
        if os.path.lexists(final):
            raise _exists(final)
        os.rename(tmp, final)
        forget(tmp)
        return
    try:
        os.link(tmp, final)
    except FileExistsError:
        raise _exists(final) from None
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOSYS):
            raise
        if os.path.lexists(final):  # a filesystem without hard links (FAT, some FUSE)
            raise _exists(final) from None
        os.replace(tmp, final)
    else:
        os.remove(tmp)
    forget(tmp)


def _replace_folder(tmp: str, final: str) -> None:
    # A non-empty folder cannot be renamed over: move the old one aside first.
    old = create_temp_dir(final, reap=False)  # the user's folder, should we be killed in between
    aside = os.path.join(old, "previous")
    os.replace(final, aside)
    try:
        os.replace(tmp, final)
    except OSError:
        os.replace(aside, final)
        raise
    finally:
        discard(old)


def _exists(path: str) -> InputError:
    return InputError(f"{path}: already exists (use -y to overwrite it)")


def same_file(a: str, b: str) -> bool:
    """True when ``a`` and ``b`` name one file: same path after resolving links, or same inode."""
    try:
        if os.path.realpath(a) == os.path.realpath(b):
            return True
        return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)
    except OSError:
        return False


def check_output(path: str, inputs, overwrite: bool | None) -> None:
    """Refuse an output that is one of ``inputs`` (always), or that exists (unless ``overwrite``).

    ``overwrite``: True (-y) replaces, False (-n) and None (default) refuse.
    """
    for src in inputs:
        if src is not None and same_file(path, src):
            raise InputError(f"{path}: output would overwrite the input {src}")
    if os.path.lexists(path) and not overwrite:
        if overwrite is False:
            raise InputError(f"{path}: already exists, not overwritten (-n)")
        raise _exists(path)
