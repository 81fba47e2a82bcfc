"""Fingerprints: the shape of a failure or a degradation, with the item's own data stripped out.

Two items share a fingerprint when they failed the same way. The fingerprint never carries payload
data, so one tenant's values never become a label another tenant sees.
"""

from __future__ import annotations

import hashlib
import re
import sysconfig
import traceback
from pathlib import Path
from types import TracebackType

from papayya.models import ErrorCategory, Reason

_VOLATILE = [
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I), "<uuid>"),
    (re.compile(r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?\b"), "<ts>"),
    (re.compile(r"\b0x[0-9a-f]+\b", re.I), "<hex>"),
    (re.compile(r"\b[0-9a-f]{12,}\b", re.I), "<hex>"),
    (re.compile(r"'(?:[^'\\]|\\.)*'"), "<str>"),
    (re.compile(r'"(?:[^"\\]|\\.)*"'), "<str>"),
    (re.compile(r"\b\d+(\.\d+)?\b"), "<n>"),
]

_PAPAYYA_DIR = str(Path(__file__).resolve().parent)
_STDLIB = str(Path(sysconfig.get_paths()["stdlib"]).resolve())


def normalise(message: str) -> str:
    """The message with ids, numbers, quoted values, hex and timestamps replaced by placeholders."""
    for pattern, placeholder in _VOLATILE:
        message = pattern.sub(placeholder, message)
    return message[:300]


def _is_library(filename: str) -> bool:
    if filename.startswith("<"):
        return True
    path = str(Path(filename).resolve())
    return path.startswith((_PAPAYYA_DIR, _STDLIB)) or "site-packages" in path or "dist-packages" in path


def innermost_user_frame(tb: TracebackType | None) -> str | None:
    """``file.py:function`` of the deepest traceback frame in the user's code (not papayya's,
    not the standard library's, not an installed package's)."""
    found = None
    for frame, _ in traceback.walk_tb(tb):
        code = frame.f_code
        if not _is_library(code.co_filename):
            found = f"{Path(code.co_filename).name}:{code.co_name}"
    return found


def failure(exc: BaseException, category: ErrorCategory) -> tuple[str, str, str | None]:
    """(fingerprint, normalised message, frame) of an exception."""
    message = normalise(str(exc))
    frame = innermost_user_frame(exc.__traceback__)
    return _digest("failure", category.value, type(exc).__qualname__, message, frame or ""), message, frame


def degradation(reasons: list[Reason]) -> str:
    """Fingerprint of a set of degradation reasons: their codes and paths, not their messages."""
    parts = sorted(f"{r.code}@{r.path or ''}" for r in reasons)
    return _digest("degraded", *parts)


def _digest(*parts: str) -> str:
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).hexdigest()


def format_tb(exc: BaseException, limit: int = 12000) -> str:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return text[-limit:]


__all__ = ["degradation", "failure", "format_tb", "innermost_user_frame", "normalise"]
