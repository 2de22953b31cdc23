"""Log lines that outside data cannot forge.

Ids, context keys, reasons and error messages reach the logs from Kafka messages and HTTP
requests; a newline in one would start a fake log line, an ANSI escape would repaint the
operator's terminal. :func:`install` makes every log record of the process (ours, Faust's,
aiokafka's, uvicorn's, whoever configured the handlers) carry such characters escaped, so
one record is always one line. Every role installs it at start.
"""

from __future__ import annotations

import logging
import numbers
import traceback
from typing import Any

# Control characters (C0, DEL, C1), the Unicode line and paragraph separators, and the
# bidirectional overrides that reorder what a terminal shows.
_UNSAFE = [*range(0x00, 0x20), *range(0x7F, 0xA0), 0x2028, 0x2029, *range(0x202A, 0x202F),
           *range(0x2066, 0x206A)]
_ESCAPES = {code: f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" for code in _UNSAFE}
_ESCAPES |= {ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"}

# Values whose ``%s`` is safe as it is: numbers, and containers and bytes, whose text is
# the repr of their parts (repr escapes every character that is not printable).
_SAFE_TYPES = (bytes, bytearray, list, tuple, set, frozenset, dict)


def escape(text: str) -> str:
    """``text`` with control characters, line separators and bidi overrides escaped.

    >>> escape("ok\\n2026-01-01 CRITICAL forged \\x1b[31m")
    'ok\\\\n2026-01-01 CRITICAL forged \\\\x1b[31m'
    >>> escape("caf\\u00e9 \\U0001f375")
    'café 🍵'
    """
    return text.translate(_ESCAPES)


class _Escaped:
    """An argument of a log call whose text is escaped whichever way it is formatted."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __str__(self) -> str:
        return escape(str(self.value))

    def __repr__(self) -> str:
        return escape(repr(self.value))

    def __format__(self, spec: str) -> str:
        return escape(format(self.value, spec))


def _safe(value: Any) -> Any:
    if isinstance(value, str):
        return escape(value)
    if value is None or isinstance(value, numbers.Number) or type(value) in _SAFE_TYPES:
        return value
    return _Escaped(value)


def _traceback(error: BaseException) -> str:
    """The traceback as :mod:`traceback` prints it, with each exception's message escaped
    (frames are our own files' lines; the messages may quote outside data)."""
    lines: list[str] = []

    def render(exception: traceback.TracebackException) -> None:
        if exception.__cause__ is not None:
            render(exception.__cause__)
            lines.append("\nThe above exception was the direct cause of the following "
                         "exception:\n\n")
        elif exception.__context__ is not None and not exception.__suppress_context__:
            render(exception.__context__)
            lines.append("\nDuring handling of the above exception, another exception "
                         "occurred:\n\n")
        if exception.stack:
            lines.append("Traceback (most recent call last):\n")
            lines.extend(exception.stack.format())
        lines.append(escape("".join(exception.format_exception_only()).rstrip("\n")) + "\n")

    render(traceback.TracebackException.from_exception(error))
    return "".join(lines).rstrip("\n")


def _escaping_factory(make_record):
    def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        record.msg = escape(record.msg) if isinstance(record.msg, str) else _Escaped(record.msg)
        if isinstance(record.args, dict):
            record.args = {name: _safe(value) for name, value in record.args.items()}
        elif record.args:
            record.args = tuple(_safe(value) for value in record.args)
        error = record.exc_info[1] if record.exc_info else None
        if error is not None:
            # Formatters render exc_info only when exc_text is empty: render it safely here.
            record.exc_text = _traceback(error)
        return record

    make.streamrec_escaping = True  # type: ignore[attr-defined]
    return make


def install() -> None:
    """Escape outside data in every log record this process makes from now on (once per
    process, whatever calls it again)."""
    current = logging.getLogRecordFactory()
    if not getattr(current, "streamrec_escaping", False):
        logging.setLogRecordFactory(_escaping_factory(current))
