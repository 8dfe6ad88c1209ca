"""Log output: Faust's coloured text, or one JSON object per line for log collectors."""

import json
import logging
from datetime import datetime, timezone


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def logging_config(log_format: str, level: str) -> dict | None:
    """A dictConfig for the worker; None keeps Faust's own text format."""
    if log_format != "json":
        return None
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
        "root": {"level": level.upper(), "handlers": ["console"]},
    }


def one_line_kafka_arguments() -> None:
    """Faust renders aiokafka's subscribed topics and assigned partitions as multi-line ASCII tables in the text log;
    a service log keeps each on one line instead: `posts, tickets` and `posts[0,1,2,3] tickets[0,1]`."""
    from faust import worker as faust_worker
    from mode.utils import logging as mode_logging

    mode_logging._formatter_registry2.discard(faust_worker.format_log_arguments)
    mode_logging.formatter2(_one_line_argument)


def _one_line_argument(arg, record: logging.LogRecord):
    """A set of topic names or of topic partitions in an aiokafka line, on one line (None: left as it is)."""
    if not record.name.startswith("aiokafka") or not isinstance(arg, (set, frozenset, list)) or not arg:
        return None
    if all(isinstance(item, str) for item in arg):
        return ", ".join(sorted(arg))
    if all(hasattr(item, "topic") and hasattr(item, "partition") for item in arg):
        by_topic: dict[str, list[int]] = {}
        for tp in arg:
            by_topic.setdefault(tp.topic, []).append(tp.partition)
        return " ".join(f"{topic}[{','.join(map(str, sorted(p)))}]" for topic, p in sorted(by_topic.items()))
    return None
