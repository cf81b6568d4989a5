"""The page in a real headless Chromium (Debian's `chromium` and `chromium-driver`, driven by selenium):
open it, type a length beyond the model's context, press Generate, wait for the audio player, the piano
roll and the windows the piece took, save a screenshot; a bad upload shows a message, not a stack trace;
the page asks nothing of any host but the app's own; bars of an uploaded piece rewritten (infill), and a bar range
outside the piece refused on the page.

CI installs the browser (`apt-get install -y chromium chromium-driver`); without it this test fails, unless
MIDILM_SKIP_BROWSER=1. MIDILM_SCREENSHOT_DIR=docs keeps the screenshot (docs/app.png, shown in the README).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import make_piece
from test_app import ROOM, app, app_model_dir, app_url  # noqa: F401  (the same served test model)

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# A fresh profile that talks to no one: this machine has no network, and the page must not need one.
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--window-size=1280,1200",
    # Chromium still looks up its own services' names (sign-in, autofill, updates): no name resolves.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
)  # fmt: skip
TIMEOUT = 60  # seconds for any one wait; a busy 2-core machine is slow to start a browser
pytestmark = [
    pytest.mark.skipif(os.environ.get("MIDILM_SKIP_BROWSER") == "1", reason="MIDILM_SKIP_BROWSER=1"),
    pytest.mark.filterwarnings("ignore::Warning:gradio.queueing"),  # pandas 3 deprecations in gradio's queue
]


@pytest.fixture
def browser(tmp_path):
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).is_file()]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not found: `apt-get install -y chromium chromium-driver` (or set "
            "MIDILM_SKIP_BROWSER=1)"
        )
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is not installed: `pip install -r requirements-app.txt` (or set MIDILM_SKIP_BROWSER=1)")

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})  # every request the page makes
    # Both paths given: selenium asks its Selenium Manager for nothing (it would go online for drivers).
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER, log_output=subprocess.DEVNULL), options=options)
    driver.set_page_load_timeout(TIMEOUT)
    yield driver
    driver.quit()


def requests_of(driver) -> list[tuple[str, int | None]]:
    """(url, status) of each request the page made since the last call, from Chromium's performance log."""
    sent, status = [], {}
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            sent.append((message["params"]["requestId"], message["params"]["request"]["url"]))
        elif message["method"] == "Network.responseReceived":
            status[message["params"]["requestId"]] = message["params"]["response"]["status"]
    return [(url, status.get(request)) for request, url in sent]


def test_page_generates_in_a_real_browser(browser, app_url, tmp_path):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, TIMEOUT)
    browser.get(app_url)
    # A length beyond the context, typed into the slider's box: the note under it says windows before sampling.
    box = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#length input[type=number]"))
    assert "one pass" in browser.find_element(By.ID, "length-note").text
    box.clear()
    box.send_keys(str(ROOM + 24), Keys.TAB)
    wait.until(lambda d: "written in windows" in d.find_element(By.ID, "length-note").text)
    browser.find_element(By.ID, "generate").click()

    # The audio player gets the rendered WAV, the piano roll its PNG, the command line its settings.
    wav_link = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#audio a[download$='.wav']"))[0]
    assert browser.find_elements(By.CSS_SELECTOR, "#audio audio")
    roll = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#piano-roll img[src$='.png']"))[0]
    wait.until(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", roll))
    assert browser.execute_script("return arguments[0].naturalWidth", roll) == 1200
    wait.until(
        lambda d: "--composer bach" in d.find_element(By.CSS_SELECTOR, "#command textarea").get_attribute("value")
    )
    assert browser.find_elements(By.CSS_SELECTOR, "#download a[href$='/bach_0.mid']")
    note = wait.until(lambda d: d.find_element(By.ID, "result-note").text)
    assert note.startswith("bach: ") and "windows (longer than the context)" in note, note
    command = browser.find_element(By.CSS_SELECTOR, "#command textarea").get_attribute("value")
    assert f"--max_new_tokens {ROOM + 24}" in command, command

    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1280, max(1200, height))
    screenshot = tmp_path / "app.png"
    assert browser.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000
    if os.environ.get("MIDILM_SCREENSHOT_DIR"):
        keep = Path(os.environ["MIDILM_SCREENSHOT_DIR"]) / "app.png"
        keep.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(screenshot, keep)

    requests = requests_of(browser)
    wav_url = wav_link.get_attribute("href")
    assert any(url == wav_url and status == 200 for url, status in requests), "the player did not load the WAV"
    foreign = {
        url
        for url, _ in requests
        if urlsplit(url).scheme in ("http", "https", "ws", "wss") and urlsplit(url).hostname != "127.0.0.1"
    }
    assert not foreign, f"the page reached beyond the app: {sorted(foreign)[:5]}"

    # A bad upload: a message in the page, not a stack trace.
    bad = tmp_path / "notes.mid"
    bad.write_text("this is not a MIDI file\n")
    browser.find_element(By.CSS_SELECTOR, "#continue button").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#prompt-midi input[type=file]"))[0].send_keys(str(bad))
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#prompt-midi a[href$='/notes.mid']"))
    browser.find_element(By.ID, "generate").click()
    message = "MIDI to continue: notes.mid: not a valid MIDI file"
    page = wait.until(lambda d: message in (text := d.find_element(By.TAG_NAME, "body").text) and text)
    assert "Traceback" not in page
    time.sleep(11)  # gradio's default toast is gone after 10 s; an error stays until the user closes it
    assert message in browser.find_element(By.TAG_NAME, "body").text

    # Infill, on a fresh page (no upload left over): bars 3-4 of a piece rewritten, then a range outside it refused.
    browser.get(app_url)
    piece = tmp_path / "piece.mid"
    make_piece(13, bars=8).dump_midi(piece)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#infill button"))[0].click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#infill-midi input[type=file]"))[0].send_keys(str(piece))
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#infill-midi a[href$='/piece.mid']"))
    bars = browser.find_element(By.CSS_SELECTOR, "#infill-bars textarea, #infill-bars input")
    bars.send_keys("3-4", Keys.TAB)
    browser.find_element(By.ID, "generate").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#download a[href$='/infill_bach_0.mid']"))
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#audio a[download$='.wav']"))
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#piano-roll img[src$='.png']"))
    command = wait.until(
        lambda d: (
            (v := d.find_element(By.CSS_SELECTOR, "#command textarea").get_attribute("value"))
            and "--infill_midi" in v
            and v
        )
    )
    assert "--infill_midi piece.mid --bars 3-4" in command, command
    assert browser.find_element(By.ID, "result-note").text.startswith("bach: bars 3-4 of 8 rewritten")
    bars.clear()
    bars.send_keys("7-12", Keys.TAB)
    browser.find_element(By.ID, "generate").click()
    message = "Bars to rewrite: 7-12: piece.mid has 8 bars"
    page = wait.until(lambda d: message in (text := d.find_element(By.TAG_NAME, "body").text) and text)
    assert "Traceback" not in page
