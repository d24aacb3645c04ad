"""The demo page in real headless Chromium: loads, uploads a voice, speaks (audio arrives over
/v1/tts/stream and is scheduled as AudioBuffers), streams like an LLM, and Stop cancels.

Needs Debian's chromium (``apt-get install -y chromium``, which CI runs); the ``playwright``
Python package only drives it (never ``playwright install``). With REALTIME_TTS_SCREENSHOT=1 it
refreshes docs/screenshot.png (otherwise the screenshot goes to the test's tmp dir).
"""

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
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "screenshot.png"

pytestmark = pytest.mark.browser


def _engine():
    from realtime_tts.engine.espeak import EspeakEngine

    return EspeakEngine()


@pytest.fixture(scope="module")
def page_url(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed (apt-get install -y chromium); the browser test needs it")
    ctx = make_ctx(tmp_path_factory.mktemp("browser"), _engine(), api_keys=[KEY])
    with live_server(ctx) as url:
        yield url, ctx


@pytest.fixture
def page(page_url, tmp_path):
    from playwright.sync_api import sync_playwright

    url, _ = page_url
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 820})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url + "/")
            yield page
            assert errors == [], f"JavaScript errors: {errors}"
        finally:
            browser.close()


def counters(page) -> dict:
    return page.evaluate("() => ({...window.rtts, sentences: [...window.rtts.sentences]})")


def test_page_speaks_streams_and_stops(page, tmp_path):
    # Without the key the API refuses; the page shows it.
    page.wait_for_function("() => document.getElementById('error').textContent.includes('API key')")
    page.fill("#apiKey", KEY)
    page.dispatch_event("#apiKey", "change")
    page.wait_for_function("() => window.rtts.voicesLoaded === 0")
    assert page.evaluate("() => localStorage.getItem('rtts.apiKey')") == KEY

    # Upload a reference clip through the form; it becomes the selected voice.
    clip = tmp_path / "ref.wav"
    clip.write_bytes(tone_wav(2.0))
    page.set_input_files("#uploadFile", str(clip))
    page.fill("#uploadName", "Tester")
    page.click("#uploadBtn")
    page.wait_for_function("() => document.getElementById('uploadStatus').textContent.startsWith('stored')")
    assert page.eval_on_selector("#voice", "el => el.selectedOptions[0].textContent").startswith("Tester")

    # Speak: audio frames arrive and are scheduled, subtitles appear, time to first audio is shown.
    page.fill("#text", "Hello from the browser. This is the second sentence.")
    page.click("[data-preset=happy]")
    page.click("#speak")
    page.wait_for_function("() => window.rtts.doneCount >= 1 && window.rtts.samplesScheduled > 0", timeout=60000)
    c = counters(page)
    assert c["framesReceived"] > 0 and c["buffersScheduled"] > 0 and c["lastError"] is None
    assert c["ttfaMs"] is not None and page.text_content("#ttfa").endswith(" ms")
    assert c["sentences"] == ["Hello from the browser.", "This is the second sentence."]
    assert c["samplesScheduled"] > 24000  # more than a second of speech at 24 kHz
    assert page.text_content("#subtitle") == "This is the second sentence."
    shot = DOCS_SCREENSHOT if os.environ.get("REALTIME_TTS_SCREENSHOT") == "1" else tmp_path / "page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000  # a rendered page, not an empty image

    # Stream like an LLM: words every 50 ms, spoken sentence by sentence.
    page.fill("#text", "Tokens arrive one by one. The server cuts sentences as they complete.")
    done = c["doneCount"]
    page.click("#streamLlm")
    page.wait_for_function(f"() => window.rtts.doneCount > {done}", timeout=60000)
    assert counters(page)["sentences"] == ["Tokens arrive one by one.", "The server cuts sentences as they complete."]

    # Stop: cancel sent, every source stopped, cursor reset, later audio of that turn dropped.
    long_text = " ".join(f"Sentence number {i} keeps the engine busy for a while." for i in range(40))
    page.fill("#text", long_text)
    before = counters(page)
    page.click("#speak")
    page.wait_for_function(f"() => window.rtts.buffersScheduled > {before['buffersScheduled']}", timeout=60000)
    page.click("#stop")
    page.wait_for_function(f"() => window.rtts.cancelledAcks > {before['cancelledAcks']}", timeout=30000)
    after = counters(page)
    assert after["cancelSent"] == before["cancelSent"] + 1
    assert after["sourcesActive"] == 0 and after["state"] == "stopped"
    scheduled = after["samplesScheduled"]
    page.wait_for_timeout(300)  # frames already in flight must be dropped, not played
    assert counters(page)["samplesScheduled"] == scheduled
