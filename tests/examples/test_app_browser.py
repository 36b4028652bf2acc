"""`examples/app.py` in a real browser: a tiny model served on 127.0.0.1, driven by headless Chromium (Debian's
`chromium` + `chromium-driver`, which `make test` installs when missing; nothing is downloaded by Selenium).

Under CI=true a missing browser, driver, Selenium or Gradio fails the test with the reason; elsewhere it skips.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tiny_models.unires import TINY_SENTENCES, tiny_model_and_processor

REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "outputs" / "app" / "browser_test.png"
IMAGE_SIZE = (120, 90)  # (width, height): not square, so a resize to the model's input would show
EXPRESSIONS = [TINY_SENTENCES[0], TINY_SENTENCES[1]]
# Chromium without anything that calls out: the machine has no internet, and the test must not depend on it.
CHROMIUM_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-default-apps",
    "--disable-extensions", "--no-first-run", "--no-default-browser-check", "--metrics-recording-only",
    "--disable-domain-reliability", "--disable-client-side-phishing-detection", "--window-size=1280,1700",
]


def _unavailable(reason: str):
    """Fail under CI (the browser test must run there), skip on a developer's machine, naming what is missing."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"browser test cannot run under CI: {reason}", pytrace=False)
    pytest.skip(reason)


def _browser_paths():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").is_file() else None)
    if chromium is None or driver is None:
        _unavailable(
            "Debian's chromium and chromium-driver are not installed (`make test` installs them as root: "
            "apt-get install -y chromium chromium-driver)"
        )
    return chromium, driver


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_http(url: str, process: subprocess.Popen, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the app exited with code {process.returncode} before serving {url}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"the app did not answer at {url} within {timeout:.0f} s")


@pytest.fixture
def app_url(tmp_path):
    try:
        import gradio  # noqa: F401
    except ImportError:
        _unavailable("gradio is not installed (the `[app]` extra: pip install -e '.[app]')")
    model, processor = tiny_model_and_processor()
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    port = _free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "GRADIO_TEMP_DIR": str(tmp_path / "gradio")}
    log_path = tmp_path / "app.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, str(REPO / "examples" / "app.py"), "--model", str(model_dir), "--host", "127.0.0.1",
             "--port", str(port), "--device", "cpu"],
            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        try:
            _wait_for_http(url, process)
        except AssertionError as error:
            raise AssertionError(f"{error}\n--- app log ---\n{log_path.read_text()[-4000:]}") from None
        yield url, log_path
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture
def browser(tmp_path):
    chromium, driver_path = _browser_paths()
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium is not installed (the `dev` extra)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(flag)
    # The driver path is given, so Selenium Manager (which would download drivers) is never asked.
    service = Service(executable_path=driver_path, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(120)
    try:
        yield driver
    finally:
        driver.quit()


def test_upload_two_expressions_show_overlay_and_legend(browser, app_url, tmp_path):  # browser first: fails fast
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    url, log_path = app_url
    image_path = tmp_path / "upload.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (IMAGE_SIZE[1], IMAGE_SIZE[0], 3), dtype=np.uint8)).save(image_path)

    wait = WebDriverWait(browser, 120)
    browser.get(url)
    try:
        file_input = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#image-file input[type=file]")))
        file_input.send_keys(str(image_path))
        # The upload is encoded at once; its preview appears when that is done.
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#preview img")))
        textbox = browser.find_element(By.CSS_SELECTOR, "#expressions textarea")
        textbox.click()
        textbox.send_keys("\n".join(EXPRESSIONS))  # Enter starts a new line in the multi-line box
        assert textbox.get_attribute("value").splitlines() == EXPRESSIONS
        browser.find_element(By.CSS_SELECTOR, "#segment-button").click()

        overlay = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#overlay img")))
        wait.until(lambda _: browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0",
                                                    overlay))
        natural = browser.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", overlay)
        wait.until(lambda _: all(e in browser.find_element(By.ID, "legend").text for e in EXPRESSIONS))
        legend_items = browser.find_elements(By.CSS_SELECTOR, "#legend .unires-expression")
        timings = browser.find_element(By.ID, "timings").text
    finally:
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(SCREENSHOT))
    assert tuple(natural) == IMAGE_SIZE, f"overlay is {natural}, uploaded {IMAGE_SIZE}"
    assert [item.text for item in legend_items] == EXPRESSIONS
    # The image was encoded at upload; Segment reused it and decoded both expressions.
    assert "encode image (cached" in timings and "2 of 2 expressions new" in timings
    assert "Traceback" not in log_path.read_text()
