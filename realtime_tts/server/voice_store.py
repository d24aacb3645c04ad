"""Voices where every replica finds them: a local directory, or an S3-compatible bucket.

Objects, by key under the store's root::

    voices/<id>.json                               metadata; its presence is what makes a voice exist
    clips/<sha256>.wav                             a reference clip, by content hash (voices may share one)
    conditioning/<family>/<version>/<sha256>.bin   a clip's precomputed conditioning for one model build

Atomic like the voice library: every object is written whole or not at all (a temp file
fsynced and renamed; an S3 PUT), and a voice's clip goes in before its metadata, which is
the commit point. Readers list metadata only, so an acknowledged voice is never lost and
never half-visible; a save that dies between the two leaves a clip nothing points at, which
``sweep`` removes once it is older than ``SWEEP_GRACE_S`` (so it cannot race a save under way).

Every method blocks on I/O: call them through ``asyncio.to_thread`` from the event loop.
The engine reaches precomputed conditioning through ``conditioning_view(family, version)``:
``get(clip_hash) -> bytes | None`` and ``put(clip_hash, data)``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from .voices import _fsync_dir, check_voice_id, write_atomic

SWEEP_GRACE_S = 3600.0  # an unreferenced clip younger than this may belong to a save under way
_KEY_RE = re.compile(r"^(?:[A-Za-z0-9_][A-Za-z0-9._\-]{0,127}/){0,4}[A-Za-z0-9_][A-Za-z0-9._\-]{0,127}$")
_HASH_RE = re.compile(r"^[0-9a-f]{64}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$")


class VoiceStoreError(RuntimeError):
    """The store cannot be read or written (names the store and the cause)."""


class VoiceExists(VoiceStoreError):
    """A create-only write found the object already there."""


def check_key(key: str) -> str:
    if not isinstance(key, str) or not _KEY_RE.match(key) or ".." in key:
        raise ValueError(f"invalid store key {key!r}")
    return key


def check_hash(content_hash: str) -> str:
    if not isinstance(content_hash, str) or not _HASH_RE.match(content_hash):
        raise ValueError(f"expected a sha256 hex digest, got {content_hash!r}")
    return content_hash


def conditioning_key(content_hash: str, family: str, version: str) -> str:
    for what, value in (("model family", family), ("model version", version)):
        if not isinstance(value, str) or not _NAME_RE.match(value):
            raise ValueError(f"invalid {what} {value!r}: 1-64 letters, digits, '.', '_' or '-'")
    return f"conditioning/{family}/{version}/{check_hash(content_hash)}.bin"


class VoiceStore(ABC):
    """Bytes by key, and the voice layout on top. Subclasses: ``LocalVoiceStore``, ``S3VoiceStore``."""

    name: str  # where the store is, for messages

    # -- bytes by key ---------------------------------------------------------------
    @abstractmethod
    def get(self, key: str) -> bytes | None: ...

    @abstractmethod
    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        """Write the whole object; ``if_absent``: raise ``VoiceExists`` instead of replacing one."""

    @abstractmethod
    def delete(self, key: str) -> None: ...

    @abstractmethod
    def list(self, prefix: str) -> dict[str, float]:
        """Keys under ``prefix`` (a folder, ending in '/') -> last-modified time (epoch seconds)."""

    # -- voices ---------------------------------------------------------------------
    def save_voice(self, meta: dict, clip: bytes, *, replace: bool = False) -> dict:
        """Store a clip and its voice; returns the metadata written (with ``content_hash`` and ``clip``)."""
        voice_id = check_voice_id(meta.get("id"))
        digest = hashlib.sha256(clip).hexdigest()
        meta = {**meta, "content_hash": digest, "clip": f"clips/{digest}.wav"}
        old = None if not replace else self.voice(voice_id)
        if self.get(meta["clip"]) is None:
            self.put(meta["clip"], clip)
        data = json.dumps(meta, ensure_ascii=False, indent=1).encode()
        try:
            self.put(f"voices/{voice_id}.json", data, if_absent=not replace)  # the commit point
        except VoiceExists:
            raise VoiceExists(f"voice {voice_id!r} already exists in {self.name}") from None
        if old is not None and old.get("content_hash") != digest:
            self._drop_clip_if_unused(old["content_hash"])
        return meta

    def voice(self, voice_id: str) -> dict | None:
        data = self.get(f"voices/{check_voice_id(voice_id)}.json")
        return self._parse(voice_id, data) if data is not None else None

    def voices(self) -> list[dict]:
        """Every committed voice, oldest first."""
        out = []
        for key in self.list("voices/"):
            if not key.endswith(".json"):
                continue
            data = self.get(key)  # may have been deleted since the listing
            meta = self._parse(key[len("voices/"):-len(".json")], data) if data is not None else None
            if meta is not None:
                out.append(meta)
        return sorted(out, key=lambda m: (m.get("created_at", 0), m["id"]))

    def clip(self, content_hash: str) -> bytes | None:
        return self.get(f"clips/{check_hash(content_hash)}.wav")

    def delete_voice(self, voice_id: str) -> bool:
        meta = self.voice(voice_id)
        if meta is None:
            return False
        self.delete(f"voices/{voice_id}.json")  # metadata first: once it is gone the voice is gone
        self._drop_clip_if_unused(meta["content_hash"])
        return True

    def _drop_clip_if_unused(self, content_hash: str) -> None:
        if all(m["content_hash"] != content_hash for m in self.voices()):
            self.delete(f"clips/{content_hash}.wav")

    def sweep(self, *, grace_s: float = SWEEP_GRACE_S) -> list[str]:
        """Remove clips no voice points at (older than ``grace_s``); returns the keys removed."""
        used = {m["clip"] for m in self.voices()}
        cutoff = time.time() - grace_s
        removed = [key for key, mtime in self.list("clips/").items() if key not in used and mtime <= cutoff]
        for key in removed:
            self.delete(key)
        return removed

    def _parse(self, voice_id: str, data: bytes) -> dict | None:
        try:
            meta = json.loads(data)
            if meta["id"] != voice_id or not _HASH_RE.match(meta["content_hash"]):
                raise ValueError("metadata does not match its key")
        except (ValueError, KeyError, TypeError):
            return None  # not a voice this store wrote: never listed
        return meta

    # -- precomputed conditioning (the engine's) ------------------------------------
    def conditioning_view(self, family: str, version: str) -> "ConditioningView":
        conditioning_key("0" * 64, family, version)  # validates the names now
        return ConditioningView(self, family, version)


class ConditioningView:
    """One model build's conditioning in a store: ``get(clip_hash)``, ``put(clip_hash, data)``."""

    def __init__(self, store: VoiceStore, family: str, version: str) -> None:
        self.store, self.family, self.version = store, family, version

    def get(self, content_hash: str) -> bytes | None:
        return self.store.get(conditioning_key(content_hash, self.family, self.version))

    def put(self, content_hash: str, data: bytes) -> None:
        self.store.put(conditioning_key(content_hash, self.family, self.version), data)


# --- a local directory ------------------------------------------------------------------

class LocalVoiceStore(VoiceStore):
    """Objects as files under ``root``, written atomically (temp file, fsync, rename, directory fsync)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.name = str(self.root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not if_absent:
            write_atomic(path, data)
            return
        # Create-only: a fully written temp file hard-linked into place (link never replaces).
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.link(tmp, path)
        except FileExistsError:
            raise VoiceExists(f"{key} already exists in {self.name}") from None
        finally:
            os.unlink(tmp)
        _fsync_dir(path.parent)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def list(self, prefix: str) -> dict[str, float]:
        folder = self.root / check_key(prefix.rstrip("/"))
        if not folder.is_dir():
            return {}
        out = {}
        for path in folder.rglob("*"):
            if path.is_file() and not path.name.startswith(".tmp-"):
                out[path.relative_to(self.root).as_posix()] = path.stat().st_mtime
        return out


# --- an S3-compatible bucket ---------------------------------------------------------------

class S3VoiceStore(VoiceStore):
    """Objects in ``s3://BUCKET/PREFIX`` through boto3 (AWS, MinIO, Ceph, R2...).

    A PUT replaces an object whole or not at all and S3 reads are strongly consistent, so
    the local store's guarantees carry over; create-only writes use a conditional PUT
    (``If-None-Match: *``). Credentials come from boto3's usual chain (environment,
    shared files, instance or pod roles), never from our settings.
    """

    def __init__(self, url: str, *, endpoint_url: str | None = None, client: Any = None) -> None:
        match = re.match(r"^s3://([a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])(?:/(.*))?$", url or "")
        if not match:
            raise VoiceStoreError(f"voice store {url!r}: expected s3://BUCKET[/PREFIX]")
        self.bucket = match.group(1)
        self.prefix = (match.group(2) or "").strip("/")
        if self.prefix:
            check_key(self.prefix)
        self.name = url
        if client is None:
            import boto3
            from botocore.config import Config

            client = boto3.client("s3", endpoint_url=endpoint_url or None,
                                  config=Config(retries={"max_attempts": 5, "mode": "standard"}))
        self.client = client

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _fail(self, action: str, key: str, error: Exception) -> VoiceStoreError:
        code = getattr(error, "response", {}).get("Error", {}).get("Code", type(error).__name__)
        return VoiceStoreError(f"voice store {self.name}: cannot {action} {key}: {code}")

    def get(self, key: str) -> bytes | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise self._fail("read", key, e) from None
        except BotoCoreError as e:
            raise self._fail("read", key, e) from None

    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        extra = {"IfNoneMatch": "*"} if if_absent else {}
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **extra)
        except ClientError as e:
            if if_absent and e.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412"):
                raise VoiceExists(f"{key} already exists in {self.name}") from None
            raise self._fail("write", key, e) from None
        except BotoCoreError as e:
            raise self._fail("write", key, e) from None

    def delete(self, key: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except (ClientError, BotoCoreError) as e:
            raise self._fail("delete", key, e) from None

    def list(self, prefix: str) -> dict[str, float]:
        from botocore.exceptions import BotoCoreError, ClientError

        full = self._key(prefix.rstrip("/")) + "/"
        out = {}
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
                for obj in page.get("Contents", ()):
                    key = obj["Key"][len(self.prefix) + 1:] if self.prefix else obj["Key"]
                    out[key] = obj["LastModified"].timestamp()
        except (ClientError, BotoCoreError) as e:
            raise self._fail("list", prefix, e) from None
        return out


def open_voice_store(settings) -> VoiceStore:
    """The store the settings name: ``voice_store`` (s3://...) or ``DATA_DIR/store``."""
    if settings.voice_store:
        return S3VoiceStore(settings.voice_store, endpoint_url=settings.voice_store_endpoint or None)
    return LocalVoiceStore(Path(settings.data_dir) / "store")
