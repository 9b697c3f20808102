"""Writing a file atomically: readers see the old file or the whole new one, never a part.

:func:`write_atomically` writes a temporary file beside the target and renames it
over the target; the next write of the same target removes the temporaries that
killed writers left. Model files (:mod:`fastbp.io`), checkpoints and ONNX exports
are written through it.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import secrets
import socket
import stat
import time

_STALE_SECONDS = 3600.0
# ".<target name>.<writer>-<pid>-<random>.tmp"; those of earlier fastbp versions lack "<writer>-<pid>-".
_TEMP_TAIL = re.compile(r"(?:(?P<writer>[0-9a-f]{8})-(?P<pid>[1-9][0-9]{0,9})-)?[0-9a-f]{12}\.tmp")


@functools.cache
def _writer_tag() -> str:
    """8 hex digits naming this machine and PID namespace: where the pid in a temporary file's name means something."""
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = 0
    return hashlib.sha256(f"{socket.gethostname()}:{namespace}".encode()).hexdigest()[:8]


def _temporary_name(base: str) -> str:
    return f".{base}.{_writer_tag()}-{os.getpid()}-{secrets.token_hex(6)}.tmp"


def _writer_alive(pid: int) -> bool | None:
    """Whether process ``pid`` runs (None: cannot tell; Windows' os.kill(pid, 0) would interrupt it)."""
    if os.name != "posix":
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it runs, as another user
        return True
    except (OSError, OverflowError):
        return None
    return True


def _is_stale(path: str, match: re.Match, now: float) -> bool:
    """A temporary file whose writer is gone: its pid runs no more (a writer on this machine and in this PID
    namespace), or (any other writer) it has not changed for an hour."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    if not stat.S_ISREG(st.st_mode):
        return False
    if match["pid"] and match["writer"] == _writer_tag():
        alive = _writer_alive(int(match["pid"]))
        if alive is not None:
            return not alive
    # Another machine's (a shared folder), an older fastbp's, or no way to ask: a live writer
    # writes continuously, so an hour without a change means it is dead or hung.
    return now - st.st_mtime > _STALE_SECONDS


def _remove_stale_temporaries(folder: str, base: str) -> None:
    """Remove the temporary files of earlier saves of ``folder/base`` that were killed before their rename."""
    prefix = f".{base}."
    try:
        names = os.listdir(folder)
    except OSError:
        return
    now = time.time()
    for name in names:
        match = _TEMP_TAIL.fullmatch(name[len(prefix) :]) if name.startswith(prefix) else None
        if match and _is_stale(os.path.join(folder, name), match, now):
            try:
                os.unlink(os.path.join(folder, name))
            except OSError:  # gone already, or not ours to remove
                pass


def _keep_permissions(fd: int, tmp: str, old: os.stat_result) -> None:
    """Give the new file the old one's owner (where allowed) and permission bits, as overwriting it would."""
    if hasattr(os, "fchown"):
        now = os.fstat(fd)
        if (now.st_uid, now.st_gid) != (old.st_uid, old.st_gid):
            try:
                os.fchown(fd, old.st_uid, old.st_gid)
            except OSError:  # only root may give a file away: it stays the writer's
                pass
    os.chmod(tmp, stat.S_IMODE(old.st_mode))  # after the chown, which may clear setuid bits


def _fsync_folder(folder: str) -> None:
    try:  # make the rename itself durable; not every platform or filesystem allows it
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def write_atomically(path, write) -> None:
    """Call ``write(fh)`` on a temporary file beside ``path``, then rename it to ``path``.

    Readers see the old file or the complete new one, never a half-written
    file; on any error (or Ctrl-C) the temporary file is removed and ``path``
    is untouched. A save killed outright (SIGKILL, power loss) leaves its
    temporary file (``.<name>.<writer>-<pid>-<random>.tmp``); the next call for
    the same ``path`` removes those whose writer no longer runs (or, from another
    machine or an older fastbp, that have not changed for an hour).

    ``path`` is used exactly as given (no suffix is added). A symbolic link is
    followed: its target gets the new file and the link stays a link. An existing
    file keeps its permission bits (and owner, where allowed); a new one gets
    ``0o666`` less the umask. A path that is not a regular file (``/dev/null``,
    a FIFO) is written directly, not replaced.

    Parameters
    ----------
    path : str or PathLike
    write : callable taking a binary file object
    """
    path = os.fspath(path)
    try:
        old: os.stat_result | None = os.stat(path)  # through any symbolic links
    except FileNotFoundError:  # no file yet, or a dangling link: its target is created
        old = None
    if old is not None and not stat.S_ISREG(old.st_mode):
        with open(path, "wb") as fh:  # renaming over /dev/null or a pipe would replace the device itself
            write(fh)
        return
    target = os.path.realpath(path)
    folder, base = os.path.split(target)
    _remove_stale_temporaries(folder, base)
    tmp = os.path.join(folder, _temporary_name(base))
    # os.open with 0o666 honours the umask, as a plain open() of the target would.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            if old is not None:
                _keep_permissions(fh.fileno(), tmp, old)
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_folder(folder)
