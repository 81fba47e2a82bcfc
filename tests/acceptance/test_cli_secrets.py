"""``papayya tenants secret``, run the way a user runs it: ``python -m papayya`` in a subprocess, the
value piped on stdin or read from a file, never given as an argument and never printed back."""

from __future__ import annotations

import base64
import json
import os
import shlex
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import papayya
from papayya import tenants
from papayya.runtime import Runtime
from papayya.secrets import key_id
from tests.acceptance.test_cli import Result, assert_one_sentence, ok_json, ok_text
from tests.integration.test_secrets import read


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def secret(
    env: dict[str, str], *args: str, stdin: bytes | None = None, key: str | None = None, **extra: str
) -> Result:
    """Run ``papayya tenants secret ARGS`` with ``stdin`` piped in (empty when None)."""
    overrides = {"PAPAYYA_SECRET_KEY": key} if key is not None else {}
    proc = subprocess.run(
        [sys.executable, "-m", "papayya", "tenants", "secret", *args],
        env={**env, **overrides, **extra},
        input=stdin or b"",
        capture_output=True,
        timeout=120,
        check=False,
    )
    return proc.returncode, proc.stdout.decode("utf-8"), proc.stderr.decode("utf-8")


@pytest.fixture
def key() -> str:
    return new_key()


@pytest.fixture
def tenant_id(rt: Runtime, tenant: str) -> str:
    tenants.add(tenant)
    return tenant


@pytest.fixture
def value() -> str:
    return f"sk-proj-{uuid.uuid4().hex}{uuid.uuid4().hex}"


def test_set_list_replace_and_delete_never_print_the_value(
    rt: Runtime, cli_env: dict[str, str], tenant_id: str, key: str, value: str
) -> None:
    seen: list[str] = []

    def run_(*args: str, stdin: bytes | None = None) -> Result:
        result = secret(cli_env, *args, stdin=stdin, key=key)
        seen.extend(result[1:])
        return result

    # Set from stdin (with the newline `echo` adds), then list
    text = ok_text(run_("set", tenant_id, "openai_api_key", stdin=f"{value}\n".encode()))
    assert text.strip() == (
        f"Stored secret 'openai_api_key' of tenant '{tenant_id}', encrypted under key "
        f"{key_id(base64.b64decode(key))}; its items read it with run.secret('openai_api_key')."
    )
    listed = ok_json(run_("list", tenant_id, "--json"))
    assert [s["name"] for s in listed] == ["openai_api_key"]
    assert set(listed[0]) == {"name", "key_id", "created_at", "updated_at"}
    table = ok_text(run_("list", tenant_id))
    assert table.splitlines()[0].split() == ["name", "key", "created", "updated"]
    assert "openai_api_key" in table

    # The item reads exactly what was piped in, less the newline
    papayya.configure(secret_key=key)
    assert read(tenant_id) == value

    # Replace, with --json
    again = ok_json(run_("set", tenant_id, "openai_api_key", "--json", stdin=b"sk-second\r\n"))
    assert (again["tenant"], again["name"], again["created"]) == (tenant_id, "openai_api_key", False)
    assert again["updated_at"] > again["created_at"]
    assert read(tenant_id) == "sk-second"
    assert "Replaced secret" in ok_text(run_("set", tenant_id, "openai_api_key", stdin=value.encode()))

    # Delete
    assert ok_text(run_("delete", tenant_id, "openai_api_key")).strip() == (
        f"Deleted secret 'openai_api_key' of tenant '{tenant_id}'."
    )
    assert ok_json(run_("list", tenant_id, "--json")) == []
    assert "has no secrets" in ok_text(run_("list", tenant_id))
    assert_one_sentence(run_("delete", tenant_id, "openai_api_key"), "has no secret 'openai_api_key'")

    assert all(value not in text and key not in text for text in seen)


def test_from_file(
    rt: Runtime, cli_env: dict[str, str], tenant_id: str, key: str, value: str, tmp_path: Path
) -> None:
    path = tmp_path / "key.txt"
    path.write_text(value + "\n")
    code, out, err = secret(cli_env, "set", tenant_id, "openai_api_key", "--from-file", str(path), key=key)
    assert (code, err) == (0, ""), err
    assert value not in out
    papayya.configure(secret_key=key)
    assert read(tenant_id) == value
    assert_one_sentence(
        secret(cli_env, "set", tenant_id, "x", "--from-file", str(tmp_path / "missing"), key=key),
        "Cannot read",
        "No such file",
    )
    (tmp_path / "empty").write_bytes(b"\n")
    assert_one_sentence(
        secret(cli_env, "set", tenant_id, "x", "--from-file", str(tmp_path / "empty"), key=key),
        "No secret value came from",
        "put the value in the file",
    )


def test_a_value_given_as_an_argument_is_refused_and_not_echoed(
    rt: Runtime, cli_env: dict[str, str], tenant_id: str, key: str, value: str
) -> None:
    for args in ([value], ["--value", value], [f"--value={value}"]):
        line = assert_one_sentence(
            secret(cli_env, "set", tenant_id, "openai_api_key", *args, key=key),
            "A secret value is never taken as an argument",
            "pipe it on stdin or give --from-file PATH",
        )
        assert value not in line
    assert tenants.secret_names(tenant_id) == []


def test_bad_input_is_one_sentence_without_the_value(
    rt: Runtime, cli_env: dict[str, str], tenant_id: str, key: str, value: str
) -> None:
    stdin = value.encode()
    cases = [
        (("set", tenant_id, "openai_api_key"), b"", key, ["No secret value came from stdin", "--from-file"]),
        (("set", tenant_id, "openai_api_key"), b"\n", key, ["No secret value came from stdin"]),
        (("set", tenant_id, "openai_api_key"), b"\xff\xfe", key, ["is not UTF-8 text"]),
        (("set", tenant_id, "bad name"), stdin, key, ["A secret name is 1-64 letters", "'bad name' is not"]),
        (("set", tenant_id, "x" * 65), stdin, key, ["A secret name is 1-64 letters"]),
        (("set", tenant_id, "a/b"), stdin, key, ["A secret name is 1-64 letters"]),
        (("set", "no-such-tenant", "k"), stdin, key, ["Tenant 'no-such-tenant' does not exist"]),
        (("list", "no-such-tenant"), None, key, ["Tenant 'no-such-tenant' does not exist"]),
        (("delete", "no-such-tenant", "k"), None, key, ["Tenant 'no-such-tenant' does not exist"]),
        (("set", tenant_id, "k"), b"x" * 70_000, key, ["over the limit of 65,536 bytes"]),
        (("set", tenant_id, "k"), stdin, None, ["No secret key is configured", "PAPAYYA_SECRET_KEY"]),
        (("rotate",), None, None, ["No secret key is configured"]),
    ]
    for args, piped, k, fragments in cases:
        env = {k2: v for k2, v in cli_env.items() if k2 != "PAPAYYA_SECRET_KEY"}
        line = assert_one_sentence(secret(env, *args, stdin=piped, key=k), *fragments)
        assert value not in line, args
        if k is not None:
            assert k not in line
    assert tenants.secret_names(tenant_id) == []

    # With --json the refusal is one JSON object on stderr
    code, out, err = secret(cli_env, "set", tenant_id, "bad name", "--json", stdin=stdin, key=key)
    assert (code, out) == (2, "")
    assert json.loads(err)["exit_code"] == 2


def test_a_malformed_key_setting_is_refused_without_echoing_it(
    rt: Runtime, cli_env: dict[str, str], tenant_id: str, value: str
) -> None:
    short = base64.b64encode(os.urandom(16)).decode()
    for bad, why in [(short, "decodes to 16 bytes, not 32"), ("hunter2 hunter2!", "not base64 text")]:
        line = assert_one_sentence(
            secret(cli_env, "set", tenant_id, "k", stdin=value.encode(), key=bad),
            "Setting secret_key (PAPAYYA_SECRET_KEY) is invalid",
            why,
        )
        assert bad not in line


def test_rotate_reseals_under_the_new_key_and_a_wrong_key_decrypts_nothing(
    rt: Runtime, cli_env: dict[str, str], tenant_id: str, key: str, value: str
) -> None:
    ok_text(secret(cli_env, "set", tenant_id, "openai_api_key", stdin=value.encode(), key=key))
    old_id = key_id(base64.b64decode(key))
    new = new_key()
    # A wrong key alone: names still list, but nothing is re-sealed and nothing decrypts
    line = assert_one_sentence(
        secret(cli_env, "rotate", "--tenant", tenant_id, key=new),
        f"Secret 'openai_api_key' of tenant '{tenant_id}' was sealed under key {old_id}",
        "which is not configured here",
    )
    assert value not in line
    assert new not in line
    assert key not in line
    assert [s["key_id"] for s in ok_json(secret(cli_env, "list", tenant_id, "--json", key=new))] == [old_id]
    # With the old key kept as PAPAYYA_SECRET_KEY_OLD, rotate re-seals it under the new one
    env = {**cli_env, "PAPAYYA_SECRET_KEY_OLD": key}
    text = ok_text(secret(env, "rotate", "--tenant", tenant_id, key=new))
    assert (
        text.strip()
        == f"Re-encrypted 1 secret of tenant '{tenant_id}' under key {key_id(base64.b64decode(new))}."
    )
    done = ok_json(secret(env, "rotate", "--tenant", tenant_id, "--json", key=new))
    assert done == {
        "tenant": tenant_id,
        "key_id": key_id(base64.b64decode(new)),
        "resealed": 0,
        "by_key": {key_id(base64.b64decode(new)): 1},
    }
    papayya.configure(secret_key=new)
    assert read(tenant_id) == value


def test_help_names_the_secret_commands(cli_env: dict[str, str]) -> None:
    code, out, _ = subprocess_help(cli_env, "tenants", "--help")
    assert code == 0
    assert "secret" in out
    code, out, _ = subprocess_help(cli_env, "tenants", "secret", "--help")
    assert code == 0
    for command in ("set", "list", "delete", "rotate"):
        assert command in out


def subprocess_help(env: dict[str, str], *args: str) -> Result:
    proc = subprocess.run(
        [sys.executable, "-m", "papayya", *args], env=env, capture_output=True, timeout=60, check=False
    )
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


def test_at_a_terminal_the_value_is_asked_for_without_echo(
    rt: Runtime, cli_env: dict[str, str], tenant_id: str, key: str, value: str
) -> None:
    script = shutil.which("script")
    if script is None:
        pytest.skip("util-linux's `script` is not installed, so there is no terminal to run papayya in")
    command = shlex.join(
        [sys.executable, "-m", "papayya", "tenants", "secret", "set", tenant_id, "openai_api_key"]
    )
    with subprocess.Popen(
        [script, "-qec", command, "/dev/null"],
        env={**cli_env, "PAPAYYA_SECRET_KEY": key},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    ) as proc:
        assert proc.stdin is not None
        assert proc.stdout is not None
        seen = b""
        while b"Value of openai_api_key" not in seen:  # type only once echo is off, as a person would
            chunk = os.read(proc.stdout.fileno(), 4096)
            assert chunk, seen
            seen += chunk
        proc.stdin.write(value.encode() + b"\n")
        proc.stdin.close()
        seen += proc.stdout.read()
        assert proc.wait(timeout=60) == 0, seen
    transcript = seen.decode()
    assert "Stored secret 'openai_api_key'" in transcript
    assert value not in transcript
    papayya.configure(secret_key=key)
    assert read(tenant_id) == value
