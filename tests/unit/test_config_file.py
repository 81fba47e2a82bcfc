"""Settings from ``[tool.papayya]``: precedence explicit > environment > file > default, and errors that
name the file and the key."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from papayya import ConfigError
from papayya.config import KEY_SETTINGS, effective_settings, find_config_file, load_settings, redact_url

SOURCES = ("explicit", "env", "file")
VALUES = {"explicit": 11.0, "env": 22.0, "file": 33.0, "default": 60.0}


@pytest.fixture(autouse=True)
def clean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory of its own and no PAPAYYA_* variables from the shell running the tests."""
    for var in [v for v in os.environ if v.upper().startswith("PAPAYYA_")]:
        monkeypatch.delenv(var)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def pyproject(folder: Path, table: str) -> Path:
    return write(folder / "pyproject.toml", f'[project]\nname = "app"\n\n[tool.papayya]\n{table}\n')


@pytest.mark.parametrize(
    "present",
    [set(c) for n in range(len(SOURCES) + 1) for c in itertools.combinations(SOURCES, n)],
    ids=lambda s: "+".join(sorted(s)) or "none",
)
def test_precedence_is_explicit_then_env_then_file_then_default(
    present: set[str], clean: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if "file" in present:
        pyproject(clean, f"lease_seconds = {VALUES['file']}")
    if "env" in present:
        monkeypatch.setenv("PAPAYYA_LEASE_SECONDS", str(VALUES["env"]))
    explicit = {"lease_seconds": VALUES["explicit"]} if "explicit" in present else {}

    found = effective_settings(**explicit)

    winner = next((s for s in SOURCES if s in present), "default")
    assert found.settings.lease_seconds == VALUES[winner]
    assert found.origins["lease_seconds"].source == winner
    assert found.origins["max_stalls"].source == "default"


def test_origins_say_which_variable_and_which_file(clean: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = pyproject(clean, 'backend = "celery"\nmax_stalls = 5')
    monkeypatch.setenv("PAPAYYA_MAX_STALLS", "7")

    found = effective_settings(pool_size=4)

    assert found.file is not None
    assert found.file.path == path
    assert (found.settings.backend, found.settings.max_stalls, found.settings.pool_size) == ("celery", 7, 4)
    assert str(found.origins["backend"]) == str(path)
    assert str(found.origins["max_stalls"]) == "env PAPAYYA_MAX_STALLS"
    assert str(found.origins["pool_size"]) == "explicit"
    assert str(found.origins["otel"]) == "default"


def test_the_nearest_pyproject_with_a_papayya_table_is_read(
    clean: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a project with [tool.papayya] and, below it, a package whose pyproject.toml has no such table
    pyproject(clean, 'unknown_tenants = "refuse"')
    write(clean / "pkg" / "pyproject.toml", '[project]\nname = "pkg"\n')
    deep = clean / "pkg" / "src" / "module"
    deep.mkdir(parents=True)
    # When papayya starts from deep inside it
    monkeypatch.chdir(deep)
    # Then the project's table is the one in effect
    assert load_settings().unknown_tenants == "refuse"
    # And a nearer table wins over a farther one
    pyproject(clean / "pkg", 'unknown_tenants = "create"')
    assert load_settings().unknown_tenants == "create"


def test_no_file_means_defaults(clean: Path) -> None:
    write(clean / "pyproject.toml", '[project]\nname = "app"\n[tool.ruff]\nline-length = 100\n')
    found = effective_settings()
    assert found.file is None
    assert found.settings.backend == "native"
    assert {o.source for o in found.origins.values()} == {"default"}


def test_a_relative_home_is_relative_to_the_file(clean: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pyproject(clean, 'home = "var/papayya"')
    (clean / "sub").mkdir()
    monkeypatch.chdir(clean / "sub")
    assert load_settings().home == clean / "var" / "papayya"


def test_config_file_variable_points_at_another_file(clean: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pyproject(clean, 'backend = "celery"')
    other = write(clean / "elsewhere" / "papayya.toml", 'backend = "sqs"\nlease_seconds = 5\n')
    monkeypatch.setenv("PAPAYYA_CONFIG_FILE", str(other))

    found = effective_settings()

    assert (found.settings.backend, found.settings.lease_seconds) == ("sqs", 5.0)
    assert found.origins["backend"].where == str(other)
    # A pyproject-style file named by the variable is read from its [tool.papayya] table
    shared = pyproject(clean / "shared", "max_stalls = 9")
    monkeypatch.setenv("PAPAYYA_CONFIG_FILE", str(shared))
    assert load_settings().max_stalls == 9


def test_every_setting_can_come_from_the_file(clean: Path) -> None:
    pyproject(
        clean,
        """
database_url = "postgresql://app@db.internal:5433/papayya"
home = "/srv/papayya"
backend = "temporal"
unknown_tenants = "refuse"
default_tenant = "internal"
tenant = "acme"
max_input_bytes = 2048
lease_seconds = 30
max_stalls = 2
pool_size = 4
progress = false
auto_migrate = false
default_max_output_tokens = 512
otel = true
celery_unacked_seconds = 60
llm_mode = "batch"
batch_window_seconds = 5
batch_poll_seconds = 10
secret_key_file = "/run/secrets/papayya.keys"
""",
    )
    found = effective_settings()
    # ... every setting but a key itself, refused in a file (tests/integration/test_secrets.py)
    assert {o.source for n, o in found.origins.items() if n not in KEY_SETTINGS} == {"file"}
    assert found.settings.secret_key_file == Path("/run/secrets/papayya.keys")
    s = found.settings
    assert (s.database_url, s.home, s.backend) == (
        "postgresql://app@db.internal:5433/papayya",
        Path("/srv/papayya"),
        "temporal",
    )
    assert (s.unknown_tenants, s.max_input_bytes, s.lease_seconds, s.max_stalls) == ("refuse", 2048, 30.0, 2)
    assert (s.default_tenant, s.tenant, s.celery_unacked_seconds) == ("internal", "acme", 60)
    assert (s.pool_size, s.progress, s.auto_migrate, s.default_max_output_tokens, s.otel) == (
        4,
        False,
        False,
        512,
        True,
    )


# -- errors -----------------------------------------------------------------------------------------


def one_sentence(fragments: tuple[str, ...]) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_an_unknown_key_names_the_file_and_the_key(clean: Path) -> None:
    path = pyproject(clean, "lease_secs = 30")
    one_sentence(
        ("Unknown setting 'lease_secs'", str(path), "[tool.papayya]", "did you mean 'lease_seconds'?")
    )


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("lease_seconds = 0", "greater than 0"),
        ('max_stalls = "many"', "valid integer"),
        ('backend = "drop table"', "is not a backend name"),
        ('database_url = "mysql://root@localhost/x"', "not a PostgreSQL URL"),
        ('unknown_tenants = "maybe"', "'create' or 'refuse'"),
        ("otel = 3", "valid boolean"),
    ],
)
def test_a_bad_value_names_the_file_and_the_key(clean: Path, line: str, fragment: str) -> None:
    path = pyproject(clean, line)
    key = line.split(" = ", maxsplit=1)[0]
    one_sentence((f"Setting '{key}' in [tool.papayya] of {path} is invalid", fragment))


def test_a_bad_file_value_is_reported_even_where_the_environment_overrides_it(
    clean: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = pyproject(clean, "lease_seconds = -1")
    monkeypatch.setenv("PAPAYYA_LEASE_SECONDS", "30")
    one_sentence(("'lease_seconds'", str(path)))


def test_a_bad_environment_value_names_the_variable_not_the_file(
    clean: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pyproject(clean, "lease_seconds = 30")
    monkeypatch.setenv("PAPAYYA_LEASE_SECONDS", "soon")
    message = one_sentence(("Setting lease_seconds (PAPAYYA_LEASE_SECONDS) is invalid",))
    assert "pyproject" not in message


def test_an_explicit_unknown_setting_is_refused() -> None:
    with pytest.raises(ConfigError, match="Unknown setting 'bakend': did you mean 'backend'"):
        effective_settings(bakend="celery")


def test_malformed_toml_names_the_file(clean: Path) -> None:
    path = write(clean / "pyproject.toml", "[tool.papayya]\nbackend = celery\n")
    one_sentence((str(path), "is not valid TOML"))


def test_a_broken_pyproject_that_is_not_papayyas_is_skipped(
    clean: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pyproject(clean, "max_stalls = 4")
    write(clean / "other" / "pyproject.toml", "[tool.black\n")
    monkeypatch.chdir(clean / "other")
    assert load_settings().max_stalls == 4


def test_papayya_must_be_a_table(clean: Path) -> None:
    path = write(clean / "pyproject.toml", '[tool]\npapayya = "celery"\n')
    one_sentence(("tool.papayya", str(path), "must be a table"))


def test_a_missing_config_file_is_one_sentence(clean: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAPAYYA_CONFIG_FILE", str(clean / "nope.toml"))
    one_sentence(("PAPAYYA_CONFIG_FILE names", "nope.toml", "not a file"))


def test_find_config_file_starts_where_it_is_told(clean: Path) -> None:
    path = pyproject(clean / "a", "max_stalls = 2")
    found = find_config_file(clean / "a" / "b")
    assert found is not None
    assert (found.path, found.values) == (path, {"max_stalls": 2})
    assert find_config_file(clean) is None


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app:s3cret@db:5432/papayya", "postgresql://app:***@db:5432/papayya"),
        ("postgresql://app@db/papayya", "postgresql://app@db/papayya"),
        (
            "postgresql://app@db/papayya?password=s3cret&sslmode=require",
            "postgresql://app@db/papayya?password=***&sslmode=require",
        ),
        ("host=db user=app password=s3cret dbname=p", "host=db user=app password=*** dbname=p"),
        ("host=db password='s e c' dbname=p", "host=db password=*** dbname=p"),
    ],
)
def test_passwords_are_redacted(url: str, shown: str) -> None:
    assert redact_url(url) == shown
