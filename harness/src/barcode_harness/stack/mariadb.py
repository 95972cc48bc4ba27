"""MariaDB from Debian's ``mariadb-server``: its own datadir, port and socket under the state dir."""

from __future__ import annotations

import getpass
import shutil
from pathlib import Path

import pymysql

from barcode_harness.settings import HarnessSettings
from barcode_harness.stack.base import Component
from barcode_harness.stack.process import find_binary, run_tool
from barcode_pipeline.adapters.db import parse_db_url
from barcode_pipeline.errors import StackError


def render_my_cnf(settings: HarnessSettings, home: Path, run_as_root: bool) -> str:
    target = parse_db_url(settings.db.url)
    user_line = "user = root\n" if run_as_root else ""
    return f"""# Rendered by barcode-pipeline; edits are overwritten on the next `stack up`.
[mysqld]
{user_line}datadir = {home / "data"}
socket = {home / "mysqld.sock"}
pid-file = {home / "mysqld.pid"}
port = {target.port}
bind-address = {target.host}
log-error = {home / "logs" / "server.log"}
skip-name-resolve
character-set-server = utf8mb4
collation-server = utf8mb4_unicode_ci
max_connections = 500
innodb_buffer_pool_size = 512M
innodb_log_file_size = 256M
# Durable commits, as a production OLTP server runs: every COMMIT is on disk.
innodb_flush_log_at_trx_commit = 1
sync_binlog = 0
"""


class MariaDBComponent(Component):
    name = "mariadb"
    stdout_name = "stdout.log"  # the server writes its own log file
    start_timeout = 90.0
    client_hosts: tuple[str, ...] = ("127.0.0.1", "localhost")  # where the app user connects from

    @property
    def address(self) -> str:
        t = parse_db_url(self.settings.db.url)
        return f"{t.host}:{t.port}"

    @property
    def marker(self) -> str:
        return str(self.home / "my.cnf")

    def prepare(self) -> None:
        self.make_dirs()
        cnf = self.home / "my.cnf"
        text = render_my_cnf(self.settings, self.home, getpass.getuser() == "root")
        if self.secure is not None:
            from barcode_harness.stack.secure import mariadb_conf

            text += mariadb_conf(self.secure)
        cnf.write_text(text)
        if (self.home / "data" / "mysql").is_dir():
            return
        (self.home / "data").mkdir(parents=True, exist_ok=True)
        cmd = [
            find_binary("mariadb-install-db", "mariadb-server", self.name), f"--defaults-file={cnf}",
            "--auth-root-authentication-method=normal", "--skip-test-db", f"--datadir={self.home / 'data'}",
        ]  # fmt: skip
        try:
            run_tool(cmd, "mariadb-install-db failed", self.name)
        except StackError:
            shutil.rmtree(self.home / "data", ignore_errors=True)
            raise

    def argv(self) -> list[str]:
        return [find_binary("mariadbd", "mariadb-server", self.name), f"--defaults-file={self.marker}"]

    def _root(self) -> pymysql.connections.Connection:
        """root over the socket: on a secured stack with its generated password (stack/secure.py locks
        root once it has made the users), before that, and on a plain stack, without one."""
        password = self.secure.password("db", "root") if self.secure is not None else ""
        while True:
            try:
                socket = str(self.home / "mysqld.sock")
                return pymysql.connect(unix_socket=socket, user="root", password=password, connect_timeout=3)
            except pymysql.err.OperationalError as exc:
                if not password or not exc.args or exc.args[0] != 1045:  # not "access denied": a real failure
                    raise
                password = ""

    def after_start(self) -> None:
        """Create the application database and user from BP_DB_URL (idempotent)."""
        t = parse_db_url(self.settings.db.url)
        with self._root() as conn:
            if self.secure is not None:
                from barcode_harness.stack.secure import bootstrap_database

                bootstrap_database(self.settings, self.secure, conn)
                return
            with conn.cursor() as cur:
                cur.execute(f"CREATE DATABASE IF NOT EXISTS `{t.database}` CHARACTER SET utf8mb4")
                for host in self.client_hosts:
                    cur.execute(
                        f"CREATE USER IF NOT EXISTS %s@'{host}' IDENTIFIED BY %s", (t.user, t.password)
                    )
                    # A private server: the app user may create test/bench databases.
                    cur.execute(f"GRANT ALL PRIVILEGES ON *.* TO %s@'{host}'", (t.user,))
            conn.commit()

    def check(self) -> None:
        t = parse_db_url(self.settings.db.url)
        try:
            conn = pymysql.connect(
                host=t.host, port=t.port, user=t.user, password=t.password, connect_timeout=2, **t.ssl_args()
            )
        except pymysql.err.OperationalError as exc:
            # 1045: the user, 1130: its host not created yet (before after_start): ask root over the socket
            code = exc.args[0] if exc.args else None
            if code not in (1045, 1130):
                raise
            conn = self._root()
        with conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
            cur.fetchone()
