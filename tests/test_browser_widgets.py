"""The widgets in a real browser: JupyterLab in headless Chromium runs the viewer and the
dataset browser; screenshots must show rendered content, and the slider must move the image."""

from __future__ import annotations

import io
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat
import numpy as np
import pytest
import requests
from nbformat.v4 import new_code_cell, new_notebook
from PIL import Image

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
    pytest.skip(
        "needs Debian's chromium and chromium-driver (.ci/apt-packages.txt)",
        allow_module_level=True,
    )
webdriver = pytest.importorskip("selenium.webdriver")

from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

CELLS = [
    "from insitu.datasets.reader import open_dataset\n"
    "from insitu.widgets import DatasetBrowser, SliceViewer\n"
    "from insitu.widgets.sources import NodeSource\n"
    'ds = open_dataset("locat-site-a")\n'
    "viewer = SliceViewer(ds.image(ds.series.series_id[0]), display_size=320)\n"
    "viewer",
    'DatasetBrowser(NodeSource("bob"))',
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_notebook(folder: Path, cells: list[str] = CELLS) -> Path:
    nb = new_notebook(cells=[new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    path = folder / "widgets.ipynb"
    nbformat.write(nb, path)
    return path


class Lab:
    def __init__(self, root: Path, home: Path) -> None:
        self.port, self.token = _free_port(), secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        lab = Path(sys.executable).with_name("jupyter-lab")
        env = os.environ | {"INSITU_HOME": str(home), "JUPYTER_CONFIG_DIR": str(root / ".jc")}
        # No "official Jupyter news?" toast over the widgets (and no fetch: we are offline).
        settings = root / ".lab-settings" / "@jupyterlab" / "apputils-extension"
        settings.mkdir(parents=True)
        (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
        self.log = open(root / "lab.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [str(lab), "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
             f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={root}",
             "--allow-root", "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=",
             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
             f"--LabApp.user_settings_dir={root / '.lab-settings'}"],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while True:
            assert self.proc.poll() is None, (root / "lab.log").read_text()
            try:
                status = requests.get(f"{self.url}/api/status?token={self.token}", timeout=5)
                if status.ok:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, (root / "lab.log").read_text()
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


def chromium(profile: Path) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 "--window-size=1400,1100", f"--user-data-dir={profile}"):  # fmt: skip
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))


def page_text(driver: webdriver.Chrome) -> str:
    """The page's visible text. A page that navigates (a login's redirect) replaces its
    body between finding it and reading it: read the new one."""
    for _ in range(20):
        try:
            return str(driver.find_element(By.TAG_NAME, "body").text)
        except StaleElementReferenceException:
            continue
    raise AssertionError("the page kept replacing its body for 20 reads")


def run_widgets_notebook(driver: webdriver.Chrome, lab: Lab, name: str) -> None:
    driver.get(f"{lab.url}/lab/tree/{name}?token={lab.token}&reset")
    wait = WebDriverWait(driver, 180, poll_frequency=0.25)
    wait.until(lambda d: d.execute_script(
        "const app = window.jupyterapp; const w = app && app.shell.currentWidget;"
        "return !!(w && w.sessionContext && w.sessionContext.session"
        " && w.sessionContext.session.kernel"
        " && w.sessionContext.session.kernel.status === 'idle');"
    ))  # fmt: skip
    driver.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    wait.until(lambda d: d.execute_script(
        "const img = document.querySelector('.jp-OutputArea-output img.widget-image');"
        "return !!(img && img.complete && img.naturalWidth > 0);"
    ))  # fmt: skip
    wait.until(lambda d: "locat-site-a" in page_text(d) and "no access" in page_text(d))


def element_png(driver: webdriver.Chrome, css: str) -> Image.Image:
    element = driver.find_element(By.CSS_SELECTOR, css)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
    return Image.open(io.BytesIO(element.screenshot_as_png)).convert("RGB")


def assert_rendered(image: Image.Image, what: str) -> None:
    pixels = np.asarray(image, dtype=np.int16)
    assert image.width > 100 and image.height > 100, f"{what}: {image.size}"
    distinct = len(np.unique(pixels.reshape(-1, 3), axis=0))
    assert distinct > 20 and pixels.std() > 10, f"{what} looks blank ({distinct} colours)"


@pytest.fixture
def lab(tmp_path: Path, site_node) -> Iterator[Lab]:
    write_notebook(tmp_path)
    running = Lab(tmp_path, site_node.root)
    try:
        yield running
    finally:
        running.stop()


def test_viewer_and_browser_render_and_respond_in_jupyterlab(lab: Lab, tmp_path: Path) -> None:
    driver = chromium(tmp_path / "chromium-profile")
    try:
        run_widgets_notebook(driver, lab, "widgets.ipynb")
        viewer = element_png(driver, ".jp-OutputArea-output img.widget-image")
        assert_rendered(viewer, "the slice viewer's image")
        driver.save_screenshot(str(tmp_path / "lab.png"))
        assert_rendered(Image.open(tmp_path / "lab.png").convert("RGB"), "the page")
        body = page_text(driver)
        assert "LOCAT-like trial (synthetic), site A" in body and "Request access" in body
        # Scrub: the slider's handle takes arrow keys; the kernel re-renders the slice.
        before = driver.find_element(By.CSS_SELECTOR, ".widget-image").get_attribute("src")
        label = next(e for e in driver.find_elements(By.CSS_SELECTOR, ".widget-html")
                     if "slice" in e.text and "mm" in e.text)  # fmt: skip
        old_label = label.text
        handle = driver.find_element(By.CSS_SELECTOR, ".widget-slider .noUi-handle")
        handle.send_keys(Keys.ARROW_LEFT)
        WebDriverWait(driver, 60).until(lambda _d: label.text != old_label)
        WebDriverWait(driver, 60).until(
            lambda d: (
                d.find_element(By.CSS_SELECTOR, ".widget-image").get_attribute("src") != before
            )
        )
        # Window preset: bone makes a different picture of the same slice.
        shown = driver.find_element(By.CSS_SELECTOR, ".widget-image").get_attribute("src")
        Select(driver.find_element(By.CSS_SELECTOR, ".widget-dropdown select")).select_by_value(
            "bone"
        )
        WebDriverWait(driver, 60).until(
            lambda d: d.find_element(By.CSS_SELECTOR, ".widget-image").get_attribute("src") != shown
        )
        assert "window 400/1800" in page_text(driver)
    finally:
        driver.quit()
