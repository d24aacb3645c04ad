"""The conditioning cache: what an engine derives from a reference clip, computed once.

Everything the pipeline derives from a reference clip is computed once and kept in a
``ConditioningCache`` (LRU in memory, one file per entry on disk so a restart does not
recompute it). Keys are sha256 digests of (kind, clip content hash, model fingerprint): a clip
changed in place gets a new content hash, and a different checkpoint or dtype gets a new
fingerprint, so a stale entry is never returned. Entries are dataclasses of tensors (each model
family has its own, see ``ModelFamily.cache_kinds``); ``dump`` / ``loader`` store them as plain
CPU tensors.

A cache may also share its entries (``shared``): an object with ``get(clip_hash) -> bytes | None``
and ``put(clip_hash, data)``, such as a view of the server's voice store that every replica
reads. A miss in memory and on disk then reads the shared copy before computing, and a computed
entry is written there (on a background thread, so the engine never waits for an upload). Shared
entries are keyed by the clip's content hash within a view for one model build (``build_id``:
the weight files' contents, sampled, and the dtype), because the local fingerprint names local
paths.
"""

from __future__ import annotations

import collections
import hashlib
import io
import logging
import os
import re
import tempfile
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from pathlib import Path
from typing import Any, Protocol

import torch

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the stored fields change
_HASH_RE = re.compile(r"^[0-9a-f]{16,64}$")
BUILD_SAMPLE_BYTES = 1 << 16  # read at the start, middle and end of each weight file for build_id
MAX_PENDING_SHARES = 8  # uploads queued at once; beyond that a computed entry is not shared (logged)


class SharedBlobs(Protocol):
    """Where conditioning is shared across processes, by clip content hash."""

    def get(self, content_hash: str) -> bytes | None: ...

    def put(self, content_hash: str, data: bytes) -> None: ...


def cache_key(kind: str, content: str, fingerprint: str) -> str:
    """Hex key for ``ConditioningCache`` (which accepts content-hash-like keys only)."""
    return hashlib.sha256(f"{kind}\0{content}\0{fingerprint}\0{FORMAT}".encode()).hexdigest()


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def fingerprint(files: Sequence[Path], extra: str) -> str:
    """Identity of a loaded model: every weight file's name, size and mtime, plus ``extra``
    (device dtype). Cheap: no file is read."""
    h = hashlib.sha256(extra.encode())
    for path in files:
        st = Path(path).stat()
        h.update(f"{Path(path).resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def auto_dir(checkpoints: Path) -> Path | None:
    """``<checkpoints>/.cache/conditioning`` when it can be created and written, else None (the
    cache then stays in memory; the reason is logged)."""
    cache_dir = checkpoints / ".cache" / "conditioning"
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        if not os.access(cache_dir, os.W_OK):
            raise OSError("not writable")
    except OSError as e:
        log.warning("conditioning cache at %s unavailable (%s); keeping it in memory only", cache_dir, e)
        return None
    return cache_dir


def build_id(files: Sequence[Path], extra: str) -> str:
    """Identity of a model build that holds on every machine: each weight file's name, size and
    three samples of its bytes (a fine-tuned checkpoint of the same shapes differs in all of
    them), plus ``extra`` (the dtype). Reads 192 KiB per file."""
    h = hashlib.sha256(f"{extra}\0{FORMAT}".encode())
    for path in files:
        path = Path(path)
        size = path.stat().st_size
        h.update(f"{path.name}\0{size}\n".encode())
        with path.open("rb") as f:
            for offset in (0, max(0, size // 2 - BUILD_SAMPLE_BYTES // 2), max(0, size - BUILD_SAMPLE_BYTES)):
                f.seek(offset)
                h.update(f.read(BUILD_SAMPLE_BYTES))
    return h.hexdigest()[:16]


def encoder(kinds: Sequence[type]) -> Callable[[Any], bytes]:
    """``encode(value) -> bytes``: a dataclass of one of ``kinds`` as plain CPU tensors (torch.save,
    loadable with weights_only); its kind is stored as its index in ``kinds``."""

    def encode(value) -> bytes:
        data = {f.name: getattr(value, f.name).detach().cpu() for f in fields(value)}
        data["__kind__"] = torch.tensor(list(kinds).index(type(value)))
        data["__format__"] = torch.tensor(FORMAT)
        buf = io.BytesIO()
        torch.save(data, buf)
        return buf.getvalue()

    return encode


def decoder(device: torch.device, kinds: Sequence[type]) -> Callable[[bytes, str], Any]:
    """``decode(data, label)``: what ``encoder(kinds)`` wrote, onto ``device``; ValueError names
    ``label`` when the bytes are not such an entry."""

    def decode(data: bytes, label: str):
        try:
            entry = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"{label}: not a conditioning entry ({type(e).__name__}: {e})") from e
        if not isinstance(entry, dict) or int(entry.pop("__format__", -1)) != FORMAT:
            raise ValueError(f"{label}: conditioning written by another format version")
        kind = int(entry.pop("__kind__", -1))
        if not 0 <= kind < len(kinds):
            raise ValueError(f"{label}: unknown conditioning kind {kind}")
        cls = kinds[kind]
        names = {f.name for f in fields(cls)}
        if set(entry) != names:
            raise ValueError(f"{label}: fields {sorted(entry)} do not match {cls.__name__}")
        return cls(**{k: v.to(device) for k, v in entry.items()})

    return decode


def dumper(kinds: Sequence[type]) -> Callable[[Any, Path], None]:
    """``dump(value, path)`` for ``ConditioningCache``: ``encoder(kinds)`` into a file."""
    encode = encoder(kinds)

    def dump(value, path: Path) -> None:
        # through memory: torch.save derives the archive's record name from the file name, and the
        # cache's temporary names (".tmp-XXXX") make it empty
        Path(path).write_bytes(encode(value))

    return dump


def loader(device: torch.device, kinds: Sequence[type]) -> Callable[[Path], Any]:
    """``load(path)`` for ``ConditioningCache``: reads what ``dumper(kinds)`` wrote onto ``device``."""
    decode = decoder(device, kinds)

    def load(path: Path):
        return decode(Path(path).read_bytes(), str(path))

    return load


class ConditioningCache:
    """LRU of per-voice engine state (speaker embeddings, prompt codes...) keyed by content hash.

    Thread-safe (the engine worker fills it, the server may clear it). With
    ``disk_dir`` plus ``dump(value, path)`` / ``load(path) -> value`` hooks, entries
    also persist across restarts, written atomically via a temp file.
    """

    def __init__(self, capacity: int = 64, *, disk_dir: Path | str | None = None,
                 dump: Callable[[Any, Path], None] | None = None,
                 load: Callable[[Path], Any] | None = None, suffix: str = ".pt") -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        if (disk_dir is None) != (dump is None) or (dump is None) != (load is None):
            raise ValueError("disk_dir, dump and load go together")
        self.capacity = capacity
        self.disk_dir = Path(disk_dir) if disk_dir is not None else None
        self._dump, self._load, self._suffix = dump, load, suffix
        self._items: collections.OrderedDict[str, Any] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0
        if self.disk_dir is not None:
            self.disk_dir.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        if not _HASH_RE.match(key):
            raise ValueError(f"cache keys are hex content hashes, got {key!r}")
        return self.disk_dir / f"{key}{self._suffix}"

    def get(self, key: str) -> Any | None:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
        if self.disk_dir is not None and self._path(key).is_file():
            try:
                value = self._load(self._path(key))
            except Exception as e:  # a stale or corrupt file is recomputed, never fatal
                log.warning("conditioning cache: cannot load %s (%s); recomputing", key[:16], e)
            else:
                self._remember(key, value)
                with self._lock:
                    self.hits += 1
                return value
        with self._lock:
            self.misses += 1
        return None

    def _remember(self, key: str, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def put(self, key: str, value: Any) -> None:
        self._remember(key, value)
        if self.disk_dir is not None:
            path = self._path(key)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=self._suffix, dir=self.disk_dir)
            os.close(fd)
            try:
                self._dump(value, Path(tmp))
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise

    def get_or_compute(self, key: str, compute: Callable[[], Any]) -> Any:
        value = self.get(key)
        if value is None:
            value = compute()
            self.put(key, value)
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: str) -> bool:
        return key in self._items


class SharedConditioning:
    """One kind of conditioning shared through ``SharedBlobs`` (see the module doc): read before
    computing, written after, never fatal (a store that fails costs a recomputation)."""

    def __init__(self, blobs: SharedBlobs, encode: Callable[[Any], bytes], decode: Callable[[bytes, str], Any],
                 label: str) -> None:
        self.blobs, self._encode, self._decode, self.label = blobs, encode, decode, label
        self._uploads = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"share-{label}")
        self._lock = threading.Lock()
        self._pending = 0
        self.hits = self.misses = self.errors = self.uploaded = 0

    def fetch_or_compute(self, content_hash: str, compute: Callable[[], Any]) -> Any:
        value = self._fetch(content_hash)
        if value is not None:
            self.hits += 1
            return value
        self.misses += 1
        value = compute()
        self._upload(content_hash, value)
        return value

    def _fetch(self, content_hash: str) -> Any | None:
        try:
            data = self.blobs.get(content_hash)
            return None if data is None else self._decode(data, f"shared {self.label} {content_hash[:16]}")
        except Exception as e:  # unreachable store, corrupt entry: recompute
            self.errors += 1
            log.warning("shared conditioning: cannot read %s %s (%s); computing it here", self.label,
                        content_hash[:16], e)
            return None

    def _upload(self, content_hash: str, value: Any) -> None:
        with self._lock:
            if self._pending >= MAX_PENDING_SHARES:
                log.warning("shared conditioning: %d uploads pending; %s %s stays local", self._pending,
                            self.label, content_hash[:16])
                return
            self._pending += 1
        data = self._encode(value)  # small CPU tensors; the upload itself runs off the engine thread
        try:
            self._uploads.submit(self._put, content_hash, data)
        except RuntimeError:  # closed
            with self._lock:
                self._pending -= 1

    def _put(self, content_hash: str, data: bytes) -> None:
        try:
            self.blobs.put(content_hash, data)
            self.uploaded += 1
        except Exception as e:
            self.errors += 1
            log.warning("shared conditioning: cannot write %s %s (%s)", self.label, content_hash[:16], e)
        finally:
            with self._lock:
                self._pending -= 1

    def describe(self) -> dict:
        return {"hits": self.hits, "misses": self.misses, "uploaded": self.uploaded, "errors": self.errors}

    def close(self) -> None:
        """Finish the uploads under way (at most ``MAX_PENDING_SHARES``), then stop."""
        self._uploads.shutdown(wait=True)
