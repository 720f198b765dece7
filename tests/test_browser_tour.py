"""The first hour, in a real browser: `insitu demo`'s hub in headless Chromium, as the three
demo roles, the way the researcher's guide tells it.

bob (no access) logs in on the branded login page, lands on the site's page, runs the first
example notebook (the dataset browser; the refused read is one line) and asks for access;
sam sees the request on his landing page, approves it in the steward panel; alice runs the
viewer and submits two results to the airlock; sam reviews the figure (its preview is the
rendered image) and approves it; alice downloads it from her landing page in one click; the
public register lists the decisions.

Every step saves a screenshot and checks it shows a rendered page; they go to a temporary
folder, or with ``INSITU_SCREENSHOTS=docs/img`` replace the ones the docs show::

    INSITU_SCREENSHOTS=docs/img .venv/bin/python -m pytest tests/test_browser_tour.py
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from demo_running import Demo, running_demo
from PIL import Image
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait
from test_browser_widgets import assert_rendered, chromium, page_text

# A first spawn, or for the docs a demo of full size, on a loaded machine: more than the
# suite's 600 s for the first step.
pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(1200)]

WAIT = 300  # a first spawn on a loaded machine
SIZE = (1280, 800)  # the docs' screenshots
_LOGS: list[Path] = []  # the running demo's log, quoted when a step times out


@pytest.fixture(scope="module")
def demo(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """The session's small demo; for the docs' screenshots, the demo `make demo` runs."""
    if not os.environ.get("INSITU_SCREENSHOTS"):
        with running_demo(demo_root) as running:
            _LOGS[:] = [running.log]
            yield running
        return
    from insitu.datasets.synthetic import TrialSpec
    from insitu.demo import prepare

    root = tmp_path_factory.mktemp("demo-as-made")
    prepare(root, TrialSpec(), quiet=True)
    with running_demo(root, size_flags=[]) as running:
        _LOGS[:] = [running.log]
        yield running


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wanted = os.environ.get("INSITU_SCREENSHOTS")
    folder = Path(wanted) if wanted else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _wait(
    driver: WebDriver, check: Callable[[WebDriver], Any], timeout: float = WAIT, what: str = ""
) -> Any:
    """``check`` once it holds (an element gone stale under a navigation counts as not yet);
    on a timeout, what the browser showed and the demo's log."""
    try:
        return WebDriverWait(
            driver,
            timeout,
            poll_frequency=0.25,
            ignored_exceptions=(StaleElementReferenceException,),
        ).until(check)
    except TimeoutException:
        page = page_text(driver)[-3000:]
        log = _LOGS[0].read_text(errors="replace")[-6000:] if _LOGS else ""
        raise AssertionError(
            f"waited {timeout:.0f} s for {what or check.__name__} at {driver.current_url}"
            f"\n--- page ---\n{page}\n--- demo log (end) ---\n{log}"
        ) from None


def _shown(driver: WebDriver, xpath: str, timeout: float = 120) -> WebElement:
    """The first element on screen that matches (hidden tabs hold look-alikes)."""

    def visible(d: WebDriver) -> WebElement | None:
        return next((e for e in d.find_elements(By.XPATH, xpath) if e.is_displayed()), None)

    return _wait(driver, visible, timeout, xpath)  # type: ignore[no-any-return]


def _button(driver: WebDriver, label: str) -> WebElement:
    return _shown(driver, f"//button[normalize-space()='{label}' and not(@disabled)]")


def _text_input(driver: WebDriver, label: str) -> WebElement:
    return _shown(driver, f"//div[contains(@class,'widget-text')][label[normalize-space()="
                          f"'{label}']]//input")  # fmt: skip


def _login(driver: WebDriver, demo: Demo, user: str) -> None:
    password = json.loads((demo.root / "logins.json").read_text())[user]
    driver.get(demo.url + "/hub/login")
    _shown(driver, "//*[@id='username_input']").send_keys(user)
    driver.find_element(By.ID, "password_input").send_keys(password)
    driver.find_element(By.ID, "login_submit").click()
    _wait(driver, lambda d: f"Welcome, {user}" in page_text(d))
    assert "/services/site/" in driver.current_url, "after login: the site's landing page"


def _notebook(driver: WebDriver, demo: Demo, user: str, name: str) -> None:
    """Open an example notebook the way the landing page links it (the hub starts the
    server when it is not running), clear old outputs and run every cell."""
    # ?reset: a fresh workspace, so the notebook opened earlier in this browser is not
    # restored beside it and "Run All Cells" cannot act on that one instead.
    target = quote(f"/user/{user}/lab/tree/{name}?reset", safe="")
    driver.get(f"{demo.url}/hub/spawn/{user}?next={target}")
    tab = f"//div[contains(@class,'lm-TabBar-tabLabel') and normalize-space()='{name}']"
    _shown(driver, f"//li[contains(@class,'lm-mod-current')][.{tab}]")
    # The notebook opened in the site's kernel (no kernel dialog), which is idle.
    _shown(driver, "//*[contains(@class,'jp-Toolbar')]//*[contains(normalize-space(),"
                   "'(insitu)')]")  # fmt: skip
    _shown(driver, "//*[contains(@class,'jp-Notebook-ExecutionIndicator')]"
                   "[@data-status='idle']")  # fmt: skip
    _menu(driver, "Run", "Run All Cells")


def _menu(driver: WebDriver, menu: str, item: str) -> None:
    """Click ``menu`` > ``item`` once the item is enabled (the notebook has the focus)."""
    bar = f"//div[contains(@class,'lm-MenuBar-itemLabel') and text()='{menu}']"
    entry = (f"//li[contains(@class,'lm-Menu-item') and not(contains(@class,'lm-mod-disabled'))]"
             f"[.//div[contains(@class,'lm-Menu-itemLabel') and text()='{item}']]")  # fmt: skip

    def clicked(d: WebDriver) -> bool:
        d.find_element(By.XPATH, bar).click()
        found = [e for e in d.find_elements(By.XPATH, entry) if e.is_displayed()]
        if found:
            found[0].click()
            return True
        d.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)  # closed; try again
        return False

    _wait(driver, clicked)


def _page_size(driver: WebDriver, width: int, height: int) -> None:
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
    )


def _browser(profile: Path) -> WebDriver:
    """Chromium whose page is the docs' screenshot size."""
    driver = chromium(profile)
    _page_size(driver, *SIZE)
    return driver


def _save(png: bytes, path: Path) -> Path:
    """A small PNG for the docs: at most 256 colours, optimised."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    assert_rendered(image, path.name)
    image.quantize(colors=256).save(path, optimize=True)
    return path


def _shot(
    driver: WebDriver, folder: Path, name: str, element: WebElement | None = None,
    *, page: bool = False,
) -> Path:  # fmt: skip
    """The page, or one element (``page``: the page with the element in its middle). An
    element taller than the page is taken on a page tall enough to show all of it."""
    if element is None or page:
        if element is not None:
            driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
        return _save(driver.get_screenshot_as_png(), folder / name)
    height = int(element.size["height"])
    if height > SIZE[1] - 150:
        _page_size(driver, SIZE[0], height + 300)
    try:
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
        return _save(element.screenshot_as_png, folder / name)
    finally:
        _page_size(driver, *SIZE)


def _output_of(driver: WebDriver, text: str, timeout: float = WAIT) -> WebElement:
    """The output area (of one cell) that shows ``text``."""
    return _shown(driver, f"//div[contains(@class,'jp-OutputArea-output')]"
                          f"[contains(normalize-space(), \"{text}\")]", timeout)  # fmt: skip


# The tour, in order (each step builds on the one before).


def test_bob_logs_in_browses_is_refused_and_asks_for_access(
    demo: Demo, shots: Path, tmp_path: Path
) -> None:
    """The branded login, his landing page, the browser; the refused read; his request."""
    driver = _browser(tmp_path / "bob")
    try:
        driver.get(demo.url + "/hub/login")
        _wait(driver, lambda d: "Hospital A" in page_text(d))
        assert "site-a" in page_text(driver) and "airlock" in page_text(driver)
        _shot(driver, shots, "login.png")
        _login(driver, demo, "bob")
        assert "no access" in page_text(driver) and "locat" in page_text(driver)
        _notebook(driver, demo, "bob", "01-explore-a-dataset.ipynb")
        refused = _output_of(driver, "AccessDeniedError")
        assert len(refused.text.strip().splitlines()) == 1, refused.text
        _shot(driver, shots, "refused-read.png", refused, page=True)
        _shown(driver, "//textarea").send_keys("Compare image noise between the dose arms")
        _shown(driver, "//input[@placeholder='project or grant name']").send_keys("noise study")
        _button(driver, "Request access").click()
        browser = _output_of(driver, "sent: the site's steward will decide")
        _shot(driver, shots, "dataset-browser.png", browser)
    finally:
        driver.quit()


def test_sam_finds_the_request_and_approves_it(demo: Demo, shots: Path, tmp_path: Path) -> None:
    """The request waits on his landing page; he approves it in the steward panel."""
    driver = _browser(tmp_path / "sam")
    try:
        _login(driver, demo, "sam")
        assert "Waiting for a steward (1)" in page_text(driver) and "bob" in page_text(driver)
        _shot(driver, shots, "landing-steward.png")
        _notebook(driver, demo, "sam", "06-steward-review.ipynb")
        _output_of(driver, "Compare image noise")
        _text_input(driver, "Reason").send_keys("fits the trial's consent")
        _button(driver, "Approve").click()
        _output_of(driver, "approved.")
    finally:
        driver.quit()


def test_alice_views_a_series_and_submits_two_results(
    demo: Demo, shots: Path, tmp_path: Path
) -> None:
    """The slice viewer (1-based), then a figure and a table into the airlock."""
    driver = _browser(tmp_path / "alice")
    try:
        _login(driver, demo, "alice")
        _notebook(driver, demo, "alice", "01-explore-a-dataset.ipynb")
        viewer = _shown(driver, "//div[contains(@class,'jp-OutputArea-output')]"
                                "[.//img[contains(@class,'widget-image')]]", WAIT)  # fmt: skip
        _wait(driver, lambda d: d.execute_script(
            "const img = arguments[0].querySelector('img.widget-image');"
            "return !!(img && img.complete && img.naturalWidth > 0);", viewer))  # fmt: skip
        assert "slice" in viewer.text and "of" in viewer.text
        readout = viewer.find_element(By.CSS_SELECTOR, ".widget-readout")
        assert int(readout.text) >= 1, "1-based, like the label"
        _shot(driver, shots, "slice-viewer.png", viewer)
        _notebook(driver, demo, "alice", "03-release-through-the-airlock.ipynb")
        panel = _output_of(driver, "My releases")
        _wait(driver, lambda _d: "liver-hu-by-group.csv" in panel.text)
        assert "submitted" in panel.text
        _shot(driver, shots, "airlock-panel.png", panel)
    finally:
        driver.quit()


def test_sam_reviews_the_figure_with_its_rendered_preview(
    demo: Demo, shots: Path, tmp_path: Path
) -> None:
    """The figure's preview is the image, rendered by the airlock; he approves it."""
    driver = _browser(tmp_path / "sam2")
    try:
        _login(driver, demo, "sam")
        assert "liver-enhancement" in page_text(driver), "the releases wait on his landing page"
        _notebook(driver, demo, "sam", "06-steward-review.ipynb")
        _shown(driver, "//*[contains(@class,'lm-TabBar-tabLabel') and "
                       "normalize-space()='Releases (2)']").click()  # fmt: skip
        select = Select(_shown(driver, "//div[contains(@class,'widget-select')]//select"))
        figure = next(o.text for o in select.options if ".png" in o.text)
        select.select_by_visible_text(figure)
        # The preview is the figure itself, rendered by the airlock (hub/airlock_preview.py).
        preview = _shown(driver, "//div[contains(@class,'jp-OutputArea-output')]"
                                 "//img[contains(@class,'widget-image')]")  # fmt: skip
        loaded = "return arguments[0].complete && arguments[0].naturalWidth > 100;"
        _wait(driver, lambda d: d.execute_script(loaded, preview))
        image = Image.open(io.BytesIO(preview.screenshot_as_png)).convert("RGB")
        assert_rendered(image, "the figure's preview")
        _text_input(driver, "Reason").send_keys("a summary figure, no individual data")
        panel = _output_of(driver, "Steward")
        _shot(driver, shots, "steward-panel.png", panel)
        _button(driver, "Approve").click()
        _output_of(driver, "approved.")
    finally:
        driver.quit()


def test_alice_downloads_in_one_click_and_the_register_shows_the_decision(
    demo: Demo, shots: Path, tmp_path: Path
) -> None:
    """From her landing page, one click saves the approved figure; the public register."""
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver = _browser(tmp_path / "alice2")
    try:
        driver.execute_cdp_cmd(
            "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
        )
        _login(driver, demo, "alice")
        assert "approved" in page_text(driver)
        _shot(driver, shots, "landing-researcher.png")
        _shown(driver, "//a[normalize-space()='download']").click()  # one click

        def saved(_d: WebDriver) -> list[Path]:  # the browser's finished download
            return [p for p in downloads.iterdir() if p.suffix == ".png"]

        (figure_file,) = _wait(driver, saved, 120)
        assert figure_file.read_bytes()[:4] == b"\x89PNG"
        driver.get(demo.url + "/services/access/")
        _wait(driver, lambda d: "fits the trial's consent" in page_text(d))
        _shot(driver, shots, "register.png")
    finally:
        driver.quit()
