"""The page's "unknown" live view and its queue of unsure frames, in a real browser against the real server process.

A state taught gears and washers watches a looping video that also shows nuts: the live view says
"unknown (closest: ...)", the unsure frames fill the queue panel, one is taught to a new class "nut"
from the page and another dismissed. A screenshot of the live view saying unknown beside the queue
goes to the test's temporary folder (``unknown-and-queue.png``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from serve.test_browser import ARTIFACTS, _card, _count, browser, pytestmark  # noqa: F401  (the fixture and the skip rules)
from serve.test_unknown_queue import frames, nut_video  # noqa: F401  (fixtures)
from serve.webtools import Server, free_port, wait_for

SCREENSHOT = "unknown-and-queue.png"


@pytest.fixture
def server(extractor: Path, nut_video: Path, frames: list[np.ndarray], tmp_path: Path) -> Iterator[Server]:  # noqa: F811
    from lastlayer.teach.session import TeachingSession

    with TeachingSession(tmp_path / "state", extractor) as session:  # taught before the server opens the state
        session.add_examples("gear", frames[0:15:2])
        session.add_examples("washer", frames[30:45:2])
    running = Server(tmp_path / "state", extractor, nut_video, free_port())
    running.start()
    yield running
    running.kill()


def _panel(driver: Any, name: str) -> str | None:
    return driver.find_element("id", "live-panel").get_attribute(name)


def _queued(driver: Any) -> list[str]:
    """The ids of the frames the queue panel lists."""
    try:
        return [item.get_attribute("data-id") for item in driver.find_elements("css selector", "#uncertain-list li")]
    except Exception:  # re-rendered meanwhile
        return []


def _act(driver: Any, item_id: str, action: Any) -> bool:
    """``action(row)`` on the listed frame ``item_id`` (the list re-renders as frames arrive: retried by the caller)."""
    try:
        action(driver.find_element("css selector", f'#uncertain-list li[data-id="{item_id}"]'))
        return True
    except Exception:
        return False


def test_the_page_shows_unknown_and_teaches_from_the_queue(server: Server, browser: Any, tmp_path: Path) -> None:  # noqa: F811
    from selenium.webdriver.support.ui import Select

    driver = browser
    driver.set_window_size(1280, 1350)  # the live view and the queue panel in one screenshot
    driver.get(server.url)
    wait_for(lambda: driver.find_element("id", "connection").text == "Connected", 15, what="the page to connect")
    wait_for(lambda: len(_queued(driver)) >= 2, 30, what="unsure frames listed in the queue panel")
    assert "Unknown answer: unknown below similarity" in driver.find_element("id", "uncertain-rule").text

    shot = tmp_path / SCREENSHOT
    for _ in range(100):  # the live view moves on: keep a screenshot taken while it said unknown before and after
        wait_for(lambda: _panel(driver, "data-unknown") == "true", 15, what="the live view to say unknown")
        text = driver.find_element("id", "prediction-text").text
        driver.save_screenshot(str(shot))
        if _panel(driver, "data-unknown") == "true" and text.startswith("Prediction: unknown (closest: "):
            break
    else:
        pytest.fail("no screenshot of the live view saying unknown")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / SCREENSHOT).write_bytes(shot.read_bytes())  # kept with the other screenshots of the page
    assert _panel(driver, "data-top") != "unknown" or driver.find_element("id", "prediction-text").text.startswith(
        "Prediction: unknown (closest: ")
    wait_for(lambda: _panel(driver, "data-unknown") == "false" and _panel(driver, "data-top") in ("gear", "washer"), 15,
             what="the live view to name a taught class again")

    field = driver.find_element("id", "new-class-name")
    field.send_keys("nut")
    field.submit()
    wait_for(lambda: _count(driver, "nut") == 0, 10, what="class nut on the page")

    first = wait_for(lambda: (ids := _queued(driver)) and ids[0], 10, what="a listed frame")

    def teach(row: Any) -> None:
        Select(row.find_element("css selector", ".uncertain-class")).select_by_visible_text("nut")
        row.find_element("css selector", ".uncertain-teach").click()

    wait_for(lambda: _act(driver, first, teach), 10, what="teaching a listed frame")
    wait_for(lambda: _count(driver, "nut") == 1, 10, what="the frame taught to nut")
    wait_for(lambda: first not in _queued(driver), 10, what="the taught frame to leave the queue")

    second = wait_for(lambda: (ids := _queued(driver)) and ids[0], 10, what="another listed frame")
    wait_for(lambda: _act(driver, second, lambda row: row.find_element("css selector", ".uncertain-dismiss").click()), 10,
             what="dismissing a listed frame")
    wait_for(lambda: second not in _queued(driver), 10, what="the dismissed frame to leave the queue")
    assert (_count(driver, "gear"), _count(driver, "washer"), _count(driver, "nut")) == (8, 8, 1)
