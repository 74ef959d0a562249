"""Secret files on disk, for every package: one way to write them and one way to check them.

Device secrets, device keys, counter files, owner bundles, gateway X25519 keys, actor keystores,
passphrases, claim codes and identity lists all live in files only their owner may read or write.

Strategy: a file is created 0600 from the start (never briefly wider), written to a temporary name in
the same directory, fsync'd and renamed into place, so a crash leaves the old file or the new one and
never half of either. ``exclusive`` refuses to replace an existing file (a key made once): the finished
temporary file is hard-linked to its name, which fails if the name exists. A secret file is read only
when the group and others have no access at all: one others could read is already lost, one others
could write is not ours. Errors name the file, never its contents.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

__all__ = ["KeystoreError", "check_private", "write_private"]


class KeystoreError(Exception):
    """A secret file (a device key, an actor keystore, a passphrase file...) is missing, unreadable,
    malformed or too widely accessible, or a keystore's passphrase is wrong. Messages name the file,
    never what it holds."""


def check_private(path: Path, what: str = "key file") -> None:
    """Refuse a secret file that is missing, not a regular file, or open to the group or others."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise KeystoreError(f"cannot read {what} {path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise KeystoreError(f"{what} {path} is not a regular file")
    if st.st_mode & 0o077:
        raise KeystoreError(
            f"{what} {path} is accessible to group or others (mode {stat.S_IMODE(st.st_mode):04o});"
            " chmod 600 it"
        )


def write_private(path: Path, data: bytes, *, exclusive: bool = False) -> None:
    """Write ``data`` to ``path``, mode 0600 from the start, atomically and fsync'd; create the parent
    directory if needed. ``exclusive``: raise ``FileExistsError`` rather than replace a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply to a leftover temporary file
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if exclusive:
            try:
                os.link(tmp, path)  # fails if the name is taken: never replaces it
            except FileExistsError:
                raise FileExistsError(errno.EEXIST, "file exists", str(path)) from None
        else:
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
