"""Expected failures of the `streamsense` command, told in one or two lines: what failed, then what to do.

`explain(exc)` maps an exception to a `Failure` (or None for one nobody expected: a bug, which keeps its traceback).
The CLI (streamsense/cli.py) prints the failure on stderr and exits with its code:

    2  usage or configuration: the command line, a setting, or a file or address it names is wrong
       (a bad STREAMSENSE_* value, an invalid rules file, an unknown model, no SQLite database at the path,
       a database login refused, a database URL that does not parse, labelled datasets missing)
    1  runtime: the configuration is fine but something it points at is not ready or not working
       (the database server or Kafka broker is down, the schema is missing, a model's files were altered)

`--debug` (or STREAMSENSE_DEBUG=1) shows the full traceback instead. Passwords never reach the messages: URLs are
rendered with the password hidden and any known secret left in a driver's text is masked.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

USAGE = 2
RUNTIME = 1

MIGRATE = "streamsense db upgrade"
_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)([^@\s]+)(@)")


@dataclass(frozen=True)
class Failure:
    what: str  # what failed, one line
    fix: str  # what to do about it, one line
    code: int  # USAGE or RUNTIME

    def lines(self, secrets: Iterable[str] = ()) -> list[str]:
        lines = [f"error: {_one_line(self.what)}"]
        if self.fix:
            lines.append(f"  {_one_line(self.fix)}")
        return [scrub(line, secrets) for line in lines]


class NoDatabaseError(RuntimeError):
    """A read-only command was pointed at a SQLite file that does not exist (it is not created)."""

    def __init__(self, path: Path):
        super().__init__(f"no database at {path}")
        self.path = path


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def hide_password(url: str) -> str:
    """The URL with its password shown as ***; a string that does not parse has any user:password@ masked."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a SQLAlchemy URL: mask what looks like one
        return scrub(url)


def url_password(url: str | None) -> str | None:
    if not url:
        return None
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).password
    except Exception:
        return None


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with user:password@ in URLs and each of `secrets` (4 characters or more) replaced by ***."""
    text = _URL_PASSWORD.sub(r"\1***\3", text)
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def sqlite_path(url: str) -> Path | None:
    """The file a SQLite URL names (None: not SQLite, in memory, or a `file:` URI left to SQLite)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:") or parsed.query.get("uri"):
        return None
    return Path(database).expanduser().absolute()


def require_database(url: str) -> None:
    """For read-only commands: a SQLite URL must name an existing file, which is never created here.
    (Servers are checked by connecting: that creates nothing.)"""
    path = sqlite_path(url)
    if path is not None and not path.is_file():
        raise NoDatabaseError(path)


def explain(exc: BaseException, database_url: str | None = None, bootstrap_servers: str | None = None
            ) -> Failure | None:
    """The failure `exc` stands for, or None when it is not an expected one. `database_url` and
    `bootstrap_servers`: what the command was using, to say where (passwords hidden)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        failure = _explain_one(exc, database_url, bootstrap_servers)
        if failure is not None:
            return failure
        exc = exc.__cause__
    return None


def _explain_one(exc: BaseException, database_url: str | None, bootstrap_servers: str | None) -> Failure | None:
    for explainer in (_settings, _no_database, _sql, _kafka, _models, _rules, _inputs, _registry, _datasets, _files,
                      _missing_package):
        failure = explainer(exc, database_url, bootstrap_servers)
        if failure is not None:
            return failure
    return None


# --- settings ---------------------------------------------------------------------------------------------------

_SECRET_FIELD = re.compile(r"password|secret|token|url|key", re.IGNORECASE)


def _settings(exc, _db, _kafka) -> Failure | None:
    try:
        from pydantic import ValidationError
    except ImportError:  # pragma: no cover
        return None
    if not isinstance(exc, ValidationError) or exc.title != "Settings":
        return None
    problems = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"])
        name = f"STREAMSENSE_{field.upper()}"
        shown = "" if _SECRET_FIELD.search(field) else f"={_short(repr(error.get('input')), 40)}"
        problems.append(f"{name}{shown}: {error['msg']}")
    return Failure(f"bad setting{'s' if len(problems) > 1 else ''} {'; '.join(problems)}",
                   "fix the environment variable (or its line in .env); README.md lists the settings", USAGE)


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


# --- databases --------------------------------------------------------------------------------------------------

def _where(database_url: str | None) -> str:
    return f" at {hide_password(database_url)}" if database_url else ""


def _no_database(exc, _db, _kafka) -> Failure | None:
    if not isinstance(exc, NoDatabaseError):
        return None
    return Failure(f"no database at {exc.path}",
                   f"run the worker or `{MIGRATE}` first, or point STREAMSENSE_DATABASE_URL at an existing database",
                   USAGE)


_UNREACHABLE = ("connection refused", "could not translate host name", "timeout expired", "timed out",
                "no route to host", "network is unreachable", "name or service not known", "could not connect",
                "server closed the connection unexpectedly", "connection reset", "nodename nor servname",
                "temporary failure in name resolution", "no such file or directory")  # the last: a Unix socket
_LOGIN = ("password authentication failed", "no password supplied", "pg_hba.conf", "authentication failed",
          "peer authentication", "ident authentication")
_ROLE = re.compile(r'role "[^"]*" does not exist')
_DATABASE = re.compile(r'database "[^"]*" does not exist')
_SCHEMA = ("no such table", "no such column", "undefinedtable", "undefinedcolumn")
_RELATION = re.compile(r'(relation|column) "?[^"]*"? (of relation "[^"]*" )?does not exist')


def _driver_reason(text: str) -> str:
    """The useful part of a driver's message: psycopg's "connection failed: connection to server at …, port …
    failed: FATAL:  role … does not exist" → 'role … does not exist (server at …, port …)'."""
    first = _one_line(text.strip().splitlines()[0] if text.strip() else text)
    first = re.sub(r"^connection failed:\s*", "", first)
    match = re.match(r'connection to server (at "?([^",]*)"?,? ?(?:\([^)]*\),? )?port (\d+)|on socket "?([^"]*)"?) '
                     r'failed: (.*)$', first)
    if match:
        where = f"{match[2]}:{match[3]}" if match[2] else match[4]
        reason = re.sub(r"^(FATAL|ERROR):\s*", "", match[5].strip())
        return f"{reason} (server {where})"
    return re.sub(r"^\(?[\w.]+\)?\s*", "", first) if first.startswith("(") else first


def _sql(exc, database_url, _kafka) -> Failure | None:
    try:
        from sqlalchemy import exc as sa_exc
    except ImportError:  # pragma: no cover
        return None
    if isinstance(exc, sa_exc.ArgumentError) and "url" in str(exc).lower():
        return Failure(f"STREAMSENSE_DATABASE_URL is not a database URL ({_one_line(str(exc))})",
                       "use e.g. sqlite:///streamsense.db or postgresql+psycopg://user@host:5432/db", USAGE)
    if isinstance(exc, sa_exc.NoSuchModuleError):
        return Failure(f"unsupported database URL{_where(database_url)} ({_one_line(str(exc))})",
                       "use sqlite:///PATH or postgresql+psycopg://user@host:5432/db", USAGE)
    if not isinstance(exc, sa_exc.DBAPIError):
        return None
    orig = exc.orig
    text = str(orig) if orig is not None else str(exc)
    low = text.lower()
    kind = f"{type(orig).__module__}.{type(orig).__name__}".lower()
    sqlite = "sqlite" in kind
    where = _where(database_url)
    if any(s in low or s in kind for s in _SCHEMA) or (not sqlite and _RELATION.search(low)):
        return Failure(f"the database{where} has no StreamSense tables, or an old schema "
                       f"({_driver_reason(text)})",
                       f"run `{MIGRATE}` (or start the worker, which migrates) against it first", RUNTIME)
    if sqlite:
        path = sqlite_path(database_url) if database_url else None
        if "unable to open database file" in low:
            hint = (f"the folder {path.parent} does not exist" if path and not path.parent.is_dir()
                    else "check the path and its permissions")
            return Failure(f"cannot open the SQLite database{where}: {hint}",
                           "fix STREAMSENSE_DATABASE_URL (sqlite:///relative/path.db or sqlite:////absolute/path.db)",
                           USAGE)
        if "file is not a database" in low:
            return Failure(f"{path or 'the file'} is not a SQLite database",
                           "point STREAMSENSE_DATABASE_URL at a StreamSense database, or at a new path", USAGE)
        if "readonly database" in low or "read-only" in low:
            return Failure(f"the SQLite database{where} is read-only here ({_driver_reason(text)})",
                           "check the file's and its folder's permissions", RUNTIME)
        return None
    reason = _driver_reason(text)
    if _ROLE.search(low) or any(s in low for s in _LOGIN):
        return Failure(f"the database server refused the login{where}: {reason}",
                       "check the user and password in STREAMSENSE_DATABASE_URL (or create that role)", USAGE)
    if _DATABASE.search(low):
        return Failure(f"{reason}",
                       "create it (e.g. `createdb NAME`) or fix the database name in STREAMSENSE_DATABASE_URL",
                       USAGE)
    if any(s in low for s in _UNREACHABLE):
        return Failure(f"cannot reach the database{where}: {reason}",
                       "start the database server, or point STREAMSENSE_DATABASE_URL at a running one", RUNTIME)
    return None


# --- Kafka ------------------------------------------------------------------------------------------------------

def _kafka(exc, _db, bootstrap_servers) -> Failure | None:
    try:
        from aiokafka import errors as kafka_errors
    except ImportError:  # pragma: no cover
        return None
    where = f" at {bootstrap_servers}" if bootstrap_servers else ""
    if isinstance(exc, (kafka_errors.SaslAuthenticationFailed, kafka_errors.AuthenticationFailedError,
                        kafka_errors.UnsupportedSaslMechanismError)):
        return Failure(f"the Kafka broker{where} refused the login: {_one_line(str(exc))}",
                       "check STREAMSENSE_KAFKA_SASL_MECHANISM, _USERNAME and _PASSWORD", USAGE)
    if isinstance(exc, (kafka_errors.KafkaConnectionError, kafka_errors.NoBrokersAvailable)):
        return Failure(f"cannot reach the Kafka broker{where}",
                       "start one (`streamsense broker`, or `streamsense demo` for everything at once) or set "
                       "STREAMSENSE_KAFKA_BOOTSTRAP_SERVERS", RUNTIME)
    return None


# --- models and rules -------------------------------------------------------------------------------------------

def _models(exc, _db, _kafka) -> Failure | None:
    from streamsense.models.registry import ModelIntegrityError, ModelNotFoundError

    if isinstance(exc, ModelNotFoundError):
        return Failure(str(exc), "set STREAMSENSE_MODEL (`models eval`: --model) to a name that "
                       "`streamsense models list` shows, or to a model directory", USAGE)
    if isinstance(exc, ModelIntegrityError):
        what, _, fix = str(exc).rpartition("; ")
        return Failure(what or str(exc), fix or "re-export the model or publish it again from a good export",
                       RUNTIME)
    return None


def _rules(exc, _db, _kafka) -> Failure | None:
    from streamsense.models.risk import RulesError
    from streamsense.streams.alerting.rules import AlertRulesError

    if isinstance(exc, AlertRulesError):
        return Failure(f"invalid {exc}",
                       "fix the file (`streamsense alerts check FILE` checks it) or set STREAMSENSE_ALERT_RULES "
                       "to a valid one", USAGE)
    if isinstance(exc, RulesError):
        return Failure(f"invalid {exc}", "fix the file or set STREAMSENSE_RISK_RULES to a valid one", USAGE)
    return None


def _inputs(exc, _db, _kafka) -> Failure | None:
    from streamsense.streams.inputs.declare import InputsError

    if isinstance(exc, InputsError):
        return Failure(f"invalid input declaration: {exc}",
                       "fix the file (`streamsense inputs check` lists every problem; docs/inputs.md has examples) "
                       "or unset STREAMSENSE_INPUTS", USAGE)
    return None


def _registry(exc, _db, _kafka) -> Failure | None:
    from streamsense.streams.inputs.registry import RegistryRefused
    from streamsense.streams.outputs import OutputFormatError

    if isinstance(exc, OutputFormatError):
        return Failure(str(exc), "set STREAMSENSE_SCHEMA_REGISTRY_URL, or STREAMSENSE_OUTPUT_FORMAT=json", USAGE)
    if isinstance(exc, RegistryRefused):
        return Failure(str(exc), "change the subject's compatibility rule in the registry, or write the outputs to "
                       "other topics (STREAMSENSE_TOPIC_PREDICTIONS / _ALERTS)", USAGE)
    return None


# --- files ------------------------------------------------------------------------------------------------------

def _datasets(exc, _db, _kafka) -> Failure | None:
    from streamsense.models.data import DatasetsMissingError

    if not isinstance(exc, DatasetsMissingError):
        return None
    return Failure(str(exc), "get them as NAME/{train,validation,test}.jsonl (JSON lines: text, label) into one folder "
                   "and set STREAMSENSE_DATASETS_DIR to it (README.md, \"Datasets\")", USAGE)


def _files(exc, _db, _kafka) -> Failure | None:
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)) \
            and getattr(exc, "filename", None):
        return Failure(f"{exc.filename}: {exc.strerror or type(exc).__name__}",
                       "check the path (and the STREAMSENSE_* setting or option that names it)", RUNTIME)
    return None


def _missing_package(exc, database_url, _kafka) -> Failure | None:
    if not isinstance(exc, ModuleNotFoundError) or not exc.name:
        return None
    top = exc.name.split(".")[0]
    if top in ("torch", "transformers", "datasets", "onnx", "optimum", "accelerate"):
        return Failure(f"Python package {top} is not installed", "this command needs the train extra: "
                       "pip install '.[train]'", USAGE)
    return Failure(f"Python package {top} is not installed",
                   f"install it, or use a database URL StreamSense supports (sqlite:///PATH, "
                   f"postgresql+psycopg://...){'; now ' + hide_password(database_url) if database_url else ''}",
                   USAGE)
