from __future__ import annotations

import base64
import random
import string
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from papayya import fingerprint
from papayya.models import ErrorCategory, Reason


def _raise(msg: str) -> BaseException:
    try:
        raise KeyError(msg)
    except KeyError as exc:
        return exc


def _raise_elsewhere(msg: str) -> BaseException:
    try:
        raise KeyError(msg)
    except KeyError as exc:
        return exc


def test_normalise_strips_ids_numbers_quotes_hex_and_timestamps() -> None:
    message = (
        "item 9f1c2e4a-1b2c-4d5e-8f90-123456789abc at 2026-11-27T12:00:01Z failed: "
        "'acme-corp' has 42 rows, ptr 0xdeadbeef, sha 0123456789abcdef0123"
    )
    assert fingerprint.normalise(message) == ("item <n> at <ts> failed: <str> has <n> rows, ptr <n>, sha <n>")


@pytest.mark.parametrize(
    ("message", "shape"),
    [
        # unquoted ids: any token holding a digit is replaced whole, prefix and all
        ("bad page 3 of doc i0042", "bad page <n> of doc <n>"),
        ("bad page 17 of doc acme-00012.", "bad page <n> of doc <n>."),
        ("bad page 17 of doc INV-2026-0042", "bad page <n> of doc <n>"),
        ("model v2-beta refused user=u-77 (id=i0042)", "model <n> refused user=<n> (id=<n>)"),
        ("timed out after 30s talking to db.internal:5432", "timed out after <n> talking to <n>"),
        ("row 1,234.5 of 10,000 at 12:30 on 2026/01/05", "row <n> of <n> at <n> on <n>"),
        ("Ошибка на странице 3 документа д0042", "Ошибка на странице <n> документа <n>"),
        # paths
        ("cannot open /srv/tenants/acme/in/doc-17.pdf: denied", "cannot open <path>: denied"),
        ("cannot open C:\\data\\acme\\doc.pdf: denied", "cannot open <path>: denied"),
        ("cannot open \\\\fs01\\share\\x: denied", "cannot open <path>: denied"),
        ("cannot open ~/inbox/letter.pdf: denied", "cannot open <path>: denied"),
        ("cannot open ../acme/x: denied", "cannot open <path>: denied"),
        ("cannot open data/acme/report.csv: denied", "cannot open <path>: denied"),
        ("cannot open data/acme/report: denied", "cannot open <path>: denied"),
        ("cannot open invoice.pdf: denied", "cannot open <path>: denied"),
        # emails and URLs
        ("no mailbox for bob.smith+x@acme.io (bounced)", "no mailbox for <email> (bounced)"),
        ("no mailbox for <ops@acme.io>", "no mailbox for <<email>>"),
        ("GET https://api.acme.io/v1/items/i0042?page=3&q=a b", "GET <url> b"),
        ("(see http://acme.io/docs).", "(see <url>)."),
        # quoted values, hex, base64, timestamps
        ("KeyError 'body' and \"x y\" and `z`", "KeyError <str> and <str> and <str>"),
        ("can't parse 'acme' (isn't valid)", "can't parse <str> (isn't valid)"),
        ("request 0123456789abcdef0123456789abcdef failed", "request <n> failed"),
        ("request deadbeefcafebabe failed", "request <n> failed"),
        ("blob dGhpcyBpcyBhIHRlc3Qgb2YgYmFzZTY0== rejected", "blob <blob> rejected"),
        ("blob Zm9vYmFyQmF6UXV4MTIzNDU2Nzg rejected", "blob <blob> rejected"),
        ("at 2026-01-02 03:04:05.123+02:00 and 2026-01-02", "at <ts> and <ts>"),
        ("<Client object at 0x7f3a2b1c>", "<Client object at <n>>"),
        # the message's own words stay, including ones with a slash
        ("read/write error on application/json body; n/a", "read/write error on application/json body; n/a"),
        ("HTTPSConnectionPoolError: json.decoder failed", "HTTPSConnectionPoolError: json.decoder failed"),
        ("", ""),
        ("a: b ~ / x@ @y", "a: b ~ / x@ @y"),
    ],
)
def test_normalise_keeps_the_shape_and_replaces_the_data(message: str, shape: str) -> None:
    assert fingerprint.normalise(message) == shape


def test_normalise_is_bounded() -> None:
    assert len(fingerprint.normalise("word " * 500)) == 300


# Realistic failures: each shape is a message template filled with data of the kinds an item carries.
# The same shape with different data must give one normalised message (one cluster); different shapes
# must give different ones; and nothing of the data may survive.
_WORDS = ["acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "tyrell"]


def _id(r: random.Random) -> str:
    word = r.choice(_WORDS)
    return r.choice(
        [
            f"i{r.randrange(10_000):04d}",
            f"{word}-{r.randrange(100_000):05d}",
            f"INV-{r.randrange(2000, 2100)}-{r.randrange(10_000):04d}",
            str(r.randrange(1, 10**9)),
            f"{word}_{r.randrange(100)}{r.choice('abcxyz')}",
            str(uuid.UUID(int=r.getrandbits(128))),
            "".join(r.choices(string.ascii_lowercase + string.digits, k=10)) + "7",
        ]
    )


def _path(r: random.Random) -> str:
    word, n = r.choice(_WORDS), r.randrange(1000)
    ext = r.choice(["pdf", "csv", "xlsx", "json", "txt"])
    return r.choice(
        [
            f"/srv/tenants/{word}/in/doc-{n}.{ext}",
            f"/var/data/{word}/{word}{n}",
            f"C:\\exports\\{word}\\report.{ext}",
            f"data/{word}/report.{ext}",
            f"{word}/{word}/{n}",
            f"~/inbox/{word}.{ext}",
            f"./{word}",
            f"{word}.{ext}",
        ]
    )


def _email(r: random.Random) -> str:
    word = r.choice(_WORDS)
    user = r.choice(["bob", "j.doe", "ops", f"x{r.randrange(100)}", "anna+billing"])
    return f"{user}@{word}.{r.choice(['io', 'com', 'co.uk', 'dev'])}"


def _url(r: random.Random) -> str:
    word = r.choice(_WORDS)
    scheme = r.choice(["http", "https"])
    return r.choice(
        [
            f"{scheme}://api.{word}.io/v1/items/{_id(r)}?page={r.randrange(9)}",
            f"{scheme}://{word}.internal:{r.randrange(1024, 9999)}/export",
            f"{scheme}://{word}.com/",
            f"{scheme}://{word}.dev/a/b/c.json?q={word}&n=1",
        ]
    )


def _when(r: random.Random) -> str:
    t = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=r.randrange(10**8))
    return r.choice([t.isoformat(), t.strftime("%Y-%m-%dT%H:%M:%SZ"), t.strftime("%Y-%m-%d %H:%M:%S")])


def _blob(r: random.Random) -> str:
    return base64.b64encode(r.randbytes(r.randrange(30, 60))).decode()


_SHAPES: dict[str, Callable[[random.Random], str]] = {
    "page": lambda r: f"bad page {r.randrange(500)} of doc {_id(r)}",
    "read": lambda r: f"cannot read {_path(r)}: permission denied",
    "mail": lambda r: f"no mailbox for {_email(r)} (bounced after {r.randrange(1, 9)} tries)",
    "fetch": lambda r: f"fetch {_url(r)} for {_id(r)} returned {r.choice([500, 502, 503])}",
    "keyerror": lambda r: f"record {_id(r)} has no field {r.choice(_WORDS)!r}",
    "quota": lambda r: f"tenant quota exceeded at {_when(r)}: {r.randrange(10**6)} tokens",
    "blob": lambda r: f"attachment {_blob(r)} of {_email(r)} is not a PDF",
    "json": lambda r: (
        f"Expecting ',' delimiter: line {r.randrange(1, 99)} column {r.randrange(1, 99)} "
        f"(char {r.randrange(9999)})"
    ),
    "retry": lambda r: f"gave up on {_id(r)} after {r.randrange(2, 9)} retries, last at {_when(r)}",
    "object": lambda r: f"<Client object at 0x{r.getrandbits(48):x}> closed while reading {_path(r)}",
}


def test_the_same_failure_with_different_data_is_one_shape_and_no_data_survives() -> None:
    r = random.Random(20261127)
    shapes: dict[str, set[str]] = {}
    for name, make in _SHAPES.items():
        seen = shapes.setdefault(name, set())
        for _ in range(300):
            message = make(r)
            shape = fingerprint.normalise(message)
            seen.add(shape)
            assert not any(ch.isdigit() for ch in shape), (message, shape)
            for word in _WORDS:
                assert word not in shape, (message, shape)
    for name, seen in shapes.items():
        assert len(seen) == 1, (name, sorted(seen)[:5])
    assert len({next(iter(seen)) for seen in shapes.values()}) == len(_SHAPES)


def test_same_failure_shape_with_different_data_shares_a_fingerprint() -> None:
    a = fingerprint.failure(_raise("body of tenant-a item 1"), ErrorCategory.USER)
    b = fingerprint.failure(_raise("body of tenant-b item 2"), ErrorCategory.USER)
    assert a[0] == b[0]
    assert a[2] == "test_fingerprint.py:_raise"


def test_unquoted_ids_paths_emails_and_urls_share_a_fingerprint_per_shape() -> None:
    def fail(message: str) -> BaseException:
        try:
            raise ValueError(message)
        except ValueError as exc:
            return exc

    pages = {
        fingerprint.failure(fail(f"bad page {n} of doc {key}"), ErrorCategory.USER)[0]
        for n, key in enumerate(["i0042", "acme-00012", "42", "INV-2026-7", "b9"])
    }
    mails = {
        fingerprint.failure(fail(f"no mailbox for {email}"), ErrorCategory.USER)[0]
        for email in ["bob@acme.io", "j.doe+x@globex.co.uk", "ops@initech.com"]
    }
    assert len(pages) == len(mails) == 1
    assert pages != mails


def test_a_different_frame_or_category_is_a_different_cluster() -> None:
    base = fingerprint.failure(_raise("x"), ErrorCategory.USER)[0]
    assert fingerprint.failure(_raise_elsewhere("x"), ErrorCategory.USER)[0] != base
    assert fingerprint.failure(_raise("x"), ErrorCategory.PROVIDER)[0] != base


def test_a_message_already_free_of_data_keeps_its_fingerprint() -> None:
    # The digest's inputs are unchanged where the normalised message is: such clusters keep their
    # ids across the upgrade (see docs/concepts.md, "Failures").
    fp, message, frame = fingerprint.failure(_raise("body"), ErrorCategory.USER)
    assert message == "<str>"
    assert fp == fingerprint._digest("failure", "user", "KeyError", "<str>", frame or "")


def test_failure_label_is_made_of_type_shape_frame_and_category() -> None:
    _, message, frame = fingerprint.failure(_raise("doc i0042 of bob@acme.io"), ErrorCategory.USER)
    label = fingerprint.failure_label("KeyError", message, frame, "user")
    assert label == "KeyError <str> in test_fingerprint.py:_raise (user)"
    assert fingerprint.failure_label("WorkerLost", "lost <n> times", None, "papayya") == (
        "WorkerLost lost <n> times (papayya)"
    )


def test_degradation_fingerprint_uses_codes_and_paths_not_messages() -> None:
    one = [Reason(code="schema.extra_field", path="compnay_size", message="tenant A data")]
    two = [Reason(code="schema.extra_field", path="compnay_size", message="tenant B data")]
    assert fingerprint.degradation(one) == fingerprint.degradation(two)
    assert fingerprint.degradation(one) != fingerprint.degradation([Reason(code="retrieval_empty")])


def test_a_list_index_in_a_degradation_path_is_not_part_of_the_shape() -> None:
    def missing(path: str) -> list[Reason]:
        return [Reason(code="schema.missing_field", path=path, message=f"{path}: Field required")]

    assert fingerprint.degradation(missing("pages.3.title")) == fingerprint.degradation(
        missing("pages.17.title")
    )
    assert fingerprint.degradation(missing("pages.3.title")) != fingerprint.degradation(
        missing("pages.3.body")
    )
    assert fingerprint.degradation(missing("address_line1")) != fingerprint.degradation(
        missing("address_line2")
    )
    label = fingerprint.degradation_label([*missing("pages.3.title"), *missing("pages.9.title")])
    assert label == "schema.missing_field: pages.<n>.title"
    assert (
        fingerprint.degradation_label([Reason(code="retrieval_empty", message="acme")]) == "retrieval_empty"
    )


def test_normalise_is_fast() -> None:
    # Measured at ~130,000 realistic messages/s on one core (docs/concepts.md); this only guards
    # against a pattern that backtracks, with a wide margin for slow CI machines.
    r = random.Random(7)
    makers = list(_SHAPES.values())
    messages = [makers[i % len(makers)](r) for i in range(5_000)]
    start = time.perf_counter()
    for message in messages:
        fingerprint.normalise(message)
    assert time.perf_counter() - start < 1.0
    start = time.perf_counter()
    fingerprint.normalise("a" * 100_000 + " /x" * 10_000 + " '" + "b" * 10_000)
    assert time.perf_counter() - start < 0.5
