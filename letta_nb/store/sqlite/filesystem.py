"""Is the store on a network filesystem? SQLite's WAL mode (and its locks) are unsafe there.

WAL needs shared memory between every process that opens the file (the ``-shm`` file is mmap'ed), and
network filesystems (NFS, SMB/CIFS, sshfs, ...) do not share mmap'ed pages across hosts and often implement
POSIX locks loosely: two kernels on two hosts would each see a private copy of the index and corrupt the
store (sqlite.org/wal.html, "WAL does not work over a network filesystem"). Teams on JupyterHub whose home
directories are NFS mounts meet this; the fix is a local path or the PostgreSQL backend. Linux only: the
filesystem type comes from ``/proc/self/mountinfo`` (the longest mount point that contains the path).
"""

from __future__ import annotations

import os

__all__ = ["NETWORK_FILESYSTEMS", "filesystem_type", "network_filesystem"]

NETWORK_FILESYSTEMS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "afs", "9p", "ceph", "glusterfs", "lustre", "gpfs",
    "beegfs", "fuse.sshfs", "fuse.s3fs", "fuse.gcsfuse", "fuse.rclone", "fuse.glusterfs", "fuse.cephfs",
    "davfs", "fuse.davfs2", "orangefs",
})


def _unescape(field: str) -> str:
    """Mount points in mountinfo escape space, tab, newline and backslash as octal."""
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def filesystem_type(path: str, mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """The type of the filesystem holding ``path`` (None where that cannot be told)."""
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    target = os.path.realpath(os.path.dirname(os.path.abspath(path)) or "/")
    best, kind = "", None
    for line in lines:
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if not sep or len(fields) < 5 or not right.split():
            continue
        mount = _unescape(fields[4])
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, kind = mount, right.split()[0]
    return kind


def network_filesystem(path: str, mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """The network filesystem type holding ``path``, or None when it is local (or unknown)."""
    kind = filesystem_type(path, mountinfo)
    return kind if kind in NETWORK_FILESYSTEMS else None
