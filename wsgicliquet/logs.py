"""Log formatters: the mozlog JSON shape (PROTOCOL.md §13.4) and a readable one-line form (§13.3).

Both work for any record.  Records made by the request log also carry the event as data
(:data:`EVENT_ATTR`, :data:`FIELDS_ATTR`, :data:`LOGGER_ATTR`), so a handler using either formatter renders the
summary from its fields rather than from the already-rendered message.  Use them from an ``.ini`` logging
section::

    [formatter_json]
    class = wsgicliquet.logs.MozlogFormatter

or with :func:`logging.config.dictConfig` to give a fixed ``Logger`` value:
``{"()": "wsgicliquet.logs.MozlogFormatter", "logger_name": "myapp"}``.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import platform
import re
from typing import Any, Dict, Mapping, Optional
from urllib.parse import urlencode

from pythonjsonlogger.json import JsonFormatter

try:  # optional: a faster encoder for the request summaries
    import orjson
except ImportError:  # pragma: no cover - depends on the installation
    orjson = None

__all__ = ["MozlogFormatter", "ClassicFormatter", "EVENT_ATTR", "FIELDS_ATTR", "LOGGER_ATTR", "summary_fields_of",
           "RENDERERS"]

EVENT_ATTR = "wsgicliquet_event"
"""Record attribute holding the event name (``request.summary``, ``subrequest.summary``)."""
FIELDS_ATTR = "wsgicliquet_fields"
"""Record attribute holding the event's fields (a dict)."""
LOGGER_ATTR = "wsgicliquet_logger"
"""Record attribute holding the ``Logger`` value of the mozlog shape (the ``project_name`` setting)."""

_OWN_ATTRS = {EVENT_ATTR, FIELDS_ATTR, LOGGER_ATTR}

# Syslog severities of the mozlog shape, by the lowest Python level they cover.
_SEVERITIES = ((logging.CRITICAL, 0), (logging.ERROR, 2), (logging.WARNING, 4), (logging.INFO, 6))


def _severity(levelno: int) -> int:
    for level, severity in _SEVERITIES:
        if levelno >= level:
            return severity
    return 7


def _dumps(value: Any) -> str:
    """JSON text of ``value``; what JSON cannot encode becomes its string, never an exception."""
    try:
        return _encode(value)
    except (TypeError, ValueError):
        pass
    if isinstance(value, Mapping):  # keys JSON refuses (tuples...) become strings
        try:
            return json.dumps({str(key): item for key, item in value.items()}, default=str, separators=(",", ":"))
        except (TypeError, ValueError):
            pass
    return str(value)


# What would break the one-line form (line breaks, terminal escapes): C0 and C1 controls, DEL, U+2028, U+2029.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _one_line(text: str) -> str:
    """``text`` with its control characters written as Python escapes (``\\n``, ``\\x1b``): a client's
    newline cannot forge a log line, nor an escape sequence drive the terminal that shows it."""
    if text.isprintable():
        return text
    return _CONTROL.sub(lambda match: match.group().encode("unicode_escape").decode("ascii"), text)


_SCALARS = (str, int, float, bool)
# Field values the mozlog shape keeps as they are (exact types: a subclass goes through _mozlog_value).
_PLAIN = frozenset({str, int, bool, type(None)})
# The severity of the standard levels, without the search of _severity.
_SEVERITY_OF = {level: _severity(level) for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR,
                                                      logging.CRITICAL)}
# Values that orjson writes exactly as the standard encoder does (floats differ: 1e16 against 1e+16).
_ORJSON_SAME = frozenset({str, int, bool, type(None), list})
_encode = json.JSONEncoder(separators=(",", ":"), default=str).encode  # what json.dumps builds on every call


def _mozlog_value(value: Any) -> Any:
    """§13.4: mappings are JSON-encoded into a string; lists are kept only when all items are strings."""
    if value is None or type(value) in _SCALARS:  # most fields; skips the slow abstract Mapping check
        return value
    if type(value) is dict:
        return _dumps(value) if value else "{}"
    if isinstance(value, Mapping):
        return _dumps(dict(value))
    if isinstance(value, (list, tuple, set, frozenset)):
        items = list(value)
        return items if all(isinstance(item, str) for item in items) else _dumps(items)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def summary_fields_of(record: logging.LogRecord) -> Optional[Dict[str, Any]]:
    """The fields of a request log record, or None for any other record."""
    fields = getattr(record, FIELDS_ATTR, None)
    return fields if isinstance(fields, dict) else None


class MozlogFormatter(JsonFormatter):
    """One JSON object per line: Timestamp, Logger, Type, Hostname, Severity, Pid, EnvVersion, Fields.

    ``Type`` is the event name of a request log record, else the message; ``Fields`` holds the event's fields,
    or the ``extra`` attributes of an ordinary record (plus ``traceback`` when an exception is attached).
    ``Logger`` is ``logger_name`` when given, else the project name carried by the record, else its logger name.
    """

    def __init__(self, *args: Any, logger_name: Optional[str] = None, hostname: Optional[str] = None,
                 **kwargs: Any) -> None:
        explicit = set(kwargs)
        kwargs.setdefault("json_default", str)
        kwargs.setdefault("json_serializer", functools.partial(json.dumps, separators=(",", ":")))
        kwargs.setdefault("json_ensure_ascii", False)
        super().__init__(*args, **kwargs)
        self.logger_name = logger_name
        # The mozlog standard reads HOSTNAME, set by most container runtimes, before the node name.
        self.hostname = hostname or os.environ.get("HOSTNAME") or platform.node()
        self.pid = os.getpid()
        # Request summaries skip the generic record handling of JsonFormatter.format (the same output), unless a
        # subclass changes how the fields are added; the default serializer gets a prebuilt encoder.
        self._plain = (type(self).add_fields is MozlogFormatter.add_fields
                       and type(self).process_log_record is JsonFormatter.process_log_record)
        self._encode: Optional[Any] = None
        cls = type(self)
        if ("json_serializer" not in explicit and self.json_encoder is None and self.json_indent is None
                and cls.jsonify_log_record is JsonFormatter.jsonify_log_record
                and cls.serialize_log_record is JsonFormatter.serialize_log_record):
            self._encode = json.JSONEncoder(separators=(",", ":"), default=self.json_default,
                                            ensure_ascii=self.json_ensure_ascii).encode

    def _summary(self, record: logging.LogRecord, fields: Dict[str, Any]) -> str:
        """What ``JsonFormatter.format`` renders for a request log record, built directly."""
        rendered = dict(fields)  # most values stay as they are
        same = True  # whether orjson writes these fields exactly as the standard encoder does
        plain = _PLAIN
        for key, value in fields.items():
            if type(value) not in plain:
                value = rendered[key] = _mozlog_value(value)
                same = same and type(value) in _ORJSON_SAME
        levelno = record.levelno
        log_data = {
            "Timestamp": int(record.created * 1000) * 1_000_000,
            "Logger": self.logger_name or getattr(record, LOGGER_ATTR, None) or record.name,
            "Type": getattr(record, EVENT_ATTR, None) or record.getMessage(),
            "Hostname": self.hostname,
            "Severity": _SEVERITY_OF[levelno] if levelno in _SEVERITY_OF else _severity(levelno),
            "Pid": record.process if record.process is not None else self.pid,
            "EnvVersion": "2.0",
            "Fields": rendered,
        }
        if self._encode is not None and same and orjson is not None:
            try:  # orjson refuses a key that is not exactly a string, an integer beyond 64 bits, a lone surrogate
                return self.prefix + orjson.dumps(log_data).decode()
            except (TypeError, ValueError):
                pass
        log_data["Fields"] = {key if type(key) is str else str(key): value for key, value in rendered.items()}
        if self._encode is not None:
            return self.prefix + self._encode(log_data)
        return self.serialize_log_record(log_data)

    def add_fields(self, log_data: Dict[str, Any], record: logging.LogRecord,
                   message_dict: Dict[str, Any]) -> None:
        fields = summary_fields_of(record)
        if fields is not None:
            event_type = getattr(record, EVENT_ATTR, None) or record.getMessage()
        else:
            event_type = getattr(record, "message", None) or record.name  # a dict message has no text
            fields = {key: value for key, value in record.__dict__.items()
                      if key not in self.reserved_attrs and key not in _OWN_ATTRS and not key.startswith("_")}
            fields.update(message_dict)
            traceback = fields.pop("exc_info", None)
            if traceback:
                fields["traceback"] = traceback
        log_data["Timestamp"] = int(record.created * 1000) * 1_000_000
        log_data["Logger"] = self.logger_name or getattr(record, LOGGER_ATTR, None) or record.name
        log_data["Type"] = event_type
        log_data["Hostname"] = self.hostname
        log_data["Severity"] = _severity(record.levelno)
        log_data["Pid"] = record.process if record.process is not None else self.pid
        log_data["EnvVersion"] = "2.0"
        log_data["Fields"] = {str(key): _mozlog_value(value) for key, value in fields.items()}

    def format(self, record: logging.LogRecord) -> str:
        try:
            fields = record.__dict__.get(FIELDS_ATTR)
            if type(fields) is dict and self._plain and not record.exc_info and not record.stack_info:
                return self._summary(record, fields)
            return super().format(record)
        except Exception:  # a broken field never loses the line
            fallback = logging.LogRecord(record.name, record.levelno, record.pathname, record.lineno,
                                         str(getattr(record, EVENT_ATTR, None) or record.msg), (), None)
            fallback.created, fallback.process = record.created, record.process
            return super().format(fallback)


class ClassicFormatter(logging.Formatter):
    """A readable line for development: ``"GET   /v1/?_limit=2" 200 (3 ms) request.summary key=value ...``.

    Records that are not request summaries are formatted by the ordinary format string (``%(message)s`` by
    default).
    """

    _REQUEST_KEYS = ("method", "path", "querystring", "code", "t")

    def format(self, record: logging.LogRecord) -> str:
        fields = summary_fields_of(record)
        if fields is None:
            return super().format(record)
        try:
            return self._summary_line(getattr(record, EVENT_ATTR, None) or record.getMessage(), fields)
        except Exception:  # a broken field never loses the line
            return f"{getattr(record, EVENT_ATTR, '')} {fields!r}"

    @classmethod
    def _summary_line(cls, event: str, fields: Mapping[str, Any]) -> str:
        method = str(fields.get("method") or "?").upper()
        querystring = fields.get("querystring") or {}
        query = "?" + urlencode(querystring, doseq=True) if isinstance(querystring, Mapping) and querystring else ""
        head = (f'"{method:<5} {fields.get("path", "?")}{query}" {fields.get("code", "?")} '
                f'({fields.get("t", "?")} ms) {event}')
        rest = " ".join(f"{key}={cls._text(value)}" for key, value in sorted(fields.items())
                        if key not in cls._REQUEST_KEYS and value is not None)
        return _one_line(f"{head} {rest}" if rest else head)

    @staticmethod
    def _text(value: Any) -> str:
        if isinstance(value, str):
            return value
        if isinstance(value, (Mapping, list, tuple)):
            return _dumps(value)
        return str(value)


RENDERERS: Dict[str, type] = {"json": MozlogFormatter, "classic": ClassicFormatter}
"""The values of the ``logging_renderer`` setting."""
