"""Apache Kafka 4.x in KRaft mode (one combined broker+controller), run from Maven Central jars, which
are resolved once into a per-version cache outside the state directory (no Debian or PyPI package)."""

from __future__ import annotations

import base64
import contextlib
import shutil
import socket
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from barcode_harness.settings import HarnessSettings
from barcode_harness.stack import secure
from barcode_harness.stack.base import Component
from barcode_harness.stack.process import find_binary, run_tool
from barcode_pipeline.adapters.kafka import connection_config
from barcode_pipeline.errors import StackError

HEALTH_TOPIC = "barcode-stack-health"
SLF4J_VERSION = "2.0.17"
LOG4J_VERSION = "2.24.3"


def split_hostport(address: str, default_port: int) -> tuple[str, int]:
    first = address.split(",")[0].strip()
    host, sep, port = first.rpartition(":")
    if not sep:
        return (first or "127.0.0.1", default_port)
    return (host or "127.0.0.1", int(port))


def render_pom(kafka_version: str) -> str:
    """A throw-away POM whose runtime dependencies are exactly the broker's classpath."""
    deps = [
        ("org.apache.kafka", "kafka_2.13", kafka_version),
        ("org.apache.logging.log4j", "log4j-core", LOG4J_VERSION),
        ("org.apache.logging.log4j", "log4j-slf4j2-impl", LOG4J_VERSION),
        ("org.slf4j", "slf4j-api", SLF4J_VERSION),  # the log4j2 binding needs slf4j 2.x
    ]
    xml = "<dependency><groupId>{}</groupId><artifactId>{}</artifactId><version>{}</version></dependency>"
    dep_xml = "\n".join("    " + xml.format(*dep) for dep in deps)
    return f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.barcode-pipeline</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>{kafka_version}</version>
  <packaging>pom</packaging>
  <dependencies>
{dep_xml}
  </dependencies>
</project>
"""


def kafka_uuid() -> str:
    """A Kafka Uuid (base64 of 16 random bytes); never one starting with '-', which CLIs misread."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def override(properties: str, changes: dict[str, object]) -> str:
    """``properties`` with each key of ``changes`` set to its value (None removes it), new keys appended."""
    todo = dict(changes)
    lines = []
    for line in properties.splitlines():
        key = line.split("=", 1)[0]
        if key not in todo or line.startswith("#"):
            lines.append(line)
        elif (value := todo.pop(key)) is not None:
            lines.append(f"{key}={value}")
    lines += [f"{key}={value}" for key, value in todo.items() if value is not None]
    return "\n".join(lines) + "\n"


def render_server_properties(settings: HarnessSettings, data_dir: Path) -> str:
    host, port = split_hostport(settings.kafka.bootstrap, 9092)
    return broker_properties(host, port, settings.kafka_controller_port, data_dir)


def broker_properties(host: str, port: int, cport: int, data_dir: Path) -> str:
    """A single combined broker+controller's server.properties."""
    return f"""# Rendered by barcode-pipeline; edits are overwritten on the next `stack up`.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@{host}:{cport}
listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{cport}
advertised.listeners=PLAINTEXT://{host}:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={data_dir}
# Topics are created explicitly by the pipeline, with the partition count it wants.
auto.create.topics.enable=false
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# A broker restarted after a crash re-registers once its old session expires: 3 s, not the default 9 s.
broker.session.timeout.ms=3000
broker.heartbeat.interval.ms=1000
log.retention.hours=168
num.network.threads=2
num.io.threads=4
"""


def secured_server_properties(settings: HarnessSettings, data_dir: Path, files: secure.SecureFiles) -> str:
    """server.properties of a SASL_SSL broker whose controller listener takes only mutual TLS."""
    host, port = split_hostport(settings.kafka.bootstrap, 9092)
    listeners: dict[str, object] = {
        "listeners": f"SASL_SSL://{host}:{port},CONTROLLER://{host}:{settings.kafka_controller_port}",
        "advertised.listeners": f"SASL_SSL://{host}:{port}",
        "inter.broker.listener.name": "SASL_SSL",
        "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:SSL",
    }
    admin = files.password("kafka", "admin")
    secured = f"""\
# --- secured (stack up --secure) ---
sasl.enabled.mechanisms={secure.SCRAM}
sasl.mechanism.inter.broker.protocol={secure.SCRAM}
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="{admin}";
ssl.keystore.type=PEM
ssl.keystore.location={files.kafka_keystore}
ssl.truststore.type=PEM
ssl.truststore.location={files.ca_cert}
ssl.endpoint.identification.algorithm=https
listener.name.controller.ssl.client.auth=required
# Per-user ACLs (kafka_acls): the broker itself (SCRAM admin between listeners, its certificate to
# the controller) and the tools are super users; ingest and the processor get what they use.
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:admin;User:{secure.CERT_PRINCIPAL}
allow.everyone.if.no.acl.found=false
"""  # noqa: E501
    return override(render_server_properties(settings, data_dir), listeners) + secured


def render_log4j2(log_dir: Path) -> str:
    return f"""status = warn
appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = {log_dir}/server.log
appender.file.filePattern = {log_dir}/server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 50MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
"""


class KafkaComponent(Component):
    name = "kafka"
    stdout_name = "stdout.log"  # the server writes its own log file
    start_timeout = 90.0
    node_id = 1
    health_replication = 1  # replication factor of the health topic (the ha profile uses 3)
    jvm_flags: tuple[str, ...] = ()

    def __init__(self, settings: HarnessSettings) -> None:
        super().__init__(settings)
        self.jar_dir = (settings.cache_dir / f"kafka-{settings.kafka_version}" / "libs").resolve()
        self.data_dir = self.home / "data"
        self.heap = settings.kafka_heap

    @property
    def address(self) -> str:
        return ":".join(map(str, split_hostport(self.settings.kafka.bootstrap, 9092)))

    @property
    def bootstrap(self) -> str:
        """Where clients connect (every broker of a cluster; this one broker here)."""
        return self.address

    @property
    def marker(self) -> str:
        return str(self.home / "server.properties")

    def ensure_jars(self) -> None:
        """Resolve the broker's jars with Maven once; later calls reuse the cache."""
        if (self.jar_dir / ".complete").exists():
            return
        mvn = find_binary("mvn", "maven", "kafka")
        build = self.jar_dir.parent / "build"
        shutil.rmtree(build, ignore_errors=True)
        build.mkdir(parents=True)
        (build / "pom.xml").write_text(render_pom(self.settings.kafka_version))
        staging = build / "libs"
        cmd = [
            mvn, "-q", "-B", "-f", str(build / "pom.xml"), "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}", "-DincludeScope=runtime",
        ]  # fmt: skip
        run_tool(cmd, "Maven could not fetch the Kafka jars", self.name)
        shutil.rmtree(self.jar_dir, ignore_errors=True)
        staging.rename(self.jar_dir)
        (self.jar_dir / ".complete").write_text(self.settings.kafka_version)
        shutil.rmtree(build, ignore_errors=True)

    def _java(self) -> str:
        return find_binary("java", "openjdk-17-jre-headless", self.name)

    def properties(self) -> str:
        """The text of server.properties."""
        if self.secure is None:
            return render_server_properties(self.settings, self.data_dir)
        return secured_server_properties(self.settings, self.data_dir, self.secure)

    def format_args(self) -> list[str]:
        """``kafka-storage format`` arguments: the cluster id (kept, so a wiped data dir rejoins it) and
        a secured broker's SCRAM users. "--cluster-id=ID", not "-t ID": an id may start with "-"."""
        cluster_file = self.home / "cluster.id"
        if not cluster_file.exists():
            cluster_file.write_text(kafka_uuid())
        args = [f"--cluster-id={cluster_file.read_text().strip()}"]
        if self.secure is not None:  # the SCRAM users (prepare passes them in a private argument file)
            for user in secure.KAFKA_USERS:
                password = self.secure.password("kafka", user)
                args += ["--add-scram", f"{secure.SCRAM}=[name={user},password={password}]"]
        return args

    def prepare(self) -> None:
        java = self._java()
        self.ensure_jars()
        self.make_dirs()
        props = self.home / "server.properties"
        secure.write_private(props, self.properties().encode())  # a secured one holds a SCRAM password
        (self.home / "log4j2.properties").write_text(render_log4j2(self.home / "logs"))
        if (self.data_dir / "meta.properties").exists():
            return
        tool = ["kafka.tools.StorageTool", "format", *self.format_args(),
                "-c", str(props), "--ignore-formatted"]  # fmt: skip
        argfile = self.home / "format.args"  # passwords go in a private file, not in ps's argv
        try:
            cmd = [java, "-cp", f"{self.jar_dir}/*", secure.java_argfile(argfile, tool)]
            run_tool(cmd, "storage format failed", self.name)
        finally:
            argfile.unlink(missing_ok=True)

    def argv(self) -> list[str]:
        return [
            self._java(), f"-Xms{self.heap}", f"-Xmx{self.heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            *self.jvm_flags, "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
            "-cp", f"{self.jar_dir}/*", "kafka.Kafka", str(self.home / "server.properties"),
        ]  # fmt: skip

    def after_start(self) -> None:
        """A secured broker: the per-user ACLs (idempotent; an existing binding is left as it is)."""
        if self.secure is None:
            return
        admin = AdminClient({**connection_config(self.settings), "log_level": 0})
        for future in admin.create_acls(secure.kafka_acls(self.settings), request_timeout=15).values():  # type: ignore[arg-type]
            future.result(20)

    def check(self) -> None:
        """Listening and registered, then a real produce/consume round trip on a small health topic."""
        with socket.create_connection(split_hostport(self.address, 9092), timeout=2):
            pass  # fail fast (and quietly) while the broker is not listening yet
        quiet = {**connection_config(self.settings), "log_level": 0, "bootstrap.servers": self.bootstrap}
        admin = AdminClient(quiet)
        metadata = admin.list_topics(timeout=3)
        if self.node_id not in metadata.brokers:
            raise StackError("not registered with the cluster yet", component=self.name)
        if HEALTH_TOPIC not in metadata.topics:
            with contextlib.suppress(KafkaException):
                topic = NewTopic(HEALTH_TOPIC, 1, self.health_replication)
                admin.create_topics([topic])[HEALTH_TOPIC].result(10)
        producer = Producer({**quiet, "acks": "all", "message.timeout.ms": 5000})
        token = uuid.uuid4().hex.encode()
        delivered: list[tuple[int, int]] = []

        def on_delivery(err: object, msg: object) -> None:
            if err is None:
                delivered.append((msg.partition(), msg.offset()))  # type: ignore[attr-defined]

        producer.produce(HEALTH_TOPIC, token, on_delivery=on_delivery)
        producer.flush(6)
        if not delivered:
            raise StackError("produce not acknowledged", component=self.name)
        partition, offset = delivered[0]
        consumer = Consumer({**quiet, "group.id": "barcode-stack-health", "enable.auto.commit": False})
        try:
            consumer.assign([TopicPartition(HEALTH_TOPIC, partition, offset)])
            deadline = time.monotonic() + 6
            while time.monotonic() < deadline:  # an error event (a leader not ready yet) is not the answer
                if any(not m.error() and m.value() == token for m in consumer.consume(1, timeout=0.5)):
                    return
        finally:
            consumer.close()
        raise StackError("consumed nothing back from the health topic", component=self.name)
