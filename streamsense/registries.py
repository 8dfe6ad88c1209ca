"""A schema registry the project starts itself, for the tests (and the demo where one is installed): Apicurio Registry
3 in memory, from the Maven Central bundle that `deploy/test-deps.sh` unpacks into `.cache/apicurio/VERSION`.

Its Confluent-compatible API is at `registry.url` (http://127.0.0.1:PORT/apis/ccompat/v7): what
STREAMSENSE_SCHEMA_REGISTRY_URL is set to. Schema ids there are Apicurio's content ids (its default; the same schema
text under two subjects gets one id, as in Confluent Schema Registry). Storage is in memory: a registry stopped and
started again has no schemas (`pause()` / `resume()` make it unreachable without losing them).

The 3.x bundles are compiled for Java 21: `registry_java()` finds one (STREAMSENSE_REGISTRY_JAVA, JAVA_HOME,
/usr/lib/jvm/*, `java` on PATH) and `apicurio_missing()` says why none can be started here, in one line.
"""

import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from streamsense.brokers import free_port, stop_process
from streamsense.settings import PROJECT_ROOT

APICURIO_VERSION = "3.3.3"
JAVA_MIN = 21
CCOMPAT = "/apis/ccompat/v7"


def apicurio_dir() -> Path:
    """Where the unpacked bundle lives: STREAMSENSE_APICURIO_HOME, else .cache/apicurio/VERSION in the checkout."""
    override = os.environ.get("STREAMSENSE_APICURIO_HOME")
    return Path(override) if override else PROJECT_ROOT / ".cache" / "apicurio" / APICURIO_VERSION


def java_version(java: str | Path) -> int | None:
    """The major version `java -version` reports, or None where it does not run."""
    try:
        done = subprocess.run([str(java), "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r'version "(\d+)(?:\.(\d+))?', done.stderr + done.stdout)
    if not found:
        return None
    major = int(found.group(1))
    return int(found.group(2) or 0) if major == 1 else major  # "1.8.0" is Java 8


def registry_java() -> Path | None:
    """A `java` of version JAVA_MIN or later: STREAMSENSE_REGISTRY_JAVA, $JAVA_HOME/bin/java, the newest under
    /usr/lib/jvm, then `java` on PATH."""
    candidates: list[Path] = []
    if os.environ.get("STREAMSENSE_REGISTRY_JAVA"):
        candidates.append(Path(os.environ["STREAMSENSE_REGISTRY_JAVA"]))
    if os.environ.get("JAVA_HOME"):
        candidates.append(Path(os.environ["JAVA_HOME"]) / "bin" / "java")
    jvm = Path("/usr/lib/jvm")
    if jvm.is_dir():
        candidates += sorted(jvm.glob("*/bin/java"), reverse=True)
    candidates.append(Path("java"))
    seen = set()
    for java in candidates:
        if java in seen:
            continue
        seen.add(java)
        version = java_version(java)
        if version is not None and version >= JAVA_MIN:
            return java
    return None


def apicurio_missing() -> str | None:
    """None when Apicurio Registry can be started here, else why not (one line)."""
    if not (apicurio_dir() / "quarkus-run.jar").is_file():
        return (f"Apicurio Registry {APICURIO_VERSION} is not in {apicurio_dir()} (bash deploy/test-deps.sh fetches "
                f"it): schema registry tests skipped")
    if registry_java() is None:
        return (f"no Java {JAVA_MIN}+ runtime (Apicurio Registry {APICURIO_VERSION} needs one; set "
                f"STREAMSENSE_REGISTRY_JAVA): schema registry tests skipped")
    return None


class ApicurioRegistry:
    """Apicurio Registry on 127.0.0.1:`port` (management on another free port), in memory, a small heap and
    database pool. `start()` waits until the Confluent-compatible API answers; `stop()` ends it (its schemas are
    gone); `pause()`/`resume()` (SIGSTOP/SIGCONT) make it unreachable and back with its schemas kept."""

    def __init__(self, port: int | None = None, log_path: Path | None = None, heap: str = "256m"):
        self.port = port or free_port()
        self.management_port = free_port()
        self.log_path = log_path
        self.heap = heap
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{CCOMPAT}"

    def command(self) -> list[str]:
        java = registry_java()
        if java is None:
            raise RuntimeError(apicurio_missing())
        props = {
            "quarkus.http.host": "127.0.0.1", "quarkus.http.port": self.port,
            "quarkus.management.host": "127.0.0.1", "quarkus.management.port": self.management_port,
            # a test registry serves a handful of requests: 2 connections, not the default 20 (up to 100)
            "apicurio.datasource.jdbc.initial-size": 2, "apicurio.datasource.jdbc.min-size": 2,
            "apicurio.datasource.jdbc.max-size": 8,
            "quarkus.log.level": "WARN", "quarkus.banner.enabled": "false",
        }
        return [str(java), f"-Xmx{self.heap}", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                *(f"-D{k}={v}" for k, v in props.items()), "-jar", "quarkus-run.jar"]

    def start(self, timeout: float = 120.0) -> "ApicurioRegistry":
        reason = apicurio_missing()
        if reason:
            raise RuntimeError(reason)
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(self.command(), cwd=apicurio_dir(), stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        self.wait_ready(timeout)
        return self

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/subjects", timeout=2) as response:
                return isinstance(json.loads(response.read()), list)
        except (OSError, ValueError):
            return False

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.answers():
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"Apicurio Registry exited with code {self.process.returncode} (see its log)")
            if time.monotonic() > deadline:
                raise TimeoutError(f"Apicurio Registry on {self.url} did not answer within {timeout}s")
            time.sleep(0.25)

    def pause(self) -> None:
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self, timeout: float = 20.0) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                os.kill(self.process.pid, signal.SIGCONT)  # a paused JVM cannot shut down
            except ProcessLookupError:
                pass
        stop_process(self.process, timeout)
        self.process = None

    def __enter__(self) -> "ApicurioRegistry":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@contextmanager
def registry_for(settings, wanted: bool = True, log=None):
    """The settings, with a schema registry where `wanted`: STREAMSENSE_SCHEMA_REGISTRY_URL's if set, else an
    Apicurio Registry started for the duration (stopped after), else (none installed) the settings unchanged."""
    if not wanted or settings.schema_registry_url or apicurio_missing():
        if wanted and log and not settings.schema_registry_url:
            log(f"no schema registry: {apicurio_missing()}")
        yield settings
        return
    with ApicurioRegistry() as registry:
        if log:
            log(f"schema registry (Apicurio Registry {APICURIO_VERSION}, in memory) on {registry.url}")
        yield settings.model_copy(update={"schema_registry_url": registry.url})
