"""Configuration: ``papayya.configure(...)``, ``PAPAYYA_*`` variables, ``[tool.papayya]``, defaults.

Precedence is explicit (``configure``) > environment > file > default. The file is the nearest
``pyproject.toml`` with a ``[tool.papayya]`` table, from the current directory up to the root, or the
TOML file ``PAPAYYA_CONFIG_FILE`` names (its ``[tool.papayya]`` table if it has one, else its top
level). Keys are the setting names (``backend = "celery"``, ``lease_seconds = 30``); a relative
``home`` or ``secret_key_file`` in a file is relative to that file's directory. Keys that seal tenants'
secrets (``secret_key``, ``secret_key_old``) come from ``configure`` or the environment only.

The store is found as git finds ``.git`` (:func:`store_location`): ``database_url`` when set; else a
``home`` set explicitly, by ``PAPAYYA_HOME`` or in the file; else the nearest folder, from the current
directory up, that holds a ``.papayya/`` directory or the ``pyproject.toml`` in effect, and its
``.papayya``. The walk stops at the filesystem root and does not climb into the home directory from
below it (``~/.papayya`` is found only from ``~`` itself). With none found, ``home`` is ``./.papayya``.

Every value is validated when it is read, so a malformed setting is one clear sentence naming where
it came from (the variable, or the file and key) at start-up, not a traceback mid-run.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import math
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar

from papayya.errors import ConfigError, PapayyaError
from papayya.validate import number_problem, shown, tenant_id, text_problem

CONFIG_FILE_ENV = "PAPAYYA_CONFIG_FILE"
ENV_PREFIX = "PAPAYYA_"


class UnknownTenants(StrEnum):
    """What ``map()`` does for a tenant that does not exist yet."""

    CREATE = "create"  # create it and log that it did (the default: a laptop run just works)
    REFUSE = "refuse"  # raise TenantError (recommended in production: a typo never gets a fresh budget)


@dataclass(frozen=True, slots=True)
class ConfigFile:
    """A configuration file that was found: where it is, which table, and the values it sets."""

    path: Path
    table: str  # "[tool.papayya]", or "the top level" of a PAPAYYA_CONFIG_FILE without that table
    values: dict[str, Any]
    named: bool = False  # named by PAPAYYA_CONFIG_FILE (it may live anywhere), not found by walking up

    def where(self, key: str | None = None) -> str:
        inside = f"{self.table} of " if self.table.startswith("[") else ""
        if key is None:
            return f"{inside}{self.path}"
        return f"{key!r} in {inside}{self.path}"


MAX_SETTING_TEXT = 4096

# Numeric settings: (lowest, highest, unit). A float lowest is excluded (a lease of 0 s holds nothing);
# the highest is what the store can hold (an interval, an integer column, jsonb's 255 MB) or sense.
RANGES: dict[str, tuple[float | int, float | int, str]] = {
    "max_input_bytes": (1, 268_435_455, "bytes"),  # jsonb holds at most 255 MB
    "lease_seconds": (0.0, 86_400, "seconds"),  # a day; make_interval overflows long before inf
    "max_stalls": (1, 1_000, "times"),
    "celery_unacked_seconds": (0.0, 604_800, "seconds"),  # a week
    "pool_size": (2, 1_000, "connections"),
    "default_max_output_tokens": (1, 2_147_483_647, "tokens"),  # a PostgreSQL integer
    "batch_window_seconds": (0, 86_400, "seconds"),
    "batch_poll_seconds": (0.0, 86_400, "seconds"),
}


def _range_text(low: float | int, high: float | int, unit: str) -> str:
    if isinstance(low, float):
        return f"it must be a number of {unit} greater than {low:g} and at most {high:,}"
    return f"it must be a whole number of {unit} from {low:,} to {high:,}"


class SecretValue:
    """A setting that holds a key: shown as ``**********``, read with :meth:`get_secret_value`."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __str__(self) -> str:
        return "**********" if self._value else ""

    def __repr__(self) -> str:
        return f"SecretValue({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretValue) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


# -- reading one value ------------------------------------------------------------------------------
# Each reader takes a value as it comes (text from a variable, a TOML value, a Python value given to
# papayya.configure) and returns it typed, or raises ValueError with the reason, which the loader puts
# in one sentence naming where the value came from. Text is read as people write it in a shell:
# "30", " 4 ", "1e3", "true", "off".

_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})
_INTEGRAL_TEXT = re.compile(r"[+-]?\d[\d_]*(\.0*)?")


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("Input should be a valid string")
    problem = text_problem(value, MAX_SETTING_TEXT)
    if problem is not None:
        raise ValueError(f"the value {problem}")
    return str(value)


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.lower()
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
        raise ValueError("Input should be a valid boolean, unable to interpret input")
    if isinstance(value, int | float | Decimal):
        if isinstance(value, Decimal) and value.is_nan():  # comparing a signalling NaN raises
            raise ValueError("Input should be a valid boolean")
        if value in (0, 1):
            return bool(value)
        if isinstance(value, int):
            raise ValueError("Input should be a valid boolean, unable to interpret input")
    raise ValueError("Input should be a valid boolean")


def _integer(value: Any) -> int:
    if isinstance(value, int):  # a bool too: True is 1
        return int(value)
    if isinstance(value, float | Decimal):
        if not value.is_finite() if isinstance(value, Decimal) else not math.isfinite(value):
            raise ValueError("Input should be a finite number")
        if value != int(value):
            raise ValueError("Input should be a valid integer, got a number with a fractional part")
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if _INTEGRAL_TEXT.fullmatch(text) and "__" not in text and not text.endswith("_"):
            try:
                return int(text.split(".")[0])
            except ValueError:  # past the digits int() reads
                pass
        raise ValueError("Input should be a valid integer, unable to parse string as an integer")
    raise ValueError("Input should be a valid integer")


def _number(value: Any) -> float:
    if isinstance(value, int | float | Decimal):  # a bool too
        try:
            return float(value)
        except OverflowError:  # an int past a float's range
            return math.inf if value > 0 else -math.inf
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            raise ValueError("Input should be a valid number, unable to parse string as a number") from None
    raise ValueError("Input should be a valid number")


def _ranged(name: str, read: Callable[[Any], float | int]) -> Callable[[Any], Any]:
    low, high, unit = RANGES[name]

    def check(value: Any) -> float | int:
        number = read(value)
        problem = number_problem(number, low, high, low_open=isinstance(low, float))
        if problem is not None:
            raise ValueError(f"{shown(number)} {problem}; {_range_text(low, high, unit)}")
        return number

    return check


def _path(value: Any) -> Path:
    if not isinstance(value, str | Path):
        raise ValueError("Input is not a valid path")
    problem = text_problem(str(value), MAX_SETTING_TEXT)
    if problem is not None:
        raise ValueError(f"the path {problem}")
    return Path(value)


def _optional(read: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else read(value)


def _database_url(given: Any) -> str | None:
    if given is None or given == "":
        return None
    value = _text(given)
    from urllib.parse import urlsplit

    from psycopg.conninfo import conninfo_to_dict  # only when a URL is set: psycopg is heavy to import

    try:
        parts = conninfo_to_dict(value)
    except Exception as exc:
        detail = _first_line(redact_url(str(exc)))
        detail = detail if len(detail) <= 120 else detail[:120] + "…"
        raise ValueError(f"it is not a PostgreSQL URL ({detail})") from None
    if value.startswith(("postgresql://", "postgres://")):
        try:
            urlsplit(value).port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise ValueError("its port is not a number between 1 and 65535") from None
    elif "://" in value or "=" not in value:
        raise ValueError("it must look like postgresql://user@host:5432/dbname")
    port = str(parts.get("port") or "5432")
    if not all(p.isdigit() and 0 < int(p) < 65536 for p in port.split(",")):
        raise ValueError("its port is not a number between 1 and 65535")
    return value


def _backend(given: Any) -> str:
    value = _text(given)
    if not value.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"backend {value!r} is not a backend name (e.g. native)")
    return value


def _tenant(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return tenant_id(_text(value))
    except PapayyaError as exc:
        raise ValueError(str(exc).rstrip(".")) from None


LLM_MODES = ("live", "batch")


def llm_mode(value: str) -> str:
    """``value`` if it is an LLM mode (live, batch); ValueError saying which are, else."""
    if value not in LLM_MODES:
        raise ValueError(f"llm_mode {value!r} is not one of: {', '.join(LLM_MODES)}")
    return value


def _unknown_tenants(value: Any) -> UnknownTenants:
    if isinstance(value, str) and value in UnknownTenants._value2member_map_:
        return UnknownTenants(value)
    raise ValueError("Input should be 'create' or 'refuse'")


def _secret(value: Any) -> SecretValue | None:
    if isinstance(value, SecretValue):
        value = value.get_secret_value()
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("Input should be a valid string")
    if not value.strip():
        return None
    secret_keys(value)  # the value is never echoed: it is a key
    return SecretValue(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """papayya's settings. Field ``x`` is read from ``PAPAYYA_X`` or key ``x`` of ``[tool.papayya]``.

    Build them with :func:`load_settings` (explicit values > environment > file > default); every value
    given here is read and checked as the loader reads it (``Settings(lease_seconds="30")`` holds 30.0),
    and a bad one is a ConfigError.
    """

    database_url: str | None = None
    home: Path = Path(".papayya")
    backend: str = "native"
    unknown_tenants: UnknownTenants = UnknownTenants.CREATE
    default_tenant: str | None = None
    tenant: str | None = None
    max_input_bytes: int = 1_048_576
    lease_seconds: float = 60.0
    max_stalls: int = 3
    celery_unacked_seconds: float = 120.0
    pool_size: int = 16
    progress: bool | None = None
    auto_migrate: bool = True
    default_max_output_tokens: int = 4096
    llm_mode: str = "live"
    batch_window_seconds: float = 60.0
    batch_poll_seconds: float = 30.0
    otel: bool = False
    secret_key: SecretValue | None = None
    secret_key_file: Path | None = None
    secret_key_old: SecretValue | None = None

    # What each setting means (`papayya config show` and the docs say the same).
    DESCRIPTIONS: ClassVar[dict[str, str]] = {
        "database_url": "PostgreSQL URL. Unset: an embedded server under `home`.",
        "home": "Where the embedded server and local state live.",
        "backend": "Which backend runs items.",
        "unknown_tenants": "What map() does for a tenant that does not exist yet: create or refuse.",
        "default_tenant": "Tenant of a queue message (Celery task, SQS message, Temporal agent activity) "
        "that names none: adopted under it, logged as such. Unset: such messages are refused.",
        "tenant": "Scope every read and write of this process to one tenant.",
        "max_input_bytes": "Largest accepted item input (JSON).",
        "lease_seconds": "How long a claim holds without a heartbeat.",
        "max_stalls": "Times an item may lose its worker (lease expired mid-attempt) before it is failed.",
        "celery_unacked_seconds": "Celery on Redis: a papayya message a worker took and no live worker has "
        "held for this long goes back to its queue (instead of after Redis's visibility timeout, an hour).",
        "pool_size": "Most connections one process opens.",
        "progress": "Progress bar: None = only on a terminal.",
        "auto_migrate": "Apply pending migrations on first use.",
        "default_max_output_tokens": "Output tokens a budget reserves for a call that sets no max_tokens.",
        "llm_mode": "How instrumented LLM calls are paid: live (answered at once) or batch (sent in the "
        "provider's batch API at its batch price; the item waits for the answer). A submit() may choose "
        "per run; see docs/batch.md.",
        "batch_window_seconds": "Batch mode: how long pending requests gather before a batch is sent "
        "(a batch also goes as soon as it is full).",
        "batch_poll_seconds": "Batch mode: how often an open provider batch is asked whether it ended.",
        "otel": "Export spans and metrics through OpenTelemetry (needs papayya[otel]; see docs/otel.md).",
        "secret_key": "The key that seals tenants' secrets: base64 of 32 random bytes (`openssl rand "
        "-base64 32`). Not accepted from a configuration file; see docs/security.md.",
        "secret_key_file": "A file holding the secret key (first line) and older keys still to read (next "
        "lines), instead of secret_key.",
        "secret_key_old": "Older secret keys, comma-separated: what they sealed still decrypts until "
        "`papayya tenants secret rotate` re-seals it under secret_key.",
    }

    def __post_init__(self) -> None:
        for name, read in READERS.items():
            try:
                value = read(getattr(self, name))
            except ValueError as exc:
                raise ConfigError(
                    f"Setting {name} ({env_name(name)}) is invalid: {_reason(exc)}. Fix it and try again."
                ) from None
            object.__setattr__(self, name, value)


# How each setting is read, in the order of Settings' fields (the order errors are reported in).
READERS: dict[str, Callable[[Any], Any]] = {
    "database_url": _database_url,
    "home": _path,
    "backend": _backend,
    "unknown_tenants": _unknown_tenants,
    "default_tenant": _tenant,
    "tenant": _tenant,
    "max_input_bytes": _ranged("max_input_bytes", _integer),
    "lease_seconds": _ranged("lease_seconds", _number),
    "max_stalls": _ranged("max_stalls", _integer),
    "celery_unacked_seconds": _ranged("celery_unacked_seconds", _number),
    "pool_size": _ranged("pool_size", _integer),
    "progress": _optional(_boolean),
    "auto_migrate": _boolean,
    "default_max_output_tokens": _ranged("default_max_output_tokens", _integer),
    "llm_mode": lambda v: llm_mode(_text(v)),
    "batch_window_seconds": _ranged("batch_window_seconds", _number),
    "batch_poll_seconds": _ranged("batch_poll_seconds", _number),
    "otel": _boolean,
    "secret_key": _secret,
    "secret_key_file": _optional(_path),
    "secret_key_old": _secret,
}

SETTING_NAMES = tuple(f.name for f in fields(Settings))
assert tuple(READERS) == SETTING_NAMES, "every setting has a reader, in the order of the fields"


def _reason(exc: ValueError) -> str:
    return str(exc).rstrip(".")


# Settings that hold a key: taken from papayya.configure or the environment only, never from a
# configuration file (pyproject.toml is committed; a key there is a key in every clone).
KEY_SETTINGS = ("secret_key", "secret_key_old")
SECRET_KEY_BYTES = 32


def secret_keys(text: str) -> list[bytes]:
    """The keys in ``text``: base64 of 32 bytes each, separated by commas, spaces or newlines (lines
    starting with ``#`` are comments). ValueError saying what is wrong, never echoing a key."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    parts = [p for p in re.split(r"[\s,]+", "\n".join(lines)) if p]
    if not parts:
        raise ValueError("it holds no key; make one with `openssl rand -base64 32`")
    keys = []
    for n, part in enumerate(parts, 1):
        which = "it" if len(parts) == 1 else f"its key number {n}"
        try:
            raw = base64.b64decode(part.replace("-", "+").replace("_", "/"), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(
                f"{which} is not base64 text; make a key with `openssl rand -base64 32`"
            ) from None
        if len(raw) != SECRET_KEY_BYTES:
            raise ValueError(
                f"{which} decodes to {len(raw)} bytes, not {SECRET_KEY_BYTES}; make a key with "
                "`openssl rand -base64 32`"
            )
        keys.append(raw)
    return keys


def _first_line(exc: BaseException | str) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# -- the file -------------------------------------------------------------------------------------


def find_config_file(start: Path | None = None) -> ConfigFile | None:
    """The configuration file in effect: ``PAPAYYA_CONFIG_FILE``, else the nearest ``pyproject.toml``
    with a ``[tool.papayya]`` table from ``start`` (the current directory) up. None when there is none.

    Raises:
        ConfigError: the file named by ``PAPAYYA_CONFIG_FILE`` is missing, or a file is not valid TOML,
            or its table holds an unknown setting.
    """
    named = os.environ.get(CONFIG_FILE_ENV, "").strip()
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"{CONFIG_FILE_ENV} names {path}, which is not a file; fix the path or unset the variable."
            )
        data = _read_toml(path.resolve())
        table = _tool_table(data, path)
        if table is not None:
            return _checked(ConfigFile(path.resolve(), "[tool.papayya]", table, named=True))
        return _checked(ConfigFile(path.resolve(), "the top level", data, named=True))
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "pyproject.toml"
        if not candidate.is_file() or not _names_papayya(candidate):
            continue
        try:
            data = _read_toml(candidate)
        except ConfigError:
            # A broken pyproject.toml that is not papayya's business is not papayya's error.
            if "tool.papayya" in candidate.read_text(encoding="utf-8", errors="replace"):
                raise
            continue
        table = _tool_table(data, candidate)
        if table is not None:
            return _checked(ConfigFile(candidate, "[tool.papayya]", table))
    return None


def _names_papayya(path: Path) -> bool:
    """Whether the file could hold papayya's table (parsing a project's pyproject.toml that never says
    "papayya" is time a command spends for nothing)."""
    try:
        return b"papayya" in path.read_bytes()
    except OSError:
        return True  # _read_toml says why it cannot be read


def _read_toml(path: Path) -> dict[str, Any]:
    import tomllib  # here, not at the top: its parser compiles a dozen regular expressions at import

    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML ({_first_line(exc)}); fix the file.") from None
    except OSError as exc:
        raise ConfigError(f"Cannot read {path} ({exc.strerror or exc}); fix its permissions.") from None


def _tool_table(data: dict[str, Any], path: Path) -> dict[str, Any] | None:
    tool = data.get("tool")
    if not isinstance(tool, dict) or "papayya" not in tool:
        return None
    table = tool["papayya"]
    if not isinstance(table, dict):
        raise ConfigError(f"tool.papayya in {path} must be a table ([tool.papayya]); fix the file.")
    return table


def _checked(file: ConfigFile) -> ConfigFile:
    """Refuse unknown keys; resolve a relative ``home`` against the file's directory."""
    for key in file.values:
        if key not in SETTING_NAMES:
            raise _unknown(key, file.where(key))
        if key in KEY_SETTINGS:
            raise ConfigError(
                f"Setting {file.where(key)} holds a key in a file that is often committed; remove it and "
                f"set {env_name(key)} (or secret_key_file, a file of its own) instead."
            )
    # Validate the file's own values even where the environment overrides them: a bad line in the
    # file should not wait to surface until the variable is unset.
    for name, read in READERS.items():
        if name in file.values:
            try:
                read(file.values[name])
            except ValueError as exc:
                raise _file_error(name, exc, file) from None
    values = dict(file.values)
    for key in ("home", "secret_key_file"):
        path = values.get(key)
        if isinstance(path, str) and path and not Path(path).expanduser().is_absolute():
            values[key] = str(file.path.parent / path)
    if values != file.values:
        return ConfigFile(file.path, file.table, values, file.named)
    return file


# -- loading ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a setting's effective value came from."""

    # "explicit" | "env" | "file" | "default"; for ``home`` also "found" (a ``.papayya/`` here or
    # above) and "project" (the folder of the pyproject.toml in effect)
    source: str
    where: str | None = None  # the variable's name, the file's path, or the .papayya/ found

    def __str__(self) -> str:
        if self.source == "env":
            return f"env {self.where}"
        if self.source == "file":
            return str(self.where)
        if self.source == "project":
            return f"beside {self.where}"
        return self.source


@dataclass(frozen=True, slots=True)
class Effective:
    """The settings in effect, where each came from, and the file read (if any)."""

    settings: Settings
    origins: dict[str, Origin]
    file: ConfigFile | None


def env_name(field: str) -> str:
    return f"{ENV_PREFIX}{field.upper()}"


def _env_var(field: str) -> str | None:
    """The name of the variable that sets ``field`` (matched without regard to case), if set."""
    wanted = env_name(field)
    return next((k for k in os.environ if k.upper() == wanted), None)


def _origin(field: str, explicit: dict[str, Any], file: ConfigFile | None) -> Origin:
    if field in explicit:
        return Origin("explicit")
    var = _env_var(field)
    if var is not None:
        return Origin("env", var)
    if file is not None and field in file.values:
        return Origin("file", str(file.path))
    return Origin("default")


def effective_settings(**overrides: Any) -> Effective:
    """The settings with ``overrides`` as explicit values, and where each value came from.

    Raises:
        ConfigError: an unknown setting or a bad value, naming the variable or the file and key.
    """
    for key in overrides:
        if key not in SETTING_NAMES:
            raise _unknown(key, repr(key))
    file = find_config_file()
    values: dict[str, Any] = {}
    origins: dict[str, Origin] = {}
    for name, read in READERS.items():
        origin = origins[name] = _origin(name, overrides, file)
        if origin.source == "default":
            continue
        if origin.source == "explicit":
            raw = overrides[name]
        elif origin.source == "env":
            raw = os.environ[str(origin.where)]
        else:
            raw = file.values[name] if file is not None else None
        try:
            values[name] = read(raw)
        except ValueError as exc:
            if origin.source == "file" and file is not None:
                raise _file_error(name, exc, file) from None
            var = origin.where if origin.source == "env" else env_name(name)
            raise ConfigError(
                f"Setting {name} ({var}) is invalid: {_reason(exc)}. Fix it and try again."
            ) from None
    settings = Settings(**values)
    if origins["home"].source == "default":
        home, origins["home"] = _discover_home(Path.cwd().resolve(), file)
        settings = replace(settings, home=home)
    return Effective(settings, origins, file)


def load_settings(**overrides: Any) -> Settings:
    """Read settings (explicit ``overrides`` > environment > file > default); ConfigError on a bad value."""
    return effective_settings(**overrides).settings


def _unknown(key: str, where: str) -> ConfigError:
    near = difflib.get_close_matches(key, SETTING_NAMES, n=1)
    hint = f"did you mean {near[0]!r}?" if near else f"the settings are {', '.join(SETTING_NAMES)}."
    return ConfigError(f"Unknown setting {where}: {hint}")


def _file_error(name: str, exc: ValueError, file: ConfigFile) -> ConfigError:
    return ConfigError(f"Setting {file.where(name)} is invalid: {_reason(exc)}; fix the file.")


# -- the store --------------------------------------------------------------------------------------

STORE_DIR = ".papayya"


def _ceiling(start: Path) -> Path | None:
    """The home directory when ``start`` is below it: the walk does not climb into it (as git's
    GIT_CEILING_DIRECTORIES), so a stray ``~/.papayya`` never captures every project under ``~``."""
    try:
        home = Path.home().resolve()
    except (RuntimeError, KeyError, OSError):
        return None
    return home if home in start.parents else None


def _discover_home(start: Path, file: ConfigFile | None) -> tuple[Path, Origin]:
    """The nearest folder from ``start`` up holding a ``.papayya/`` directory or the pyproject.toml in
    effect: its ``.papayya``. None found: ``start/.papayya``."""
    project = file.path.parent if file is not None and not file.named else None
    stop = _ceiling(start)
    for folder in (start, *start.parents):
        if folder == stop:
            break
        if (folder / STORE_DIR).is_dir():
            return folder / STORE_DIR, Origin("found", str(folder / STORE_DIR))
        if folder == project and file is not None:
            return folder / STORE_DIR, Origin("project", str(file.path))
    return start / STORE_DIR, Origin("default")


@dataclass(frozen=True, slots=True)
class StoreLocation:
    """The store the settings point at: a server (``url``) or the embedded one under ``home``."""

    url: str | None
    home: Path
    origin: Origin  # of database_url when it is set, else of home

    @property
    def exists(self) -> bool:
        """A server is taken to exist (connecting says otherwise); an embedded store once initialised."""
        return self.url is not None or (self.home / "pg" / "PG_VERSION").is_file()

    @property
    def named(self) -> bool:
        """Named by the user for this process (papayya.configure or a variable), not found."""
        return self.origin.source in ("explicit", "env")

    def describe(self) -> str:
        """The store in a few words: ``/proj/.papayya (found above here)``."""
        if self.url is not None:
            return f"{redact_url(self.url)} ({self._why('database_url')})"
        return f"{self.home} ({self._why('home')})"

    def missing(self) -> str:
        """One sentence for a command that needs an existing store and found none."""
        create = "create one with `papayya migrate` or by running your script"
        if self.origin.source in ("found", "project", "default"):
            if self.origin.source == "default":
                where = f"no .papayya/ in {self.home.parent} or above, and PAPAYYA_DATABASE_URL is unset"
            else:
                where = f"{self.home} ({self._why('home')}) holds no database yet"
            return (
                f"There is no papayya store here: {where}; run this in your project's folder, set "
                f"PAPAYYA_DATABASE_URL, or {create} here."
            )
        return (
            f"There is no papayya store under {self.home} ({self._why('home')}); fix the setting, or "
            f"{create} there."
        )

    def _why(self, field: str) -> str:
        o = self.origin
        if o.source == "env":
            return str(o.where)
        if o.source == "explicit":
            return "papayya.configure"
        if o.source == "file":
            return f"{field} in {o.where}"
        if o.source == "found":
            here = Path.cwd().resolve() / STORE_DIR
            return "found here" if Path(str(o.where)) == here else "found above here"
        if o.source == "project":
            return f"beside {o.where}"
        return "default"


def store_location(found: Effective) -> StoreLocation:
    """Which store ``found`` (the settings in effect) points at, and why."""
    s = found.settings
    if s.database_url is not None:
        return StoreLocation(s.database_url, s.home, found.origins["database_url"])
    return StoreLocation(None, s.home.expanduser().resolve(), found.origins["home"])


# -- showing ----------------------------------------------------------------------------------------

_URL_PASSWORD = re.compile(r"(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]+)")
_URL_USERINFO = re.compile(r"^([a-z][a-z0-9+.-]*://[^:/@?#]*):([^@/?#]*)@", re.IGNORECASE)


def redact_url(text: str) -> str:
    """``text`` with any database password replaced by ``***`` (URL user info, ``password=``)."""
    text = _URL_USERINFO.sub(r"\1:***@", text)
    return _URL_PASSWORD.sub(r"\1***", text)


# -- explicit values (papayya.configure) ----------------------------------------------------------

_lock = threading.Lock()
_explicit: dict[str, Any] = {}


def explicit_overrides() -> dict[str, Any]:
    with _lock:
        return dict(_explicit)


def set_explicit(values: dict[str, Any]) -> None:
    with _lock:
        _explicit.update(values)


def clear_explicit() -> None:
    with _lock:
        _explicit.clear()
