"""Replay a JSONL file into a topic (key = the record's id where it has one)."""

import asyncio
import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from aiokafka import AIOKafkaProducer


def _key(line: bytes) -> bytes | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    ident = value.get("id") if isinstance(value, dict) else None
    return str(ident).encode() if ident is not None else None


async def produce_lines(lines: Iterable[bytes], topic: str, client_options: dict,
                        on_sent: Callable[[int], None] = lambda n: None, chunk: int = 500,
                        rate: float | None = None, keys: Iterable[bytes | None] | None = None) -> int:
    """Send each line as one message, waiting for the broker's acks; returns the count sent.

    With `rate`, messages are paced to about that many per second (sent in chunks of `chunk`). Each message's key is
    the line's top-level "id", or the matching item of `keys` when given."""
    producer = AIOKafkaProducer(linger_ms=5, max_request_size=4 * 1024 * 1024, **client_options)
    sent = 0
    start = time.monotonic()
    try:
        await producer.start()  # inside the try: a start that fails still closes the client
        pending = []
        keyed = zip(lines, keys) if keys is not None else ((line, _key(line)) for line in lines)
        for line, key in keyed:
            pending.append(await producer.send(topic, line, key=key))
            if len(pending) >= chunk:
                await asyncio.gather(*pending)
                sent += len(pending)
                on_sent(len(pending))
                pending = []
                if rate:
                    await asyncio.sleep(max(0.0, start + sent / rate - time.monotonic()))
        await asyncio.gather(*pending)
        sent += len(pending)
        on_sent(len(pending))
    finally:
        await producer.stop()
    return sent


def read_lines(path: Path) -> list[bytes]:
    with open(path, "rb") as f:
        return [line.rstrip(b"\r\n") for line in f if line.strip()]
