"""The page in a real browser (Debian's chromium + chromedriver via Selenium) against the real server process.

Teach two classes from the live view of a looping gear/washer video, see the prediction follow the video,
upload a photo, remove an example, download the model and check it in a stock LiteRT interpreter, then
SIGKILL the server, start it again on the same state folder and see the page reconnect with the same classes.
Screenshots (desktop 1280x800, phone 390x844) go to ``.artifacts/`` (or ``$LASTLAYER_ARTIFACTS``).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter as StockInterpreter

from lastlayer.images.decode import resize_array
from lastlayer.images.render import render_frame
from serve.webtools import Server, free_port, kind_at, png, wait_for

from conftest import REQUIRE_DATA, ROOT

CHROMIUM = Path(os.environ.get("LASTLAYER_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("LASTLAYER_CHROMEDRIVER", "/usr/bin/chromedriver"))
ARTIFACTS = Path(os.environ.get("LASTLAYER_ARTIFACTS", ROOT / ".artifacts"))
pytestmark = [
    pytest.mark.shared,
    # Under CI (LASTLAYER_REQUIRE_DATA=1) a missing browser fails the test instead of skipping it.
    pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()) and not REQUIRE_DATA,
                       reason=f"needs {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium chromium-driver)"),
]
webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs selenium (pip install selenium)")


@pytest.fixture
def server(extractor: Path, video: Path, tmp_path: Path) -> Iterator[Server]:
    running = Server(tmp_path / "state", extractor, video, free_port())
    running.start()
    yield running
    running.kill()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,800",
                     "--disable-gpu", "--no-first-run", "--disable-extensions"):
        options.add_argument(argument)
    options.add_experimental_option("prefs", {"download.default_directory": str(tmp_path / "downloads"),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _card(driver: Any, name: str) -> Any:
    return driver.find_element("css selector", f'#class-list li[data-class-name="{name}"]')


def _count(driver: Any, name: str) -> int:
    try:
        return int(_card(driver, name).find_element("css selector", ".count").text.split()[0])
    except Exception:
        return -1


def _frame(driver: Any) -> int | None:
    value = driver.find_element("id", "live-panel").get_attribute("data-frame")
    return int(value) if value else None


def _screenshots(driver: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.set_window_size(1280, 800)
    time.sleep(0.3)
    driver.save_screenshot(str(ARTIFACTS / f"{name}-desktop-1280x800.png"))
    driver.set_window_size(390, 844)
    time.sleep(0.3)
    driver.save_screenshot(str(ARTIFACTS / f"{name}-phone-390x844.png"))
    for label, width in (("desktop", 1280), ("phone", 390)):  # the whole page, for review
        driver.set_window_size(width, 800)
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(width, min(int(height) + 140, 4000))
        time.sleep(0.3)
        driver.save_screenshot(str(ARTIFACTS / f"{name}-{label}-full.png"))
    driver.set_window_size(1280, 800)


def test_teach_in_a_real_browser(server: Server, browser: Any, tmp_path: Path) -> None:
    driver = browser
    driver.get(server.url)
    wait_for(lambda: driver.find_element("id", "connection").text == "Connected", 15, what="the page to connect")
    wait_for(lambda: _frame(driver) is not None, 15, what="the live view")
    assert driver.find_element("id", "stream").get_attribute("src").endswith(tuple("0123456789"))

    for name in ("gear", "washer"):
        field = driver.find_element("id", "new-class-name")
        field.send_keys(name)
        field.submit()
        wait_for(lambda name=name: _count(driver, name) == 0, 10, what=f"class {name} on the page")

    # teach 3 frames of each object, each when the live view shows it (the page sends the index of the frame it shows)
    taught = {"gear": 0, "washer": 0}
    used: set[int] = set()
    deadline = time.monotonic() + 25
    while min(taught.values()) < 3 and time.monotonic() < deadline:
        frame = _frame(driver)
        if frame is None or frame in used:
            time.sleep(0.03)
            continue
        kind = kind_at(frame)
        if taught[kind] < 3:
            used.add(frame)
            before = _count(driver, kind)
            if kind == "gear":
                _card(driver, kind).find_element("css selector", ".add-frame").click()
            else:
                driver.find_element("tag name", "body").send_keys("2")  # keyboard shortcut: class 2
            wait_for(lambda kind=kind, before=before: _count(driver, kind) == before + 1, 10, what=f"{kind} example added")
            taught[kind] += 1
    assert taught == {"gear": 3, "washer": 3}

    # the prediction on the page follows the video
    def showing_correct() -> str | None:
        panel = driver.find_element("id", "live-panel")
        frame, top = panel.get_attribute("data-frame"), panel.get_attribute("data-top")
        return top if frame and top == kind_at(int(frame)) else None

    first = wait_for(showing_correct, 15, what="the page's prediction to match the video")
    wait_for(lambda: (top := showing_correct()) and top != first, 15, what="the page's prediction to switch")
    assert "Prediction:" in driver.find_element("id", "prediction-text").text

    # upload a photo through the file input
    photo = tmp_path / "gear-photo.png"
    photo.write_bytes(png(render_frame("gear", 200)))
    _card(driver, "gear").find_element("css selector", ".upload-input").send_keys(str(photo))
    wait_for(lambda: _count(driver, "gear") == 4, 15, what="the uploaded photo")

    # remove one example of washer
    wait_for(lambda: len(_card(driver, "washer").find_elements("css selector", ".thumbs img")) == 3, 10, what="thumbnails")
    _card(driver, "washer").find_element("css selector", ".remove-example").click()
    wait_for(lambda: _count(driver, "washer") == 2, 10, what="the example removed")

    driver.find_element("id", "evaluate").click()
    wait_for(lambda: driver.find_elements("css selector", "#evaluation table.confusion"), 10, what="the evaluation")
    _screenshots(driver, "teach")

    # download the model through the page's link and run it in a stock LiteRT interpreter
    downloads = tmp_path / "downloads"
    driver.find_element("id", "download-model").click()
    driver.find_element("id", "download-labels").click()
    model = wait_for(lambda: (downloads / "model.tflite").exists() and (downloads / "labels.txt").exists()
                     and not list(downloads.glob("*.crdownload")) and downloads / "model.tflite", 20, what="the downloads")
    names = [line.split(maxsplit=1)[-1] for line in (downloads / "labels.txt").read_text().splitlines()]
    assert names == ["gear", "washer"]
    interpreter = StockInterpreter(model_path=str(model))
    interpreter.allocate_tensors()
    entry = interpreter.get_input_details()[0]
    height, width = entry["shape"][1:3]
    for kind, index in (("gear", 333), ("washer", 334)):
        interpreter.set_tensor(entry["index"], resize_array(render_frame(kind, index), (width, height))[np.newaxis].astype(entry["dtype"]))
        interpreter.invoke()
        assert names[int(np.argmax(interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0]))] == kind

    # kill -9 the server and start it again on the same state folder: the page reconnects by itself
    server.kill()
    wait_for(lambda: "reconnecting" in driver.find_element("id", "connection").text, 10, what="the page to notice")
    server.start()
    wait_for(lambda: driver.find_element("id", "connection").text == "Connected", 15, what="the page to reconnect")
    restarted = _frame(driver)
    wait_for(lambda: _frame(driver) is not None and _frame(driver) != restarted, 15, what="the live view after the restart")
    assert (_count(driver, "gear"), _count(driver, "washer")) == (4, 2)
    driver.refresh()
    wait_for(lambda: (_count(driver, "gear"), _count(driver, "washer")) == (4, 2), 15, what="the same classes after a reload")
    shutil.rmtree(downloads, ignore_errors=True)


def _evaluation_screenshots(driver: Any, name: str) -> None:
    """At 390 and 1280 px: the window scrolled to the evaluation, and the whole page."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for width, height in ((390, 844), (1280, 800)):
        driver.set_window_size(width, height)
        time.sleep(0.3)
        driver.execute_script("document.getElementById('model-panel').scrollIntoView({block: 'start'})")
        time.sleep(0.2)
        driver.save_screenshot(str(ARTIFACTS / f"{name}-{width}px.png"))
        driver.execute_script("document.querySelector('#evaluation table.confusion').scrollIntoView({block: 'center'})")
        time.sleep(0.2)
        driver.save_screenshot(str(ARTIFACTS / f"{name}-{width}px-confusion.png"))
        driver.execute_script("window.scrollTo(0, 0)")
        full = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(width, min(int(full) + 140, 8000))
        time.sleep(0.3)
        driver.save_screenshot(str(ARTIFACTS / f"{name}-{width}px-full.png"))


def _status(driver: Any) -> str:
    return driver.find_element("id", "model-status").text


def _overflow(driver: Any) -> int:
    """How many pixels the page is wider than the window (0: no sideways scrolling)."""
    return int(driver.execute_script("return document.documentElement.scrollWidth - document.documentElement.clientWidth"))


def test_the_page_on_a_phone_without_a_camera(extractor: Path, browser: Any, tmp_path: Path) -> None:
    """No camera: refusals say so (download, fine-tune), a photo can be tested, and 20 classes with the evaluation
    open fit a 390 px phone: wide tables scroll inside their box, never the page."""
    from lastlayer.images.render import KINDS
    from lastlayer.teach.session import TeachingSession

    driver = browser
    state = tmp_path / "state"
    server = Server(state, extractor, None, free_port())
    server.start()
    try:
        driver.set_window_size(390, 844)
        driver.get(server.url)
        wait_for(lambda: driver.find_element("id", "connection").text == "Connected", 15, what="the page to connect")
        driver.find_element("id", "download-model").click()  # nothing taught: said, not a silent failed download
        wait_for(lambda: "nothing to export yet" in driver.find_element("id", "messages").text, 10, what="the refusal")
        assert _status(driver).startswith("Preparing model.tflite failed: nothing to export yet")
        driver.find_element("id", "finetune").click()
        wait_for(lambda: _status(driver).startswith("Fine-tuning failed: "), 10, what="the fine-tune's failure")
        assert not driver.find_element("id", "finetune").get_attribute("disabled")
    finally:
        server.kill()

    names = [f"{kind} {number}" for number in range(1, 3) for kind in KINDS[:9]] + ["a rather long class name for a phone", "q"]
    with TeachingSession(state) as session:  # 20 classes, 3 photos each
        for index, name in enumerate(names):
            kind = KINDS[index % 9]
            session.add_examples(name, [render_frame(kind, index * 10 + shot, seed=index) for shot in range(3)])
    server.start()
    try:
        driver.get(server.url)
        wait_for(lambda: len(driver.find_elements("css selector", "#class-list > li")) == 20, 15, what="20 classes")
        photo = tmp_path / "gear-photo.png"
        photo.write_bytes(png(render_frame("gear", 901)))
        driver.find_element("id", "test-photo-input").send_keys(str(photo))
        wait_for(lambda: driver.find_element("id", "photo-test").get_attribute("data-top"), 15, what="the tested photo's prediction")
        assert driver.find_element("id", "photo-test").get_attribute("data-top").startswith("gear")
        assert "gear-photo.png: gear" in driver.find_element("id", "photo-test-result").text
        assert _status(driver).startswith("Tested gear-photo.png: gear")
        driver.find_element("id", "evaluate").click()
        wait_for(lambda: _status(driver).startswith("Evaluated 60 examples"), 20, what="the evaluation")  # the status replaced
        heading = driver.find_element("css selector", "#evaluation h3").text  # on how many, with its interval
        assert heading.startswith("Leave-one-out ") and "/ 60 right, 95 % interval " in heading
        confusion = driver.find_element("css selector", "#evaluation table.confusion")
        scroller = confusion.find_element("xpath", "..")
        for width in (390, 1280):
            driver.set_window_size(width, 844)
            time.sleep(0.3)
            assert _overflow(driver) == 0, f"the page scrolls sideways at {width} px"
        driver.set_window_size(390, 844)
        time.sleep(0.3)
        assert "table-scroll" in scroller.get_attribute("class")
        assert int(scroller.get_attribute("scrollWidth")) > int(scroller.get_attribute("clientWidth"))  # scrolls in its box
        _evaluation_screenshots(driver, "evaluation-20-classes")
    finally:
        server.kill()


def test_with_a_token_the_page_keeps_it_out_of_every_url(extractor: Path, video: Path, tmp_path: Path, browser: Any) -> None:
    token = "browser-token-0123456789abcdef"
    running = Server(tmp_path / "state", extractor, video, free_port(), "--token", token)
    running.start_with(f"api/state?token={token}")
    driver = browser
    try:
        driver.get(f"{running.url}?token={token}")
        wait_for(lambda: driver.find_element("id", "connection").text == "Connected", 15, what="the page to connect")
        wait_for(lambda: _frame(driver) is not None, 15, what="the live view (events and stream by the cookie)")
        assert token not in driver.current_url
        field = driver.find_element("id", "new-class-name")
        field.send_keys("gear")
        field.submit()
        wait_for(lambda: _count(driver, "gear") == 0, 10, what="class gear on the page")
        _card(driver, "gear").find_element("css selector", ".add-frame").click()
        wait_for(lambda: _count(driver, "gear") == 1, 10, what="a frame added")
        loaded = "return [...document.querySelectorAll('img')].filter(i => i.getAttribute('src')).every(i => i.complete && i.naturalWidth > 0)"
        wait_for(lambda: driver.execute_script(loaded), 15, what="the stream and the thumbnail to load")
        urls = driver.execute_script("return [...document.querySelectorAll('[src],[href]')].map(e => e.getAttribute('src') || e.getAttribute('href'))")
        assert urls and not [url for url in urls if token in url or "token=" in url]
        driver.refresh()  # the page's address no longer holds the token: the cookie alone opens it again
        wait_for(lambda: _count(driver, "gear") == 1, 15, what="the page after a reload")
    finally:
        running.kill()
