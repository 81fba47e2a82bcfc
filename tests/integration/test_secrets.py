"""Per-tenant secrets on a real store: each item reads its own tenant's key, the ciphertext is bound to
its tenant and name, keys rotate, and a value never lands anywhere papayya writes.

The run that uses the secrets calls papayya's FakeProvider through the real, instrumented openai
client built per item with the tenant's own key; the fake sees which key each request carried.
"""

from __future__ import annotations

import base64
import logging
import os
import pickle
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import psycopg
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from psycopg import sql

import papayya
import papayya_openai
import papayya_otel
from papayya import ConfigError, InputError, NotFound, agent, run, secrets, tenants
from papayya.cli import main as cli_main
from papayya.config import load_settings
from papayya.errors import SecretError
from papayya.runtime import Runtime, get_runtime
from papayya.secrets import Secret, key_id
from papayya.testing import FakeProvider
from tests.integration.test_otel import Otel

MODEL = "gpt-4o-mini"
log = logging.getLogger("user.secrets")


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def key_of(text: str) -> str:
    return key_id(base64.b64decode(text))


@pytest.fixture
def key(rt: Runtime) -> str:
    """A fresh secret key, configured explicitly (as PAPAYYA_SECRET_KEY would be)."""
    k = new_key()
    papayya.configure(secret_key=k)
    return k


@pytest.fixture
def other(rt: Runtime) -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def pair(key: str, tenant: str, other: str) -> dict[str, str]:
    """Two tenants, each with its own provider key stored as ``openai_api_key``."""
    values = {t: f"sk-{t}-{uuid.uuid4().hex}{uuid.uuid4().hex}" for t in (tenant, other)}
    for t, value in values.items():
        tenants.add(t)
        tenants.set_secret(t, "openai_api_key", value)
    return values


def reconfigure(**settings: Any) -> Runtime:
    """The same store, with only these secret-key settings given explicitly (the environment's apply)."""
    url, home = get_runtime().settings.database_url, get_runtime().settings.home
    papayya.reset(forget_configuration=True)
    papayya.configure(database_url=url, home=home, progress=False, **settings)
    return get_runtime()


def read(tenant: str, name: str = "openai_api_key") -> Secret:
    """The secret as an item of ``tenant`` reads it."""

    @agent(name=f"secrets.read.{uuid.uuid4().hex[:6]}")
    def reader(item: papayya.Item) -> dict[str, Any]:
        value = run.secret(name)
        return {"is_secret": isinstance(value, Secret), "repr": repr(value), "value": str(value)}

    result = reader.map([{"id": "only"}], tenant=tenant)
    (item,) = result.items()
    detail = get_runtime().store.item_detail(item.item_id)
    if item.status != "succeeded":
        raise AssertionError(str(detail["error"]))
    out = detail["output"]
    assert out["is_secret"]
    assert out["repr"] == f"Secret({name!r}, ***)"
    return Secret(out["value"], name)


# -- round trip ------------------------------------------------------------------------------------


def test_each_item_calls_the_provider_with_its_own_tenants_key(
    rt: Runtime, pair: dict[str, str], fake: FakeProvider
) -> None:
    @agent(name="secrets.summarize")
    def summarize(item: papayya.Item) -> dict[str, Any]:
        # The documented pattern: a client per item, from the tenant's own key, instrumented.
        with openai.OpenAI(
            base_url=fake.openai_url, api_key=run.secret("openai_api_key"), max_retries=0
        ) as c:
            reply = papayya_openai.instrument(c).chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": f"about {item.id}"}]
            )
        return {"summary": reply.choices[0].message.content}

    for t in pair:
        result = summarize.map([{"id": f"{t}-{i}"} for i in range(3)], tenant=t)
        assert result.counts["succeeded"] == 3

    by_item = {r.last_user_message.removeprefix("about "): r.headers["authorization"] for r in fake.requests}
    assert len(by_item) == 6
    for item_id, auth in by_item.items():
        owner = next(t for t in pair if item_id.startswith(f"{t}-"))
        assert auth == f"Bearer {pair[owner]}"


def test_a_tenant_reads_only_its_own_secrets(rt: Runtime, pair: dict[str, str], tenant: str) -> None:
    other = next(t for t in pair if t != tenant)
    tenants.set_secret(other, "anthropic_api_key", "only-the-other-tenant-has-this")
    assert read(tenant) == pair[tenant]
    assert read(other) == pair[other]
    # Given the other tenant's secret name, an item of this tenant finds nothing (no other tenant's row)
    with pytest.raises(AssertionError, match=r"has no secret 'anthropic_api_key'"):
        read(tenant, "anthropic_api_key")


def test_set_replaces_and_delete_removes_and_names_never_carry_values(
    rt: Runtime, key: str, tenant: str
) -> None:
    tenants.add(tenant)
    first = tenants.set_secret(tenant, "openai_api_key", "first-value")
    second = tenants.set_secret(tenant, "openai_api_key", "second-value")
    tenants.set_secret(tenant, "a.b-c_1", "x")
    assert read(tenant) == "second-value"
    assert (second.created_at, second.key_id) == (first.created_at, key_of(key))
    assert second.updated_at > first.updated_at
    listed = tenants.secret_names(tenant)
    assert [s.name for s in listed] == ["a.b-c_1", "openai_api_key"]
    assert "value" not in repr(listed)

    tenants.delete_secret(tenant, "openai_api_key")
    assert [s.name for s in tenants.secret_names(tenant)] == ["a.b-c_1"]
    with pytest.raises(NotFound, match=r"has no secret 'openai_api_key'; list its secrets"):
        tenants.delete_secret(tenant, "openai_api_key")


def test_the_value_is_a_str_whose_repr_is_masked() -> None:
    s = Secret("sk-live-123", "openai_api_key")
    assert s == "sk-live-123"
    assert f"Bearer {s}" == "Bearer sk-live-123"
    assert repr(s) == "Secret('openai_api_key', ***)"
    assert "sk-live" not in repr({"key": s})
    assert "sk-live" not in f"{s!r}"
    assert "sk-live" not in f"{s!r}"
    assert pickle.loads(pickle.dumps(s)) == s  # it still travels as what it is


# -- a secret never lands anywhere papayya writes --------------------------------------------------


def _table_texts(url: str) -> dict[str, str]:
    """Every table of the papayya schema, every row, as text (bytea as hex, jsonb as JSON)."""
    texts: dict[str, str] = {}
    with psycopg.connect(url) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = 'papayya' AND table_type = 'BASE TABLE' ORDER BY 1"
        ).fetchall()
        for (table,) in tables:
            query = sql.SQL("SELECT coalesce(string_agg(t::text, E'\\n'), '') FROM papayya.{} t").format(
                sql.Identifier(table)
            )
            row = conn.execute(query).fetchone()
            texts[table] = row[0] if row else ""
    return texts


def _walk_files(root: Path) -> str:
    if not root.exists():
        return ""
    return "\n".join(p.read_text("utf-8", errors="replace") for p in sorted(root.rglob("*")) if p.is_file())


def _spans(otel: Otel) -> str:
    parts = []
    for span in otel.spans.get_finished_spans():
        parts.append(span.to_json())
    return "\n".join(parts)


@pytest.fixture
def otel(rt: Runtime) -> Iterator[Otel]:
    o = Otel()
    papayya_otel.enable(tracer_provider=o.tracer_provider, meter_provider=o.meter_provider)
    yield o
    papayya_otel.disable()
    o.tracer_provider.shutdown()
    o.meter_provider.shutdown()


def test_a_secret_is_in_no_table_log_span_cli_output_or_dashboard_page(
    rt: Runtime,
    database_url: str,
    key: str,
    pair: dict[str, str],
    tenant: str,
    fake: FakeProvider,
    otel: Otel,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = pair[tenant]

    # Given an agent that uses the tenant's key for every call, logs it with %r, fails one item with
    # it in the exception (by repr) and swallows-and-logs another error mentioning it
    @agent(name="secrets.leaky", retries=1)
    def leaky(item: papayya.Item) -> dict[str, Any]:
        api_key = run.secret("openai_api_key")
        log.info("item %s uses key %r", item.id, api_key)
        with openai.OpenAI(base_url=fake.openai_url, api_key=api_key, max_retries=0) as c:
            reply = papayya_openai.instrument(c).chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": f"about {item.id}"}]
            )
        if item.id == "fails":
            raise PermissionError(f"the provider refused {api_key!r} for {item.id}")
        if item.id == "swallows":
            try:
                raise ValueError(f"key {api_key!r} rejected")
            except ValueError:
                log.exception("could not use %r", api_key)
        return {"summary": reply.choices[0].message.content, "key_length": len(api_key)}

    # When it runs
    result = leaky.map([{"id": "ok"}, {"id": "fails"}, {"id": "swallows"}], tenant=tenant)
    assert result.counts == {"succeeded": 1, "degraded": 1, "failed": 1}
    assert all(r.headers["authorization"] == f"Bearer {secret}" for r in fake.requests)

    # Then no table holds the value (the sealed row is in tenant_secrets, as bytes that are not it)
    texts = _table_texts(database_url)
    assert "tenant_secrets" in texts
    assert texts["steps"]
    assert texts["llm_calls"]
    assert "Secret('openai_api_key', ***)" in texts["items"]  # the failure's message, masked
    for value in pair.values():
        for table, text in texts.items():
            assert value not in text, table
            assert value.encode().hex() not in text, table

    # ... nor a log record, a span, the blob store or the log files under papayya's home
    logged = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert "uses key Secret('openai_api_key', ***)" in logged
    assert secret not in logged
    assert secret not in caplog.text
    spans = _spans(otel)
    assert spans
    assert secret not in spans
    assert secret not in _walk_files(get_runtime().settings.home)

    # ... nor what the CLI prints, text or JSON
    (failed,) = result.items(outcome="failed")
    reads = [
        ["runs", "show", str(result.run_id)],
        ["items", "list", str(result.run_id)],
        ["items", "show", str(failed.item_id), "--traceback"],
        ["failures", str(result.run_id)],
        ["tenants", "show", tenant],
        ["tenants", "list"],
        ["tenants", "secret", "list", tenant],
        ["costs", "--by", "tenant"],
        ["config", "show"],
    ]
    printed = []
    for args in reads:
        for extra in ([], ["--json"]):
            capsys.readouterr()
            assert cli_main([*args, *extra]) == 0, args
            got = capsys.readouterr()
            printed.append(got.out + got.err)
    assert all(secret not in text and key not in text for text in printed)
    assert any('"secret_key": {\n      "value": "**********"' in text for text in printed)

    # ... nor the dashboard, its pages and its JSON
    pytest.importorskip("starlette", reason="the ui extra is not installed: pip install 'papayya[ui]'")
    from starlette.testclient import TestClient

    from papayya.ui.app import create_app

    with TestClient(create_app(), base_url="http://127.0.0.1:8177") as client:
        for path in [
            "/",
            "/runs",
            f"/runs/{result.run_id}",
            f"/items/{failed.item_id}",
            "/tenants",
            f"/tenants/{tenant}",
            f"/api/runs/{result.run_id}",
            f"/api/runs/{result.run_id}/items",
            f"/api/items/{failed.item_id}",
            f"/api/tenants/{tenant}",
        ]:
            page = client.get(path)
            assert page.status_code == 200, path
            assert secret not in page.text, path


# -- bound to tenant and name ----------------------------------------------------------------------


def test_a_ciphertext_copied_to_another_tenant_or_name_does_not_decrypt(
    rt: Runtime, database_url: str, pair: dict[str, str], tenant: str, other: str
) -> None:
    # Given someone with write access to the database copies this tenant's sealed key to the other
    # tenant, and to another name of the same tenant
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE papayya.tenant_secrets AS dst SET key_id = src.key_id, nonce = src.nonce, "
            "ciphertext = src.ciphertext FROM papayya.tenant_secrets AS src "
            "WHERE src.tenant_id = %s AND src.name = 'openai_api_key' "
            "AND dst.tenant_id = %s AND dst.name = 'openai_api_key'",
            (tenant, other),
        )
        conn.execute(
            "INSERT INTO papayya.tenant_secrets (tenant_id, name, key_id, nonce, ciphertext) "
            "SELECT tenant_id, 'billing_key', key_id, nonce, ciphertext FROM papayya.tenant_secrets "
            "WHERE tenant_id = %s AND name = 'openai_api_key'",
            (tenant,),
        )
    # Then neither decrypts, and the refusal says why without the value
    for t, name in [(other, "openai_api_key"), (tenant, "billing_key")]:
        with pytest.raises(AssertionError) as refused:
            read(t, name)
        message = str(refused.value)
        assert "does not decrypt under its key: it was altered, or copied from another tenant" in message
        assert all(v not in message for v in pair.values())
    assert read(tenant) == pair[tenant]  # the original still opens


def test_an_altered_ciphertext_does_not_decrypt(
    rt: Runtime, database_url: str, pair: dict[str, str], tenant: str
) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE papayya.tenant_secrets "
            "SET ciphertext = set_byte(ciphertext, 0, get_byte(ciphertext, 0) # 1) WHERE tenant_id = %s",
            (tenant,),
        )
    with pytest.raises(SecretError, match="does not decrypt under its key"):
        secrets.read(get_runtime().store, secrets.keyring(get_runtime().settings), tenant, "openai_api_key")


# -- keys: missing, wrong, rotated, from a file ------------------------------------------------------


def test_without_a_key_nothing_is_stored_or_read(rt: Runtime, pair: dict[str, str], tenant: str) -> None:
    reconfigure()
    with pytest.raises(SecretError, match=r"^No secret key is configured.*PAPAYYA_SECRET_KEY"):
        tenants.set_secret(tenant, "new", "value")
    assert [s.name for s in tenants.secret_names(tenant)] == ["openai_api_key"]  # names need no key
    with pytest.raises(AssertionError, match="No secret key is configured"):
        read(tenant)


def test_a_wrong_key_decrypts_nothing_and_says_so_in_one_sentence(
    rt: Runtime, key: str, pair: dict[str, str], tenant: str
) -> None:
    wrong = new_key()
    reconfigure(secret_key=wrong)
    with pytest.raises(AssertionError) as refused:
        read(tenant)
    message = str(refused.value)
    assert f"sealed under key {key_of(key)}, which is not configured here" in message
    assert pair[tenant] not in message
    assert wrong not in message
    assert key not in message
    # Even a keyring that claims the right key id but holds another key decrypts nothing
    row = get_runtime().store.fetch_one("secret_get", {"tenant_id": tenant, "name": "openai_api_key"})
    assert row is not None
    impostor = secrets.Keyring(key_of(key), {key_of(key): AESGCM(base64.b64decode(wrong))})
    with pytest.raises(SecretError, match="does not decrypt under its key"):
        impostor.open(tenant, "openai_api_key", row)


def test_rotation_reseals_under_the_new_key_all_or_nothing(
    rt: Runtime, database_url: str, key: str, pair: dict[str, str], tenant: str, other: str
) -> None:
    new = new_key()
    # Given the new key, with the old one kept to read what it sealed
    reconfigure(secret_key=new, secret_key_old=key)
    assert read(tenant) == pair[tenant]
    tenants.set_secret(tenant, "fresh", "sealed-under-the-new-key")
    # When one tenant is rotated, then the other's secret is still under the old key
    done = tenants.rotate_secrets(tenant)
    assert (done["key_id"], done["resealed"]) == (key_of(new), 1)
    assert done["by_key"] == {key_of(new): 2}
    assert {s.key_id for s in tenants.secret_names(other)} == {key_of(key)}
    # When every tenant is rotated, then the old key can go (the session database holds other tests'
    # secrets, under keys this test does not have: they would stop the rotation, so they go first)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM papayya.tenant_secrets WHERE NOT tenant_id = ANY(%s)", ([tenant, other],))
    done = tenants.rotate_secrets()
    assert done["by_key"].get(key_of(key), 0) == 0
    assert done["resealed"] >= 1
    reconfigure(secret_key=new)
    assert read(tenant) == pair[tenant]
    assert read(other) == pair[other]
    # A row under a key no longer held stops a rotation before it changes anything
    third = new_key()
    reconfigure(secret_key=third, secret_key_old=new)
    tenants.set_secret(other, "third", "under-the-third-key")
    reconfigure(secret_key=new_key(), secret_key_old=new)
    before = {s.name: s.key_id for s in tenants.secret_names(tenant)}
    with pytest.raises(SecretError, match=rf"Secret 'third' of tenant '{other}' was sealed under key"):
        tenants.rotate_secrets()
    assert {s.name: s.key_id for s in tenants.secret_names(tenant)} == before


def test_a_key_file_holds_the_key_then_older_ones(
    rt: Runtime, key: str, pair: dict[str, str], tenant: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    new = new_key()
    path = tmp_path / "papayya.keys"
    path.write_text(f"# papayya keys: the first seals\n{new}\n{key}\n")
    monkeypatch.setenv("PAPAYYA_SECRET_KEY_FILE", str(path))
    reconfigure()
    assert read(tenant) == pair[tenant]
    assert tenants.set_secret(tenant, "fresh", "v").key_id == key_of(new)

    monkeypatch.setenv("PAPAYYA_SECRET_KEY", new)
    papayya.reset()
    with pytest.raises(ConfigError, match="Both PAPAYYA_SECRET_KEY and PAPAYYA_SECRET_KEY_FILE are set"):
        tenants.set_secret(tenant, "fresh", "v")
    monkeypatch.delenv("PAPAYYA_SECRET_KEY")
    path.write_text("not-a-key\n")
    papayya.reset()
    with pytest.raises(ConfigError) as bad:
        tenants.set_secret(tenant, "fresh", "v")
    assert "is invalid: it is not base64 text" in str(bad.value)
    assert "not-a-key" not in str(bad.value)
    path.unlink()
    papayya.reset()
    with pytest.raises(ConfigError, match=r"Cannot read the secret key file .*No such file"):
        tenants.set_secret(tenant, "fresh", "v")


def test_a_malformed_key_setting_is_one_sentence_without_the_key(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    short = base64.b64encode(b"sixteen byte key").decode()
    for value, why in [(short, "decodes to 16 bytes, not 32"), ("p@ss word!", "not base64 text")]:
        monkeypatch.setenv("PAPAYYA_SECRET_KEY", value)
        with pytest.raises(ConfigError) as bad:
            load_settings()
        assert "Setting secret_key (PAPAYYA_SECRET_KEY) is invalid" in str(bad.value)
        assert why in str(bad.value)
        assert value not in str(bad.value)
    monkeypatch.delenv("PAPAYYA_SECRET_KEY")


def test_a_key_in_the_configuration_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from papayya.config import find_config_file

    key = new_key()
    (tmp_path / "pyproject.toml").write_text(f'[tool.papayya]\nsecret_key = "{key}"\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PAPAYYA_CONFIG_FILE", raising=False)
    with pytest.raises(ConfigError, match="holds a key in a file that is often committed") as bad:
        find_config_file()
    assert key not in str(bad.value)


# -- bad input ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["", "has space", "x" * 65, "naïve", "a/b", "semi;colon", "new\nline", "ok\x00", "é"]
)
def test_a_secret_name_with_odd_characters_is_refused(rt: Runtime, key: str, tenant: str, name: str) -> None:
    tenants.add(tenant, exist_ok=True)
    with pytest.raises(InputError, match=r"^A secret name is 1-64 letters, digits, '_', '.' or '-'"):
        tenants.set_secret(tenant, name, "value")


def test_bad_values_and_unknown_tenants_are_refused_without_the_value(
    rt: Runtime, key: str, tenant: str
) -> None:
    with pytest.raises(NotFound, match=rf"Tenant '{tenant}' does not exist"):
        tenants.set_secret(tenant, "openai_api_key", "sk-unknown-tenant-value")
    with pytest.raises(NotFound, match=rf"Tenant '{tenant}' does not exist"):
        tenants.secret_names(tenant)
    tenants.add(tenant)
    with pytest.raises(InputError, match="The secret value is empty"):
        tenants.set_secret(tenant, "k", "")
    with pytest.raises(InputError, match=r"is 65,537 bytes, over the limit of 65,536"):
        tenants.set_secret(tenant, "k", "x" * 65_537)
    with pytest.raises(InputError, match="not bytes"):
        tenants.set_secret(tenant, "k", b"bytes")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="lone surrogate") as bad:
        tenants.set_secret(tenant, "k", "sk-\ud800")
    assert "sk-" not in str(bad.value)
    assert tenants.secret_names(tenant) == []
