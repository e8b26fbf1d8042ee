"""The browser driver: the official Socket.IO JavaScript client in Debian's headless Chromium.

``DISPEL_CHROMIUM`` and ``DISPEL_CHROMEDRIVER`` point elsewhere; ``DISPEL_CHROMIUM=/nonexistent``
makes dispel (and `make test`) act as if Chromium were absent.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from ..model import DispelError
from ..project import PACKAGE
from .pacer import PacerProcess

CHROMIUM = Path(os.environ.get("DISPEL_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("DISPEL_CHROMEDRIVER", "/usr/bin/chromedriver"))
BROWSER_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-quic",
)
INSTALL_HINT = "apt-get install chromium chromium-driver"
# The official client, which the sample app serves to the page (installed by `npm ci`).
CLIENT_JS = PACKAGE / "sample_app" / "node_modules" / "socket.io-client" / "dist" / "socket.io.min.js"


SELENIUM_MISSING = "selenium is not installed: pip install 'dispel[browser]' (the browser scenario's extra)"


def selenium_missing() -> str | None:
    """One line naming the extra when selenium (the ``browser`` extra) is not installed, else None."""
    import importlib.util

    return SELENIUM_MISSING if importlib.util.find_spec("selenium") is None else None


def missing() -> list[str]:
    """The browser programs that are not there (empty when the browser scenario can run)."""
    return [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]


def unavailable() -> str | None:
    """Why the browser scenario cannot run here, in one line naming the fix; None when it can."""
    absent = missing()
    if absent:
        return f"{' and '.join(absent)} not found: `{INSTALL_HINT}`"
    if selenium_missing():
        return selenium_missing()
    if not CLIENT_JS.is_file():
        return "the official Socket.IO client is not installed: `npm ci --prefix scripts/dispel/sample_app`"
    return None


def chromium_version() -> str | None:
    """The installed Chromium's version ("156.0.8078.108"), or None without one."""
    try:
        out = subprocess.run([str(CHROMIUM), "--version"], capture_output=True, text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r"\d+(?:\.\d+)+", out)
    return found.group(0) if found else None


class Launch:
    """Headless Chromium (through chromedriver) starting on a thread of its own, so that its
    start-up, a second or more, overlaps the app's import and start. The thread is started
    before any recording, so no recorder traces it; it only waits on chromedriver."""

    def __init__(self) -> None:
        absent = missing()
        if absent:
            raise DispelError(f"{' and '.join(absent)} not found: the browser scenario needs `{INSTALL_HINT}`")
        if selenium_missing():
            raise DispelError(selenium_missing())
        # selenium only where a browser runs (imported here, not on the thread)
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.profile = tempfile.mkdtemp(prefix="dispel-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in (*BROWSER_FLAGS, f"--user-data-dir={self.profile}"):
            options.add_argument(flag)
        self.driver = None
        self.error: BaseException | None = None
        self._taken = False

        def launch() -> None:
            try:
                self.driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
            except BaseException as exc:  # noqa: BLE001 - taken by take()
                self.error = exc

        self._thread = threading.Thread(target=launch, name="dispel-chromium-launch", daemon=True)
        self._thread.start()

    def take(self):
        """The started driver (raises what the start raised); the caller closes it from now on."""
        self._thread.join()
        self._taken = True
        if self.error is not None:
            raise self.error
        return self.driver

    def close(self) -> None:
        """Stop the browser if nobody took it; its profile folder goes either way."""
        self._thread.join()
        if self.driver is not None and not self._taken:
            self.driver.quit()
        self.driver = None
        shutil.rmtree(self.profile, ignore_errors=True)


class BrowserClient:
    """The official Socket.IO JavaScript client on the app's /chat page, in headless Chromium
    (Debian's chromium and chromedriver, through selenium). A step is the page's
    ``window.dispelStep(name, done)``, which calls ``done("ok")`` or ``done("error: ...")``.
    The browser talks to the server through dispel.run.pacer, which makes what the server
    reads repeatable (see that module). ``launch``: a browser started ahead (else one is started now)."""

    def __init__(self, port: int, launch: Launch | None = None) -> None:
        from selenium.common.exceptions import WebDriverException

        launch = launch or Launch()
        self.driver = None
        self.launch = launch
        try:
            self.pacer = PacerProcess(port)
        except DispelError:
            launch.close()
            raise
        try:
            self.driver = launch.take()
            self.driver.get(f"http://127.0.0.1:{self.pacer.port}/chat")
            if not self.driver.execute_script("return typeof io === 'function' && typeof window.dispelStep === 'function'"):
                raise DispelError(
                    "the app's /chat page has no Socket.IO client: install it with `npm ci --prefix scripts/dispel/sample_app`"
                )
        except WebDriverException as exc:
            self.close()
            raise DispelError(f"headless Chromium failed: {_first_line(exc)}") from None
        except BaseException:
            self.close()
            raise

    def step(self, name: str, timeout: float, count: int = 1) -> None:
        from selenium.common.exceptions import TimeoutException, WebDriverException

        assert self.driver is not None
        self.driver.set_script_timeout(timeout)
        for _ in range(count):
            try:
                answer = self.driver.execute_async_script("window.dispelStep(arguments[0], arguments[arguments.length-1])", name)
            except TimeoutException:
                raise DispelError(f"step {name!r} did not finish within {timeout:.1f}s (raise it with --timeout)") from None
            except WebDriverException as exc:
                raise DispelError(f"step {name!r} failed in the browser: {_first_line(exc)}") from None
            if answer != "ok":
                raise DispelError(f"step {name!r} failed in the browser: {str(answer).removeprefix('error: ')}")

    def close(self) -> None:
        try:
            if self.driver is not None:
                self.driver.quit()  # ends chromium, then chromedriver
        finally:
            self.driver = None
            self.launch.close()
            self.pacer.close()


def _first_line(exc: Exception) -> str:
    text = getattr(exc, "msg", None) or str(exc) or type(exc).__name__
    return text.strip().splitlines()[0]
