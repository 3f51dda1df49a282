"""The store warns when it sits on a network filesystem, where SQLite's WAL is unsafe (store/sqlite/filesystem.py)."""

from __future__ import annotations

import warnings

import pytest

import letta_nb
from letta_nb.errors import StoreWarning
from letta_nb.store import store
from letta_nb.store.sqlite import filesystem

MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw
40 27 0:45 / /home rw,relatime - nfs4 fileserver:/export/home rw,vers=4.2
41 40 0:46 / /home/ada/scratch rw,relatime - tmpfs tmpfs rw
42 27 0:47 / /mnt/my\\040share rw,relatime - cifs //nas/share rw
"""


@pytest.fixture
def mountinfo(tmp_path):
    path = tmp_path / "mountinfo"
    path.write_text(MOUNTINFO)
    return str(path)


@pytest.mark.parametrize(("db", "kind", "remote"), [
    ("/home/ada/letta_nb.db", "nfs4", "nfs4"),
    ("/home/ada/scratch/s.db", "tmpfs", None),  # the longest mount point wins
    ("/mnt/my share/s.db", "cifs", "cifs"),  # mount points escape spaces
    ("/var/lib/s.db", "ext4", None),
])
def test_the_filesystem_holding_a_store_is_found(mountinfo, db, kind, remote):
    assert filesystem.filesystem_type(db, mountinfo) == kind
    assert filesystem.network_filesystem(db, mountinfo) == remote


def test_unreadable_mount_table_means_unknown(tmp_path):
    assert filesystem.filesystem_type("/x/s.db", str(tmp_path / "missing")) is None


def test_opening_a_store_on_a_network_filesystem_warns_and_says_what_to_do(db_path, monkeypatch):
    monkeypatch.setattr(store, "network_filesystem", lambda path: "nfs4")
    with pytest.warns(StoreWarning, match=r"network filesystem \(nfs4\).*local disk"):
        client = letta_nb.connect(db_path)
    client.close()


def test_a_local_store_opens_without_warning(db_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        letta_nb.connect(db_path).close()
