"""The demo page in real headless Chromium against a live server on the espeak engine.

Covers: the API key flow, uploading a voice (twice: the second answers the existing one), speaking
(audio over /v1/tts/stream scheduled as AudioBuffers), streaming like an LLM, Stop, subtitles that
follow playback, time to first audio measured to the first audible sample, the per-turn audio
counter, progress, replay and download of the last result, voice preview and delete, the language
choice, the honest notice on an engine that cannot clone, a 390 px phone layout and accessible
names for every control.

Needs Debian's chromium (``apt-get install -y chromium``, which ``make test`` tries); the
``playwright`` Python package only drives it (never ``playwright install``). With
``REALTIME_TTS_SCREENSHOT=1`` it refreshes docs/screenshot-desktop.png and docs/screenshot-phone.png
(otherwise the screenshots go to the test's tmp dir).
"""

import functools
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from http_helpers import live_server, make_ctx, tone_wav  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--autoplay-policy=no-user-gesture-required"]
KEY = "browser-key"
DOCS = Path(__file__).resolve().parents[2] / "docs"
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}
RATE = 24000

pytestmark = pytest.mark.browser


def _engine():
    from realtime_tts.engine.espeak import EspeakEngine

    return EspeakEngine()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed (apt-get install -y chromium); the browser test needs it")
    ctx = make_ctx(tmp_path_factory.mktemp("browser"), _engine(), api_keys=[KEY])
    with live_server(ctx) as url:
        yield url, ctx


@pytest.fixture(scope="module")
def browser(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


def open_page(browser, url, viewport=DESKTOP, key=KEY):
    page = browser.new_page(viewport=viewport, accept_downloads=True)
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.goto(url + "/")
    page.wait_for_function("() => window.rtts !== undefined")
    if key:
        page.fill("#apiKey", key)
        page.dispatch_event("#apiKey", "change")
        page.wait_for_function("() => window.rtts.voicesLoaded !== undefined")
    return page


@pytest.fixture
def page(browser, server):
    page = open_page(browser, server[0])
    yield page
    assert page.errors == [], f"JavaScript errors: {page.errors}"
    page.close()


def counters(page) -> dict:
    return page.evaluate("() => JSON.parse(JSON.stringify(window.rtts))")


def speak(page, text, button="#speak", timeout=60000):
    done = counters(page)["doneCount"]
    page.fill("#text", text)
    page.click(button)
    page.wait_for_function(f"() => window.rtts.doneCount > {done}", timeout=timeout)


def wait_idle(page, timeout=60000):
    page.wait_for_function("() => window.rtts.state === 'idle' && window.rtts.sourcesActive === 0", timeout=timeout)


def test_key_upload_speak_stream_and_stop(page, tmp_path):
    # Without the key the API refuses; the page shows it.
    fresh = open_page(page.context.browser, page.url.rstrip("/"), key=None)
    fresh.wait_for_function("() => document.getElementById('error').textContent.includes('API key')")
    fresh.close()
    assert page.evaluate("() => localStorage.getItem('rtts.apiKey')") == KEY

    # Upload a reference clip through the form; it becomes the selected voice. The same clip again
    # answers the voice that already holds it.
    clip = tmp_path / "ref.wav"
    clip.write_bytes(tone_wav(2.0))
    page.set_input_files("#uploadFile", str(clip))
    page.fill("#uploadName", "Tester")
    page.click("#uploadBtn")
    page.wait_for_function("() => document.getElementById('uploadStatus').textContent.startsWith('stored')")
    assert page.eval_on_selector("#voice", "el => el.selectedOptions[0].textContent").startswith("Tester")
    voice_id = page.eval_on_selector("#voice", "el => el.value")
    page.click("#uploadBtn")
    page.wait_for_function("() => document.getElementById('uploadStatus').textContent.includes('already stored')")
    assert page.text_content("#uploadStatus") == f"this clip is already stored as {voice_id}: selected it"
    assert page.eval_on_selector("#voice", "el => el.options.length") == 2  # (default voice) + Tester

    # Speak: audio frames arrive and are scheduled, subtitles appear, time to first audio is shown.
    page.click("[data-preset=happy]")
    speak(page, "Hello from the browser. This is the second sentence.")
    wait_idle(page)
    c = counters(page)
    assert c["framesReceived"] > 0 and c["buffersScheduled"] > 0 and c["lastError"] is None
    assert c["sentences"] == ["Hello from the browser.", "This is the second sentence."]
    assert c["turnSamples"] > RATE  # more than a second of speech
    assert page.text_content("#subtitle") == "This is the second sentence."  # heard to the end
    assert page.text_content("#progressText").startswith("sentence 2 of 2 ·")

    # Stream like an LLM: words every 50 ms, spoken sentence by sentence.
    speak(page, "Tokens arrive one by one. The server cuts sentences as they complete.", button="#streamLlm")
    assert counters(page)["sentences"] == ["Tokens arrive one by one.", "The server cuts sentences as they complete."]
    wait_idle(page)

    # Stop: cancel sent, every source stopped, later audio of that turn dropped, and the subtitle shows
    # the sentence that was being heard (not the last one received).
    long_text = " ".join(f"Sentence number {i} keeps the engine busy for a while." for i in range(40))
    page.fill("#text", long_text)
    before = counters(page)
    page.click("#speak")
    page.wait_for_function("() => window.rtts.current === 0 && window.rtts.sentences.length >= 3", timeout=60000)
    page.click("#stop")
    page.wait_for_function(f"() => window.rtts.cancelledAcks > {before['cancelledAcks']}", timeout=30000)
    after = counters(page)
    assert after["cancelSent"] == before["cancelSent"] + 1
    assert after["sourcesActive"] == 0 and after["state"] == "stopped"
    assert page.text_content("#subtitle") == "Sentence number 0 keeps the engine busy for a while."
    assert page.text_content("#progressText").startswith(f"stopped at sentence 1 of {len(after['sentences'])}+ ·")
    scheduled = after["samplesScheduled"]
    page.wait_for_timeout(300)  # frames already in flight must be dropped, not played
    assert counters(page)["samplesScheduled"] == scheduled


def test_subtitles_follow_playback(page):
    """Each sentence is highlighted when its first sample is heard, in order, once."""
    page.evaluate("""() => {
        window.changes = [];
        new MutationObserver(() => window.changes.push({text: document.getElementById('subtitle').textContent,
                                                        heardMs: window.rtts.heardMs}))
            .observe(document.getElementById('subtitle'), {childList: true, characterData: true, subtree: true});
    }""")
    sentences = ["The first sentence is long so it keeps playing for a while after the other two have arrived.",
                 "Second.", "Third."]  # no comma and under 120 characters: one segment per sentence
    page.fill("#text", " ".join(sentences))
    page.click("#speak")
    # Everything has arrived while the first sentence is still being heard: it alone is shown.
    page.wait_for_function("() => window.rtts.doneCount > 0 && window.rtts.sentences.length === 3"
                           " && window.rtts.current === 0", timeout=60000)
    c = counters(page)
    assert c["heardMs"] < c["sentenceStartsMs"][1], "the first sentence should still be playing"
    assert page.text_content("#subtitle") == sentences[0]
    assert page.get_attribute("#sentences li:nth-child(1)", "aria-current") == "true"
    wait_idle(page)
    changes = [ch for ch in page.evaluate("() => window.changes") if ch["text"]]
    assert [ch["text"] for ch in changes] == sentences
    starts = counters(page)["sentenceStartsMs"]
    for change, start in zip(changes, starts):
        assert change["heardMs"] >= start  # shown once its audio is being heard, not when it arrived
    assert page.get_attribute("#sentences li:nth-child(3)", "aria-current") == "true"


def test_time_to_first_audio_and_per_turn_counter(page):
    speak(page, "One short turn.")
    first = counters(page)
    # Measured to the first audible sample's playout: past the arrival of the first frame by at least
    # the start-up buffer (150 ms), where the old page stopped the clock.
    assert first["ttfaMs"] >= first["firstFrameMs"] + 100, first
    assert first["ttfaMs"] < first["firstFrameMs"] + 2000
    assert page.text_content("#ttfa") == f"{first['ttfaMs']} ms"
    wait_idle(page)
    speak(page, "A second turn that is a good deal longer than the first one was.")
    second = counters(page)
    assert second["turnSamples"] == second["samplesScheduled"] - first["samplesScheduled"]
    assert page.text_content("#audioMs") == f"{round(second['turnSamples'] / RATE * 1000)} ms"


def test_replay_download_preview_delete_and_language(page, server, tmp_path):
    url, ctx = server
    assert page.is_visible("#languageRow")  # espeak speaks zh and en
    assert page.eval_on_selector_all("#language option", "els => els.map(e => e.value)") == ["", "zh", "en"]
    sent = []
    page.on("websocket", lambda ws: ws.on("framesent", lambda payload: sent.append(payload)))
    page.reload()
    page.wait_for_function("() => window.rtts.voicesLoaded !== undefined")
    page.select_option("#language", "en")
    speak(page, "Replay me. Then download me.")
    texts = [json.loads(p) for p in sent if isinstance(p, str) and '"text"' in p]
    assert texts[0]["type"] == "text" and texts[0]["language"] == "en"
    wait_idle(page)
    heard = counters(page)
    assert page.is_enabled("#replay") and page.is_enabled("#download")

    page.click("#replay")
    page.wait_for_function("() => window.rtts.replays === 1")
    wait_idle(page)
    replayed = counters(page)
    assert replayed["samplesScheduled"] == heard["samplesScheduled"] + heard["turnSamples"]
    assert page.text_content("#subtitle") == "Then download me."

    with page.expect_download() as info:
        page.click("#download")  # wav, as heard
    wav = Path(info.value.path()).read_bytes()
    assert wav[:4] == b"RIFF" and wav[8:12] == b"WAVE"
    assert int.from_bytes(wav[40:44], "little") == heard["turnSamples"] * 2 == len(wav) - 44
    page.select_option("#format", "server:mp3")
    with page.expect_download() as info:
        page.click("#download")
    assert info.value.suggested_filename.endswith(".mp3") and len(Path(info.value.path()).read_bytes()) > 1000

    # Preview and delete a voice.
    ctx.voices.add(tone_wav(1.5, freq=260), voice_id="to_delete")
    page.click("#refreshVoices")
    page.wait_for_function("() => [...document.getElementById('voice').options].some(o => o.value === 'to_delete')")
    page.select_option("#voice", "to_delete")
    page.click("#previewVoice")
    page.wait_for_function("() => window.rtts.previewPlays === 1")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#deleteVoice")
    page.wait_for_function("() => document.getElementById('uploadStatus').textContent === 'deleted to_delete'")
    assert "to_delete" not in ctx.voices
    assert page.eval_on_selector("#voice", "el => el.value") == ""
    assert page.is_disabled("#deleteVoice") and page.is_disabled("#previewVoice")


def test_honest_notice_on_an_engine_that_cannot_clone(page):
    page.wait_for_function("() => !document.getElementById('notice').hidden")
    notice = page.text_content("#notice")
    assert notice.startswith("The espeak engine speaks with its own built-in voice") and "not used" in notice
    assert "uploaded voices and emotion are kept but not used" in notice


def fulfill(route, request=None, *, body: str) -> None:
    route.fulfill(status=200, content_type="application/json", body=body)


def test_the_notice_follows_the_capability_fields(browser, server):
    """Not the engine's name: an "espeak" that clones but has no emotion gets the emotion notice only,
    and one that does both gets none."""
    page = browser.new_page(viewport=DESKTOP)
    try:
        for caps, expected in (({"voice_cloning": True, "emotion": []}, "The espeak engine has no emotion control: "
                                                                        "emotion is kept but not used."),
                               ({"voice_cloning": True, "emotion": ["vector"]}, None)):
            info = {"name": "espeak", "sample_rate": 22050, "languages": ["zh", "en"], "speed": [0.5, 2.0], **caps}
            body = json.dumps({"status": "ok", "ready": True, "engine": "espeak", "queue_depth": 0, "engine_info": info})
            page.route("**/health", functools.partial(fulfill, body=body))
            page.goto(server[0] + "/")
            page.wait_for_function("() => window.rtts !== undefined && window.rtts.engine !== null")
            if expected is None:
                assert page.is_hidden("#notice")
            else:
                assert page.text_content("#notice").startswith(expected)
            page.unroute("**/health")
    finally:
        page.close()


def test_phone_width(browser, server, tmp_path):
    page = open_page(browser, server[0], viewport=PHONE)
    try:
        assert page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]  # no sideways scroll
        for sel in ("#text", "#speak"):  # visible at once, before the voice and emotion settings
            box = page.locator(sel).bounding_box()
            assert box["y"] >= 0 and box["y"] + box["height"] <= PHONE["height"], (sel, box)
            assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], (sel, box)
        assert page.locator("#emotion").bounding_box()["y"] > page.locator("#speak").bounding_box()["y"]
        speak(page, "Hello from a phone. Subtitles follow what you hear.")
        wait_idle(page)
        assert page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]
        shot = DOCS / "screenshot-phone.png" if os.environ.get("REALTIME_TTS_SCREENSHOT") == "1" else tmp_path / "p.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        assert page.errors == []
    finally:
        page.close()


def test_desktop_screenshot(page, tmp_path):
    page.click("[data-preset=happy]")
    speak(page, "Hello! This is realtime text to speech. Each sentence plays as soon as it is ready.")
    wait_idle(page)
    shot = DOCS / "screenshot-desktop.png" if os.environ.get("REALTIME_TTS_SCREENSHOT") == "1" else tmp_path / "d.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000  # a rendered page, not an empty image


CONTROL_ROLES = {"button", "combobox", "textbox", "slider", "checkbox", "radio", "spinbutton", "listbox",
                 "searchbox", "DisclosureTriangle"}


def test_every_control_has_an_accessible_name(page):
    # Chromium's own accessibility tree: the names a screen reader announces.
    cdp = page.context.new_cdp_session(page)
    nodes = cdp.send("Accessibility.getFullAXTree")["nodes"]
    controls = [n for n in nodes if n.get("role", {}).get("value") in CONTROL_ROLES and not n.get("ignored")]
    assert len(controls) >= 20
    unnamed = [(n["role"]["value"], n.get("name", {}).get("value")) for n in controls
               if not (n.get("name", {}).get("value") or "").strip()]
    assert unnamed == []
    assert page.evaluate("() => document.querySelectorAll('[placeholder]').length") == 0  # labels, not placeholders
    for role, name in [("combobox", "Voice"), ("textbox", "Text"), ("slider", "Speed"),
                       ("button", "Reload the voice list"), ("combobox", "Format"), ("slider", "happy")]:
        assert page.get_by_role(role, name=name, exact=True).count() == 1, (role, name)
    assert page.get_by_label("API key").count() == 1
    # State, errors and subtitles are announced.
    assert page.get_attribute("#subtitle", "aria-live") == "polite"
    assert page.get_attribute("#error", "role") == "alert"
    assert page.locator(".stats").get_attribute("role") == "status"
