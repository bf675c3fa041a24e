"""File operations for drop folders, through directory file descriptors, so nothing is followed out of a folder.

A drop folder is shared with another system (an EHR, a peer's file area) that may put anything in it: a
symbolic link to the gateway's own key, a FIFO, a link where ``failed/`` was. So every operation here
works on a folder opened with ``O_DIRECTORY | O_NOFOLLOW`` and on names inside it (``dir_fd=``): a
symbolic link is never followed, neither as a folder nor as a file. A file is opened ``O_NOFOLLOW |
O_NONBLOCK`` (a FIFO cannot hold the caller up) and read only once ``fstat`` says it is a regular file
no larger than the limit - and, for a dropped file, one with no other hard link: a hard link is no symbolic
link, but it too may lead to a file outside the folder. Only the last part of a configured path is
checked; the path is the operator's.

The gateway never overwrites a file it did not make. A fresh name is reserved with ``O_EXCL`` before a
file is renamed over the reservation; a given name (``atomic_write``, a file put back) is published with a
hard link, which fails when the name is taken. Where the filesystem has no hard links (some network
shares) the name is checked and then renamed to: that leaves a moment in which a writer choosing the very
same name could lose its file, and nothing better is on offer there.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

from adapters.folder_names import SUBFOLDERS
from gateway.errors import MessageTooLarge

__all__ = [
    "DropDirs",
    "atomic_write",
    "move_noreplace",
    "open_dir",
    "read_regular",
    "rename_if_free",
    "replace_own",
    "reserve",
    "write_new",
]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_NEW_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# what link() says on a filesystem without hard links, or (EPERM) under fs.protected_hardlinks for a file
# the gateway does not own: then the name is checked and renamed to instead
_NO_LINKS = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS})
_CHUNK = 1 << 20


def open_dir(name: str | Path, *, dir_fd: int | None = None, create: bool = False, shown: Path | None = None) -> int:
    """Open a folder (a path, or a name inside ``dir_fd``) without following a symbolic link in its place.

    A link or a non-folder is refused with an ``OSError`` whose ``filename`` is the folder (``shown``) and
    whose ``strerror`` says what it is instead.
    """
    if create:
        with contextlib.suppress(FileExistsError):  # whatever is there is judged by the open below
            if dir_fd is None:
                os.makedirs(name, exist_ok=True)
            else:
                os.mkdir(name, dir_fd=dir_fd)
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        where = str(shown or name)
        try:
            mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
        except OSError:
            raise exc from None
        if stat.S_ISLNK(mode):
            raise OSError(errno.ELOOP, "is a symbolic link, which the gateway never follows", where) from None
        if not stat.S_ISDIR(mode):
            raise OSError(errno.ENOTDIR, "is not a folder", where) from None
        raise


class DropDirs:
    """A drop folder and its ``processing/``, ``done/`` and ``failed/``, each open as a directory fd.

    All four are opened afresh for each scan, so a subfolder replaced behind the gateway's back is seen
    at once; a missing one is made. Use as a context manager: the fds are closed on leaving.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.root = open_dir(path, create=True)
        opened = [self.root]
        try:
            for sub in SUBFOLDERS:
                opened.append(open_dir(sub, dir_fd=self.root, create=True, shown=path / sub))
        except BaseException:
            for fd in opened:
                os.close(fd)
            raise
        self.processing, self.done, self.failed = opened[1:]

    def close(self) -> None:
        for fd in (self.failed, self.done, self.processing, self.root):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> DropDirs:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def read_regular(dir_fd: int, name: str, limit: int, *, alone: bool = False) -> tuple[bytes, os.stat_result]:
    """The bytes of a regular file of at most ``limit`` bytes, and its ``fstat`` after reading.

    The size is taken from ``fstat`` before a byte is read: a larger file raises
    :class:`~gateway.errors.MessageTooLarge` unread. A symbolic link (``ELOOP``) or anything but a regular
    file raises ``OSError``; so does, with ``alone``, a file that has other hard links (``EMLINK``,
    ``st_nlink != 1``): its inode is not the folder's alone - it may be the gateway's key - and is not read.
    """
    fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "is not a regular file", name)
        if alone and info.st_nlink != 1:
            raise OSError(errno.EMLINK, "has other hard links", name)
        if info.st_size > limit:
            raise MessageTooLarge(f"The file is {info.st_size} bytes; this gateway accepts at most {limit} bytes.")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:  # one byte past the limit is enough to know a growing file is too large
            chunk = os.read(fd, min(_CHUNK, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise MessageTooLarge(f"The file is over {limit} bytes; this gateway accepts at most {limit} bytes.")
        return b"".join(chunks), os.fstat(fd)
    finally:
        os.close(fd)


def _same_content(dir_fd: int, name: str, data: bytes) -> bool:
    try:
        found, _info = read_regular(dir_fd, name, len(data))
    except (OSError, MessageTooLarge):
        return False
    return found == data


def rename_if_free(src_fd: int, src: str, dst_fd: int, dst: str) -> None:
    """Rename, unless ``dst`` exists (``FileExistsError``). Only for names no one else can be using at once:
    a fresh random one, or where :func:`move_noreplace` has nothing better (no hard links)."""
    try:
        os.stat(dst, dir_fd=dst_fd, follow_symlinks=False)
    except FileNotFoundError:
        os.rename(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
        return
    raise FileExistsError(errno.EEXIST, "is already there; the gateway never overwrites a file", dst)


def move_noreplace(src_fd: int, src: str, dst_fd: int, dst: str) -> None:
    """Move ``src`` to ``dst`` unless ``dst`` exists (``FileExistsError``): hard link, then unlink."""
    try:
        os.link(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in _NO_LINKS:
            raise
        rename_if_free(src_fd, src, dst_fd, dst)
        return
    os.unlink(src, dir_fd=src_fd)


def reserve(dir_fd: int, suffixes: Sequence[str], stems: Callable[[], str], first: str | None = None) -> str:
    """A stem for which every ``<stem><suffix>`` is newly made (empty, ``O_EXCL``) in the folder.

    The caller renames its files over these reservations: it overwrites nothing but its own empty files.
    ``first`` is tried before fresh ``stems()``.
    """
    stem = first or stems()
    for _ in range(16):
        made: list[str] = []
        try:
            for suffix in suffixes:
                os.close(os.open(f"{stem}{suffix}", _NEW_FLAGS, 0o600, dir_fd=dir_fd))
                made.append(f"{stem}{suffix}")
        except FileExistsError:
            for name in made:
                os.unlink(name, dir_fd=dir_fd)
            stem = stems()
            continue
        return stem
    raise FileExistsError(errno.EEXIST, "no free name found", stem)


def _write_temporary(dir_fd: int, data: bytes) -> str:
    """A new dotfile holding ``data``, fsynced (a dotfile: no scanner takes it)."""
    name = f".gw-{secrets.token_hex(8)}.tmp"
    fd = os.open(name, _NEW_FLAGS, 0o666, dir_fd=dir_fd)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(name, dir_fd=dir_fd)
        raise
    os.close(fd)
    return name


def _sync_dir(dir_fd: int) -> None:
    with contextlib.suppress(OSError):  # make the rename itself durable where the platform allows
        os.fsync(dir_fd)


def write_new(dir_fd: int, name: str, data: bytes) -> None:
    """Publish ``data`` as ``name`` in the folder: whole or not at all, and never over another file.

    A file of that name with the very same bytes counts as written (a retried hand-over); any other file
    there raises ``FileExistsError`` and is left as it is - a symbolic link included, unfollowed.
    """
    temporary = _write_temporary(dir_fd, data)
    try:
        move_noreplace(dir_fd, temporary, dir_fd, name)
    except FileExistsError:
        if not _same_content(dir_fd, name, data):
            raise FileExistsError(
                errno.EEXIST, "a different file of that name is there; the gateway never overwrites one", name
            ) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary, dir_fd=dir_fd)
    _sync_dir(dir_fd)


def replace_own(dir_fd: int, name: str, data: bytes) -> None:
    """Fill a name the caller reserved (:func:`reserve`) with ``data``, atomically."""
    temporary = _write_temporary(dir_fd, data)
    try:
        os.rename(temporary, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        os.unlink(temporary, dir_fd=dir_fd)
        raise
    _sync_dir(dir_fd)


def atomic_write(folder: Path, name: str, data: bytes) -> Path:
    """Write ``data`` to ``folder/name`` so that no reader ever sees a partial file (see :func:`write_new`).

    The folder is made if missing, but never entered through a symbolic link: that raises ``OSError``.
    """
    fd = open_dir(folder, create=True)
    try:
        write_new(fd, name, data)
    finally:
        os.close(fd)
    return folder / name
