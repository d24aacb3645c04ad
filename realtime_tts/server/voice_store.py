"""Voices where every replica finds them: a local directory, or an S3-compatible bucket.

Objects, by key under the store's root::

    voices/<tenant>/<id>.json                      metadata; its presence is what makes a voice exist
    clips/<tenant>/<id>.<nonce>.wav                the clip of one save of that voice (never shared)
    conditioning/<family>/<version>/<sha256>.bin   a clip's precomputed conditioning for one model build

Voices and clips live under their tenant (server/auth.py), so one tenant's listing, lookups
and deletes can never reach another's; conditioning is keyed by the clip's content hash
alone, because it is a pure function of the audio.

Atomic like a database row: every object is written whole or not at all (a temp file
fsynced and renamed; an S3 PUT), and a voice's clip goes in before its metadata, which is
the commit point. Readers list metadata only, so an acknowledged voice is never lost and
never half-visible. Every save writes a clip object of its own (the nonce), and a clip is
only ever removed by the delete or replace of the metadata that named it, so no race of two
writers can take the clip from under a committed voice. A save that dies between the two
writes leaves a clip nothing points at, which ``sweep`` removes once it is older than
``SWEEP_GRACE_S`` (so it cannot race a save under way).

Every method blocks on I/O: call them off the event loop (the codec pool, a thread).
The engine reaches precomputed conditioning through ``conditioning_view(family, version)``:
``get(clip_hash) -> bytes | None`` and ``put(clip_hash, data)``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import tempfile
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, NamedTuple

log = logging.getLogger(__name__)

DEFAULT_TENANT = "default"  # the tenant of plain API keys, of an open server and of migrated voices
SWEEP_GRACE_S = 3600.0  # an unreferenced clip younger than this may belong to a save under way
MAX_CACHED_CLIPS = 1024  # local copies of a remote store's clips (the engine reads files)
_KEY_RE = re.compile(r"^(?:\w[\w.\-]{0,127}/){0,4}\w[\w.\-]{0,127}$")
_HASH_RE = re.compile(r"^[0-9a-f]{64}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$")
VOICE_ID_RE = re.compile(r"^\w[\w.\-]{0,63}$")
TENANT_RE = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,31}$")
_VOICE_KEY_RE = re.compile(r"^voices/([a-z0-9][a-z0-9_\-]{0,31})/(\w[\w.\-]{0,63})\.json$")


class VoiceStoreError(RuntimeError):
    """The store cannot be read or written (names the store and the cause: for logs, not clients)."""


class VoiceExists(VoiceStoreError):
    """A create-only write found the object already there."""


class ObjectInfo(NamedTuple):
    mtime: float  # last modified, epoch seconds
    tag: str  # changes whenever the object is written (S3 ETag; local inode, size and mtime)


# --- atomic files ------------------------------------------------------------------------

def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(path.parent)


# --- names ---------------------------------------------------------------------------------

def check_key(key: str) -> str:
    if not isinstance(key, str) or not _KEY_RE.match(key) or ".." in key:
        raise ValueError(f"invalid store key {key!r}")
    return key


def check_hash(content_hash: str) -> str:
    if not isinstance(content_hash, str) or not _HASH_RE.match(content_hash):
        raise ValueError(f"expected a sha256 hex digest, got {content_hash!r}")
    return content_hash


def check_tenant(tenant: str) -> str:
    if not isinstance(tenant, str) or not TENANT_RE.match(tenant):
        raise ValueError(f"invalid tenant {tenant!r}: 1-32 lowercase letters, digits, '_' or '-'")
    return tenant


def check_store_voice_id(voice_id: str) -> str:
    if not isinstance(voice_id, str) or not VOICE_ID_RE.match(voice_id):
        raise ValueError(f"invalid voice id {voice_id!r}")
    return voice_id


def voice_key(tenant: str, voice_id: str) -> str:
    return f"voices/{check_tenant(tenant)}/{check_store_voice_id(voice_id)}.json"


def parse_voice_key(key: str) -> tuple[str, str] | None:
    """(tenant, voice id) of a metadata key, None for anything else."""
    match = _VOICE_KEY_RE.match(key)
    return (match.group(1), match.group(2)) if match else None


def conditioning_key(content_hash: str, family: str, version: str) -> str:
    for what, value in (("model family", family), ("model version", version)):
        if not isinstance(value, str) or not _NAME_RE.match(value):
            raise ValueError(f"invalid {what} {value!r}: 1-64 letters, digits, '.', '_' or '-'")
    return f"conditioning/{family}/{version}/{check_hash(content_hash)}.bin"


class VoiceStore(ABC):
    """Bytes by key, and the voice layout on top. Subclasses: ``LocalVoiceStore``, ``S3VoiceStore``."""

    name: str  # where the store is, for logs
    # read by other machines: the engine then shares per-voice conditioning through it (a local
    # directory sits beside the engine's own disk cache, so it is not)
    shared: bool = False

    # -- bytes by key ---------------------------------------------------------------
    @abstractmethod
    def get(self, key: str) -> bytes | None: ...

    @abstractmethod
    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        """Write the whole object; ``if_absent``: raise ``VoiceExists`` instead of replacing one."""

    @abstractmethod
    def delete(self, key: str) -> None: ...

    @abstractmethod
    def list(self, prefix: str) -> dict[str, ObjectInfo]:
        """Keys under ``prefix`` (a folder, ending in '/') -> ``ObjectInfo``."""

    @abstractmethod
    def clip_file(self, meta: dict) -> Path | None:
        """A local file holding the voice's clip, for the engine (None: the clip is gone)."""

    def cache_clip(self, meta: dict, clip: bytes) -> None:
        """A clip just saved: keep the local copy ``clip_file`` would fetch (remote stores)."""

    # -- voices ---------------------------------------------------------------------
    def save_voice(self, tenant: str, meta: dict, clip: bytes, *, replace: bool = False) -> dict:
        """Store a clip and its voice; returns the metadata written (with ``tenant``,
        ``content_hash`` and ``clip``). ``replace`` False: ``VoiceExists`` if the id is taken."""
        voice_id = check_store_voice_id(meta.get("id"))
        key = voice_key(tenant, voice_id)
        digest = hashlib.sha256(clip).hexdigest()
        meta = {**meta, "tenant": tenant, "content_hash": digest,
                "clip": f"clips/{tenant}/{voice_id}.{secrets.token_hex(8)}.wav"}
        old = self.voice(tenant, voice_id) if replace else None
        self.put(meta["clip"], clip)
        data = json.dumps(meta, ensure_ascii=False, indent=1).encode()
        try:
            self.put(key, data, if_absent=not replace)  # the commit point
        except VoiceExists:
            self.delete(meta["clip"])
            raise VoiceExists(f"voice {tenant}/{voice_id} already exists in {self.name}") from None
        if old is not None and old["clip"] != meta["clip"]:
            self.delete(old["clip"])  # only that save's clip: nothing else names it
        return meta

    def voice(self, tenant: str, voice_id: str) -> dict | None:
        key = voice_key(tenant, voice_id)
        data = self.get(key)
        return self.parse_voice(key, data) if data is not None else None

    def voices(self, tenant: str | None = None) -> list[dict]:
        """Every committed voice of ``tenant`` (None: of every tenant), oldest first."""
        prefix = f"voices/{check_tenant(tenant)}/" if tenant is not None else "voices/"
        out = []
        for key in self.list(prefix):
            if parse_voice_key(key) is None:
                continue
            data = self.get(key)  # may have been deleted since the listing
            meta = self.parse_voice(key, data) if data is not None else None
            if meta is not None:
                out.append(meta)
        return sorted(out, key=lambda m: (m.get("created_at", 0), m["tenant"], m["id"]))

    def clip(self, meta: dict) -> bytes | None:
        """The clip bytes of a voice, checked against its content hash (None: gone)."""
        data = self.get(meta["clip"])
        if data is not None and hashlib.sha256(data).hexdigest() != meta["content_hash"]:
            raise VoiceStoreError(f"voice store {self.name}: {meta['clip']} does not match its content hash")
        return data

    def delete_voice(self, tenant: str, voice_id: str) -> bool:
        meta = self.voice(tenant, voice_id)
        if meta is None:
            return False
        self.delete(voice_key(tenant, voice_id))  # metadata first: once it is gone the voice is gone
        self.delete(meta["clip"])
        return True

    def sweep(self, *, grace_s: float = SWEEP_GRACE_S) -> list[str]:
        """Remove clips no voice points at (older than ``grace_s``); returns the keys removed."""
        used = {m["clip"] for m in self.voices()}
        cutoff = time.time() - grace_s
        removed = [key for key, info in self.list("clips/").items() if key not in used and info.mtime <= cutoff]
        for key in removed:
            self.delete(key)
        return removed

    @staticmethod
    def parse_voice(key: str, data: bytes) -> dict | None:
        """Metadata read from ``key``, or None when it is not a voice this store wrote."""
        names = parse_voice_key(key)
        try:
            meta = json.loads(data)
            tenant, voice_id = names or ("", "")
            if (names is None or meta["id"] != voice_id or meta["tenant"] != tenant
                    or not _HASH_RE.match(meta["content_hash"])
                    or not meta["clip"].startswith(f"clips/{tenant}/{voice_id}.")):
                raise ValueError("metadata does not match its key")
            check_key(meta["clip"])
        except (ValueError, KeyError, TypeError, AttributeError):
            return None  # never listed
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
        except (FileNotFoundError, NotADirectoryError):
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
        fsync_dir(path.parent)

    def delete(self, key: str) -> None:
        path = self._path(key)
        path.unlink(missing_ok=True)
        fsync_dir(path.parent)

    def list(self, prefix: str) -> dict[str, ObjectInfo]:
        folder = self.root / check_key(prefix.rstrip("/"))
        if not folder.is_dir():
            return {}
        out = {}
        for path in folder.rglob("*"):
            if path.name.startswith(".tmp-"):
                continue
            try:
                st = path.stat()
            except FileNotFoundError:  # deleted while listing
                continue
            if path.is_file():
                out[path.relative_to(self.root).as_posix()] = ObjectInfo(
                    st.st_mtime, f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}")
        return out

    def clip_file(self, meta: dict) -> Path | None:
        path = self._path(meta["clip"])
        return path if path.is_file() else None

    def sweep(self, *, grace_s: float = SWEEP_GRACE_S) -> list[str]:
        """Also the temp files of writes that died (older than ``grace_s``)."""
        cutoff = time.time() - grace_s
        for tmp in self.root.rglob(".tmp-*"):
            try:
                if tmp.stat().st_mtime <= cutoff:
                    tmp.unlink(missing_ok=True)
            except FileNotFoundError:
                pass
        return super().sweep(grace_s=grace_s)


# --- an S3-compatible bucket ---------------------------------------------------------------

class S3VoiceStore(VoiceStore):
    """Objects in ``s3://BUCKET/PREFIX`` through boto3 (AWS, MinIO, Ceph, R2...).

    A PUT replaces an object whole or not at all and S3 reads are strongly consistent, so
    the local store's guarantees carry over; create-only writes use a conditional PUT
    (``If-None-Match: *``). Credentials come from boto3's usual chain (environment,
    shared files, instance or pod roles), never from our settings. The engine reads clips
    as files: ``clip_file`` keeps local copies under ``cache_dir``, named by content hash
    (so a copy is never stale) and checked against it.
    """

    shared = True

    def __init__(self, url: str, *, endpoint_url: str | None = None, client: Any = None,
                 cache_dir: Path | str | None = None) -> None:
        match = re.match(r"^s3://([a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])(?:/(.*))?$", url or "")
        if not match:
            raise VoiceStoreError(f"voice store {url!r}: expected s3://BUCKET[/PREFIX]")
        self.bucket = match.group(1)
        self.prefix = (match.group(2) or "").strip("/")
        if self.prefix:
            check_key(self.prefix)
        self.name = url
        self.cache_dir = Path(cache_dir) if cache_dir is not None else Path(tempfile.gettempdir()) / "rtts-clips"
        if client is None:
            try:
                import boto3
                from botocore.config import Config
            except ImportError:
                raise VoiceStoreError(f"voice store {url}: S3 needs boto3, which the cluster extra brings "
                                      "(pip install 'realtime-tts[cluster]')") from None

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

    def list(self, prefix: str) -> dict[str, ObjectInfo]:
        from botocore.exceptions import BotoCoreError, ClientError

        full = self._key(prefix.rstrip("/")) + "/"
        out = {}
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
                for obj in page.get("Contents", ()):
                    key = obj["Key"][len(self.prefix) + 1:] if self.prefix else obj["Key"]
                    out[key] = ObjectInfo(obj["LastModified"].timestamp(), obj.get("ETag", ""))
        except (ClientError, BotoCoreError) as e:
            raise self._fail("list", prefix, e) from None
        return out

    def clip_file(self, meta: dict) -> Path | None:
        path = self.cache_dir / f"{check_hash(meta['content_hash'])}.wav"
        if path.is_file():
            os.utime(path)  # recently used: the last to be pruned
            return path
        data = self.clip(meta)
        if data is None:
            return None
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(path, data)
        self._prune_cache()
        return path

    def cache_clip(self, meta: dict, clip: bytes) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.cache_dir / f"{check_hash(meta['content_hash'])}.wav", clip)
        self._prune_cache()

    def _prune_cache(self) -> None:
        files = []
        for path in self.cache_dir.glob("*.wav"):
            try:
                files.append((path.stat().st_mtime, path))
            except FileNotFoundError:
                pass
        for _, path in sorted(files)[: max(0, len(files) - MAX_CACHED_CLIPS)]:
            path.unlink(missing_ok=True)


def open_voice_store(settings) -> VoiceStore:
    """The store the settings name: ``voice_store`` (s3://...) or ``DATA_DIR/store``."""
    data_dir = Path(settings.data_dir)
    if settings.voice_store:
        return S3VoiceStore(settings.voice_store, endpoint_url=settings.voice_store_endpoint or None,
                            cache_dir=data_dir / "cache" / "clips")
    return LocalVoiceStore(data_dir / "store")
