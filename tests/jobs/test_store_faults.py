"""The store under faults, in one process: a full or read-only disk becomes a typed error and
the store works again when space returns; start-up collection of what killed writers left."""

from __future__ import annotations

import errno
import hashlib
import os
import socket
import subprocess
import sys
import time

import pytest
from PIL import Image

from bildwerk.images.io import encode_png
from bildwerk.jobs.sqlite import blobs
from bildwerk.jobs.sqlite.blobs import STALE_TEMP_SECONDS
from bildwerk.jobs.sqlite.errors import unwritable, writes
from bildwerk.jobs.store import Store, StoreError, StoreFullError, StoreUnwritableError


def png(seed: int) -> bytes:
    return encode_png(Image.new("RGB", (8, 8), (seed % 256, 3, 5)))


def request(prompt: str = "a lake") -> dict:
    return {"prompt": prompt, "seed": 1, "mode": "text-to-image", "model": None}


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "store")
    yield s
    s.close()


def _aged(path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


def test_full_and_read_only_file_systems_become_typed_errors():
    full = unwritable(OSError(errno.ENOSPC, "No space left on device", "/srv/secret/store/x.png"))
    assert isinstance(full, StoreFullError) and full.code == "insufficient_storage"
    assert "/srv" not in str(full) and full.retry_after > 0  # clients get no server paths
    assert isinstance(unwritable(OSError(errno.EDQUOT, "Disk quota exceeded")), StoreFullError)
    ro = unwritable(OSError(errno.EROFS, "Read-only file system"))
    assert type(ro) is StoreUnwritableError and ro.code == "store_unavailable"
    assert unwritable(OSError(errno.EACCES, "Permission denied")) is None  # a bug, not a fault
    assert unwritable(ValueError("x")) is None
    with pytest.raises(StoreFullError) as err, writes():
        raise OSError(errno.ENOSPC, "No space left on device")
    assert isinstance(err.value.__cause__, OSError)  # the detail stays for the log
    assert issubclass(StoreFullError, StoreError)


def test_a_full_database_refuses_cleanly_and_works_again_when_space_returns(store):
    conn = store._conn()  # max_page_count is per connection: this thread's one
    conn.execute("PRAGMA max_page_count = 1")  # clamped to the current size: no page may be added
    with pytest.raises(StoreFullError, match="disk is full"):
        for i in range(200):  # some inserts fit the last page; growing the file does not
            store.create_job(request=request("a lake " * 200 + str(i)), api="native", engine="local")
    assert not conn.in_transaction
    conn.execute("PRAGMA max_page_count = 1073741823")  # space again: no restart needed
    job = store.create_job(request=request(), api="native", engine="local")
    assert store.get(job.id).status == "queued" and store.verify() == []


def test_a_full_disk_on_an_image_write_leaves_no_file_and_no_job(store, monkeypatch):
    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(StoreFullError):
        store.create_job(request=request(), api="native", engine="local", inputs={"image": png(1)})
    with pytest.raises(StoreFullError):
        store.probe_space()
    monkeypatch.undo()
    assert store.count() == 0 and list(store.images_dir.rglob("*.*")) == []  # no temp file left
    store.probe_space()
    assert store.create_job(request=request(), api="native", engine="local", inputs={"image": png(1)})


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_collect_removes_what_killed_writers_left_and_nothing_live(store):
    kept = store.create_job(request=request(), api="native", engine="local", inputs={"image": png(1)})
    kept_sha = kept.inputs["image"]
    folder = store.image_path(kept_sha).parent
    dead = f"{socket.gethostname()}+{_dead_pid()}+abc123"
    killed_temp = folder / f".{kept_sha}.{dead}.q1w2e3.tmp"  # its writer is gone: now
    live_temp = folder / f".{kept_sha}.{blobs._writer_tag()}.r4t5y6.tmp"  # ours: a write in progress
    other_host = folder / f".{kept_sha}.elsewhere+12+ff.u7i8o9.tmp"  # cannot tell: by age
    old_untagged = folder / f".{kept_sha}.z1x2c3.tmp"
    probe_left = store.images_dir / f".probe.{dead}.p0o9i8.tmp"  # a killed probe_space()
    for p in (killed_temp, live_temp, other_host, old_untagged, probe_left):
        p.write_bytes(b"half")
    _aged(old_untagged, STALE_TEMP_SECONDS + 60)

    stray_old, stray_new = png(2), png(3)  # files whose row never committed
    paths = {}
    for data, age in ((stray_old, 120), (stray_new, 0)):
        sha = hashlib.sha256(data).hexdigest()
        paths[age] = store.image_path(sha)
        paths[age].parent.mkdir(parents=True, exist_ok=True)
        paths[age].write_bytes(data)
        _aged(paths[age], age)
    unreferenced = store.put_image(png(4))  # a delete killed between its two transactions
    store._conn().execute("UPDATE images SET created_at = created_at - 120 WHERE sha256 = ?", (unreferenced,))
    fresh_unreferenced = store.put_image(png(5))  # may be about to get its job

    assert store.collect(min_age=30) == {"temp": 3, "orphans": 2}
    assert not killed_temp.exists() and not old_untagged.exists() and not probe_left.exists()
    assert live_temp.exists() and other_host.exists()
    assert not paths[120].exists() and paths[0].exists()
    assert store.image_info(unreferenced) is None and store.image_info(fresh_unreferenced) is not None
    assert store.read_image(kept_sha) == png(1)
    assert store.collect(min_age=30) == {"temp": 0, "orphans": 0}
    assert store.gc() == 2  # gc() takes the young orphans too; live temp files still stay
    assert live_temp.exists()


def test_sqlite_full_inside_a_transaction_is_rolled_back_and_typed(store):
    # SQLite may roll back by itself on SQLITE_FULL; transaction() must not then fail on its
    # own ROLLBACK, and the caller sees StoreFullError, not sqlite3's OperationalError.
    conn = store._conn()
    conn.execute("PRAGMA max_page_count = 1")
    with pytest.raises(StoreFullError), store.transaction() as c:
        c.execute("CREATE TABLE filler (x BLOB)")
        c.execute("INSERT INTO filler VALUES (zeroblob(100000))")
    assert not conn.in_transaction
    assert "filler" not in {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
