"""A MariaDB whose disk is full, for real: its datadir on a small tmpfs, filled to the brim under load.

InnoDB then cannot extend the table's files and refuses the INSERT ("The table 'barcodes' is
full", or the OS's "No space left on device"). That is the server's state, not the rows' fault:
the worker must take it as an outage (retry with back-off, entries kept pending, nothing
dead-lettered) and store every scan exactly once after space is freed, without a restart.
"""

from __future__ import annotations

import getpass
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest
from prometheus_client import REGISTRY

from barcode_pipeline.db import migrate
from tests.stack_helpers import free_ports
from tests.worker.conftest import Env, wait_until

pytestmark = pytest.mark.integration

TMPFS_BYTES = 128 * 2**20
# Small enough for the tmpfs: the stack's server has a 256 MiB redo log and a 512 MiB buffer pool.
MY_CNF = """[mysqld]
{user}datadir = {data}
socket = {home}/mysqld.sock
pid-file = {home}/mysqld.pid
port = {port}
bind-address = 127.0.0.1
log-error = {home}/server.log
skip-name-resolve
skip-log-bin
character-set-server = utf8mb4
innodb_buffer_pool_size = 32M
innodb_log_file_size = 8M
innodb_data_file_path = ibdata1:4M:autoextend
innodb_temp_data_file_path = ibtmp1:4M:autoextend
# the system tablespace (undo logs) grows by this much at a time (default 64M, half the tmpfs)
innodb_autoextend_increment = 8
innodb_flush_log_at_trx_commit = 1
"""


def _binary(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    assert found, f"{name} not found: run scripts/setup.sh"
    return found


@pytest.fixture
def mariadb_on_small_disk(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A scratch mariadbd whose datadir is a 128 MiB tmpfs; yields (its URL, the datadir)."""
    home, data = tmp_path / "mariadb", tmp_path / "mariadb" / "data"
    data.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES}", "tmpfs", str(data)], check=True)
    port = free_ports()
    cnf = home / "my.cnf"
    user = "user = root\n" if getpass.getuser() == "root" else ""
    cnf.write_text(MY_CNF.format(user=user, data=data, home=home, port=port))
    proc: subprocess.Popen[bytes] | None = None
    try:
        subprocess.run(
            [_binary("mariadb-install-db"), f"--defaults-file={cnf}", "--skip-test-db",
             "--auth-root-authentication-method=normal", f"--datadir={data}"],
            check=True, capture_output=True,
        )  # fmt: skip
        server = [_binary("mariadbd"), f"--defaults-file={cnf}"]
        proc = subprocess.Popen(server, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            try:
                pymysql.connect(unix_socket=str(home / "mysqld.sock"), user="root", password="").close()
                break
            except pymysql.err.OperationalError:
                assert proc.poll() is None, (home / "server.log").read_text()[-2000:]
                assert time.monotonic() < deadline, "scratch mariadbd did not start"
                time.sleep(0.2)
        socket = str(home / "mysqld.sock")
        root = pymysql.connect(unix_socket=socket, user="root", password="", autocommit=True)
        with root.cursor() as cur:
            cur.execute("CREATE DATABASE barcode CHARACTER SET utf8mb4")
            cur.execute("CREATE USER 'bp'@'127.0.0.1' IDENTIFIED BY 'bp'")
            cur.execute("GRANT ALL PRIVILEGES ON *.* TO 'bp'@'127.0.0.1'")
        root.close()
        url = f"mysql://bp:bp@127.0.0.1:{port}/barcode"
        migrate.upgrade(url)
        yield url, data
    finally:
        if proc is not None:
            proc.kill()
            proc.wait(20)
        subprocess.run(["umount", str(data)], check=False)


def _failures() -> float:
    return REGISTRY.get_sample_value("bp_worker_db_failures_total") or 0.0


def test_workers_keep_entries_pending_while_the_disk_is_full_and_store_each_once_after(
    env: Env, mariadb_on_small_disk: tuple[str, Path]
) -> None:
    url, data = mariadb_on_small_disk
    env.db.url = url  # the assertions read the scratch server
    settings = env.settings.model_copy(update={"db_url": url})
    free = shutil.disk_usage(data).free
    ballast = data / "ballast"
    ballast.write_bytes(b"\0" * (free - 3 * 2**20))  # leave 3 MiB: a few thousand rows' worth
    added: list[str] = []
    feeding = threading.Event()
    feeding.set()

    def feed() -> None:  # the load: scans keep arriving throughout
        while feeding.is_set():
            scans = env.many(500)
            env.add(scans)
            added.extend(s.scan_id for s in scans)
            time.sleep(0.05)

    feeder = threading.Thread(target=feed, daemon=True)
    failures_before = _failures()
    env.start("full-1", settings)
    feeder.start()
    try:
        wait_until(lambda: _failures() > failures_before + 2, 90, "the worker to meet the full disk")
        stalled_at = env.db.count()
        time.sleep(2)
        assert env.db.count() == stalled_at, "rows kept arriving on a full disk"
        assert env.pending() > 0, "the batch the disk refused must stay pending"
        assert env.dlq() == [], "a full disk is an outage, never a reason to dead-letter a scan"
        assert env.threads[-1][1].is_alive(), "the worker must wait, not exit"
    finally:
        feeding.clear()
        feeder.join(10)
    ballast.unlink()  # space again: the same worker, not restarted, goes on
    deadline = time.monotonic() + 120
    while not (env.pending() == 0 and env.db.count() >= len(added)):
        log = (data.parent / "server.log").read_text(errors="replace").splitlines()[-8:]
        files = sorted(((p.stat().st_size, p.name) for p in data.rglob("*") if p.is_file()), reverse=True)
        assert time.monotonic() < deadline, (
            f"not every scan stored after the disk was freed: {env.db.count()} of {len(added)}, "
            f"{env.pending()} pending, {shutil.disk_usage(data).free} B free; server log: {log}; "
            f"largest files: {files[:6]}"
        )
        time.sleep(0.5)
    assert env.db.count() == len(added) == len(set(added))
    assert int(env.db.query("SELECT COUNT(DISTINCT scan_id) FROM barcodes")[0][0]) == len(added)
    assert env.dlq() == []
