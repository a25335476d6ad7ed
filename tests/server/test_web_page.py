"""The web page `cm serve` serves at /, driven in headless Chromium (selenium, Debian's chromium
and chromium-driver; nothing is downloaded).

- Generating one image with a class chosen by name, a seed and steps gives `cm generate`'s pixels
  for the same arguments, from exactly one request carrying them.
- The page is self-contained: no http(s):// URL in it, every request it makes goes to its own
  origin (or is a data:/blob: URL), no console errors (a CSP violation would be one).
- A value the server refuses (steps out of range) shows the server's own message.
- A server with --api-key: the page asks for the key on 401 and sends it afterwards.
- Inpainting a generated image: a mask painted with the mouse, the result shown beside it.

Run: CM_BINARY=build/cm CM_MODEL=models/fmnist-cm .venv/bin/python -m pytest tests/server/test_web_page.py
Environment: CHROMIUM, CHROMEDRIVER (default /usr/bin/chromium, /usr/bin/chromedriver);
CM_WEB_URL: test a page served elsewhere (e.g. a development proxy in front of a `cm serve`)
instead of starting the server.

Screenshot for the docs:
  python3 tests/server/test_web_page.py --screenshot docs/images/web_page.png
"""
import base64
import json
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import png  # noqa: E402
from cm_server import CmServer, binary, cm_generate, http, shipped_model  # noqa: E402

try:
    from selenium import webdriver
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait
except ImportError:  # pragma: no cover - reported as a skip by the tests
    webdriver = None

import pytest  # noqa: E402

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
TIMEOUT = 120


def make_driver(width=1100, height=900):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--no-first-run", "--disable-extensions", "--disable-background-networking",
                "--disable-component-update", "--disable-default-apps", "--disable-sync",
                "--metrics-recording-only", "--no-default-browser-check",
                f"--window-size={width},{height}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def require_browser():
    if webdriver is None:
        pytest.skip("selenium is not installed")
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            pytest.skip(f"{path} not found (apt-get install chromium chromium-driver)")


class Page:
    """The page at `url` in `driver`, with the few steps the tests take."""

    def __init__(self, driver, url):
        self.driver = driver
        self.url = url.rstrip("/")

    def open(self):
        self.driver.get_log("performance")  # drop earlier pages' events
        self.driver.get(self.url + "/")
        self.wait(lambda d: d.find_element(By.ID, "class").find_elements(By.TAG_NAME, "option"),
                  "the class list to load")
        return self

    def el(self, id_):
        return self.driver.find_element(By.ID, id_)

    def wait(self, condition, what, timeout=TIMEOUT):
        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.1).until(condition)
        except TimeoutException:
            raise AssertionError(f"timed out waiting for {what}; status: "
                                 f"{self.el('status').text!r}, error: {self.el('error').text!r}")

    def fill(self, id_, value):
        field = self.el(id_)
        field.clear()
        field.send_keys(str(value))

    def choose_class(self, name, index):
        select = Select(self.el("class"))
        texts = [o.text for o in select.options]
        if name in texts:
            select.select_by_visible_text(name)
        else:  # a server without class_names: classes by number
            select.select_by_value(str(index))

    def generate(self, cls=None, seed=None, steps=None, timesteps="", count=1):
        if cls is not None:
            self.choose_class(*cls)
        if seed is not None:
            self.fill("seed", seed)
        self.fill("steps", "" if steps is None else steps)
        self.fill("timesteps", timesteps)
        self.fill("count", count)
        self.el("generate").click()

    def wait_images(self, count):
        return self.wait(lambda d: (lambda imgs: imgs if len(imgs) >= count else False)(
            d.find_elements(By.CSS_SELECTOR, "#gallery figure img")), f"{count} image(s)")

    def wait_idle(self):
        self.wait(lambda d: d.find_element(By.ID, "generate").is_enabled(), "the batch to end")

    def requests(self):
        """Requests the page made since open(): [(method, url, post body or None)]."""
        out = []
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message.get("method") != "Network.requestWillBeSent":
                continue
            request = message["params"]["request"]
            out.append((request["method"], request["url"], request.get("postData")))
        return out


def png_of(img):
    src = img.get_attribute("src")
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix), src[:64]
    return png.decode(base64.b64decode(src[len(prefix):]))


def model_info(url):
    status, _, body = http("GET", url + "/v1/models")
    assert status == 200, body
    return json.loads(body)["data"][0]


def class_names(info):
    if info.get("class_names"):
        return info["class_names"]
    path = os.path.join(shipped_model(), "class_names.json")
    if os.path.isfile(path):
        with open(path) as f:
            return json.load(f)
    return None


@pytest.fixture(scope="module")
def server():
    if os.environ.get("CM_WEB_URL"):
        yield os.environ["CM_WEB_URL"].rstrip("/")
        return
    if not os.path.isfile(binary()):
        pytest.skip(f"no cm binary at {binary()} (set CM_BINARY)")
    require_browser()
    with CmServer() as s:
        yield s.url


@pytest.fixture(scope="module")
def driver():
    require_browser()
    d = make_driver()
    yield d
    d.quit()


def test_page_is_self_contained(server, driver):
    status, headers, body = http("GET", server + "/")
    assert status == 200
    headers = {k.lower(): v for k, v in headers.items()}
    assert headers["content-type"].startswith("text/html")
    text = body.decode("utf-8")
    assert not re.search(r"https?://", text), re.search(r".{40}https?://.{40}", text).group(0)
    assert not re.search(r"<script[^>]+src|<link(?![^>]+href=\"data:)", text)

    page = Page(driver, server).open()
    page.wait(lambda d: "\u00d7" in d.find_element(By.ID, "model").text, "the model line")
    time.sleep(0.5)  # anything the page would fetch after loading
    urls = [url for _, url, _ in page.requests()]
    assert urls, "no requests seen in the performance log"
    foreign = [u for u in urls if not (u.startswith(server + "/") or u.startswith(("data:", "blob:")))]
    assert not foreign, foreign
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


def test_generate_matches_cm_generate(server, driver, tmp_path):
    info = model_info(server)
    names = class_names(info)
    index = 7 if info.get("num_classes") and info["num_classes"] > 7 else 0
    name = names[index] if names else str(index)
    seed, steps = 3, 2

    page = Page(driver, server).open()
    page.generate(cls=(name, index), seed=seed, steps=steps, count=1)
    img = page.wait_images(1)[0]
    page.wait_idle()
    got = png_of(img)

    # Exactly one request carried the image's arguments (a server without streamed jobs may have
    # refused "stream" first: that request made no image).
    bodies = [(url, json.loads(data)) for method, url, data in page.requests()
              if method == "POST" and data and url.endswith(("/v1/jobs", "/v1/images/generations"))]
    assert bodies, "no generation request seen"
    for url, body in bodies:
        assert body["n"] == 1 and body["seed"] == seed and body["steps"] == steps, body
        assert body["prompt"].lower() in (name.lower(), str(index)), body
        assert "timesteps" not in body, body
    assert len({url for url, _ in bodies}) == len(bodies), bodies

    reference = cm_generate(str(tmp_path), "-s", str(seed), "--class", name, "--steps", str(steps),
                            "-n", "1")
    assert len(reference) == 1, reference
    with open(reference[0], "rb") as f:
        want = png.decode(f.read())
    assert (got.width, got.height, got.channels) == (want.width, want.height, want.channels)
    assert got.pixels == want.pixels, "the page's image differs from cm generate's"

    figure = img.find_element(By.XPATH, "ancestor::figure")
    caption = figure.find_element(By.TAG_NAME, "figcaption").text
    assert f"seed {seed}" in caption and f"{steps} steps" in caption, caption
    if info.get("class_names"):
        assert name in caption, caption
    link = figure.find_element(By.LINK_TEXT, "Download")
    assert link.get_attribute("href") == img.get_attribute("src")
    assert link.get_attribute("download").endswith(".png")


def test_refused_steps_show_the_servers_message(server, driver):
    page = Page(driver, server).open()
    page.generate(seed=5, steps=100000, count=1)
    page.wait(lambda d: d.find_element(By.ID, "error").text, "an error message")
    page.wait_idle()
    status, _, body = http("POST", server + "/v1/images/generations",
                           {"prompt": "", "n": 1, "seed": 5, "steps": 100000})
    assert status == 400, body
    message = json.loads(body)["error"]["message"]
    assert page.el("error").text == message
    assert not driver.find_elements(By.CSS_SELECTOR, "#gallery figure")


def test_api_key_is_asked_for_and_sent(driver):
    if os.environ.get("CM_WEB_URL"):
        pytest.skip("starts its own server with --api-key")
    if not os.path.isfile(binary()):
        pytest.skip(f"no cm binary at {binary()} (set CM_BINARY)")
    with CmServer(args=["--api-key", "sesame"]) as s:
        page = Page(driver, s.url).open()
        driver.execute_script("sessionStorage.clear()")
        page.generate(seed=1, steps=1, count=1)
        page.wait(lambda d: d.find_element(By.ID, "key-row").is_displayed(), "the key field")
        assert "API key" in page.el("error").text
        page.fill("apikey", "sesame")
        page.el("apikey-save").click()
        page.el("generate").click()
        page.wait_images(1)
        page.wait_idle()
        assert driver.execute_script("return sessionStorage.getItem('cm-api-key')") == "sesame"


def cm_edit(out_dir, *args):
    """Runs `cm edit` and returns the PNG paths it wrote."""
    os.makedirs(out_dir, exist_ok=True)
    subprocess.run([binary(), "edit", "-m", shipped_model(), "-q",
                    "-o", os.path.join(out_dir, "edit%d.png"), *args],
                   check=True, capture_output=True)
    return sorted(os.path.join(out_dir, f) for f in os.listdir(out_dir) if f.endswith(".png"))


def test_inpaint_a_generated_image(server, driver, tmp_path):
    status, _, _ = http("POST", server + "/v1/images/edits", b"", {"Content-Type": "text/plain"})
    if status in (404, 405):
        pytest.skip("this server has no /v1/images/edits")
    page = Page(driver, server).open()
    page.generate(seed=11, steps=1, count=1)
    img = page.wait_images(1)[0]
    page.wait_idle()
    img.find_element(By.XPATH, "ancestor::figure").find_element(
        By.XPATH, ".//button[normalize-space()='Inpaint']").click()
    page.wait(lambda d: "Paint over" in d.find_element(By.ID, "edit-status").text,
              "the image in the inpaint section")
    canvas = page.el("edit-mask")
    # The page scrolls the section into view smoothly; a drag planned mid-scroll lands elsewhere.
    tops = []
    page.wait(lambda d: tops.append(d.execute_script(
        "return document.getElementById('edit-mask').getBoundingClientRect().top")) or
        (len(tops) >= 3 and tops[-1] == tops[-2] == tops[-3]), "the scroll to the inpaint section")
    size = canvas.size["width"]
    # Drag across the middle third, left to right (offsets are from the canvas's centre).
    ActionChains(driver).move_to_element_with_offset(canvas, -size // 6, 0).click_and_hold() \
        .move_by_offset(size // 6, 0).move_by_offset(size // 6, 0).release().perform()
    painted = driver.execute_script(
        "const c = document.getElementById('edit-mask');"
        "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "const out = []; for (let i = 3; i < d.length; i += 4) out.push(d[i] > 0 ? 255 : 0);"
        "return out;")
    assert 0 < painted.count(255) < len(painted) // 2, "the drag painted nothing, or too much"
    label = int(img.find_element(By.XPATH, "ancestor::figure").get_attribute("data-class-label"))
    page.fill("edit-seed", 4)
    page.fill("edit-steps", 3)
    page.el("edit-submit").click()
    result = page.wait(lambda d: d.find_elements(By.CSS_SELECTOR, "#edit-result img") or
                       (d.find_element(By.ID, "edit-error").text and
                        pytest.fail("inpaint failed: " + d.find_element(By.ID, "edit-error").text)),
                       "the inpainted image")[0]
    got = png_of(result)
    source = png_of(img)
    assert (got.width, got.height) == (source.width, source.height)

    # cm edit with the generated image, the painted mask, the class and seed gives those pixels.
    image_path, mask_path = tmp_path / "image.png", tmp_path / "mask.png"
    image_path.write_bytes(base64.b64decode(img.get_attribute("src").split(",", 1)[1]))
    mask_path.write_bytes(png.encode_gray(bytes(painted), source.width, source.height))
    names = class_names(model_info(server))
    reference = cm_edit(str(tmp_path / "ref"), "--task", "inpaint", "--image", str(image_path),
                        "--mask", str(mask_path), "-s", "4", "--steps", "3", "-n", "1",
                        "--class", names[label] if names else str(label))
    with open(reference[0], "rb") as f:
        want = png.decode(f.read())
    assert (got.channels, got.pixels) == (want.channels, want.pixels), \
        "the page's inpainting differs from cm edit's"


def screenshot(out, classes=8):
    """Starts the server, generates a row of images, loads one into the inpaint section with a
    painted mask, inpaints it, and saves a screenshot to `out`."""
    url = os.environ.get("CM_WEB_URL")
    needed = (CHROMIUM, CHROMEDRIVER) + (() if url else (binary(),))
    missing = [p for p in needed if not os.path.isfile(p)]
    if webdriver is None or missing:
        sys.exit(f"screenshot: needs selenium and {', '.join(missing) or 'its browser'}")
    server = None if url else CmServer().start()
    driver = make_driver(1200, 1000)
    try:
        page = Page(driver, url or server.url).open()
        page.generate(seed=1, steps=2, count=classes)
        page.wait_images(classes)
        page.wait_idle()
        first = driver.find_elements(By.CSS_SELECTOR, "#gallery figure")[0]
        first.find_element(By.XPATH, ".//button[normalize-space()='Inpaint']").click()
        canvas = page.el("edit-mask")
        size = canvas.size["width"]
        driver.execute_script("document.getElementById('brush').value = 5")
        ActionChains(driver).move_to_element_with_offset(canvas, -size // 5, -size // 6) \
            .click_and_hold().move_by_offset(size // 5, 0).move_by_offset(size // 5, 0) \
            .move_by_offset(0, size // 6).move_by_offset(-size // 5, 0) \
            .move_by_offset(-size // 5, 0).release().perform()
        page.fill("edit-seed", 4)
        page.el("edit-submit").click()
        try:
            WebDriverWait(driver, TIMEOUT).until(
                lambda d: d.find_elements(By.CSS_SELECTOR, "#edit-result img") or
                d.find_element(By.ID, "edit-error").text)
        except TimeoutException:
            pass
        driver.execute_script("window.scrollTo(0, 0)")
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": 1200, "height": min(height, 2000), "deviceScaleFactor": 1, "mobile": False})
        time.sleep(0.3)
        driver.save_screenshot(out)
        print(out)
    finally:
        driver.quit()
        if server:
            server.stop()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--screenshot":
        screenshot(sys.argv[2])
    else:
        sys.exit("usage: test_web_page.py --screenshot OUT.png (the tests run under pytest)")
