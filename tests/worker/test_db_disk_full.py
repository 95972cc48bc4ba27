"""A MariaDB whose disk is full, for real: its datadir on a small tmpfs, filled to the brim under load.

InnoDB then cannot extend the table's files and refuses the INSERT ("The table 'barcodes' is
full", or the OS's "No space left on device"). That is the server's state, not the rows' fault:
the worker must take it as an outage (retry with back-off, entries kept pending, nothing
dead-lettered) and store every scan exactly once after space is freed, without a restart.

Where the disk fills decides what the server does. With room for the failed statement's undo it
refuses and stays up; with less, MariaDB 10.11 aborts ("[FATAL] InnoDB: Error (Out of disk space)
in rollback") and has to be started again once there is space, as its service manager would. Both
happen in production, so both are tested; in either, no acknowledged scan may be lost or doubled.
"""

from __future__ import annotations

import getpass
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pymysql
import pytest
from prometheus_client import REGISTRY

from barcode_pipeline.db import migrate
from tests.stack_helpers import free_ports, wait_until
from tests.worker.conftest import Env

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


@dataclass
class ScratchServer:
    """A scratch mariadbd whose datadir is a small tmpfs."""

    url: str
    data: Path
    home: Path
    command: list[str]
    proc: subprocess.Popen[bytes] | None = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            try:
                pymysql.connect(unix_socket=str(self.home / "mysqld.sock"), user="root", password="").close()
                return
            except pymysql.err.OperationalError:
                assert self.alive(), self.log()[-2000:]
                assert time.monotonic() < deadline, "scratch mariadbd did not start"
                time.sleep(0.2)

    def log(self) -> str:
        return (self.home / "server.log").read_text(errors="replace")


@pytest.fixture
def mariadb_on_small_disk(tmp_path: Path) -> Iterator[ScratchServer]:
    """A scratch mariadbd on a 128 MiB tmpfs, migrated, with a user the worker connects as."""
    home, data = tmp_path / "mariadb", tmp_path / "mariadb" / "data"
    data.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES}", "tmpfs", str(data)], check=True)
    port = free_ports()
    cnf = home / "my.cnf"
    user = "user = root\n" if getpass.getuser() == "root" else ""
    cnf.write_text(MY_CNF.format(user=user, data=data, home=home, port=port))
    server = ScratchServer(
        f"mysql://bp:bp@127.0.0.1:{port}/barcode", data, home, [_binary("mariadbd"), f"--defaults-file={cnf}"]
    )
    try:
        subprocess.run(
            [_binary("mariadb-install-db"), f"--defaults-file={cnf}", "--skip-test-db",
             "--auth-root-authentication-method=normal", f"--datadir={data}"],
            check=True, capture_output=True,
        )  # fmt: skip
        server.start()
        root = pymysql.connect(
            unix_socket=str(home / "mysqld.sock"), user="root", password="", autocommit=True
        )
        with root.cursor() as cur:
            cur.execute("CREATE DATABASE barcode CHARACTER SET utf8mb4")
            cur.execute("CREATE USER 'bp'@'127.0.0.1' IDENTIFIED BY 'bp'")
            cur.execute("GRANT ALL PRIVILEGES ON *.* TO 'bp'@'127.0.0.1'")
        root.close()
        migrate.upgrade(server.url)
        yield server
    finally:
        if server.proc is not None:
            server.proc.kill()
            server.proc.wait(20)
        subprocess.run(["umount", str(data)], check=False)


def _failures() -> float:
    return REGISTRY.get_sample_value("bp_worker_db_failures_total") or 0.0


# Free bytes left beside the ballast, and what MariaDB 10.11 does when they run out (measured on
# this layout: 1-3 MiB abort, 4-8 MiB refuse and stay up).
MARGINS = {"server-refuses": (8 * 2**20, True), "server-aborts": (2 * 2**20, False)}


@pytest.mark.parametrize("case", list(MARGINS))
def test_workers_keep_entries_pending_while_the_disk_is_full_and_store_each_once_after(
    env: Env, mariadb_on_small_disk: ScratchServer, case: str
) -> None:
    server, (margin, stays_up) = mariadb_on_small_disk, MARGINS[case]
    url, data = server.url, server.data
    env.db.url = url  # the assertions read the scratch server
    settings = env.settings.updated({"db_url": url})
    free = shutil.disk_usage(data).free
    ballast = data / "ballast"
    ballast.write_bytes(b"\0" * (free - margin))  # a few thousand rows' worth left
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
        # An abort comes when the refused statements' rollback runs out of room: a moment after them.
        deadline = time.monotonic() + (0 if stays_up else 30)
        while server.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server.alive() == stays_up, (
            f"expected the server to {'stay up' if stays_up else 'abort'} with {margin >> 20} MiB left"
            f" (if a newer MariaDB no longer aborts, drop that case); log: {server.log()[-1500:]}"
        )
        if stays_up:
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
    if not server.alive():
        server.start()  # what its service manager does; crash recovery rolls the failed batch back
    deadline = time.monotonic() + 120
    while not (env.pending() == 0 and env.db.count() >= len(added)):
        log = server.log().splitlines()[-8:]
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
