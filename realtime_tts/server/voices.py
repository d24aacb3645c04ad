"""The voice library: reference clips on disk, identified by the sha256 of their content.

Layout under ``<data_dir>/voices/``::

    <id>.json                 metadata; its presence is what makes a voice exist
    <id>.<hash16>.wav         the clip, normalized to 16-bit mono WAV at its own rate
    .inline/<hash>.wav        clips given inline in a request (not listed, keyed by hash)

Every file is written to a temporary name, fsynced and renamed into place, and
the metadata is written after the audio, so a crash at any moment leaves either
the old voice or the new one, never half of one. Leftovers (temp files, clips
no metadata points at) are swept when the library opens.

Also here: the HTTP routes (``/v1/audio/voices``) and the index-tts-vllm ``speaker.json``
import (``python -m realtime_tts.server.voices import ...``). The per-voice conditioning an
engine computes from these clips is cached by the engine (``realtime_tts.engine.cache``).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import logging
import os
import re
import secrets
import sys
import tempfile
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
from .http_errors import ApiError, api_endpoint
from .params import clean_field, limited_receive

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


# --- atomic files ------------------------------------------------------------------

def _fsync_dir(path: Path) -> None:
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
    _fsync_dir(path.parent)


# --- the library -----------------------------------------------------------------

def check_voice_id(voice_id: str) -> str:
    if not isinstance(voice_id, str) or not _ID_RE.match(voice_id):
        raise VoiceError(400, f"invalid voice id {voice_id!r}: use 1-64 letters, digits, '_', '-' or '.', "
                              "starting with a letter or digit", param="id", code="invalid_voice_id")
    return voice_id


class VoiceLibrary:
    """Stored voices. Methods block on disk I/O: handlers call them on the server's codec pool (``ctx.codec.run``)."""

    def __init__(self, data_dir: Path | str, *, min_seconds: float = 0.5, max_seconds: float = 60.0,
                 sweep: bool = True) -> None:
        self.root = Path(data_dir) / "voices"
        self.inline_dir = self.root / ".inline"
        self.min_seconds = min_seconds
        self.max_seconds = max_seconds
        self._lock = threading.RLock()
        self._meta: dict[str, dict] = {}
        self._seen: tuple = ()
        self.inline_dir.mkdir(parents=True, exist_ok=True)
        self._load(sweep=sweep)

    @classmethod
    def from_settings(cls, settings) -> "VoiceLibrary":
        """The library under ``settings.data_dir``, with ``settings.speaker_json`` imported."""
        lib = cls(settings.data_dir, min_seconds=settings.voice_min_seconds, max_seconds=settings.voice_max_seconds)
        if settings.speaker_json:  # a bad import never stops the server: skipped entries are logged
            try:
                for voice_id, status in import_speaker_json(lib, settings.speaker_json, replace=True):
                    if not status.startswith("skipped"):
                        log.info("speaker.json: voice %s %s", voice_id, status)
            except VoiceError as e:
                log.error("%s; starting without it", e.message)
        return lib

    # -- reading -------------------------------------------------------------------
    def _read_meta(self, *, quiet: bool = False) -> dict[str, dict]:
        found: dict[str, dict] = {}
        for path in sorted(self.root.glob("*.json")):
            try:
                meta = json.loads(path.read_text(encoding="utf-8"))
                if meta["id"] != path.stem or not (self.root / meta["file"]).is_file():
                    raise ValueError("metadata does not match its files")
            except (OSError, ValueError, KeyError, TypeError) as e:
                if not quiet:
                    log.warning("voice library: ignoring %s (%s)", path.name, e)
                continue
            found[meta["id"]] = meta
        return found

    def _stamp(self) -> tuple:
        """What changes whenever a voice is added, replaced or deleted, by this process or another."""
        with os.scandir(self.root) as entries:
            return tuple(sorted((e.name, e.stat().st_mtime_ns, e.stat().st_size)
                                for e in entries if e.name.endswith(".json")))

    def refresh(self) -> bool:
        """Pick up voices another process wrote (``realtime-tts voices add`` while the server runs).

        Blocks on disk I/O (run it in a thread). Never sweeps: a half-written voice of another
        process is left alone and appears once its metadata lands. True if the set changed.
        """
        try:
            stamp = self._stamp()
        except OSError:
            return False
        with self._lock:
            if stamp == self._seen:
                return False
            self._seen = stamp
            fresh = self._read_meta(quiet=True)
            changed = fresh != self._meta
            self._meta = fresh
        if changed:
            log.info("voice library: reloaded, %d voices", len(fresh))
        return changed

    def _load(self, *, sweep: bool) -> None:
        """Read every metadata file; sweep temp files and clips nothing points at.

        ``sweep`` False (the command line, which may run beside a server): a leftover could be
        the other process's write in progress, so it is left alone.
        """
        self._meta = self._read_meta()
        self._seen = self._stamp()
        if not sweep:
            return
        referenced = {meta["file"] for meta in self._meta.values()}
        for path in self.root.iterdir():
            if path.name.startswith(".tmp-") or (path.suffix == ".wav" and path.name not in referenced):
                log.info("voice library: removing leftover %s", path.name)
                path.unlink(missing_ok=True)
        for path in self.inline_dir.glob(".tmp-*"):
            path.unlink(missing_ok=True)

    def _voice(self, meta: dict) -> Voice:
        return Voice(id=meta["id"], audio_path=self.root / meta["file"], content_hash=meta["content_hash"],
                     name=meta.get("name") or meta["id"])

    def list(self) -> list[dict]:
        with self._lock:
            return [dict(m) for m in sorted(self._meta.values(), key=lambda m: (m["created_at"], m["id"]))]

    def info(self, voice_id: str) -> dict | None:
        with self._lock:
            meta = self._meta.get(voice_id)
            return dict(meta) if meta else None

    def get(self, ref: str) -> Voice | None:
        """A voice by id, else by its display name (when unique), else None."""
        with self._lock:
            meta = self._meta.get(ref)
            if meta is None:
                named = [m for m in self._meta.values() if m.get("name") == ref]
                meta = named[0] if len(named) == 1 else None
            return self._voice(meta) if meta else None

    def require(self, ref: str, *, param: str = "voice") -> Voice:
        voice = self.get(ref)
        if voice is None:
            raise VoiceError(404, f"voice {ref!r} not found; GET /v1/audio/voices lists the voices, "
                                  "POST /v1/audio/voices uploads one", param=param, code="voice_not_found")
        return voice

    def __contains__(self, voice_id: str) -> bool:
        return voice_id in self._meta

    def __len__(self) -> int:
        return len(self._meta)

    # -- writing -------------------------------------------------------------------
    def add(self, data: bytes | Clip, *, voice_id: str | None = None, name: str = "", filename: str = "",
            replace: bool = False) -> Voice:
        """Validate a clip and store it as a voice (see ``store``)."""
        return self.store(data, voice_id=voice_id, name=name, filename=filename, replace=replace)[0]

    def store(self, data: bytes | Clip, *, voice_id: str | None = None, name: str = "", filename: str = "",
              replace: bool = False) -> tuple[Voice, bool]:
        """Validate a clip and store it as a voice; returns (voice, created).

        ``voice_id`` None: a fresh ``voice_<hex>`` id, unless the library already holds this
        exact clip (same content hash), which is then returned instead of a duplicate. The same
        clip again under its own id is a no-op too. ``created`` is False in both cases.
        """
        clip = data if isinstance(data, Clip) else decode_clip(data, max_seconds=self.max_seconds + 1)
        validate_clip(clip, min_seconds=self.min_seconds, max_seconds=self.max_seconds)
        wav = clip_to_wav(clip)
        digest = hashlib.sha256(wav).hexdigest()
        with self._lock:
            if voice_id is None:
                same = [m for m in self._meta.values() if m["content_hash"] == digest]
                if same:
                    return self._voice(min(same, key=lambda m: (m["created_at"], m["id"]))), False
                voice_id = "voice_" + secrets.token_hex(6)
                while voice_id in self._meta:
                    voice_id = "voice_" + secrets.token_hex(6)
            check_voice_id(voice_id)
            old = self._meta.get(voice_id)
            if old is not None and old["content_hash"] == digest:
                return self._voice(old), False
            if old is not None and not replace:
                raise VoiceError(409, f"voice {voice_id!r} already exists with other audio; DELETE it first or "
                                      "pick another id", param="id", code="voice_exists")
            meta = {
                "id": voice_id,
                "object": "voice",
                "name": name or voice_id,
                "created_at": int(time.time()),
                "content_hash": digest,
                "duration": round(clip.duration, 3),
                "sample_rate": clip.sample_rate,
                "source_filename": filename,
                "file": f"{voice_id}.{digest[:16]}.wav",
            }
            write_atomic(self.root / meta["file"], wav)
            write_atomic(self.root / f"{voice_id}.json", json.dumps(meta, ensure_ascii=False, indent=1).encode())
            self._meta[voice_id] = meta
            if old is not None and old["file"] != meta["file"]:
                (self.root / old["file"]).unlink(missing_ok=True)
            log.info("voice stored", extra={"voice_id": voice_id, "content_hash": digest[:16],
                                            "duration_s": meta["duration"]})
            return self._voice(meta), True

    def delete(self, voice_id: str) -> bool:
        with self._lock:
            meta = self._meta.pop(voice_id, None)
            if meta is None:
                return False
            # Metadata first: once it is gone the voice is gone, even if removing the clip fails.
            (self.root / f"{voice_id}.json").unlink(missing_ok=True)
            _fsync_dir(self.root)
            (self.root / meta["file"]).unlink(missing_ok=True)
            return True

    def _prune_inline(self) -> None:
        """Keep the newest ``MAX_INLINE`` inline clips (they are a cache: a client resends its audio)."""
        files = sorted(self.inline_dir.glob("*.wav"), key=lambda p: p.stat().st_mtime)
        for path in files[: max(0, len(files) - MAX_INLINE)]:
            path.unlink(missing_ok=True)

    def transient(self, data: bytes | Clip, *, what: str = "voice") -> Voice:
        """A voice for one request (inline audio, server path): stored by hash, never listed."""
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
    while True:
        await asyncio.sleep(interval_s)
        try:
            await asyncio.to_thread(library.refresh)
        except Exception as e:  # a transient disk error must not end the watch
            log.warning("voice library: refresh failed: %s", e)


# --- HTTP routes ------------------------------------------------------------------------

def voice_object(meta: dict) -> dict:
    out = {k: v for k, v in meta.items() if k != "file"}
    out["preview_url"] = f"/v1/audio/voices/{meta['id']}/audio"
    return out


def _form_text(form, field: str) -> str:
    """A text form field ('' when absent), NFC; a second file part is refused by ``max_files``."""
    return clean_field(form.get(field) or "", field)


def _path_id(request: Request) -> str:
    """The ``{voice_id}`` of the path, NFC like the ids stored from uploads."""
    return clean_field(request.path_params["voice_id"], "voice_id")


def voice_routes(ctx) -> list:
    """``/v1/audio/voices`` (list, upload), ``/v1/audio/voices/{id}`` (get, delete) and ``.../audio``."""

    def library() -> VoiceLibrary:
        return ctx.voices

    async def list_voices(request: Request):
        await ctx.codec.run(library().refresh)  # voices another process added show at once
        return JSONResponse({"object": "list", "data": [voice_object(m) for m in library().list()]})

    async def upload_voice(request: Request):
        limit = ctx.settings.max_upload_bytes
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
            voice_id = _form_text(form, "id") or None
            name = _form_text(form, "name").strip()[:200]
            filename = clean_field(upload.filename or "", "file")
        voice, created = await ctx.codec.run(library().store, data, voice_id=voice_id, name=name, filename=filename)
        # The same clip again answers the voice that already holds it (200), not a duplicate.
        return JSONResponse(voice_object(library().info(voice.id)), status_code=201 if created else 200)

    async def get_voice(request: Request):
        voice_id = _path_id(request)
        meta = library().info(voice_id)
        if meta is None and await ctx.codec.run(library().refresh):
            meta = library().info(voice_id)
        if meta is None:
            library().require(voice_id)  # raises the 404
        return JSONResponse(voice_object(meta))

    async def voice_audio(request: Request):
        voice = library().require(_path_id(request))
        return FileResponse(voice.audio_path, media_type="audio/wav", filename=f"{voice.id}.wav",
                            content_disposition_type="inline")

    async def delete_voice(request: Request):
        voice_id = _path_id(request)
        if not await ctx.codec.run(library().delete, voice_id):
            library().require(voice_id)
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
                                     "directory. Safe while a server uses it: the server picks up changes "
                                     "within a second.")
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("REALTIME_TTS_DATA_DIR", "data")),
                        help="data directory (default: ./data or $REALTIME_TTS_DATA_DIR)")
    sub = parser.add_subparsers(dest="cmd", required=True)
    imp = sub.add_parser("import", help="import an index-tts-vllm speaker.json")
    imp.add_argument("speaker_json", type=Path)
    imp.add_argument("--replace", action="store_true", help="overwrite voices of the same name")
    add = sub.add_parser("add", help="add one clip")
    add.add_argument("file", type=Path)
    add.add_argument("--id")
    add.add_argument("--name", default="")
    sub.add_parser("list", help="list voices")
    rm = sub.add_parser("delete", help="delete a voice")
    rm.add_argument("voice_id")
    args = parser.parse_args(argv)
    lib = VoiceLibrary(args.data_dir, sweep=False)
    try:
        if args.cmd == "import":
            results = import_speaker_json(lib, args.speaker_json, replace=args.replace)
            for voice_id, status in results:
                print(f"{voice_id}\t{status}")
            return 1 if any(status.startswith("skipped") for _, status in results) else 0
        elif args.cmd == "add":
            voice, created = lib.store(args.file.read_bytes(), voice_id=args.id, name=args.name,
                                       filename=args.file.name)
            print(voice.id)
            if not created:
                print(f"this clip is already stored as voice {voice.id!r}; nothing added", file=sys.stderr)
        elif args.cmd == "list":
            for meta in lib.list():
                print(f"{meta['id']}\t{meta['name']}\t{meta['duration']:.1f}s\t{meta['content_hash'][:16]}")
        elif args.cmd == "delete":
            if not lib.delete(args.voice_id):
                print(f"no voice {args.voice_id!r}", file=sys.stderr)
                return 1
    except (VoiceError, OSError) as e:
        print(f"error: {getattr(e, 'message', e)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
