"""Expected failures of every `streamsense` command end in one or two lines on stderr (what failed, what to do), a
non-zero exit code (2: usage or configuration, 1: runtime; streamsense/errors.py), no traceback, no password; and
read-only commands never create a database file. `--debug` / STREAMSENSE_DEBUG=1 brings the traceback back."""

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner

from streamsense import errors
from streamsense.brokers import free_port
from streamsense.cli import app
from streamsense.models.registry import CARD, FORMAT
from tests.conftest import postgres_reason

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SECRET = "hunter2-not-for-logs"
BAD_ALERT_RULES = '[[rules]]\nname = "x"\nkind = "nope"\n'


@dataclass
class Case:
    id: str
    args: list[str]
    phrase: str  # what the message must say
    code: int  # 2: usage or configuration, 1: runtime
    env: dict = field(default_factory=dict)  # {tmp} and {port} are filled in
    stdin: str | None = None
    read_only: bool = False  # the command must leave the (empty) working folder as it was
    files: dict = field(default_factory=dict)  # written into the working folder first


def closed_port() -> int:
    return free_port()  # nothing listens there


CASES = [
    # read-only commands on a SQLite file that is not there: one line, and no file
    Case("query-no-sqlite-file", ["query", "totals"], "no database at", 2,
         {"STREAMSENSE_DATABASE_URL": "sqlite:///{tmp}/missing.db"}, read_only=True),
    Case("query-relative-path", ["query", "top-risky-tickets", "--json"], "streamsense db upgrade", 2,
         {"STREAMSENSE_DATABASE_URL": "sqlite:///typo.db"}, read_only=True),
    Case("query-missing-folder", ["query", "totals"], "no database at", 2,
         {"STREAMSENSE_DATABASE_URL": "sqlite:///{tmp}/no/such/folder/x.db"}, read_only=True),
    Case("alerts-list-no-sqlite-file", ["alerts", "list"], "no database at", 2,
         {"STREAMSENSE_DATABASE_URL": "sqlite:///{tmp}/missing.db"}, read_only=True),
    Case("dashboard-no-sqlite-file", ["dashboard", "--port", "{port}"], "no database at", 2,
         {"STREAMSENSE_DATABASE_URL": "sqlite:///{tmp}/missing.db"}, read_only=True),
    Case("query-unknown-report", ["query", "nope"], "unknown report", 2,
         {"STREAMSENSE_DATABASE_URL": "sqlite:///{tmp}/missing.db"}, read_only=True),
    # a database without the schema
    Case("query-no-schema", ["query", "totals"], "streamsense db upgrade", 1,
         {"STREAMSENSE_DATABASE_URL": "sqlite:///{tmp}/empty.db"}, files={"empty.db": ""}),
    Case("alerts-list-no-schema", ["alerts", "list"], "no StreamSense tables", 1,
         {"STREAMSENSE_DATABASE_URL": "sqlite:///{tmp}/empty.db"}, files={"empty.db": ""}),
    Case("query-not-sqlite", ["query", "totals"], "is not a SQLite database", 2,
         {"STREAMSENSE_DATABASE_URL": "sqlite:///{tmp}/notes.db"}, files={"notes.db": "not a database " * 100}),
    # writers on a SQLite path whose folder does not exist
    Case("db-upgrade-missing-folder", ["db", "upgrade"], "does not exist", 2,
         {"STREAMSENSE_DATABASE_URL": "sqlite:///{tmp}/no/such/folder/x.db"}, read_only=True),
    # PostgreSQL on a closed port (no server needed), password in the URL
    Case("query-postgres-closed-port", ["query", "totals"], "cannot reach the database", 1,
         {"STREAMSENSE_DATABASE_URL": f"postgresql+psycopg://streamsense:{SECRET}@127.0.0.1:{{port}}/test"}),
    Case("db-upgrade-postgres-closed-port", ["db", "upgrade"], "cannot reach the database", 1,
         {"STREAMSENSE_DATABASE_URL": f"postgresql+psycopg://streamsense:{SECRET}@127.0.0.1:{{port}}/test"}),
    Case("dashboard-postgres-closed-port", ["dashboard", "--port", "{port}"], "cannot reach the database", 1,
         {"STREAMSENSE_DATABASE_URL": f"postgresql+psycopg://streamsense:{SECRET}@127.0.0.1:{{port}}/test"}),
    Case("bad-database-url", ["query", "totals"], "not a database URL", 2,
         {"STREAMSENSE_DATABASE_URL": "not a url"}, read_only=True),
    # settings
    Case("bad-setting", ["alerts", "check"], "STREAMSENSE_BATCH_SIZE", 2, {"STREAMSENSE_BATCH_SIZE": "abc"}),
    Case("bad-setting-secret-not-shown", ["models", "list"], "STREAMSENSE_KAFKA_SASL_MECHANISM", 2,
         {"STREAMSENSE_KAFKA_SASL_MECHANISM": "NOPE", "STREAMSENSE_KAFKA_SASL_PASSWORD": SECRET}),
    # models
    Case("model-not-found", ["classify"], "no model named 'nosuch'", 2, {"STREAMSENSE_MODEL": "nosuch"},
         stdin='{"id": "a", "text": "hello"}\n'),
    Case("model-not-found-eval", ["models", "eval", "--model", "nosuch:3"], "models list", 2),
    Case("model-altered", ["classify"], "has been altered", 1, {"STREAMSENSE_MODEL": "{tmp}/model"},
         stdin='{"id": "a", "text": "hello"}\n',
         files={"model/" + CARD: json.dumps({"format": FORMAT, "files": {"model.onnx": {"sha256": "0" * 64,
                                                                                         "bytes": 4}}}),
                "model/model.onnx": "abcd"}),
    Case("model-file-missing", ["classify"], "is missing", 1, {"STREAMSENSE_MODEL": "{tmp}/model"},
         stdin='{"id": "a", "text": "hello"}\n',
         files={"model/" + CARD: json.dumps({"format": FORMAT, "files": {"model.onnx": {"sha256": "0" * 64,
                                                                                         "bytes": 4}}})}),
    # labelled datasets missing (an empty folder): every missing one named with its public source, in one line
    Case("models-eval-no-datasets", ["models", "eval", "--limit", "5"],
         "missing from {tmp}/datasets (STREAMSENSE_DATASETS_DIR): tweeteval_sentiment, tweeteval_offensive, "
         "tweeteval_hate (TweetEval: github.com/cardiffnlp/tweeteval", 2, {"STREAMSENSE_DATASETS_DIR": "{tmp}/datasets"},
         files={"datasets/tweeteval_sentiment/train.jsonl": ""}),  # a set without its test split counts as missing
    Case("risk-eval-no-datasets", ["models", "risk-eval", "--split", "validation", "--limit", "5"],
         "complaints_twitter (Twitter complaints: github.com/danielpreotiuc/complaints-social-media)", 2,
         {"STREAMSENSE_DATASETS_DIR": "{tmp}/datasets"}),
    Case("calibrate-no-datasets", ["models", "calibrate", "--limit", "5"], "tweeteval_hate", 2,
         {"STREAMSENSE_DATASETS_DIR": "{tmp}/datasets"}),
    Case("risk-eval-zh-no-datasets", ["models", "risk-eval", "--model", "streamsense-bge-zh:latest", "--limit", "5"],
         "waimai_10k, online_shopping_10_cats (github.com/SophonPlus/ChineseNlpCorpus); cold (COLD: "
         "github.com/thu-coai/COLDataset)", 2, {"STREAMSENSE_DATASETS_DIR": "{tmp}/datasets"}),
    Case("bench-zh-share-no-datasets", ["bench", "--load", "--zh-share", "0.3", "--messages", "10"],
         "cold (COLD: github.com/thu-coai/COLDataset)", 2, {"STREAMSENSE_DATASETS_DIR": "{tmp}/datasets"},
         read_only=True),
    # rules files
    Case("alert-rules-invalid", ["alerts", "check", "rules.toml"], "invalid alert rules", 2,
         files={"rules.toml": BAD_ALERT_RULES}),
    Case("alert-rules-missing", ["alerts", "check", "nope.toml"], "invalid alert rules", 2),
    Case("worker-alert-rules-invalid", ["worker"], "invalid alert rules", 2,
         {"STREAMSENSE_ALERT_RULES": "{tmp}/rules.toml", "STREAMSENSE_DATABASE_URL": "sqlite:///{tmp}/w.db"},
         files={"rules.toml": BAD_ALERT_RULES}),
]


def prepare(case: Case, tmp: Path) -> tuple[list[str], dict]:
    port = str(closed_port())
    fill = lambda text: text.replace("{tmp}", str(tmp)).replace("{port}", port)  # noqa: E731
    for name, content in case.files.items():
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_text(content)
    return [fill(a) for a in case.args], {k: fill(v) for k, v in case.env.items()}


def check(case: Case, code: int, stdout: str, stderr: str, tmp: Path, before: set) -> None:
    combined = stdout + stderr
    assert code == case.code, f"{case.id}: exit {code}, expected {case.code}\n{combined}"
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert 1 <= len(lines) <= 2, f"{case.id}: {len(lines)} lines on stderr\n{stderr}"
    assert not stdout.strip() or case.args[0] == "classify", f"{case.id}: stdout\n{stdout}"
    assert case.phrase.replace("{tmp}", str(tmp)) in stderr, f"{case.id}: {case.phrase!r} not in\n{stderr}"
    assert "Traceback" not in combined and "Unclosed" not in combined, combined
    assert SECRET not in combined, combined
    if case.read_only:
        assert {p.relative_to(tmp) for p in tmp.rglob("*")} == before, f"{case.id}: files created"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_expected_failures_are_one_or_two_lines(case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no .env, and relative SQLite paths land here
    args, env = prepare(case, tmp_path)
    before = {p.relative_to(tmp_path) for p in tmp_path.rglob("*")}
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200", **env}, input=case.stdin)
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        f"{case.id}: {type(result.exception).__name__}: {result.exception}"
    check(case, result.exit_code, result.stdout, result.stderr, tmp_path, before)


# --- through a real process: what a user sees, Kafka clients closed, --debug --------------------------------------

def run(args: list[str], cwd: Path, env: dict | None = None, stdin: str | None = None, timeout: float = 120):
    full_env = {k: v for k, v in os.environ.items() if k != "STREAMSENSE_DEBUG"}
    full_env.update({"PYTHONPATH": str(PROJECT_ROOT), "COLUMNS": "200", **(env or {})})
    return subprocess.run([sys.executable, "-m", "streamsense", *args], cwd=cwd, env=full_env, input=stdin,
                          capture_output=True, text=True, timeout=timeout)


PROCESS_CASES = [
    Case("produce-no-broker", ["produce", "posts.jsonl", "--topic", "posts"], "cannot reach the Kafka broker", 1,
         {"STREAMSENSE_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:{port}"},
         files={"posts.jsonl": '{"id": "1", "text": "hello"}\n'}),
    Case("alerts-tail-no-broker", ["alerts", "tail", "--timeout", "5"], "cannot reach the Kafka broker", 1,
         {"STREAMSENSE_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:{port}"}),
    Case("query-no-sqlite-file-process", ["query", "totals"], "no database at", 2,
         {"STREAMSENSE_DATABASE_URL": "sqlite:///missing.db"}, read_only=True),
]


@pytest.mark.parametrize("case", PROCESS_CASES, ids=[c.id for c in PROCESS_CASES])
def test_expected_failures_in_a_process(case, tmp_path):
    args, env = prepare(case, tmp_path)
    before = {p.relative_to(tmp_path) for p in tmp_path.rglob("*")}
    result = run(args, tmp_path, env)
    check(case, result.returncode, result.stdout, result.stderr, tmp_path, before)


@pytest.mark.parametrize("how", ["--debug", "STREAMSENSE_DEBUG=1"])
def test_debug_shows_the_traceback(how, tmp_path):
    args = ["query", "totals"]
    env = {"STREAMSENSE_DATABASE_URL": "sqlite:///missing.db"}
    if how == "--debug":
        args = ["--debug", *args]
    else:
        env["STREAMSENSE_DEBUG"] = "1"
    result = run(args, tmp_path, env)
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "NoDatabaseError" in result.stderr, result.stderr[-2000:]
    assert list(tmp_path.iterdir()) == []  # still nothing created


# --- PostgreSQL server cases (integration: need the local server) ------------------------------------------------

@pytest.mark.integration
def test_postgres_login_refused(tmp_path, monkeypatch):
    reason = postgres_reason()
    if reason:
        pytest.skip(reason)
    monkeypatch.chdir(tmp_path)
    case = Case("postgres-no-such-role", ["query", "totals"], 'role "streamsense_nobody" does not exist', 2,
                {"STREAMSENSE_DATABASE_URL": f"postgresql+psycopg://streamsense_nobody:{SECRET}@127.0.0.1:5432/test"})
    result = CliRunner().invoke(app, case.args, env=case.env)
    check(case, result.exit_code, result.stdout, result.stderr, tmp_path, set())
    assert "streamsense_nobody:***@" in result.stderr


@pytest.mark.integration
def test_postgres_database_missing(tmp_path, monkeypatch):
    reason = postgres_reason()
    if reason:
        pytest.skip(reason)
    monkeypatch.chdir(tmp_path)
    case = Case("postgres-no-such-database", ["alerts", "list"], 'database "streamsense_no_such_db" does not exist',
                2, {"STREAMSENSE_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:5432/streamsense_no_such_db"})
    result = CliRunner().invoke(app, case.args, env=case.env)
    check(case, result.exit_code, result.stdout, result.stderr, tmp_path, set())


@pytest.mark.parametrize("args", [["query", "totals"], ["alerts", "list"], ["dashboard", "--port", "1"]])
def test_postgres_without_the_schema(args, postgres_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    case = Case("postgres-no-schema", args, "streamsense db upgrade", 1, {"STREAMSENSE_DATABASE_URL": postgres_url})
    result = CliRunner().invoke(app, case.args, env=case.env)
    check(case, result.exit_code, result.stdout, result.stderr, tmp_path, set())


@pytest.mark.integration
def test_invalid_risk_rules(tmp_path, monkeypatch):
    """The risk rules load after the model (the shipped one: a few seconds)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "risk.toml").write_text("[levels]\nmedium = 0.9\nhigh = 0.5\ncritical = 0.95\n")
    case = Case("risk-rules-invalid", ["classify"], "invalid risk rules", 2,
                {"STREAMSENSE_RISK_RULES": str(tmp_path / "risk.toml")})
    result = CliRunner().invoke(app, case.args, env=case.env, input='{"id": "a", "text": "hi"}\n')
    check(case, result.exit_code, result.stdout, result.stderr, tmp_path, set())


# --- the mapping itself -------------------------------------------------------------------------------------------

def test_unexpected_exceptions_keep_their_traceback():
    assert errors.explain(ZeroDivisionError("bug")) is None
    assert errors.explain(KeyError("x")) is None


def test_passwords_are_hidden():
    url = f"postgresql+psycopg://u:{SECRET}@db:5432/x"
    assert SECRET not in errors.hide_password(url) and "u:***@db" in errors.hide_password(url)
    assert errors.scrub(f"failed for {url}") == "failed for postgresql+psycopg://u:***@db:5432/x"
    failure = errors.Failure(f"login {SECRET} refused", "fix it", errors.USAGE)
    assert all(SECRET not in line for line in failure.lines([SECRET]))


def test_every_message_is_at_most_two_lines():
    failure = errors.Failure("one\nline", "another\n line", errors.RUNTIME)
    assert failure.lines() == ["error: one line", "  another line"]


def test_clients_that_fail_to_start_are_closed(tmp_path):
    """produce_lines (and `alerts tail`) used to start their client outside the try that stops it: a broker that is
    not there left "Unclosed AIOKafkaProducer" warnings behind the error."""
    script = tmp_path / "unclosed.py"
    script.write_text(
        "import asyncio, gc, warnings\n"
        "from streamsense.streams.produce import produce_lines\n"
        "warnings.simplefilter('always')\n"
        "async def main():\n"
        "    try:\n"
        f"        await produce_lines([b'{{}}'], 't', {{'bootstrap_servers': '127.0.0.1:{free_port()}', "
        "'request_timeout_ms': 2000})\n"
        "    except Exception as exc:\n"
        "        print('raised', type(exc).__name__)\n"
        "asyncio.run(main())\n"
        "gc.collect()\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert "raised KafkaConnectionError" in done.stdout
    assert "Unclosed" not in done.stderr
