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

# How a message is normalised (deterministic, written once with the outcome, never learned):
#
# 1. Quoted values ('x', "x", `x`) become <str>; an apostrophe inside a word (can't) opens nothing.
#    URLs become <url> and timestamps <ts> next, as a URL may hold '=' and a timestamp a space.
# 2. The rest is cut into tokens at whitespace, brackets, quotes, '=' and '|'. A token that holds
#    anything volatile is replaced whole (trailing punctuation kept), so `acme-00012` leaves
#    nothing of `acme` behind. In order of precedence: URL (`scheme://...`) <url>; email (`x@y`)
#    <email>; ISO date or date-time <ts>; a number, a UUID, 0x... or a run of 12+ hex digits <n>;
#    a base64-like run (20+ characters of its alphabet holding `+`, `=` padding, or a digit and both
#    cases; a blob may start with `/`) <blob>; a path (`/srv/x`, `~/x`, `./x`, `C:\x`, `\\host\x`,
#    any backslash, two slashes, `a/b.txt`) or a bare document file name (`invoice.pdf`) <path>;
#    and any other token holding a digit (i0042, v2-beta, host:5432) <n>.
#    Every kind of id shares <n> on purpose: whether an item's id is `42`, `i0042` or a UUID is item
#    data (one tenant numbers its items, another uses UUIDs), so it must not split a cluster. <n> is
#    also what numbers were before, so a message holding only numbers keeps its fingerprint.
# Words without a digit stay: they are the message's shape (`read/write`, `application/json`).
_SEPARATORS = r"\s'\"`()\[\]{}<>=|"
_QUOTED = re.compile(
    r"(?<![\w\\])(?:'(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\"|`[^`\n]*`)(?!\w)",
)
_URLS = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"`<>]*[^\s'\"`<>.,;:!?)\]}]")
_TIMESTAMP = r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?"
# A date and time with a space between them (the T form is one token, handled below).
_SPACED_TIMESTAMPS = re.compile(
    r"\b\d{4}-\d{2}-\d{2} \d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?(?!\w|:\d)"
)
_DOCUMENT = (
    r"\.(?:pdf|docx?|xlsx?|pptx?|odt|rtf|csv|tsv|txt|json|jsonl|ndjson|xml|html?|md|ya?ml|log|eml|msg"
    r"|png|jpe?g|gif|tiff?|webp|heic|svg|mp3|mp4|wav|m4a|mov|zip|gz|tgz|tar|parquet|avro)"
)
# A token worth looking at: it holds a digit, a path or address character, '+', a hex run or a
# document extension. Every other token is a word and is kept as it is.
_TOKEN = re.compile(
    rf"(?<![^{_SEPARATORS}])"
    rf"(?=[^{_SEPARATORS}]*(?:[\d/\\@:+]|[a-fA-F]{{12}}|{_DOCUMENT}(?![A-Za-z0-9])))"
    rf"[^{_SEPARATORS}]+=*",
    re.I,
)
_TRAILING = ".,;:!?"
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
_TS = re.compile(_TIMESTAMP)
_HEX = re.compile(r"0x[0-9a-f]+|[0-9a-f]{12,}", re.I)
_NUMBER = re.compile(r"[-+]?[\d.,/:_-]*\d[\d.,/:_-]*")
_ABSOLUTE = re.compile(r"(?:/|~/|\.\.?/|\\\\|[A-Za-z]:[\\/]).")
_B64 = re.compile(r"[A-Za-z0-9+/]{20,}={0,2}")
_RELATIVE = re.compile(rf"[^/]+/[^/]+/|.*\\|.*/.*\.[A-Za-z][A-Za-z0-9]{{0,7}}$|.*{_DOCUMENT}$", re.I)
_DIGIT = re.compile(r"\d")
_LIMIT = 300


def _placeholder(core: str) -> str:
    """What one token (without its trailing punctuation) becomes."""
    if "://" in core:
        return "<url>"
    if 0 < core.find("@") < len(core) - 1:
        return "<email>"
    if _TS.fullmatch(core):
        return "<ts>"
    if _NUMBER.fullmatch(core) or _HEX.fullmatch(core) or _UUID.fullmatch(core):
        return "<n>"
    if _B64.fullmatch(core) and (
        "+" in core or core.endswith("=") or (_DIGIT.search(core) and core.lower() != core != core.upper())
    ):
        return "<blob>"
    if _ABSOLUTE.match(core):
        return "<path>"
    if _RELATIVE.match(core):
        return "<path>"
    if _DIGIT.search(core):
        return "<n>"
    return core


def _token(match: re.Match[str]) -> str:
    token = match.group()
    core = token.rstrip(_TRAILING)
    return _placeholder(core) + token[len(core) :] if core else token


def normalise(message: str) -> str:
    """The shape of a message: ids, numbers, quoted values, paths, emails, URLs, hex and base64 runs,
    UUIDs and timestamps replaced by placeholders (``bad page <n> of doc <n>``), at most 300
    characters. Deterministic: the same message always gives the same text, whatever ran before."""
    # The guards skip a pass that cannot match; each is a substring test, far cheaper than a scan.
    if "'" in message or '"' in message or "`" in message:
        message = _QUOTED.sub("<str>", message)
    if "://" in message:
        message = _URLS.sub("<url>", message)
    if ":" in message:
        message = _SPACED_TIMESTAMPS.sub("<ts>", message)
    return _TOKEN.sub(_token, message)[:_LIMIT]


_PAPAYYA_DIR = str(Path(__file__).resolve().parent)
_STDLIB = str(Path(sysconfig.get_paths()["stdlib"]).resolve())


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


def failure_of(type_name: str, message: str, category: str) -> tuple[str, str]:
    """(fingerprint, normalised message) of a failure known by its type and message rather than by an
    exception (a provider's refusal of a batch row), shaped as :func:`failure` shapes one."""
    pattern = normalise(message)
    return _digest("failure", category, type_name, pattern, ""), pattern


def failure_label(type_name: str, pattern: str, frame: str | None, category: str) -> str:
    """The cluster label of a failure: ``ValueError bad page <n> of doc <id> in enrich.py:parse (user)``.
    Made of the type, the normalised message, the frame and the category; never of item data."""
    where = f" in {frame}" if frame else ""
    return f"{type_name} {pattern}{where} ({category})"


# A list index in a field path (``pages.3.title``, ``pages[3]``) is where in the output, not which
# field: the same missing title on page 3 or page 7 is one shape.
_INDEX = re.compile(r"(?<![^.\[])\d+(?![^.\]])")


def _path_shape(path: str | None) -> str:
    return _INDEX.sub("<n>", path) if path else ""


def degradation(reasons: list[Reason]) -> str:
    """Fingerprint of a set of degradation reasons: their codes and field paths (list indices
    normalised), not their messages."""
    parts = sorted(f"{r.code}@{_path_shape(r.path)}" for r in reasons)
    return _digest("degraded", *parts)


def degradation_label(reasons: list[Reason]) -> str:
    """The cluster label of a degradation: its reason codes and field paths (``schema.missing_field:
    pages.<n>.title``), never the reasons' messages, which may carry item data."""
    return "; ".join(sorted({f"{r.code}: {_path_shape(r.path)}" if r.path else r.code for r in reasons}))


def _digest(*parts: str) -> str:
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).hexdigest()


def format_tb(exc: BaseException, limit: int = 12000) -> str:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return text[-limit:]


__all__ = [
    "degradation",
    "degradation_label",
    "failure",
    "failure_label",
    "format_tb",
    "innermost_user_frame",
    "normalise",
]
