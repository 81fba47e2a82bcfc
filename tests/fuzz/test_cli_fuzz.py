"""The command line under generated arguments: every command answers, or refuses in one sentence, and a
refusal changes nothing already recorded.

Each case runs ``papayya.cli.main([...])`` in this process (no subprocess: thousands of cases in well
under two minutes) against a database of this module's own on the session's server (the checksum reads
every papayya table per case, so it must not grow with the rest of the suite), seeded with a tenant, a
run of every outcome and its items, so generated arguments mix real ids, their prefixes and keys with
hostile text: NaN and 1e-100000 amounts, bytes that are not UTF-8 (as Python hands them over in
``sys.argv``), JSON that no store holds, long and odd tenant ids, options in the wrong places. Each
case must:

- exit 0, or exit 2 with exactly one line on stderr (``papayya: ...`` or, with ``--json``, one JSON
  object); never exit 1 ("internal error") nor print a traceback;
- when refused, leave every papayya table as it was (a checksum of all of them before and after).

Cases: ``PAPAYYA_FUZZ_CASES`` (default 5000, what CI runs); e.g. ``PAPAYYA_FUZZ_CASES=50000 pytest
tests/fuzz/test_cli_fuzz.py`` for a longer hunt. The number of cases run and the time taken are printed.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

import papayya
from papayya import Item, agent, run
from papayya.budgets import Budgets
from papayya.cli import main
from papayya.errors import StoreUnavailable
from papayya.runtime import Runtime, get_runtime
from tests.conftest import summary_line

pytest.importorskip("hypothesis", reason="hypothesis is not installed (the dev extra has it)")

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

CASES = int(os.environ.get("PAPAYYA_FUZZ_CASES", "5000"))
SUFFIX = uuid.uuid4().hex[:6]
TENANT = f"fuzz-{SUFFIX}"
OTHER = f"fuzz-{SUFFIX}/spend"


def _reply(*, prompt: str) -> dict[str, Any]:
    return {
        "model": "gpt-4o-mini",
        "usage": {"prompt_tokens": 10, "completion_tokens": 5},
        "choices": [{"finish_reason": "stop", "message": {"content": prompt}}],
    }


@agent(name="fuzz-cli")
def work(item: Item) -> Any:
    run.llm("answer", provider="openai", model="gpt-4o-mini", max_tokens=10)(_reply, prompt=item.id)
    if item.id.endswith("3"):
        raise ValueError(f"cannot read item {item.id!r}")
    if item.id.endswith("2"):
        run.degrade("low_confidence", path="summary", message="unsure")
    return {"id": item.id}


class Checksum:
    """Every papayya table's row count and a sum of its rows' hashes, in one query on one connection."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True)
        tables = [
            r[0]
            for r in self.conn.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = 'papayya' AND table_type = 'BASE TABLE' ORDER BY 1"
            )
        ]
        self.query = psycopg.sql.SQL(" UNION ALL ").join(
            psycopg.sql.SQL(
                "SELECT {}, count(*), coalesce(sum(hashtext(t::text)::bigint), 0) FROM {} t"
            ).format(psycopg.sql.Literal(table), psycopg.sql.Identifier("papayya", table))
            for table in tables
        )

    def __call__(self) -> list[tuple[Any, ...]]:
        return sorted(self.conn.execute(self.query).fetchall())  # UNION ALL keeps no order

    def close(self) -> None:
        self.conn.close()


# -- values: real ones, near misses and hostile text -----------------------------------------------

HOSTILE = [
    "",
    " ",
    "-",
    "--",
    "=",
    "NaN",
    "-NaN",
    "Infinity",
    "-Infinity",
    "inf",
    "1e-100000",
    "1e100000",
    "1e999",
    "-1",
    "-0",
    "0",
    "0.0000000000000000001",
    "1" * 5000,
    "$40",
    "40",
    "12.50",
    "1,000",
    "0x10",
    "\udcff",
    "a\udcffb",
    "\u202e",
    "\u200b",
    "é",
    "テナント",
    "'; DROP TABLE papayya.items; --",
    "%2F",
    "a/b",
    "../..",
    "null",
    "true",
    "[]",
    "{}",
    '{"a": NaN}',
    "[" * 2000,
    '"\\u0000"',
    '"\\ud800"',
    '{"\\u0000": 1}',
    "x" * 200,
    "2026-13-01",
    "2026-05-01T12:00:00+02:00",
    "9999-12-31",
    "0001-01-01",
    "30m",
    "99999999w",
    "7d",
    "tenant,model",
    "run,run",
    "bogus",
]


def _ids(state: dict[str, Any]) -> list[str]:
    run_id, item_id = state["run_id"], state["item_id"]
    return [
        run_id,
        run_id[:8],
        run_id[:4],
        run_id.upper(),
        item_id,
        item_id[:8],
        "i01",
        "i03",
        str(uuid.uuid4()),
    ]


def texts(state: dict[str, Any]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(HOSTILE),
        st.sampled_from([*_ids(state), TENANT, OTHER]),
        st.text(max_size=30).filter(lambda s: "\x00" not in s),  # argv never holds NUL
        st.from_regex(r"-?[0-9]{0,6}(\.[0-9]{0,20})?(e[-+]?[0-9]{1,6})?", fullmatch=True),
    )


def tenants(state: dict[str, Any]) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from([TENANT, OTHER, f"{TENANT}-new"]), texts(state))


def numbers() -> st.SearchStrategy[str]:
    return st.one_of(st.integers(-(2**70), 2**70).map(str), st.sampled_from(HOSTILE[5:22]))


def pairs(state: dict[str, Any]) -> st.SearchStrategy[str]:
    return st.builds(
        lambda k, v: f"{k}={v}", st.sampled_from(["tier", "k", "", " ", "é", "\udcff"]), texts(state)
    )


def prices(state: dict[str, Any]) -> st.SearchStrategy[str]:
    amount = st.one_of(numbers(), st.sampled_from(["-", "", "0.15", "1e-100000", "NaN"]))
    return st.one_of(
        st.builds(
            lambda p, m, a: f"{p}:{m}={'/'.join(a)}",
            st.sampled_from(["openai", "anthropic", "", "\udcff", "a:b"]),
            st.sampled_from(["gpt-4o-mini", "x", "", "m=1"]),
            st.lists(amount, min_size=0, max_size=5),
        ),
        texts(state),
    )


def command(state: dict[str, Any]) -> st.SearchStrategy[list[str]]:
    """One command line: a command and a generated mix of its options (and some it does not take)."""
    t = texts(state)

    def opt(name: str, values: st.SearchStrategy[str]) -> st.SearchStrategy[list[str]]:
        return values.map(lambda v: [name, v])

    flag = lambda name: st.just([name])  # noqa: E731
    shapes: dict[tuple[str, ...], tuple[list[st.SearchStrategy[str]], list[st.SearchStrategy[list[str]]]]] = {
        ("tenants", "add"): (
            [tenants(state)],
            [
                opt("--config", pairs(state)),
                opt("--price", prices(state)),
                opt("--budget", numbers()),
                opt("--period", st.sampled_from(["month", "day", "total", "week", ""])),
            ],
        ),
        ("tenants", "set"): (
            [tenants(state)],
            [
                opt("--config", pairs(state)),
                opt("--unset", t),
                opt("--price", prices(state)),
                opt("--unset-price", prices(state)),
                opt("--budget", numbers()),
                opt("--period", st.sampled_from(["month", "day", "total", "week"])),
                flag("--no-budget"),
                opt("--max-running", numbers()),
                flag("--no-max-running"),
            ],
        ),
        ("tenants", "show"): ([tenants(state)], []),
        ("runs", "list"): ([], [opt("--tenant", tenants(state)), opt("--limit", numbers())]),
        ("runs", "show"): ([t], [opt("--top", numbers())]),
        ("runs", "set"): ([t], [opt("--budget", numbers()), flag("--no-budget")]),
        ("items", "list"): (
            [t],
            [
                opt("--tenant", tenants(state)),
                opt("--outcome", st.sampled_from(["failed", "degraded", "succeeded", "nope"])),
                opt("--since", t),
                opt("--limit", numbers()),
                opt("--after", t),
            ],
        ),
        ("items", "show"): ([t], [opt("--run", t), opt("--tenant", tenants(state)), flag("--traceback")]),
        ("failures",): (
            [t],
            [
                opt("--tenant", tenants(state)),
                opt("--agent", t),
                opt("--since", t),
                opt("--until", t),
                opt("--limit", numbers()),
            ],
        ),
        ("costs",): (
            [],
            [
                opt(
                    "--by", st.one_of(st.sampled_from(["tenant", "run", "model", "agent", "tenant,model"]), t)
                ),
                opt("--tenant", tenants(state)),
                opt("--since", t),
                opt("--until", t),
            ],
        ),
        ("replay",): (
            [],
            [
                opt("--item", t),
                opt("--run", t),
                opt("--outcome", st.sampled_from(["failed", "degraded", "succeeded", "x"])),
                opt("--cluster", t),
                opt("--ids", t),
                opt("--tenant", tenants(state)),
                flag("--from-journal"),
                opt("--concurrency", numbers()),
            ],
        ),
        ("limits", "set"): (
            # never the provider the seeded agent calls: a limit of 1 request a minute set by one case
            # would make a later `replay` case wait minutes for its calls (a real wait, not a defect)
            [st.one_of(st.sampled_from(["anthropic", "anthropic:claude-x", "a:", ":b"]), t)],
            [opt("--tenant", tenants(state)), opt("--rpm", numbers()), opt("--tpm", numbers())],
        ),
        ("config", "show"): ([], []),
    }

    def build(name: tuple[str, ...]) -> st.SearchStrategy[list[str]]:
        positional, options = shapes[name]
        args = st.tuples(*(st.one_of(p.map(lambda v: [v]), st.just([])) for p in positional)).map(
            lambda parts: [a for part in parts for a in part]
        )
        chosen = (
            st.lists(st.one_of(*options), max_size=5).map(lambda o: [a for x in o for a in x])
            if options
            else st.just([])
        )
        junk = st.lists(
            st.one_of(t, st.sampled_from(["--help", "--bogus", "-v", "--"])), min_size=1, max_size=2
        )
        extra = st.one_of(st.just([]), st.just([]), st.just([]), junk)
        return st.tuples(args, chosen, extra, st.booleans()).map(
            lambda x: [*name, *x[0], *x[1], *x[2], *(["--json"] if x[3] else [])]
        )

    return st.sampled_from(sorted(shapes)).flatmap(build)


@pytest.fixture(scope="module")
def fuzz_url(database_url: str) -> Iterator[str]:
    """A fresh database on the session's server for this module alone, dropped at its end."""
    name = f"papayya_fuzz_{SUFFIX}"
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    info = psycopg.conninfo.conninfo_to_dict(database_url)
    info["dbname"] = name
    try:
        yield psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in info.items() if v is not None})
    finally:
        papayya.reset(forget_configuration=True)
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def rt(fuzz_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    """The session's ``rt``, on this module's own database."""
    for var in [v for v in os.environ if v.startswith("PAPAYYA_") and v != "PAPAYYA_TEST_DATABASE_URL"]:
        monkeypatch.delenv(var)
    papayya.reset(forget_configuration=True)
    papayya.configure(database_url=fuzz_url, home=tmp_path / ".papayya", progress=False)
    yield get_runtime()
    papayya.reset(forget_configuration=True)


@pytest.fixture
def seeded(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    # A lowered budget waits out the chunks leased under the old one (1 s); nothing leases here.
    monkeypatch.setattr(Budgets, "CHUNK_SECONDS", 0)
    papayya.tenants.add(TENANT, exist_ok=True)
    # What earlier cases may have left: a budget, a cap or rate limits that would hold this run back
    papayya.tenants.set_budget(TENANT, None)
    papayya.tenants.set_max_running(TENANT, None)
    with psycopg.connect(rt.store.url, autocommit=True) as conn:
        conn.execute("DELETE FROM papayya.rate_limits")
        conn.execute("DELETE FROM papayya.rate_closures")
    papayya.tenants.add(OTHER, exist_ok=True)
    result = work.map([{"id": f"i{n:02d}"} for n in range(8)], tenant=TENANT)
    item = next(iter(result.items()))
    return {"run_id": str(result.run_id), "item_id": str(item.item_id)}


def test_the_cli_answers_or_refuses_in_one_sentence(
    seeded: dict[str, Any], fuzz_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    counts = {"cases": 0, "ok": 0, "refused": 0}
    checksum = Checksum(fuzz_url)
    timing = {"cli": 0.0}
    known = {"sum": checksum()}
    began = time.monotonic()

    @settings(
        max_examples=CASES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.data())
    def case(data: st.DataObject) -> None:
        argv = data.draw(command(seeded), label="argv")
        before = known["sum"]  # what the store held after the last case (only an answer changes it)
        capsys.readouterr()
        t0 = time.monotonic()
        code = main(argv)
        timing["cli"] += time.monotonic() - t0
        _out, err = capsys.readouterr()
        counts["cases"] += 1
        assert code in (0, 2), (argv, code, err)
        assert "Traceback" not in err, (argv, err)
        assert "internal error" not in err, (argv, err)
        if code == 0:
            counts["ok"] += 1
            known["sum"] = checksum()
            return
        counts["refused"] += 1
        lines = err.splitlines()
        assert len(lines) == 1, (argv, err)
        if "--json" in argv[: argv.index("--")] if "--" in argv else "--json" in argv:
            assert json.loads(lines[0])["exit_code"] == 2, (argv, err)
        else:
            assert lines[0].startswith("papayya: "), (argv, err)
        assert checksum() == before, f"refused {argv!r} changed the store"

    try:
        case()
    finally:
        checksum.close()
    took = time.monotonic() - began
    summary_line(
        f"CLI fuzz: {counts['cases']:,} cases in {took:.1f} s "
        f"({counts['ok']:,} answered, {counts['refused']:,} refused in one sentence; "
        f"{timing['cli']:.1f} s in the CLI)"
    )


# -- what fuzzing found, kept as plain cases ---------------------------------------------------------

FOUND = [
    ["tenants", "set", TENANT, "--config", "k=NaN"],
    ["tenants", "set", TENANT, "--budget", "1e-100000"],
    ["tenants", "set", TENANT, "--price", "openai:gpt-4o-mini=1/2", "--budget", "1e-100000"],
    ["tenants", "set", TENANT, "--price", "openai:gpt-4o-mini=1e-100000/2"],
    ["tenants", "set", TENANT, "--config", 'k="\\u0000"'],
    ["tenants", "add", f"{TENANT}-x", "--config", "k=1e999"],
    ["failures", "--agent", "\udcff"],
    ["runs", "list", "--tenant", "a\udcffb"],
    ["costs", "--until", "99999999w"],
]


@pytest.mark.parametrize(
    "argv", FOUND, ids=[" ".join(a[:3]).replace(TENANT, "TENANT") + f" #{n}" for n, a in enumerate(FOUND)]
)
def test_found_by_fuzzing(
    seeded: dict[str, Any], fuzz_url: str, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    checksum = Checksum(fuzz_url)
    try:
        before = checksum()
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1, err
        assert err.startswith("papayya: "), err
        assert "internal error" not in err
        assert checksum() == before, "a refused command changed the store"
    finally:
        checksum.close()


def test_a_config_file_that_is_not_text_is_refused(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    binary = tmp_path / "binary"
    binary.write_bytes(b"\x7fELF\x02\x01\x01\x00\xd0\xff\xfe")
    monkeypatch.setenv("PAPAYYA_CONFIG_FILE", str(binary))
    capsys.readouterr()
    assert main(["config", "show"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert "PAPAYYA_CONFIG_FILE" in err, err
    assert "UTF-8" in err, err


def test_tenants_set_applies_all_or_nothing(
    seeded: dict[str, Any],
    fuzz_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = [
        "tenants",
        "set",
        TENANT,
        "--config",
        "tier=gold",
        "--price",
        "openai:gpt-4o=1/2",
        "--budget",
        "3",
    ]
    argv += ["--max-running", "5"]
    checksum = Checksum(fuzz_url)
    before = checksum()

    # Given a change whose last part fails after the others were written (the store went away, say)
    def fails(tenant_id: str, max_running: int | None) -> None:
        raise StoreUnavailable("Lost the PostgreSQL store (test); check the server is up, then retry.")

    with monkeypatch.context() as m:
        m.setattr(papayya.tenants, "set_max_running", fails)
        assert main(argv) == 2
    # Then none of it went in: not the config, the price nor the budget
    try:
        assert checksum() == before
    finally:
        checksum.close()
    # And the same change applies whole once nothing fails
    assert main(argv) == 0
    record = papayya.tenants.get(TENANT)
    assert (record.config["tier"], record.budget_usd, record.max_running) == ("gold", 3, 5)
    assert any(p.model == "gpt-4o" for p in papayya.tenants.prices(TENANT))
