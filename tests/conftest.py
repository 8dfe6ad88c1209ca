import os
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from streamsense.brokers import apache_kafka_missing, free_port
from streamsense.localstack import new_local_broker

PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
# Small samples of the labelled datasets, committed (tests/fixtures/datasets/README.md: sources and licences). Every
# test, and every process a test starts, reads these rather than whatever datasets folder a machine has.
FIXTURE_DATASETS = Path(__file__).resolve().parent / "fixtures" / "datasets"
os.environ["STREAMSENSE_DATASETS_DIR"] = str(FIXTURE_DATASETS)


def postgres_reason() -> str | None:
    """None when the PostgreSQL server answers, else why not."""
    try:
        engine = create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
        return None
    except Exception as exc:  # any failure means: no usable server here
        return f"PostgreSQL at 127.0.0.1:5432 not answering ({type(exc).__name__}): Postgres variant skipped"


BROKERS = ["tansu", "kafka"]


def new_broker(kind: str, port: int, directory: Path):
    """A broker of `kind`, not started, logging (and for Apache Kafka keeping its data) in `directory`."""
    return new_local_broker(kind, directory / f"{kind}.log", port=port, data_dir=directory / "kafka-data", heap="512m")


@pytest.fixture(scope="session", params=BROKERS)
def broker_kind(request) -> str:
    """Each test that talks to a broker runs once per broker: the embedded Tansu and Apache Kafka (KRaft)."""
    if request.param == "kafka":
        reason = apache_kafka_missing()
        if reason:
            pytest.skip(reason)
    return request.param


@pytest.fixture(scope="session")
def broker(broker_kind, tmp_path_factory):
    """One broker of each kind per test session; tests use their own topic names and group ids."""
    directory = tmp_path_factory.mktemp(f"broker-{broker_kind}")
    b = new_broker(broker_kind, free_port(), directory)
    with b:
        yield b


@pytest.fixture
def make_broker(broker_kind, tmp_path):
    """For tests that own their broker (to pause, restart or start it late): `make_broker(port)`, not started."""
    def make(port: int | None = None):
        return new_broker(broker_kind, port or free_port(), tmp_path)
    return make


@pytest.fixture(scope="session")
def schema_registry(tmp_path_factory):
    """Apicurio Registry (in memory) for the test session, its Confluent-compatible API at `.url`; skipped with the
    reason where Java 21+ or the bundle is absent (deploy/test-deps.sh fetches it). Tests use subjects of their own."""
    from streamsense.registries import ApicurioRegistry, apicurio_missing

    reason = apicurio_missing()
    if reason:
        pytest.skip(reason)
    with ApicurioRegistry(log_path=tmp_path_factory.mktemp("registry") / "apicurio.log") as registry:
        yield registry


@pytest.fixture
def unique():
    return uuid.uuid4().hex[:10]


def _pg_schema_url(schema: str) -> str:
    return f"{PG_ADMIN_URL}?options=-csearch_path%3D{schema}"


@pytest.fixture
def postgres_url(unique):
    """A new empty schema in the local PostgreSQL server (skipped, with the reason, where none answers)."""
    reason = postgres_reason()
    if reason:
        pytest.skip(reason)
    with new_pg_schema(f"t_{unique}") as url:
        yield url


@contextmanager
def new_pg_schema(schema: str):
    """A new empty schema in the local PostgreSQL server, its URL yielded, dropped afterwards."""
    admin = create_engine(PG_ADMIN_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield _pg_schema_url(schema)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """A fresh empty database: a SQLite file, or a new PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'streamsense.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def classifier():
    """The shipped model, as the worker loads it."""
    from streamsense.settings import Settings
    from streamsense.streams.worker import load_classifier

    return load_classifier(Settings(device="cpu"))


# What makes a test an integration test: real brokers, worker processes, PostgreSQL, the shipped model, training or
# export runs, a browser. `make test-fast` (pytest -m "not integration") runs the rest: the unit tests, in under a
# minute; `make test` runs everything.
INTEGRATION_FIXTURES = {"broker", "broker_kind", "make_broker", "postgres_url", "classifier", "exported",
                        "trained_tiny", "browser", "driver", "schema_registry"}
INTEGRATION_MODULES = {"test_e2e", "test_faults", "test_demo", "test_bench", "test_reload", "test_train",
                       "test_export", "test_hostile", "test_namespace", "test_dashboard"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        uses_postgres = getattr(item, "callspec", None) and item.callspec.params.get("database_url") == "postgresql"
        if (INTEGRATION_FIXTURES & set(item.fixturenames) or uses_postgres
                or item.module.__name__.rsplit(".", 1)[-1] in INTEGRATION_MODULES):
            item.add_marker(pytest.mark.integration)
