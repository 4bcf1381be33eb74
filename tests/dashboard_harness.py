"""The dashboard in tests: a real server on port 0 in front of a real gateway, and HTTP
clients signed in the way a browser signs in (the CSRF cookie, then the form)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from dashboard.config import UiConfig
from dashboard.server import UiServer, create_server
from gateway.inprocess import GatewayThread


def start_ui(gateway: GatewayThread, **settings: object) -> UiServer:
    return create_server(UiConfig(gateway=gateway.address, port=0, **settings)).start()  # type: ignore[arg-type]


def signed_in(ui: UiServer, token: str) -> httpx.Client:
    """An HTTP client holding the cookies a browser gets by signing in with `token`."""
    client = httpx.Client(base_url=ui.url, timeout=30)
    client.get("/login")
    reply = client.post(
        "/login",
        data={"token": token, "csrf": client.cookies["metalearn_csrf"], "next": "/attempts"},
    )
    assert reply.status_code == 303, reply.text
    return client


SCREENSHOTS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"
CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMEDRIVER = "/usr/bin/chromedriver"


def chromium_missing() -> str:
    """Why no headless Chromium can run here ('' when it can)."""
    if not any(Path(p).exists() for p in CHROMIUM) or not Path(CHROMEDRIVER).exists():
        return "no Chromium: `make setup` installs Debian's chromium and chromium-driver"
    return ""


def chromium(width: int = 1400, height: int = 1000) -> Any:
    """Debian's headless Chromium through its driver, logging the console."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = next(p for p in CHROMIUM if Path(p).exists())
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                f"--window-size={width},{height}", "--disable-gpu-sandbox",
                "--enable-unsafe-swiftshader", "--use-angle=swiftshader"):  # fmt: skip
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


def browser_sign_in(driver: Any, ui: UiServer, token: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{ui.url}/login")
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.CSS_SELECTOR, ".login button[type=submit]").click()
    wait_for(lambda: "/attempts" in driver.current_url, "sign-in")


def console_errors(driver: Any) -> list[str]:
    """The page's JavaScript errors and policy violations since the last call."""
    errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    for message in errors:
        print("console:", message)
    return errors


def wait_for(check: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def screenshot(driver: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path
