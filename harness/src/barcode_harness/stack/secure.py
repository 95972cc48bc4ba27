"""``stack up --secure``: TLS everywhere and one least-privilege user per role. A CA, a certificate per
server and every password (a 0600 file, read through ``BP_*_FILE``) live under ``<state_dir>/secure/``;
Kafka takes SASL_SSL (SCRAM) and mutual TLS on its controller listener, Redis per-user ACLs, MariaDB
per-table grants. The state dir records its transport, so it is never started the other way."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import secrets
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from barcode_harness.settings import HarnessSettings
from barcode_harness.stack import profile as profiles
from barcode_pipeline import names
from barcode_pipeline.adapters.db import parse_db_url
from barcode_pipeline.db.queries import INSERT_COLUMNS
from barcode_pipeline.errors import ConfigError
from barcode_pipeline.logs import add_secret

MARKER = "transport"  # holds "tls" or "plaintext"
KAFKA_USERS = ("admin", "ingest", "processor")
REDIS_USERS = ("admin", "ingest", "processor", "worker", "exporter")
DB_USERS = ("admin", "ingest", "worker", "legacy")
DB_USER_PREFIX = "bp_"
SCRAM = "SCRAM-SHA-512"

_STREAMS = names.STREAM_PREFIX + "*"
# Least privilege per Redis user: what its code and its Lua scripts call (ACLs apply inside scripts
# too), on its own keys. EVALSHA runs a cached script; redis-py loads it with SCRIPT LOAD first.
_COMMON = "+ping +hello +auth +info +time +evalsha +script|load +script|exists +wait"
REDIS_ACL = {
    "admin": "~* &* +@all",
    # the backlog exporter (probes/backlog.py): reads the streams' lengths and groups, the DLQ's
    # length, the heartbeats' names and INFO; writes nothing
    "exporter": f"resetchannels ~{_STREAMS} ~{names.DLQ_STREAM} ~{names.HEARTBEAT_PREFIX}* -@all "
    "+ping +hello +auth +info +xlen +xrange +xrevrange +xinfo|groups +xinfo|consumers +xinfo|stream +scan",
    # the rate limits' counters (auth/ratelimit.py): its own field of a hash, expire, read; nothing else
    "ingest": f"resetchannels ~{names.RATE_LIMIT_PREFIX}* -@all +ping +hello +auth +hset +pexpire +hvals",
    "processor": f"resetchannels ~{_STREAMS} ~{names.DEDUP_PREFIX}* ~{names.PUBLISH_COUNTER_PREFIX}* "
    f"-@all {_COMMON} +xadd +set +get +incr +exists +hsetnx +expireat +scan +xinfo|groups +xinfo|stream",
    "worker": f"resetchannels ~{_STREAMS} ~{names.DLQ_STREAM} ~{names.HEARTBEAT_PREFIX}* "
    f"%R~{names.PUBLISH_COUNTER_PREFIX}* -@all {_COMMON} +xreadgroup +xack +xadd +xclaim +xautoclaim "
    "+xpending +xgroup|create +xgroup|createconsumer +xgroup|delconsumer +xinfo|consumers +xinfo|groups "
    "+xinfo|stream +xrange +xtrim +xlen +exists +set +get +pexpire +expire +multi +exec +discard "
    # DEL only on its heartbeat (a clean stop removes it): a selector, so the streams and the DLQ
    # cannot be deleted with this user's password
    f"(~{names.HEARTBEAT_PREFIX}* +del +unlink)",
}


def claim(state_dir: Path, secure: bool) -> None:
    """Record the transport of ``state_dir``; refuse to start it the other way."""
    how = "`stack reset` it first, or use another BP_STATE_DIR" if secure else (
        'its clients need its settings: eval "$(barcode-pipeline stack env)"')  # fmt: skip
    held, wanted = ("plaintext", "secured") if secure else ("secured", "plaintext")
    refusal = f"{{dir}} holds a {held} stack, not a {wanted} one: {how}"
    profiles.claim(state_dir, "tls" if secure else "plaintext", MARKER, refusal)


def wanted(settings: HarnessSettings, flag: bool = False) -> bool:
    """Secure when asked (``--secure``, ``BP_STACK_SECURE=1``) or when the state dir is secured."""
    return flag or settings.stack_secure or profiles.recorded(settings.state_dir, MARKER) == "tls"


def write_private(path: Path, data: bytes) -> None:
    """Create ``path`` readable by its owner only, from the first byte on."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(path, 0o600)


SERVERS = ("kafka", "redis", "mariadb")  # each has a key and a certificate of its own


@dataclass(frozen=True)
class SecureFiles:
    """The CA, the servers' certificates and the secrets of one secured state directory."""

    root: Path

    @classmethod
    def of(cls, settings: HarnessSettings) -> SecureFiles:
        return cls((settings.state_dir / "secure").resolve())

    @property
    def ca_cert(self) -> Path:
        return self.cert("ca")

    def cert(self, server: str) -> Path:
        return self.root / f"{server}.pem"

    def key(self, server: str) -> Path:
        return self.root / f"{server}.key"

    @property
    def kafka_keystore(self) -> Path:
        """Kafka's key and certificate in one PEM file, as its PEM keystore wants them."""
        return self.root / "kafka-keystore.pem"

    def secret(self, name: str) -> Path:
        return self.root / "secrets" / name

    def password(self, service: str, user: str) -> str:
        """The password of ``user`` on ``service``, made once (256 bits) and then kept."""
        path = self.secret(f"{service}-{user}.password")
        if not path.exists():
            write_private(path, secrets.token_urlsafe(32).encode())
        value = path.read_text().strip()
        add_secret(value)
        return value

    def ensure(self) -> None:
        """Make the CA, each server's certificate and every password unless they exist (idempotent)."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        for name in ("ca", *SERVERS):
            if not self.cert(name).exists():  # an older state dir gets them from its kept CA key
                _issue(self, name)
        for old in ("server.pem", "server.key"):  # the one certificate all servers shared before
            (self.root / old).unlink(missing_ok=True)
        for service, users in (("kafka", KAFKA_USERS), ("redis", REDIS_USERS), ("db", DB_USERS)):
            for user in users:
                self.password(service, user)


_SKEW = datetime.timedelta(minutes=5)  # certificates valid a little before "now": clocks differ


def _issue(files: SecureFiles, name: str) -> None:
    """The CA (``name`` "ca") or one server's key and certificate, signed by the kept CA key. All
    servers' certificates name 127.0.0.1 (one machine); what separation buys is that only Kafka's is a
    TLS client and a Kafka super user: a stolen Redis or MariaDB key cannot act as the broker."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    common_name = "barcode-pipeline local CA" if name == "ca" else f"{name}.barcode-pipeline"
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    extensions: list[tuple[x509.ExtensionType, bool]]
    if name == "ca":
        signer: Any = key
        issuer, days = subject, 825
        extensions = [
            (x509.BasicConstraints(ca=True, path_length=0), True),
            # A CA signs certificates and CRLs, nothing else.
            (x509.KeyUsage(False, False, False, False, False, True, True, False, False), True),
        ]
    else:
        signer = serialization.load_pem_private_key(files.key("ca").read_bytes(), password=None)
        issuer, days = x509.load_pem_x509_certificate(files.ca_cert.read_bytes()).subject, 397
        usage = [ExtendedKeyUsageOID.SERVER_AUTH]
        if name == "kafka":  # the broker side also presents it to its own controller listener
            usage.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        extensions = [
            (x509.SubjectAlternativeName(san), False),
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (x509.ExtendedKeyUsage(usage), False),
        ]
    builder = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - _SKEW).not_valid_after(now + datetime.timedelta(days=days))
    )  # fmt: skip
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    cert_pem = builder.sign(signer, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(  # unencrypted PKCS#8, as every server reads it (the file is 0600)
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_private(files.key(name), key_pem)  # the CA's is kept only to sign the servers' certificates
    if name == "kafka":
        write_private(files.kafka_keystore, key_pem + cert_pem)
    files.cert(name).write_bytes(cert_pem)


# --- client settings -------------------------------------------------------------------------------


def redis_url(settings: HarnessSettings, files: SecureFiles, user: str) -> str:
    parts = urlsplit(settings.redis.url)
    host, port, db = parts.hostname or "127.0.0.1", parts.port or 6379, parts.path.lstrip("/") or "0"
    password = files.password("redis", user)
    return f"rediss://{user}:{password}@{host}:{port}/{db}?ssl_ca_certs={files.ca_cert}"


def db_url(settings: HarnessSettings, files: SecureFiles, user: str) -> str:
    t = parse_db_url(settings.db.url)
    password = files.password("db", user)
    return f"mysql://{DB_USER_PREFIX}{user}:{password}@{t.host}:{t.port}/{t.database}?ssl_ca={files.ca_cert}"


def _role(user: str) -> str:
    """The prefix of a user's settings: none for the admin (``db_url``), else ``<user>_``."""
    return "" if user == "admin" else f"{user}_"


def client_values(settings: HarnessSettings) -> tuple[SecureFiles, dict[str, str], dict[str, str]]:
    """The state dir's files (made if missing) and the (plain, secret) settings the pipeline needs."""
    files = SecureFiles.of(settings)
    files.ensure()
    plain = {
        "stack_secure": "1",
        "kafka_bootstrap": settings.kafka.bootstrap,
        "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_mechanism": SCRAM,
        "kafka_ssl_ca_file": str(files.ca_cert),
    }
    plain |= {f"{_role(u)}kafka_sasl_username": u for u in KAFKA_USERS}
    secret = {f"{_role(u)}db_url": db_url(settings, files, u) for u in DB_USERS}
    secret |= {f"{_role(u)}redis_url": redis_url(settings, files, u) for u in REDIS_USERS}
    secret |= {f"{_role(u)}kafka_sasl_password": files.password("kafka", u) for u in KAFKA_USERS}
    return files, plain, secret


def secure_settings(settings: HarnessSettings) -> HarnessSettings:
    """``settings`` with this state dir's secured connections (admin) and every role's credentials."""
    files, plain, secret = client_values(settings)
    typed: dict[str, object] = {**plain, **secret, "stack_secure": True, "kafka_ssl_ca_file": files.ca_cert}
    return settings.updated(typed)


def stack_settings(settings: HarnessSettings) -> HarnessSettings:
    """What the harness's own runs (demo, tests) connect with: the secured stack's settings when the
    state dir is secured (or ``BP_STACK_SECURE`` is set), else ``settings`` unchanged."""
    return secure_settings(settings) if wanted(settings) else settings


def env_lines(settings: HarnessSettings, *, show_secrets: bool = False) -> str:
    """Shell lines for ``eval``: secrets as ``BP_*_FILE`` paths (the files are written here), or inline."""
    files, plain, secret = client_values(settings)
    lines = [f"unset {' '.join(f'BP_{n.upper()}' for n in secret)}"]
    lines += [f"export BP_{k.upper()}={shlex.quote(v)}" for k, v in plain.items()]
    for name, value in secret.items():
        if show_secrets:
            lines.append(f"export BP_{name.upper()}={shlex.quote(value)}")
            continue
        path = files.secret(name.replace("_", "-"))
        if not path.exists() or path.read_text() != value:
            write_private(path, value.encode())
        lines.append(f"export BP_{name.upper()}_FILE={shlex.quote(str(path))}")
    lines.append(f"export BP_STATE_DIR={shlex.quote(str(settings.state_dir.resolve()))}")
    return "\n".join(lines)


def require_client_settings(settings: HarnessSettings) -> None:
    """``run`` on a secured stack with plaintext settings would only fail to connect: say why now."""
    if settings.kafka.security_protocol == "PLAINTEXT":
        raise ConfigError(
            f"the stack in {settings.state_dir.resolve()} is secured (TLS, per-role users): load its "
            'settings first: eval "$(barcode-pipeline stack env)"'
        )


# --- server configuration -------------------------------------------------------------------------


CERT_PRINCIPAL = "CN=kafka.barcode-pipeline"  # Kafka's certificate: the broker calling its controller


def kafka_acls(settings: HarnessSettings) -> list[object]:
    """What the ingest and processor users may do: ingest writes the topic (and sees the dead-letter
    topic); the processor reads the topic in its group and writes the dead-letter topic. Topics are
    created by the admin (``run``'s start-up); anything else is denied."""
    from confluent_kafka.admin._acl import AclBinding, AclOperation, AclPermissionType
    from confluent_kafka.admin._resource import ResourcePatternType, ResourceType

    read, write, describe = AclOperation.READ, AclOperation.WRITE, AclOperation.DESCRIBE
    topic, group = ResourceType.TOPIC, ResourceType.GROUP
    rules = [
        ("ingest", topic, names.TOPIC, (write, describe)),
        ("ingest", topic, names.DLT_TOPIC, (describe,)),  # its readiness probe looks
        ("processor", topic, names.TOPIC, (read, describe)),
        ("processor", group, settings.processor.group, (read, describe)),
        ("processor", topic, names.DLT_TOPIC, (write, describe)),
    ]
    allow, literal = AclPermissionType.ALLOW, ResourcePatternType.LITERAL
    return [AclBinding(kind, name, literal, f"User:{user}", "*", op, allow)
            for user, kind, name, ops in rules for op in ops]  # fmt: skip


def java_argfile(path: Path, args: list[str]) -> str:
    """Write ``args`` quoted (backslashes and quotes escaped) to a 0600 java argument file (JDK 9+) and
    return the ``@path`` argument; a line break would end an argument even inside quotes: refused."""
    if any("\n" in a or "\r" in a for a in args):
        raise ValueError("a java argument file cannot carry a line break")
    quoted = ('"' + a.replace("\\", "\\\\").replace('"', '\\"') + '"' for a in args)
    write_private(path, ("\n".join(quoted) + "\n").encode())
    return f"@{path}"


def redis_conf(home: Path, port: int, files: SecureFiles) -> str:
    """Lines appended to redis.conf (later lines win): TLS only, and the ACL file."""
    acl = home / "users.acl"
    lines = ["user default off"]
    for user in REDIS_USERS:
        digest = hashlib.sha256(files.password("redis", user).encode()).hexdigest()
        lines.append(f"user {user} on #{digest} {REDIS_ACL[user]}")
    write_private(acl, ("\n".join(lines) + "\n").encode())
    return f"""
# --- secured (stack up --secure) ---
port 0
tls-port {port}
tls-cert-file {files.cert("redis")}
tls-key-file {files.key("redis")}
tls-ca-cert-file {files.ca_cert}
tls-auth-clients optional
aclfile {acl}
"""


def mariadb_conf(files: SecureFiles) -> str:
    """Lines appended to my.cnf's [mysqld]: TLS, and nothing but TLS over TCP."""
    return f"""
# --- secured (stack up --secure) ---
ssl_ca = {files.ca_cert}
ssl_cert = {files.cert("mariadb")}
ssl_key = {files.key("mariadb")}
require_secure_transport = ON
"""


# Grants per database user: the workers and the legacy baseline write their table and read the center
# mapping. Their INSERT ... ON DUPLICATE KEY UPDATE (a duplicate is a no-op, any other error still
# fails) needs, on MariaDB, UPDATE on every inserted column: column grants, never DELETE or DROP.
_UPDATE = f"UPDATE ({', '.join(INSERT_COLUMNS)})"
DB_GRANTS = {
    "worker": [
        f"SELECT, INSERT, {_UPDATE} ON `{{db}}`.barcodes",
        "SELECT, INSERT, UPDATE (barcode) ON `{db}`.barcode_first_scans",  # policy "barcode"
        "SELECT ON `{db}`.device_center_mapping",
    ],
    "legacy": [
        f"SELECT, INSERT, {_UPDATE} ON `{{db}}`.legacy_barcodes",
        "SELECT ON `{db}`.device_center_mapping",
    ],
    "ingest": ["SELECT ON `{db}`.scanner_keys"],
}


def bootstrap_database(settings: HarnessSettings, files: SecureFiles, root: Any) -> None:
    """Users (TLS required), the schema (migrated as the admin) and each role's table grants."""
    from barcode_pipeline.db.migrate import upgrade

    database = parse_db_url(settings.db.url).database
    with root.cursor() as cur:
        cur.execute(f"CREATE DATABASE IF NOT EXISTS `{database}` CHARACTER SET utf8mb4")
        for user in DB_USERS:
            name = DB_USER_PREFIX + user
            cur.execute(
                "CREATE USER IF NOT EXISTS %s@'127.0.0.1' IDENTIFIED BY %s REQUIRE SSL",
                (name, files.password("db", user)),
            )
        # The admin runs migrations and the ops tools, and may make the test suite's own databases.
        cur.execute(f"GRANT ALL PRIVILEGES ON *.* TO {DB_USER_PREFIX}admin@'127.0.0.1'")
    root.commit()
    upgrade(db_url(settings, files, "admin"))
    with root.cursor() as cur:
        for user, grants in DB_GRANTS.items():
            for grant in grants:
                cur.execute(f"GRANT {grant.format(db=database)} TO {DB_USER_PREFIX}{user}@'127.0.0.1'")
        # mariadb-install-db leaves root without a password on localhost, 127.0.0.1, ::1 and the host
        # name: only root@localhost (the socket the harness uses) is kept, with a generated password.
        cur.execute("SELECT Host FROM mysql.user WHERE User = 'root' AND Host <> 'localhost'")
        for (host,) in cur.fetchall():
            cur.execute("DROP USER 'root'@%s", (host,))
        cur.execute("ALTER USER 'root'@'localhost' IDENTIFIED BY %s", (files.password("db", "root"),))
    root.commit()
