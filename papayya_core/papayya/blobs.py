"""Blob storage: large inputs, outputs and recorded responses live outside PostgreSQL.

A JSON value whose text is larger than ``PAPAYYA_BLOB_THRESHOLD_BYTES`` (64 KiB by default) is stored
once, content-addressed (SHA-256 of its JSON text), under its tenant's prefix, and the database keeps
a small reference in its place::

    {"$papayya_blob": "sha256:9f86d0...", "bytes": 1048576}

Everything that reads values back (an attempt's input and journal, replay, ``papayya items show``)
resolves references transparently, so agents and people see the value itself. Where blobs live:

- a local directory, ``PAPAYYA_HOME/blobs`` by default or ``PAPAYYA_BLOB_URL=file:///path`` (one
  machine, or a shared filesystem);
- S3 (or any S3-compatible store) with ``PAPAYYA_BLOB_URL=s3://bucket/prefix`` and the ``s3`` extra;
  ``PAPAYYA_S3_ENDPOINT_URL`` points boto3 elsewhere than AWS, credentials and region come from the
  usual AWS settings.

Blobs are immutable and shared by identical values of one tenant; nothing deletes them yet.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote, urlsplit

from papayya.errors import ConfigError, StoreUnavailable

if TYPE_CHECKING:
    from papayya.runtime import Runtime

MARKER = "$papayya_blob"
DEFAULT_THRESHOLD = 64 * 1024


class BlobStore(Protocol):
    """Where blob bytes live. Keys are ``<tenant prefix>/<sha256 hex>``."""

    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str) -> bytes: ...


class LocalBlobs:
    """Blobs as files under ``root`` (written atomically: a temporary file renamed into place)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __repr__(self) -> str:
        return f"LocalBlobs({self.root})"

    def _path(self, key: str) -> Path:
        prefix, digest = key.rsplit("/", 1)
        return self.root / prefix / digest[:2] / digest

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        if path.exists():
            return  # content-addressed: the same bytes are already there
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
        partial.write_bytes(data)
        partial.replace(path)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise StoreUnavailable(
                f"Blob {key} is missing from {self.root}; point PAPAYYA_BLOB_URL at the store that holds it."
            ) from None


class S3Blobs:
    """Blobs as objects of an S3 bucket under ``prefix``."""

    def __init__(self, bucket: str, prefix: str, client: Any) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client

    def __repr__(self) -> str:
        return f"S3Blobs(s3://{self.bucket}/{self.prefix})"

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        except Exception as exc:
            raise StoreUnavailable(f"Could not write blob {key} to s3://{self.bucket} ({exc}).") from exc

    def get(self, key: str) -> bytes:
        try:
            body: bytes = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except Exception as exc:
            raise StoreUnavailable(f"Could not read blob {key} from s3://{self.bucket} ({exc}).") from exc
        return body


def open_store(url: str | None, home: Path) -> BlobStore:
    """The blob store named by ``url`` (``file:///path``, ``s3://bucket/prefix``), or the local default."""
    if not url:
        return LocalBlobs(home.expanduser().resolve() / "blobs")
    parts = urlsplit(url)
    if parts.scheme == "file":
        return LocalBlobs(Path(parts.path).expanduser())
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ConfigError(f"PAPAYYA_BLOB_URL={url!r} names no bucket; use s3://bucket/prefix.")
        try:
            import boto3
        except ImportError:
            raise ConfigError(
                "PAPAYYA_BLOB_URL is an s3:// URL but boto3 is not installed; pip install 'papayya[s3]'."
            ) from None
        client = boto3.client("s3", endpoint_url=os.environ.get("PAPAYYA_S3_ENDPOINT_URL") or None)
        return S3Blobs(parts.netloc, parts.path, client)
    raise ConfigError(f"PAPAYYA_BLOB_URL={url!r} is not a file:// or s3:// URL.")


def tenant_prefix(tenant_id: str) -> str:
    """A path- and key-safe prefix for a tenant (any tenant id, including '..' or slashes)."""
    return "t-" + quote(tenant_id, safe="").replace(".", "%2E")


def is_ref(value: Any) -> bool:
    return isinstance(value, dict) and MARKER in value and len(value) <= 2


class Blobs:
    """A process's blob store with its threshold: ``shrink`` before writing, ``expand`` after reading."""

    def __init__(self, store: BlobStore, threshold: int = DEFAULT_THRESHOLD) -> None:
        self.store = store
        self.threshold = threshold

    @classmethod
    def from_env(cls, home: Path) -> Blobs:
        raw = os.environ.get("PAPAYYA_BLOB_THRESHOLD_BYTES", "").strip()
        try:
            threshold = int(raw) if raw else DEFAULT_THRESHOLD
        except ValueError:
            threshold = -1
        if threshold < 1:
            raise ConfigError(
                f"PAPAYYA_BLOB_THRESHOLD_BYTES={raw!r} must be a positive number of bytes (default "
                f"{DEFAULT_THRESHOLD})."
            )
        return cls(open_store(os.environ.get("PAPAYYA_BLOB_URL"), home), threshold)

    def shrink_text(self, tenant_id: str, text: str) -> str:
        """JSON text to store: itself when small, else a reference to a blob holding it."""
        if len(text) * 4 <= self.threshold:  # UTF-8 takes at most 4 bytes a character: small for sure
            return text
        data = text.encode()
        if len(data) <= self.threshold:
            return text
        digest = hashlib.sha256(data).hexdigest()
        self.store.put(f"{tenant_prefix(tenant_id)}/{digest}", data)
        return json.dumps({MARKER: f"sha256:{digest}", "bytes": len(data)})

    def shrink(self, tenant_id: str, value: Any) -> Any:
        """A JSON-able value to store: itself when small, else a reference (as a dict)."""
        if value is None or isinstance(value, bool | int | float):
            return value
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
        if len(text) * 4 <= self.threshold:  # UTF-8 takes at most 4 bytes a character
            return value
        shrunk = self.shrink_text(tenant_id, text)
        return value if shrunk is text else json.loads(shrunk)

    def expand_item(self, item: dict[str, Any]) -> dict[str, Any]:
        """An ``item_detail`` row with its input, output, attempt outputs and step results resolved."""
        tenant_id = item["tenant_id"]
        for key in ("input", "output"):
            item[key] = self.expand(tenant_id, item.get(key))
        for attempt in item.get("attempts_detail") or ():
            attempt["output"] = self.expand(tenant_id, attempt.get("output"))
        for step in item.get("steps") or ():
            step["result"] = self.expand(tenant_id, step.get("result"))
        return item

    def expand(self, tenant_id: str, value: Any) -> Any:
        """The value a stored one stands for: a reference is read back from the blob store."""
        if not is_ref(value):
            return value
        digest = str(value[MARKER]).removeprefix("sha256:")
        data = self.store.get(f"{tenant_prefix(tenant_id)}/{digest}")
        if hashlib.sha256(data).hexdigest() != digest:
            raise StoreUnavailable(f"Blob sha256:{digest} does not match its content; it was altered.")
        return json.loads(data)


def of(rt: Runtime) -> Blobs:
    """The runtime's blob store (built on first use)."""
    return rt.blobs
