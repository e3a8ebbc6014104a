"""The page of a state started on a classifier, in a real browser against the real server: it offers to keep the
classifier's classes, then shows them as one card with a search (never a card each), the live view ranks them
with the classes taught, and the evaluation says how they fared. Screenshots: ``teach-kept-*`` in ``.artifacts/``."""

from __future__ import annotations

import time
from pathlib import Path

from lastlayer.images.render import render_frame
from serve.test_browser import ARTIFACTS, _card, _count, _frame, _screenshots, browser  # noqa: F401 (a fixture)
from serve.test_browser import pytestmark as browser_marks
from serve.test_kept_classes import OWN, classifier  # noqa: F401 (a fixture)
from serve.webtools import Server, free_port, kind_at, png, wait_for

from conftest import CLASSIFIER_V2

pytestmark = browser_marks


def test_the_page_offers_to_keep_the_classes_and_shows_them_as_one_card(classifier: Path, video: Path, browser,  # noqa: F811
                                                                         tmp_path: Path) -> None:
    driver = browser
    server = Server(tmp_path / "state", classifier, video, free_port())
    server.start()
    try:
        driver.get(server.url)
        wait_for(lambda: driver.find_element("id", "connection").text == "Connected", 15, what="the page to connect")
        wait_for(lambda: _frame(driver) is not None, 15, what="the live view")
        offer = driver.find_element("id", "keep-classes")
        wait_for(offer.is_displayed, 10, what="the offer to keep the classifier's classes")
        assert offer.text == f"Keep its {OWN} classes" and CLASSIFIER_V2 in driver.find_element("id", "origin-text").text
        assert driver.find_element("id", "live-panel").get_attribute("data-top") == ""  # its classes dropped: nothing taught
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "teach-keep-offer-desktop-1280x800.png"))
        offer.click()

        card = driver.find_element("id", "own-classes")
        wait_for(card.is_displayed, 10, what="the card of the classifier's own classes")
        assert driver.find_element("id", "own-classes-heading").text == f"{OWN} classes of {CLASSIFIER_V2}"
        assert not offer.is_displayed() and driver.find_elements("css selector", "#class-list li") == []
        assert driver.find_element("id", "finetune").get_attribute("disabled") is not None
        # before any class of its own, the live view shows the classifier's answers
        wait_for(lambda: driver.find_element("id", "live-panel").get_attribute("data-top"), 15, what="the classifier's answer")
        driver.find_element("css selector", "#own-find summary").click()
        driver.find_element("id", "own-search").send_keys("tabby")
        wait_for(lambda: "tabby, tabby cat" in driver.find_element("id", "own-matches").text, 10, what="a class found by name")

        for kind in ("gear", "washer"):
            field = driver.find_element("id", "new-class-name")
            field.send_keys(kind)
            field.submit()
            wait_for(lambda kind=kind: _count(driver, kind) == 0, 10, what=f"class {kind} on the page")
            photos = []
            for index in range(4):
                photos.append(tmp_path / f"{kind}-{index}.png")
                photos[-1].write_bytes(png(render_frame(kind, index)))
            _card(driver, kind).find_element("css selector", ".upload-input").send_keys("\n".join(map(str, photos)))
            wait_for(lambda kind=kind: _count(driver, kind) == 4, 20, what=f"the photos of {kind}")
        assert not driver.find_element("id", "unkeep-classes").is_displayed()  # (the state holds classes now)

        def showing_correct() -> str | None:  # the page's live prediction follows the video, the own classes competing
            panel = driver.find_element("id", "live-panel")
            frame, top = panel.get_attribute("data-frame"), panel.get_attribute("data-top")
            return top if frame and top == kind_at(int(frame)) else None

        first = wait_for(showing_correct, 20, what="the prediction to match the video")
        wait_for(lambda: (top := showing_correct()) and top != first, 20, what="the prediction to switch")

        driver.find_element("id", "evaluate").click()
        report = wait_for(lambda: driver.find_elements("css selector", "#evaluation .kept-report"), 10, what="the kept report")
        assert f"The model's {OWN} own classes on your examples" in report[0].text and "gear" in report[0].text
        time.sleep(0.2)
        _screenshots(driver, "teach-kept")
    finally:
        server.kill()
