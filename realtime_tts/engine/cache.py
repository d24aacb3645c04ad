"""The conditioning cache: what an engine derives from a reference clip, computed once.

Everything the pipeline derives from a reference clip is computed once and kept in a
``ConditioningCache`` (LRU in memory, one file per entry on disk so a restart does not
recompute it). Keys are sha256 digests of (kind, clip content hash, model fingerprint): a clip
changed in place gets a new content hash, and a different checkpoint or dtype gets a new
fingerprint, so a stale entry is never returned. Entries are dataclasses of tensors (each model
family has its own, see ``ModelFamily.cache_kinds``); ``dump`` / ``loader`` store them as plain
CPU tensors.
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
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the stored fields change
_HASH_RE = re.compile(r"^[0-9a-f]{16,64}$")


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


def dumper(kinds: Sequence[type]) -> Callable[[Any, Path], None]:
    """``dump(value, path)`` for ``ConditioningCache``: a dataclass of one of ``kinds`` as plain CPU
    tensors (torch.save, loadable with weights_only); its kind is stored as its index in ``kinds``."""

    def dump(value, path: Path) -> None:
        data = {f.name: getattr(value, f.name).detach().cpu() for f in fields(value)}
        data["__kind__"] = torch.tensor(list(kinds).index(type(value)))
        data["__format__"] = torch.tensor(FORMAT)
        # through memory: torch.save derives the archive's record name from the file name, and the
        # cache's temporary names (".tmp-XXXX") make it empty
        buf = io.BytesIO()
        torch.save(data, buf)
        Path(path).write_bytes(buf.getvalue())

    return dump


def loader(device: torch.device, kinds: Sequence[type]) -> Callable[[Path], Any]:
    """``load(path)`` for ``ConditioningCache``: reads what ``dumper(kinds)`` wrote onto ``device``."""

    def load(path: Path):
        data = torch.load(path, map_location="cpu", weights_only=True)
        if int(data.pop("__format__", -1)) != FORMAT:
            raise ValueError(f"{path}: conditioning written by another format version")
        kind = int(data.pop("__kind__", -1))
        if not 0 <= kind < len(kinds):
            raise ValueError(f"{path}: unknown conditioning kind {kind}")
        cls = kinds[kind]
        names = {f.name for f in fields(cls)}
        if set(data) != names:
            raise ValueError(f"{path}: fields {sorted(data)} do not match {cls.__name__}")
        return cls(**{k: v.to(device) for k, v in data.items()})

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
