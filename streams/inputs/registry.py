"""A Confluent-compatible schema registry client: the wire format's header, schemas fetched by id and cached, and the
registry's outages waited out (nothing is skipped while it is down).

The Confluent wire format: byte 0 is the magic byte 0, bytes 1-4 the schema id (big-endian), the rest the value in
the schema's own encoding (schemaless Avro, JSON text, Protobuf). Any Confluent-compatible registry answers
`GET {url}/schemas/ids/{id}`: Confluent Schema Registry and Karapace at their root URL, Apicurio Registry 3 under
`/apis/ccompat/v7`, Redpanda at `:8081`.

Failures, and what each becomes:

- a value that is not in the wire format (shorter than 5 bytes, first byte not 0): `DecodeError` (a poison
  message: dead-lettered with the reason);
- a schema id the registry answers "not found" for (HTTP 404, error code 40403): `DecodeError` naming the id and
  the registry; the answer is remembered for NOT_FOUND_TTL seconds so that a burst of such messages costs one request;
- the registry unreachable, timing out, or answering anything else (5xx, 401/403, a 404 that is not a registry's):
  not the message's fault. The caller's thread waits and retries (backoff doubling up to MAX_BACKOFF seconds), one
  warning per outage with the URL and what it waits for, one line when the registry answers again; a graceful stop
  (`stop_waiting()`, or the interpreter's exit) ends the wait with `RegistryUnavailable`, so the batch in flight is
  not stored and is read again after a restart.
"""

import base64
import json
import logging
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from streamsense.streams.records import DecodeError

if TYPE_CHECKING:
    from streamsense.settings import Settings

log = logging.getLogger(__name__)

MAGIC = 0
HEADER = 5  # magic byte + 4-byte schema id
MAX_BACKOFF = 5.0  # seconds between two tries while the registry is down, at most
NOT_FOUND_TTL = 30.0  # seconds a "schema id not found" answer is remembered
_STEP = 0.2  # a wait sleeps in steps this short, to see a stop soon
#: The registry's error codes for "not found" (Confluent's, kept by Apicurio's and Karapace's compatible APIs)
SCHEMA_NOT_FOUND, SUBJECT_NOT_FOUND, VERSION_NOT_FOUND = 40403, 40401, 40402
CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class RegistryUnavailable(RuntimeError):
    """The registry did not answer and the wait for it was stopped (the worker is stopping): the message is not
    decoded, nor dead-lettered; its batch is read again after the restart."""


class SchemaNotFound(LookupError):
    """The registry answered that it has no such schema id or subject."""


class RegistryRefused(RuntimeError):
    """The registry refused a schema (HTTP 409: incompatible with the subject's latest version under its
    compatibility rule; 422: invalid): one line, not retried."""


class _Unanswered(Exception):
    """One try that got no usable answer (connection refused, timeout, 5xx, ...): retried."""


_stop = threading.Event()


def stop_waiting() -> None:
    """End every wait for the registry in this process (graceful stop): each raises RegistryUnavailable."""
    _stop.set()


def _stopping(own: threading.Event | None = None) -> bool:
    # the interpreter is exiting (the main thread has finished): a worker thread waiting here would block the exit
    return _stop.is_set() or (own is not None and own.is_set()) or not threading.main_thread().is_alive()


def split(value: bytes) -> tuple[int, memoryview]:
    """The Confluent wire format's schema id and payload, or DecodeError naming what is wrong."""
    if len(value) < HEADER:
        raise DecodeError(f"not in the schema registry's wire format: {len(value)} bytes, shorter than its 5-byte "
                          f"header (magic byte 0, 4-byte schema id)")
    if value[0] != MAGIC:
        raise DecodeError(f"not in the schema registry's wire format: first byte 0x{value[0]:02x}, not the magic "
                          f"byte 0x00")
    return int.from_bytes(value[1:HEADER], "big"), memoryview(value)[HEADER:]


def frame(schema_id: int, payload: bytes) -> bytes:
    """The Confluent wire format: magic byte 0, the schema id big-endian in 4 bytes, the payload."""
    return bytes((MAGIC,)) + schema_id.to_bytes(4, "big") + payload


@dataclass(frozen=True)
class RegisteredSchema:
    id: int
    type: str  # AVRO | JSON | PROTOBUF (the registry leaves schemaType out for AVRO)
    text: str  # the schema as the registry holds it
    references: tuple = ()


class RegistryClient:
    """Schemas by id (cached for the process's life: an id's schema never changes), their parsed forms (cached
    per parser), and registration of the outputs' schemas. Thread-safe."""

    def __init__(self, url: str, user: str | None = None, password: str | None = None, cafile=None,
                 certfile=None, keyfile=None, timeout: float = 5.0, max_backoff: float = MAX_BACKOFF,
                 stop: threading.Event | None = None):
        self.url = url.rstrip("/")
        self.stop = stop  # set: this client's waits end (RegistryUnavailable), as stop_waiting() ends every one
        self.timeout = timeout
        self.max_backoff = max_backoff
        self._headers = {"Accept": CONTENT_TYPE + ", application/json"}
        if user is not None:
            token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"
        self._ssl = None
        if self.url.startswith("https:") and (cafile or certfile):
            self._ssl = ssl.create_default_context(cafile=str(cafile) if cafile else None)
            if certfile:
                self._ssl.load_cert_chain(str(certfile), str(keyfile) if keyfile else None)
        self._schemas: dict[int, RegisteredSchema] = {}
        self._versions: dict[tuple[str, int], RegisteredSchema] = {}  # (subject, version) → a reference's schema
        self._parsed: dict[tuple[int, Any], Any] = {}
        self._missing: dict[int, float] = {}  # schema id → when the registry said "not found"
        self._lock = threading.Lock()
        self.requests = 0  # HTTP requests sent (for tests and metrics)

    @classmethod
    def from_settings(cls, settings: "Settings") -> "RegistryClient":
        password = settings.schema_registry_password
        return cls(settings.schema_registry_url, settings.schema_registry_user,
                   password.get_secret_value() if password else None, settings.schema_registry_cafile,
                   settings.schema_registry_certfile, settings.schema_registry_keyfile,
                   settings.schema_registry_timeout)

    # --- reading ----------------------------------------------------------------------------------------------------

    def schema(self, schema_id: int) -> RegisteredSchema:
        """The schema with this id; DecodeError where the registry has none; waits while the registry is down."""
        found = self._schemas.get(schema_id)
        if found is not None:
            return found
        said_missing = self._missing.get(schema_id)
        if said_missing is not None and time.monotonic() - said_missing < NOT_FOUND_TTL:
            raise DecodeError(self._not_found(schema_id))
        try:
            answer = self._until_answered(f"schema id {schema_id}",
                                          lambda: self._request("GET", f"/schemas/ids/{schema_id}"))
        except SchemaNotFound:
            with self._lock:
                if len(self._missing) > 10_000:
                    self._missing.clear()
                self._missing[schema_id] = time.monotonic()
            raise DecodeError(self._not_found(schema_id)) from None
        schema = RegisteredSchema(schema_id, answer.get("schemaType") or "AVRO", answer["schema"],
                                  tuple(answer.get("references") or ()))
        with self._lock:
            self._schemas[schema_id] = schema
        return schema

    def version(self, subject: str, version: int) -> RegisteredSchema:
        """Version `version` of `subject` (how a schema's `references` name the schemas it imports), cached for the
        process's life (a registered version never changes); DecodeError where the registry has none; waits while
        the registry is down."""
        key = (subject, version)
        found = self._versions.get(key)
        if found is not None:
            return found
        path = f"/subjects/{urllib.parse.quote(subject, safe='')}/versions/{urllib.parse.quote(str(version))}"
        try:
            answer = self._until_answered(f"subject {subject} version {version}",
                                          lambda: self._request("GET", path))
        except SchemaNotFound:
            raise DecodeError(f"subject {subject!r} version {version} not found in the schema registry at "
                              f"{self.url}") from None
        schema = RegisteredSchema(int(answer["id"]), answer.get("schemaType") or "AVRO", answer["schema"],
                                  tuple(answer.get("references") or ()))
        with self._lock:
            self._versions[key] = schema
        return schema

    def parsed(self, schema: RegisteredSchema, parser: Callable[[RegisteredSchema], Any], key: Any = None) -> Any:
        """`parser(schema)`, once per schema id and `key`: a parser's DecodeError (a schema it cannot use) is
        cached too, and raised for each message of that schema."""
        cache_key = (schema.id, key or parser)
        found = self._parsed.get(cache_key)
        if found is None:
            try:
                found = parser(schema)
            except DecodeError as exc:
                found = exc
            with self._lock:
                self._parsed[cache_key] = found
        if isinstance(found, DecodeError):
            raise DecodeError(found.reason)
        return found

    def _not_found(self, schema_id: int) -> str:
        return f"schema id {schema_id} not found in the schema registry at {self.url}"

    # --- writing ----------------------------------------------------------------------------------------------------

    def register(self, subject: str, schema: str, schema_type: str = "AVRO", references: list | None = None) -> int:
        """Register `schema` under `subject` (a new version if it differs from the latest; the same id if the
        registry has it already) and return its id; waits while the registry is down. `references`: the schemas it
        imports, as the registry takes them ({"name": the import's name, "subject": ..., "version": ...})."""
        body: dict = {"schema": schema}
        if schema_type != "AVRO":
            body["schemaType"] = schema_type
        if references:
            body["references"] = list(references)
        path = f"/subjects/{urllib.parse.quote(subject, safe='')}/versions"
        answer = self._until_answered(f"registering {subject}", lambda: self._request("POST", path, body))
        return int(answer["id"])

    # --- HTTP -------------------------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        headers = dict(self._headers)
        if data is not None:
            headers["Content-Type"] = CONTENT_TYPE
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        self.requests += 1
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=self._ssl) as response:
                return json.loads(response.read(16 * 1024 * 1024))
        except urllib.error.HTTPError as exc:
            try:
                detail = json.loads(exc.read(64 * 1024) or b"{}")
            except ValueError:
                detail = {}
            code = detail.get("error_code") if isinstance(detail, dict) else None
            if exc.code == 404 and code in (SCHEMA_NOT_FOUND, SUBJECT_NOT_FOUND, VERSION_NOT_FOUND):
                raise SchemaNotFound(detail.get("message", "not found")) from None
            message = detail.get("message") if isinstance(detail, dict) else None
            if exc.code in (409, 422) and method == "POST":
                raise RegistryRefused(f"the schema registry at {self.url} refused the schema for {path} "
                                      f"(HTTP {exc.code}: {str(message or 'no message')[:300]})") from None
            if exc.code == 404:
                raise _Unanswered(f"HTTP 404 without a registry's error code at {self.url + path} (is the URL "
                                  f"the registry's API root? Apicurio's is .../apis/ccompat/v7)") from None
            raise _Unanswered(f"HTTP {exc.code}{': ' + str(message) if message else ''}") from None
        except (OSError, ValueError) as exc:  # refused, reset, timeout, TLS, a body that is not JSON
            raise _Unanswered(f"{type(exc).__name__}: {getattr(exc, 'reason', None) or exc}") from None

    def _until_answered(self, what: str, attempt: Callable[[], dict]) -> dict:
        """`attempt()` until the registry answers; one warning per outage, one line when it is over."""
        delay, since, announced = 0.5, None, False
        while True:
            try:
                answer = attempt()
                if announced:
                    log.warning("schema registry at %s answers again (after %.0f s)", self.url,
                                time.monotonic() - since)
                return answer
            except _Unanswered as exc:
                if since is None:
                    since = time.monotonic()
                if not announced:
                    log.warning("schema registry at %s does not answer (%s): waiting for %s, retrying with backoff "
                                "up to %.0f s; nothing is skipped meanwhile", self.url, exc, what, self.max_backoff)
                    announced = True
            self._sleep(delay, what)
            delay = min(delay * 2, self.max_backoff)

    def _sleep(self, seconds: float, what: str) -> None:
        deadline = time.monotonic() + seconds
        while True:
            if _stopping(self.stop):
                raise RegistryUnavailable(f"stopped while waiting for the schema registry at {self.url} ({what}): "
                                          f"the batch is not stored, and is read again after a restart")
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(_STEP, left))


_clients: dict[tuple, RegistryClient] = {}
_clients_lock = threading.Lock()


def client_for(settings: "Settings") -> RegistryClient | None:
    """The process's registry client for these settings (one per URL and credentials, so every input and output
    shares its cache), or None where no registry is configured."""
    if not getattr(settings, "schema_registry_url", None):
        return None
    key = (settings.schema_registry_url, settings.schema_registry_user, settings.schema_registry_cafile,
           settings.schema_registry_certfile, settings.schema_registry_timeout)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = RegistryClient.from_settings(settings)
        return client
