"""Log formats for the service: one plain line per event, or one JSON object per line.

JSON (``tether cloud serve --log-format json``) is for log pipelines (journald's
``SYSLOG_IDENTIFIER`` plus a JSON parser, Loki, Elasticsearch): each line is one object with
``time`` (UTC, ISO 8601 with milliseconds), ``level``, ``logger``, ``message``, and, when the
event has them, ``tether_code`` (the stable reason code, the field to alert and count on),
``peer`` and ``identity``; an exception adds ``exception`` (its traceback as text). No field
is ever dropped for being awkward: values that are not JSON types are written as strings.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Literal

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[str, ...] = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
_FIELDS = ("tether_code", "peer", "identity")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a single-line JSON object."""
        at = datetime.fromtimestamp(record.created, UTC)
        entry: dict[str, object] = {
            "time": at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in _FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def formatter(log_format: str) -> logging.Formatter:
    """The formatter for ``log_format`` ("text" or "json"); anything else is a ``ValueError``."""
    if log_format == "json":
        return JsonFormatter()
    if log_format == "text":
        return logging.Formatter(TEXT_FORMAT)
    raise ValueError(f"unknown log format {log_format!r}; use one of {', '.join(LOG_FORMATS)}")
