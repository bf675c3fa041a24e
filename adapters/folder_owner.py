"""Whose claim a file in a drop folder's ``processing/`` is, and putting back the claims of watchers that are gone.

Several gateway processes may watch one drop folder, and one process may run two watchers on it. Each
watcher, for as long as it runs, holds an exclusive ``fcntl.flock`` on its own lock file,
``processing/watcher-<owner>.lock`` (``<owner>``: 64 random bits, fresh at each start), and names itself in
every file it claims: ``<stem>.w<owner>~<name>``. The kernel lets go of a flock when the open file
description holding it is closed - when the watcher stops, or its process ends, however it ends. So:

* a claim whose owner's lock can be taken is a leftover: its owner is gone, and whoever holds that lock
  puts the claim back into the folder, then removes the lock file;
* a claim whose owner's lock is held is never touched: its owner is still at work on it.

A flock belongs to the open file description, not to the process, so two watchers in one process exclude
each other just as two processes do. Nothing waits: a crashed gateway's leftovers are taken up at the next
start, and a watcher that runs takes up those of others at each scan. (A pid file would say nothing across
hosts or after a pid is reused; a heartbeat needs a timeout, too long for a crash or too short for a busy
gateway. On a network filesystem a flock is as good as that filesystem's locking: Linux maps it to NFS
locks.)

Claims made before owners were named (``<stem>~<name>``, or a bare name) have no lock to ask; they are
put back at start only, as they always were.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from collections.abc import Callable, Iterable

from adapters.folder_fs import DropDirs, move_noreplace
from adapters.folder_names import lock_name, lock_owner, new_owner, split_claim_name
from adapters.folder_scan import kind_of

__all__ = ["OwnLock", "put_back", "recover", "try_lock"]

_LOCK_FLAGS = os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC

#: Told of an entry in processing/ that is not a regular file: (name, inode, what it is).
Odd = Callable[[str, int, str], None]


def _still_named(fd: int, dir_fd: int, name: str) -> bool:
    """Whether ``name`` in the folder is still the file open as ``fd``."""
    try:
        there = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (there.st_dev, there.st_ino)


def try_lock(dir_fd: int, name: str) -> int | None:
    """A descriptor holding the exclusive flock on the regular file ``name`` in the folder (made if missing),
    or None when another holds it or it cannot be had (not a regular file; a link is never followed).

    The lock counts only while the name still leads to the locked file: one removed or replaced between
    the open and the flock (by a watcher that took it up just before) is let go and tried afresh.
    """
    for _ in range(4):
        try:
            fd = os.open(name, _LOCK_FLAGS, 0o644, dir_fd=dir_fd)
        except OSError:
            return None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                return None
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # another holds it (EWOULDBLOCK)
            os.close(fd)
            return None
        if _still_named(fd, dir_fd, name):
            return fd
        os.close(fd)
    return None


class OwnLock:
    """A watcher's own lock in ``processing/``, held from :meth:`take` until :meth:`release`."""

    def __init__(self, owner: str, fd: int) -> None:
        self.owner = owner
        self.fd = fd

    @classmethod
    def take(cls, processing: int) -> OwnLock:
        """The lock of a fresh owner id."""
        for _ in range(8):
            owner = new_owner()
            fd = try_lock(processing, lock_name(owner))
            if fd is not None:
                return cls(owner, fd)
        raise OSError(errno.EAGAIN, "cannot make a lock file in processing/", lock_name(owner))

    def held(self, processing: int) -> bool:
        """Whether this folder's ``processing/`` still has this lock's file (not so when processing/ was
        replaced, or the file removed by hand: then the watcher takes a fresh lock)."""
        return _still_named(self.fd, processing, lock_name(self.owner))

    def release(self, processing: int | None) -> None:
        """Let go. The lock file goes too, unless a claim of this owner is left in ``processing/`` (a watcher
        stopped in the middle of a file): that one is put back by whoever takes the lock next."""
        try:
            if (
                processing is not None
                and self.held(processing)
                and not any(split_claim_name(name)[1] == self.owner for name in os.listdir(processing))
            ):
                os.unlink(lock_name(self.owner), dir_fd=processing)
        except OSError:  # the lock file stays; the next watcher to look removes it
            pass
        finally:
            os.close(self.fd)


def put_back(dirs: DropDirs, stem: str, files: list[tuple[str, str]]) -> None:
    """Move claimed files back into the folder for the next scan, under their original names - or, if a new
    file has one of them meanwhile, all under ``<stem>-<name>`` (a pair keeps one stem, so its parts still
    match). ``files``: (name in processing/, original name), metadata first."""
    clash = any(_other_file_there(dirs, name, original) for name, original in files)
    for name, original in files:
        try:
            move_noreplace(dirs.processing, name, dirs.root, f"{stem}-{original}" if clash else original)
        except FileNotFoundError:
            continue  # no longer in processing/: another watcher put it back (a claim without an owner)
        except FileExistsError:
            if clash or _other_file_there(dirs, name, original):
                raise
            with contextlib.suppress(FileNotFoundError):  # a put-back cut short: it is there already
                os.unlink(name, dir_fd=dirs.processing)


def recover(dirs: DropDirs, own: str, *, older: bool, fresh_stem: Callable[[], str], odd: Odd) -> int:
    """Put back the claims of every watcher that is gone, and remove its lock file; with ``older``, also the
    claims without an owner. Returns how many files went back."""
    names = os.listdir(dirs.processing)
    owners = {lock_owner(name) or split_claim_name(name)[1] for name in names} - {None, own}
    back = 0
    for owner in sorted(o for o in owners if o is not None):
        fd = try_lock(dirs.processing, lock_name(owner))
        if fd is None:
            continue  # at work - or another watcher is taking its claims up right now
        try:
            claims = [name for name in os.listdir(dirs.processing) if split_claim_name(name)[1] == owner]
            back += _put_back_all(dirs, claims, fresh_stem, odd)
            os.unlink(lock_name(owner), dir_fd=dirs.processing)
        finally:
            os.close(fd)
    if older:
        ownerless = [name for name in names if lock_owner(name) is None and split_claim_name(name)[1] is None]
        back += _put_back_all(dirs, ownerless, fresh_stem, odd)
    return back


def _put_back_all(dirs: DropDirs, names: Iterable[str], fresh_stem: Callable[[], str], odd: Odd) -> int:
    """Put back the regular files among ``names``, a claim's parts together (metadata before bodies, as they
    were written); anything else is told to ``odd`` and left where it is."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for name in sorted(names, key=lambda n: (not n.endswith(".json"), n)):
        try:
            info = os.stat(name, dir_fd=dirs.processing, follow_symlinks=False)
        except FileNotFoundError:
            continue
        kind = kind_of(info.st_mode)
        if kind is not None:
            odd(name, info.st_ino, kind)
            continue
        stem, _owner, original = split_claim_name(name)
        groups.setdefault(stem or fresh_stem(), []).append((name, original))
    for stem, files in groups.items():
        put_back(dirs, stem, files)
    return sum(len(files) for files in groups.values())


def _other_file_there(dirs: DropDirs, name: str, original: str) -> bool:
    """Whether the folder has a file called ``original`` that is not ``processing/<name>`` itself."""
    try:
        there = os.stat(original, dir_fd=dirs.root, follow_symlinks=False)
        here = os.stat(name, dir_fd=dirs.processing, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) != (there.st_dev, there.st_ino)
