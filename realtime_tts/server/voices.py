"""The voice library: every tenant's reference clips, in the shared voice store.

Voices live in a ``VoiceStore`` (server/voice_store.py): the local ``<data_dir>/store/``
directory, or an S3-compatible bucket every replica reads. Each belongs to one tenant
(server/auth.py) and is identified by its id within that tenant; the clip is normalized to
16-bit mono WAV at its own rate and named by the sha256 of its content, which keys every
engine cache. The store's writes are atomic and the metadata is written after the clip, so
an acknowledged voice is never lost or half-visible. Inline clips of one request (not a
tenant's: the client sent the audio) are kept by hash under ``<data_dir>/cache/inline/``.
The old ``<data_dir>/voices/`` layout is copied into the store once, as the default tenant's.

Also here: the HTTP routes (``/v1/audio/voices``) and the index-tts-vllm ``speaker.json``
import (``realtime-tts voices import ...``). The per-voice conditioning an engine computes
from these clips is cached by the engine (``realtime_tts.engine.cache``).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import io
import json
import logging
import os
import re
import secrets
import sys
import threading
import time
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soxr
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Route

from ..audio.io import AudioDecodeError, decode_audio
from ..engine.base import Voice
from .auth import principal_of
from .http_errors import ApiError, api_endpoint
from .params import clean_field, limited_receive
from .voice_store import (DEFAULT_TENANT, LocalVoiceStore, VoiceExists, VoiceStore, VoiceStoreError,
                          TENANT_RE, open_voice_store, parse_voice_key, write_atomic)

log = logging.getLogger(__name__)

MIN_SAMPLE_RATE = 8000
MAX_SAMPLE_RATE = 192000
SILENCE_PEAK = 1e-4  # a clip whose loudest sample is below this carries no voice
IMPORT_GAP_S = 0.2  # silence between the clips of one speaker.json entry
MAX_INLINE = 512  # inline / server-path clips kept on disk
_ID_RE = re.compile(r"^\w[\w.\-]{0,63}$")


class VoiceError(ApiError):
    """A voice cannot be stored or found; carries the HTTP status for the API."""


# --- clip decoding and validation ------------------------------------------------

@dataclass
class Clip:
    pcm: np.ndarray  # [T] float32 mono in [-1, 1]
    sample_rate: int

    @property
    def duration(self) -> float:
        return len(self.pcm) / self.sample_rate


def decode_clip(data: bytes, *, what: str = "file", max_seconds: float | None = None) -> Clip:
    """Decode any format libsndfile or FFmpeg reads (wav, mp3, m4a, ogg, flac, webm...) to mono float32.

    ``max_seconds``: decode at most this much (a huge upload costs no more than a long clip).
    """
    if not data:
        raise VoiceError(400, f"{what}: the audio file is empty", param=what, code="invalid_audio")
    try:
        channels, rate = decode_audio(data, max_seconds=max_seconds, name=what)  # [C, N]
    except AudioDecodeError as e:
        raise VoiceError(400, f"{e}; upload wav, mp3, m4a, ogg or flac", param=what, code="invalid_audio") from None
    pcm = channels.mean(axis=0).astype(np.float32)  # channel mean, as the official loader does
    return Clip(np.clip(pcm, -1.0, 1.0), int(rate))


def validate_clip(clip: Clip, *, min_seconds: float, max_seconds: float, what: str = "file") -> None:
    if not (MIN_SAMPLE_RATE <= clip.sample_rate <= MAX_SAMPLE_RATE):
        raise VoiceError(400, f"{what}: sample rate {clip.sample_rate} Hz is outside "
                              f"{MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz", param=what, code="invalid_audio")
    if clip.duration < min_seconds:
        raise VoiceError(400, f"{what}: clip is {clip.duration:.2f} s long; a reference needs at least "
                              f"{min_seconds:g} s", param=what, code="audio_too_short")
    if clip.duration > max_seconds:
        raise VoiceError(400, f"{what}: clip is longer than the {max_seconds:g} s limit "
                              "(5-15 s of clean speech works best)", param=what, code="audio_too_long")
    if float(np.max(np.abs(clip.pcm))) < SILENCE_PEAK:
        raise VoiceError(400, f"{what}: clip is silent", param=what, code="invalid_audio")


def clip_to_wav(clip: Clip) -> bytes:
    pcm16 = np.round(np.clip(clip.pcm, -1.0, 1.0) * 32767.0).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(clip.sample_rate)
        w.writeframes(pcm16.tobytes())
    return buf.getvalue()


# --- the library -----------------------------------------------------------------

def check_voice_id(voice_id: str) -> str:
    if not isinstance(voice_id, str) or not _ID_RE.match(voice_id):
        raise VoiceError(400, f"invalid voice id {voice_id!r}: use 1-64 letters, digits, '_', '-' or '.', "
                              "starting with a letter or digit", param="id", code="invalid_voice_id")
    return voice_id


def not_found(ref: str, param: str = "voice") -> VoiceError:
    """The one answer for a voice this tenant cannot see: missing and foreign look the same."""
    return VoiceError(404, f"voice {ref!r} not found; GET /v1/audio/voices lists the voices, "
                           "POST /v1/audio/voices uploads one", param=param, code="voice_not_found")


class VoiceLibrary:
    """Every tenant's voices, read and written through a ``VoiceStore`` (local directory or S3).

    Metadata is cached in memory, keyed by (tenant, id), and kept current by ``refresh``
    (the app's watcher calls it every second, off the loop), so processes sharing a store
    see each other's voices without a restart; a lookup that misses reads the store once
    more, so a voice acknowledged by another process is usable at once. Request paths use
    one tenant's view (``scoped``). Methods block on I/O: handlers call them on the codec
    pool (``ctx.codec.run``).
    """

    def __init__(self, data_dir: Path | str, *, store: VoiceStore | None = None, min_seconds: float = 0.5,
                 max_seconds: float = 60.0, sweep: bool = True) -> None:
        self.data_dir = Path(data_dir)
        self.store = store if store is not None else LocalVoiceStore(self.data_dir / "store")
        self.inline_dir = self.data_dir / "cache" / "inline"
        self.min_seconds = min_seconds
        self.max_seconds = max_seconds
        self._lock = threading.RLock()  # the maps below; never held across store I/O
        self._write_lock = threading.Lock()  # this process's writes, one at a time
        self._meta: dict[tuple[str, str], dict] = {}
        self._tags: dict[str, str] = {}  # metadata key -> ObjectInfo.tag when last read
        self._generation = 0  # bumped by every write of ours: a refresh that raced one is dropped
        self.inline_dir.mkdir(parents=True, exist_ok=True)
        migrate_legacy_voices(self.store, self.data_dir / "voices")
        if sweep:  # the command line (sweep False) may run beside a server: it leaves leftovers alone
            for path in self.inline_dir.glob(".tmp-*"):
                path.unlink(missing_ok=True)
            for key in self.store.sweep():
                log.info("voice library: removed leftover %s", key)
        self.refresh()

    @classmethod
    def from_settings(cls, settings) -> "VoiceLibrary":
        """The library in the settings' store, with ``settings.speaker_json`` imported (default tenant)."""
        lib = cls(settings.data_dir, store=open_voice_store(settings), min_seconds=settings.voice_min_seconds,
                  max_seconds=settings.voice_max_seconds)
        if settings.speaker_json:  # a bad import never stops the server: skipped entries are logged
            try:
                for voice_id, status in import_speaker_json(lib, settings.speaker_json, replace=True):
                    if not status.startswith("skipped"):
                        log.info("speaker.json: voice %s %s", voice_id, status)
            except VoiceError as e:
                log.error("%s; starting without it", e.message)
        return lib

    def scoped(self, tenant: str) -> "TenantVoices":
        return TenantVoices(self, tenant)

    # -- reading -------------------------------------------------------------------
    def refresh(self) -> bool:
        """Pick up what other processes wrote (replicas, ``realtime-tts voices``); True if the set changed.

        Lists the metadata and reads only what changed since the last refresh.
        """
        with self._lock:
            generation, known = self._generation, dict(self._tags)
        listing = {key: info.tag for key, info in self.store.list("voices/").items() if parse_voice_key(key)}
        if listing == known:
            return False
        fresh: dict[str, dict | None] = {}
        for key, tag in listing.items():
            if known.get(key) != tag:
                data = self.store.get(key)
                fresh[key] = VoiceStore.parse_voice(key, data) if data is not None else None
                if data is not None and fresh[key] is None:
                    log.warning("voice library: ignoring %s in %s (not a voice this server wrote)", key,
                                self.store.name)
        with self._lock:
            if self._generation != generation:
                return False  # one of our writes landed meanwhile: the next refresh sees both
            for key in known.keys() - listing.keys():
                self._meta.pop(parse_voice_key(key), None)
            for key, meta in fresh.items():
                if meta is None:
                    self._meta.pop(parse_voice_key(key), None)
                else:
                    self._meta[parse_voice_key(key)] = meta
            self._tags = listing
            count = len(self._meta)
        log.info("voice library: reloaded, %d voices", count)
        return True

    def _remember(self, tenant: str, voice_id: str, meta: dict | None) -> None:
        with self._lock:
            self._generation += 1
            if meta is None:
                self._meta.pop((tenant, voice_id), None)
            else:
                self._meta[(tenant, voice_id)] = meta

    def _voice(self, meta: dict) -> Voice | None:
        path = self.store.clip_file(meta)
        if path is None:
            return None  # deleted by another process since the last refresh
        return Voice(id=meta["id"], audio_path=path, content_hash=meta["content_hash"],
                     name=meta.get("name") or meta["id"])

    def list(self, *, tenant: str | None = DEFAULT_TENANT) -> list[dict]:
        """The voices of ``tenant`` (None: of every tenant), oldest first."""
        with self._lock:
            found = [dict(m) for (owner, _), m in self._meta.items() if tenant is None or owner == tenant]
        return sorted(found, key=lambda m: (m["created_at"], m["tenant"], m["id"]))

    def info(self, voice_id: str, *, tenant: str = DEFAULT_TENANT) -> dict | None:
        """A voice's metadata; a miss reads the store (another process may have just saved it)."""
        with self._lock:
            meta = self._meta.get((tenant, voice_id))
        if meta is None and _ID_RE.match(voice_id):
            meta = self.store.voice(tenant, voice_id)
            if meta is not None:
                self._remember(tenant, voice_id, meta)
        return dict(meta) if meta else None

    def get(self, ref: str, *, tenant: str = DEFAULT_TENANT) -> Voice | None:
        """A voice by id, else by its display name (when unique within the tenant), else None."""
        with self._lock:
            meta = self._meta.get((tenant, ref))
            if meta is None:
                named = [m for (owner, _), m in self._meta.items() if owner == tenant and m.get("name") == ref]
                meta = named[0] if len(named) == 1 else None
        return self._voice(meta) if meta else None

    def require(self, ref: str, *, tenant: str = DEFAULT_TENANT, param: str = "voice") -> Voice:
        voice = self.get(ref, tenant=tenant)
        if voice is None and self.info(ref, tenant=tenant) is not None:  # saved elsewhere just now
            voice = self.get(ref, tenant=tenant)
        if voice is None:
            raise not_found(ref, param)
        return voice

    def configured(self, ref: str, *, tenant: str = DEFAULT_TENANT) -> Voice | None:
        """A voice the operator named (``default_voice``, ``openai_voice_map``): the tenant's own,
        else the default tenant's (the operator's shared voices)."""
        voice = self.get(ref, tenant=tenant)
        if voice is None and tenant != DEFAULT_TENANT:
            voice = self.get(ref, tenant=DEFAULT_TENANT)
        return voice

    def require_configured(self, ref: str, *, tenant: str = DEFAULT_TENANT, param: str = "voice") -> Voice:
        voice = self.configured(ref, tenant=tenant)
        if voice is None:
            raise not_found(ref, param)
        return voice

    def count(self, *, tenant: str | None = None) -> int:
        with self._lock:
            return sum(1 for owner, _ in self._meta if tenant is None or owner == tenant)

    def __contains__(self, voice_id: str) -> bool:
        return (DEFAULT_TENANT, voice_id) in self._meta

    def __len__(self) -> int:
        return len(self._meta)

    # -- writing -------------------------------------------------------------------
    def add(self, data: bytes | Clip, *, tenant: str = DEFAULT_TENANT, voice_id: str | None = None, name: str = "",
            filename: str = "", replace: bool = False) -> Voice:
        """Validate a clip and store it as a voice (see ``store``)."""
        return self.store_voice(data, tenant=tenant, voice_id=voice_id, name=name, filename=filename,
                                replace=replace)[0]

    def store_voice(self, data: bytes | Clip, *, tenant: str = DEFAULT_TENANT, voice_id: str | None = None,
                    name: str = "", filename: str = "", replace: bool = False) -> tuple[Voice, bool]:
        """Validate a clip and store it as one of ``tenant``'s voices; returns (voice, created).

        ``voice_id`` None: a fresh ``voice_<hex>`` id, unless the tenant already holds this
        exact clip (same content hash), which is then returned instead of a duplicate. The same
        clip again under its own id is a no-op too. ``created`` is False in both cases.
        """
        clip = data if isinstance(data, Clip) else decode_clip(data, max_seconds=self.max_seconds + 1)
        validate_clip(clip, min_seconds=self.min_seconds, max_seconds=self.max_seconds)
        wav = clip_to_wav(clip)
        digest = hashlib.sha256(wav).hexdigest()
        with self._write_lock:
            if voice_id is None:
                same = [m for m in self.list(tenant=tenant) if m["content_hash"] == digest]
                if same:
                    return self._voice(same[0]), False
                voice_id = "voice_" + secrets.token_hex(6)
            check_voice_id(voice_id)
            old = self.info(voice_id, tenant=tenant)
            if old is not None and old["content_hash"] == digest:
                return self._voice(old), False
            if old is not None and not replace:
                raise _exists(voice_id)
            meta = {"id": voice_id, "object": "voice", "name": name or voice_id, "created_at": int(time.time()),
                    "duration": round(clip.duration, 3), "sample_rate": clip.sample_rate,
                    "source_filename": filename}
            try:
                meta = self.store.save_voice(tenant, meta, wav, replace=replace)
            except VoiceExists:  # another process took the id between our read and our write
                theirs = self.store.voice(tenant, voice_id)
                if theirs is None or theirs["content_hash"] != digest:
                    raise _exists(voice_id) from None
                meta = theirs
                created = False
            else:
                created = True
            self._remember(tenant, voice_id, meta)
        if created:
            self.store.cache_clip(meta, wav)
            log.info("voice stored", extra={"voice_id": voice_id, "tenant": tenant, "content_hash": digest[:16],
                                            "duration_s": meta["duration"]})
        return self._voice(meta), created

    def delete(self, voice_id: str, *, tenant: str = DEFAULT_TENANT) -> bool:
        if not _ID_RE.match(voice_id):
            return False
        with self._write_lock:
            deleted = self.store.delete_voice(tenant, voice_id)
            self._remember(tenant, voice_id, None)
        return deleted

    def _prune_inline(self) -> None:
        """Keep the newest ``MAX_INLINE`` inline clips (they are a cache: a client resends its audio)."""
        files = sorted(self.inline_dir.glob("*.wav"), key=lambda p: p.stat().st_mtime)
        for path in files[: max(0, len(files) - MAX_INLINE)]:
            path.unlink(missing_ok=True)

    def transient(self, data: bytes | Clip, *, what: str = "voice") -> Voice:
        """A voice for one request (inline audio, server path): kept by hash on local disk, never listed.

        Not a tenant's: the caller sent the audio itself, and the id names only its hash.
        """
        clip = data if isinstance(data, Clip) else decode_clip(data, what=what, max_seconds=self.max_seconds + 1)
        validate_clip(clip, min_seconds=self.min_seconds, max_seconds=self.max_seconds, what=what)
        wav = clip_to_wav(clip)
        digest = hashlib.sha256(wav).hexdigest()
        path = self.inline_dir / f"{digest}.wav"
        if path.is_file():
            os.utime(path)  # recently used: the last to be pruned
        else:
            write_atomic(path, wav)
            self._prune_inline()
        return Voice(id=f"inline-{digest[:12]}", audio_path=path, content_hash=digest, name="inline")


def _exists(voice_id: str) -> VoiceError:
    return VoiceError(409, f"voice {voice_id!r} already exists with other audio; DELETE it first or pick another id",
                      param="id", code="voice_exists")


def _store_errors(method):
    """A store failure on a request path: a 503 for the client, the cause (naming the store) in the log."""
    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except VoiceStoreError as e:
            log.error("%s", e)
            raise ApiError(503, "the voice store is unavailable; retry shortly", code="voice_store_unavailable",
                           type="server_error", headers={"Retry-After": "1"}) from None
    return guarded


class TenantVoices:
    """One tenant's view of the library: what every request path resolves voices through
    (``ServerContext.for_request``), so a voice of another tenant is simply not there."""

    def __init__(self, library: VoiceLibrary, tenant: str) -> None:
        self.library, self.tenant = library, tenant

    min_seconds = property(lambda self: self.library.min_seconds)
    max_seconds = property(lambda self: self.library.max_seconds)

    def list(self) -> list[dict]:
        return self.library.list(tenant=self.tenant)

    @_store_errors
    def info(self, voice_id: str) -> dict | None:
        return self.library.info(voice_id, tenant=self.tenant)

    @_store_errors
    def get(self, ref: str) -> Voice | None:
        return self.library.get(ref, tenant=self.tenant)

    @_store_errors
    def require(self, ref: str, *, param: str = "voice") -> Voice:
        return self.library.require(ref, tenant=self.tenant, param=param)

    @_store_errors
    def configured(self, ref: str) -> Voice | None:
        return self.library.configured(ref, tenant=self.tenant)

    @_store_errors
    def require_configured(self, ref: str, *, param: str = "voice") -> Voice:
        return self.library.require_configured(ref, tenant=self.tenant, param=param)

    @_store_errors
    def add(self, data: bytes | Clip, **kw) -> Voice:
        return self.library.add(data, tenant=self.tenant, **kw)

    @_store_errors
    def store_voice(self, data: bytes | Clip, **kw) -> tuple[Voice, bool]:
        return self.library.store_voice(data, tenant=self.tenant, **kw)

    @_store_errors
    def delete(self, voice_id: str) -> bool:
        return self.library.delete(voice_id, tenant=self.tenant)

    def transient(self, data: bytes | Clip, *, what: str = "voice") -> Voice:
        return self.library.transient(data, what=what)

    @_store_errors
    def refresh(self) -> bool:
        return self.library.refresh()

    def __contains__(self, voice_id: str) -> bool:
        return (self.tenant, voice_id) in self.library._meta

    def __len__(self) -> int:
        return self.library.count(tenant=self.tenant)


# --- the old layout -----------------------------------------------------------------

LEGACY_MARKER = "MIGRATED.txt"


def migrate_legacy_voices(store: VoiceStore, legacy_dir: Path) -> int:
    """Once: the voices of the old ``<data_dir>/voices/`` layout into the store, as the default
    tenant's. The old files stay (a backup); a marker file says they are no longer read.
    Idempotent and safe for processes migrating the same directory at once. Returns how many
    voices were copied."""
    if not legacy_dir.is_dir() or (legacy_dir / LEGACY_MARKER).exists() or not any(legacy_dir.glob("*.json")):
        return 0
    copied = 0
    for path in sorted(legacy_dir.glob("*.json")):
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
            clip = (legacy_dir / meta["file"]).read_bytes()
            if meta["id"] != path.stem or hashlib.sha256(clip).hexdigest() != meta["content_hash"]:
                raise ValueError("metadata does not match its clip")
            check_voice_id(meta["id"])
        except (OSError, ValueError, KeyError, TypeError, VoiceError) as e:
            log.warning("voice migration: skipping %s (%s)", path.name, getattr(e, "message", e))
            continue
        kept = {k: meta[k] for k in ("id", "object", "name", "created_at", "duration", "sample_rate",
                                     "source_filename") if k in meta}
        try:
            store.save_voice(DEFAULT_TENANT, kept, clip)
            copied += 1
        except VoiceExists:
            existing = store.voice(DEFAULT_TENANT, meta["id"])
            if existing is not None and existing["content_hash"] != meta["content_hash"]:
                log.warning("voice migration: %s already exists in the store with other audio; kept the store's",
                            meta["id"])
    note = (f"The voices in this directory were copied into the voice store {store.name} (tenant "
            f"'{DEFAULT_TENANT}') on {time.strftime('%Y-%m-%d %H:%M:%S')}; realtime-tts no longer reads them.\n")
    write_atomic(legacy_dir / LEGACY_MARKER, note.encode())
    log.info("voice library: migrated %d voices from %s into %s", copied, legacy_dir, store.name)
    return copied


# --- speaker.json import (index-tts-vllm) -------------------------------------------

def merge_clips(clips: list[Clip]) -> Clip:
    """One reference from several: resampled to the first clip's rate, joined by short gaps."""
    rate = clips[0].sample_rate
    gap = np.zeros(int(IMPORT_GAP_S * rate), np.float32)
    parts: list[np.ndarray] = []
    for i, clip in enumerate(clips):
        pcm = clip.pcm if clip.sample_rate == rate else soxr.resample(clip.pcm, clip.sample_rate, rate).astype(np.float32)
        parts += ([gap] if i else []) + [pcm]
    return Clip(np.concatenate(parts), rate)


def _speaker_clip_path(rel: str, spec: Path) -> tuple[Path | None, list[Path]]:
    """Where a speaker.json clip is: absolute, else next to the JSON file, else one level up.

    index-tts-vllm's own ``assets/speaker.json`` names ``assets/x.wav``, relative to its
    project root (the JSON's parent directory); files written for us name paths next to
    the JSON. Returns (the path found or None, every place looked).
    """
    if Path(rel).is_absolute():
        return (Path(rel) if Path(rel).is_file() else None), [Path(rel)]
    bases = list(dict.fromkeys([spec.parent, spec.parent.parent]))
    tried = [base / rel for base in bases]
    return next((p for p in tried if p.is_file()), None), tried


def _speaker_clip(name: str, files: Any, spec: Path) -> Clip:
    """One speaker.json entry -> one reference clip; VoiceError naming the problem."""
    if isinstance(files, str):
        files = [files]
    if not isinstance(files, list) or not files or not all(isinstance(p, str) for p in files):
        raise VoiceError(400, 'expected a list of audio paths, e.g. {"name": ["a.wav"]}', code="invalid_speaker_json")
    check_voice_id(name)
    clips = []
    for rel in files:
        path, tried = _speaker_clip_path(rel, spec)
        if path is None:
            raise VoiceError(400, f"cannot find {rel} (looked at {', '.join(str(p) for p in tried)})",
                             code="invalid_speaker_json")
        try:
            data = path.read_bytes()
        except OSError as e:
            raise VoiceError(400, f"cannot read {path}: {e.strerror or e}", code="invalid_speaker_json") from None
        clips.append(decode_clip(data, what=rel))
    return merge_clips(clips)


def import_speaker_json(library: VoiceLibrary, path: Path | str, *, replace: bool = False) -> list[tuple[str, str]]:
    """Import index-tts-vllm's ``{"name": ["a.wav", ...]}``, one voice per name.

    Paths may be absolute, relative to the JSON file or relative to its parent (index-tts-vllm's
    project root). Several clips of one speaker are joined into one reference. Returns
    ``[(voice_id, "added" | "replaced" | "unchanged" | "skipped: <why>")]``: a bad entry is
    skipped (and logged once), never the end of the import. Re-importing the same file is a
    no-op, so it is safe at every start-up. Raises ``VoiceError`` only when the file itself
    cannot be read as a JSON object.
    """
    path = Path(path)
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise VoiceError(400, f"speaker.json: cannot read {path}: {e.strerror or e}", code="invalid_speaker_json") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise VoiceError(400, f"speaker.json: {path} is not valid JSON: {e}", code="invalid_speaker_json") from None
    if not isinstance(spec, dict):
        raise VoiceError(400, f'speaker.json: {path} must map each name to a list of audio paths: {{"name": ["a.wav"]}}',
                         code="invalid_speaker_json")
    results = []
    for name, files in spec.items():
        try:
            clip = _speaker_clip(name, files, path)
            validate_clip(clip, min_seconds=library.min_seconds, max_seconds=library.max_seconds, what=name)
            old = library.info(name)
            if old is not None and hashlib.sha256(clip_to_wav(clip)).hexdigest() == old["content_hash"]:
                results.append((name, "unchanged"))
                continue
            if old is not None and not replace:
                raise VoiceError(409, "a voice of that name already exists with other audio (use --replace)",
                                 code="voice_exists")
            library.add(clip, voice_id=name, name=name, filename=", ".join(files if isinstance(files, list) else [files]),
                        replace=True)
            results.append((name, "replaced" if old else "added"))
        except VoiceError as e:
            log.warning("speaker.json %s: skipped voice %r: %s", path, name, e.message)
            results.append((name, f"skipped: {e.message}"))
    return results


async def watch_library(library: VoiceLibrary | None, interval_s: float = 1.0) -> None:
    """Refresh the library every ``interval_s`` (off the event loop) for the server's whole life."""
    if library is None:
        return
    failing = False
    while True:
        await asyncio.sleep(interval_s)
        try:
            await asyncio.to_thread(library.refresh)
        except Exception as e:  # a transient store error must not end the watch
            if not failing:
                log.warning("voice library: refresh failed (retrying every %g s): %s", interval_s, e)
            failing = True
        else:
            if failing:
                log.info("voice library: refresh works again")
            failing = False


# --- HTTP routes ------------------------------------------------------------------------

HIDDEN_FIELDS = ("file", "clip")  # where the clip is stored: the server's business


def voice_object(meta: dict) -> dict:
    out = {k: v for k, v in meta.items() if k not in HIDDEN_FIELDS}
    out["preview_url"] = f"/v1/audio/voices/{meta['id']}/audio"
    return out


def _form_text(form, field: str) -> str:
    """A text form field ('' when absent), NFC; a second file part is refused by ``max_files``."""
    return clean_field(form.get(field) or "", field)


def _path_id(request: Request) -> str:
    """The ``{voice_id}`` of the path, NFC like the ids stored from uploads."""
    return clean_field(request.path_params["voice_id"], "voice_id")


async def _read_upload(request: Request, limit: int) -> tuple[bytes, str | None, str, str]:
    """(clip bytes, id or None, display name, file name) of a multipart voice upload."""
    request = Request(request.scope, limited_receive(request, limit))
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise VoiceError(400, "upload the clip as multipart/form-data with a 'file' field "
                              "(curl -F file=@voice.wav -F name=Alice)", param="file", code="invalid_content_type")
    async with request.form(max_files=1, max_fields=10, max_part_size=64 * 1024) as form:
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise VoiceError(400, "missing 'file': the reference clip (wav, mp3, m4a, ogg, flac)", param="file",
                             code="missing_file")
        data = await upload.read()
        if len(data) > limit:
            raise VoiceError(413, f"file is {len(data)} bytes; the limit is {limit}", param="file",
                             code="file_too_large")
        return (data, _form_text(form, "id") or None, _form_text(form, "name").strip()[:200],
                clean_field(upload.filename or "", "file"))


def voice_routes(ctx) -> list:
    """``/v1/audio/voices`` (list, upload), ``/v1/audio/voices/{id}`` (get, delete) and ``.../audio``.

    Each acts on the request's tenant; an admin key that names no tenant lists every tenant's.
    """

    def voices(request: Request) -> TenantVoices:
        return ctx.voices.scoped(principal_of(request.scope).tenant)

    async def list_voices(request: Request):
        principal = principal_of(request.scope)
        await ctx.codec.run(ctx.voices.refresh)  # voices another process added show at once
        tenant = None if principal.sees_all else principal.tenant
        return JSONResponse({"object": "list", "data": [voice_object(m) for m in ctx.voices.list(tenant=tenant)]})

    async def upload_voice(request: Request):
        data, voice_id, name, filename = await _read_upload(request, ctx.settings.max_upload_bytes)
        tenant = voices(request)
        voice, created = await ctx.codec.run(tenant.store_voice, data, voice_id=voice_id, name=name,
                                             filename=filename)
        meta = await ctx.codec.run(tenant.info, voice.id)
        # The same clip again answers the voice that already holds it (200), not a duplicate.
        return JSONResponse(voice_object(meta), status_code=201 if created else 200)

    async def get_voice(request: Request):
        voice_id = _path_id(request)
        meta = await ctx.codec.run(voices(request).info, voice_id)
        if meta is None:
            raise not_found(voice_id)
        return JSONResponse(voice_object(meta))

    async def voice_audio(request: Request):
        voice = await ctx.codec.run(voices(request).require, _path_id(request))
        return FileResponse(voice.audio_path, media_type="audio/wav", filename=f"{voice.id}.wav",
                            content_disposition_type="inline")

    async def delete_voice(request: Request):
        voice_id = _path_id(request)
        if not await ctx.codec.run(voices(request).delete, voice_id):
            raise not_found(voice_id)
        return JSONResponse({"id": voice_id, "object": "voice", "deleted": True})

    return [
        Route("/v1/audio/voices", api_endpoint(list_voices), methods=["GET"]),
        Route("/v1/audio/voices", api_endpoint(upload_voice), methods=["POST"]),
        Route("/v1/audio/voices/{voice_id}", api_endpoint(get_voice), methods=["GET"]),
        Route("/v1/audio/voices/{voice_id}", api_endpoint(delete_voice), methods=["DELETE"]),
        Route("/v1/audio/voices/{voice_id}/audio", api_endpoint(voice_audio), methods=["GET"]),
    ]


# --- command line -------------------------------------------------------------------------

def main(argv: list[str] | None = None, prog: str = "python -m realtime_tts.server.voices") -> int:
    parser = argparse.ArgumentParser(prog=prog, description="Manage the voice library of a realtime-tts data "
                                     "directory or shared voice store. Safe while servers use it: they pick up "
                                     "changes within a second.")
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("REALTIME_TTS_DATA_DIR", "data")),
                        help="data directory (default: ./data or $REALTIME_TTS_DATA_DIR)")
    parser.add_argument("--voice-store", default=os.environ.get("REALTIME_TTS_VOICE_STORE", ""),
                        help="shared store s3://BUCKET/PREFIX (default: $REALTIME_TTS_VOICE_STORE, else the "
                             "data directory's own)")
    parser.add_argument("--voice-store-endpoint", default=os.environ.get("REALTIME_TTS_VOICE_STORE_ENDPOINT", ""),
                        help="S3 endpoint URL for stores other than AWS")
    parser.add_argument("--tenant", default=DEFAULT_TENANT,
                        help=f"whose voices (default: {DEFAULT_TENANT!r}, the tenant of plain API keys); "
                             "list also takes --all")
    sub = parser.add_subparsers(dest="cmd", required=True)
    imp = sub.add_parser("import", help="import an index-tts-vllm speaker.json")
    imp.add_argument("speaker_json", type=Path)
    imp.add_argument("--replace", action="store_true", help="overwrite voices of the same name")
    add = sub.add_parser("add", help="add one clip")
    add.add_argument("file", type=Path)
    add.add_argument("--id")
    add.add_argument("--name", default="")
    ls = sub.add_parser("list", help="list voices")
    ls.add_argument("--all", action="store_true", help="every tenant's voices (a tenant column first)")
    rm = sub.add_parser("delete", help="delete a voice")
    rm.add_argument("voice_id")
    args = parser.parse_args(argv)
    try:
        if not TENANT_RE.match(args.tenant):
            raise VoiceError(400, f"--tenant {args.tenant!r}: use 1-32 lowercase letters, digits, '_' or '-'")
        from types import SimpleNamespace

        where = SimpleNamespace(data_dir=args.data_dir, voice_store=args.voice_store,
                                voice_store_endpoint=args.voice_store_endpoint)
        lib = VoiceLibrary(args.data_dir, store=open_voice_store(where), sweep=False)
        return _run_command(lib.scoped(args.tenant), args)
    except (VoiceError, VoiceStoreError, OSError) as e:
        print(f"error: {getattr(e, 'message', e)}", file=sys.stderr)
        return 1


def _run_command(voices: TenantVoices, args: argparse.Namespace) -> int:
    if args.cmd == "import":
        results = import_speaker_json(voices, args.speaker_json, replace=args.replace)
        for voice_id, status in results:
            print(f"{voice_id}\t{status}")
        return 1 if any(status.startswith("skipped") for _, status in results) else 0
    if args.cmd == "add":
        voice, created = voices.store_voice(args.file.read_bytes(), voice_id=args.id, name=args.name,
                                            filename=args.file.name)
        print(voice.id)
        if not created:
            print(f"this clip is already stored as voice {voice.id!r}; nothing added", file=sys.stderr)
    elif args.cmd == "list":
        metas = voices.library.list(tenant=None) if args.all else voices.list()
        for meta in metas:
            tenant = f"{meta['tenant']}\t" if args.all else ""
            print(f"{tenant}{meta['id']}\t{meta['name']}\t{meta['duration']:.1f}s\t{meta['content_hash'][:16]}")
    elif args.cmd == "delete":
        if not voices.delete(args.voice_id):
            print(f"no voice {args.voice_id!r}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
