"""Wire records: JSON in, validated on decode; anything invalid raises DecodeError with the reason."""

import json
from datetime import datetime, timezone
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

MAX_MESSAGE_BYTES = 2 * 1024 * 1024

Id = Annotated[str, Field(min_length=1, max_length=200)]
Short = Annotated[str | None, Field(default=None, max_length=200)]


class DecodeError(ValueError):
    """The message cannot be used; `reason` says why in one line."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class _Record(BaseModel):
    # Unknown fields are ignored so producers can add fields without breaking consumers.
    model_config = ConfigDict(extra="ignore", frozen=True)

    id: Id
    created_at: datetime | None = None

    @field_validator("id", mode="before")
    @classmethod
    def _id_from_number(cls, value):
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value

    @field_validator("created_at", mode="after")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        # A time without a zone is taken as UTC, so every stored time is comparable.
        return value.replace(tzinfo=timezone.utc) if value and value.tzinfo is None else value

    @field_validator("*", mode="before")
    @classmethod
    def _no_nul(cls, value):
        # NUL cannot be stored in PostgreSQL text and carries no meaning in posts or tickets. Stripped before
        # validation, so lengths and emptiness are checked on what is stored.
        return value.replace("\x00", "") if isinstance(value, str) else value


class Post(_Record):
    kind: Literal["post"] = Field("post", exclude=True)
    text: str
    author: Short
    channel: Short  # brand or account the post is addressed to
    lang: Short

    @field_validator("text", mode="after")
    @classmethod
    def _text_present(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("text is empty")
        return value

    @property
    def model_text(self) -> str:
        return self.text

    @property
    def group(self) -> str | None:
        return self.channel


class Ticket(_Record):
    kind: Literal["ticket"] = Field("ticket", exclude=True)
    subject: str = ""
    body: str
    customer_id: Short
    product: Short
    priority: Literal["low", "normal", "high", "urgent"] | None = None

    @field_validator("body", mode="after")
    @classmethod
    def _body_present(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("body is empty")
        return value

    @property
    def model_text(self) -> str:
        return f"{self.subject}. {self.body}" if self.subject.strip() else self.body

    @property
    def group(self) -> str | None:
        return self.product


Record = Post | Ticket
RECORD_TYPES: dict[str, type[Post] | type[Ticket]] = {"post": Post, "ticket": Ticket}


def decode(kind: str, raw: bytes | None) -> Record:
    """Bytes from the topic → a validated record, or DecodeError with a one-line reason."""
    if raw is None:
        raise DecodeError("empty message (no value)")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise DecodeError(f"message is {len(raw)} bytes, over the {MAX_MESSAGE_BYTES} byte limit")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"invalid UTF-8 at byte {exc.start}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DecodeError(f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(data, dict):
        raise DecodeError(f"expected a JSON object, got {type(data).__name__}")
    try:
        return RECORD_TYPES[kind].model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors())
        raise DecodeError(f"invalid {kind}: {problems}") from None
