"""Browser tests: the real suite (`orchestratex up`, simulated models) driven by Debian's Chromium via Playwright.

The suite runs with ``ORX_SIM_SPEED`` low enough that a session takes a few seconds (rounds are observable
live) and a simulator profile in which one model appends hostile Markdown/HTML to every answer (the XSS
tests pin that model). A second gateway process with an API key configured serves the 401 test.
Screenshots go to ``test-artifacts/browser/``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, expect, sync_playwright

from tests.ports import free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "browser"
SERVICES = ("selector", "providers", "orchestrator", "analytics", "gateway")
# A few seconds per session: slow enough to watch rounds arrive, fast enough for the time budget.
SIM_SPEED = "8"
# The model whose answers carry the hostile payload (pinned by the XSS tests only).
HOSTILE_MODEL = "meta-llama/llama-4-maverick"
HOSTILE_SUFFIX = (
    "<script>window.__pwned=1</script>\n\n"
    '<img src=x onerror="window.__pwned=1">\n\n'
    "[click](javascript:window.__pwned=1)"
)
API_KEY = "browser-test-key-0123456789abcdef"


@dataclass
class Stack:
    """A running suite: its gateway's base URL and the processes to stop."""

    url: str
    data_dir: Path
    procs: list[subprocess.Popen[str]] = field(default_factory=list)
    pumps: list[threading.Thread] = field(default_factory=list)
    output: list[str] = field(default_factory=list)
    keyed_url: str = ""

    def rest(self, method: str, path: str, body: Any = None, key: str = "") -> Any:
        """Call the REST API of the key-less gateway (or the keyed one when ``key`` is given)."""
        base = self.keyed_url if key else self.url
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(base + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if key:
            request.add_header("Authorization", f"Bearer {key}")
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
        return json.loads(raw) if raw else None


def _pump(stream: Any, sink: list[str], ready: threading.Event, marker: str) -> None:
    for line in stream:
        sink.append(line)
        if marker in line:
            ready.set()


def _start(stack: Stack, args: list[str], env: dict[str, str], marker: str, what: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, cwd=REPO
    )
    stack.procs.append(proc)
    ready = threading.Event()
    sink = stack.output
    pump = threading.Thread(target=_pump, args=(proc.stdout, sink, ready, marker), daemon=True)
    pump.start()
    stack.pumps.append(pump)
    if not ready.wait(90):
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"{what} did not become ready:\n" + "".join(sink[-30:]))
    return proc


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`orchestratex up` on free ports, plus a second gateway that requires an API key."""
    data_dir = tmp_path_factory.mktemp("browser-suite")
    profile = data_dir / "hostile_profile.toml"
    profile.write_text(f'[models."{HOSTILE_MODEL}"]\nanswer_suffix = {json.dumps(HOSTILE_SUFFIX)}\n', encoding="utf-8")
    ports = {name: free_port() for name in SERVICES}
    env = {
        **os.environ,
        # Run this checkout's code whatever the editable install points at.
        "PYTHONPATH": str(REPO),
        "ORX_DATA_DIR": str(data_dir),
        "ORX_SIM_SPEED": SIM_SPEED,
        "ORX_SIM_PROFILE": str(profile),
        "ORX_LOG_FORMAT": "json",
        "ORX_LOG_LEVEL": "WARNING",
        "ORX_OUTBOX_INTERVAL": "0.2",
        "ORX_SHUTDOWN_GRACE": "3",
        # Many page loads from one address within a minute: the rate limit is not under test here.
        "ORX_GATEWAY_RATE_LIMIT": "1000000",
        **{f"ORX_{name.upper()}_LISTEN": f"127.0.0.1:{port}" for name, port in ports.items()},
    }
    env.pop("OPENROUTER_API_KEY", None)
    env.pop("ORX_GATEWAY_API_KEYS", None)
    env.pop("ORX_GATEWAY_API_KEYS_FILE", None)
    stack = Stack(f"http://127.0.0.1:{ports['gateway']}", data_dir)
    bin_dir = Path(sys.executable).parent
    try:
        up = [str(bin_dir / "orchestratex"), "up"]
        _start(stack, up, env, "Ctrl-C stops everything", "orchestratex up")
        keyed_port = free_port()
        # Keys are configured as hashes: tenant:sha256:<hex>.
        key_entry = f"browser-tests:sha256:{hashlib.sha256(API_KEY.encode()).hexdigest()}"
        keyed_env = {**env, "ORX_GATEWAY_LISTEN": f"127.0.0.1:{keyed_port}", "ORX_GATEWAY_API_KEYS": key_entry}
        keyed_log = data_dir / "keyed-gateway.log"
        with keyed_log.open("w") as log:
            keyed = subprocess.Popen(
                [sys.executable, "-m", "services.cli", "serve", "gateway"],
                env=keyed_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=REPO,
                text=True,
            )
        stack.procs.append(keyed)
        stack.keyed_url = f"http://127.0.0.1:{keyed_port}"
        _wait_http(stack.keyed_url + "/healthz", keyed, keyed_log)
        yield stack
    finally:
        for proc in reversed(stack.procs):
            _stop(proc)
        for pump in stack.pumps:
            pump.join(10)
        for proc in stack.procs:
            if proc.stdout is not None:
                proc.stdout.close()


def _wait_http(url: str, proc: subprocess.Popen[str], log: Path) -> None:
    """Poll ``url`` until it answers (the process has no banner to wait for)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the keyed gateway exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)  # polling a condition with a deadline, not synchronising on time
    pytest.fail(f"{url} did not answer in time")


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    """Debian's Chromium, headless. ``launch`` gives it a fresh temporary profile (user-data dir) and
    every test gets its own context (no shared storage)."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (`make test` installs Debian's chromium)")
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
    yield browser
    browser.close()


class PageErrors:
    """Console errors and uncaught exceptions seen by a page; the fixture fails the test on any."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.allowed: list[str] = []

    def console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.messages.append(f"console error: {message.text}")

    def page_error(self, error: Exception) -> None:
        self.messages.append(f"page error: {error}")

    def unexpected(self) -> list[str]:
        return [m for m in self.messages if not any(a in m for a in self.allowed)]


@pytest.fixture
def page_errors() -> PageErrors:
    return PageErrors()


@pytest.fixture
def page(browser: Browser, stack: Stack, page_errors: PageErrors) -> Iterator[Page]:
    """A fresh browser context at 1280x900 on the key-less gateway; fails on console or page errors."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=stack.url)
    context.set_default_timeout(20_000)
    page = context.new_page()
    page.on("console", page_errors.console)
    page.on("pageerror", page_errors.page_error)
    yield page
    context.close()
    problems = page_errors.unexpected()
    assert not problems, "the page logged errors:\n" + "\n".join(problems)


def screenshot(page: Page, name: str, full_page: bool = True) -> None:
    """Save a screenshot as a test artefact."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=full_page)


def start_session(
    page: Page, prompt: str, *, rounds: int = 3, threshold: float = 8, pinned: str = "", critics: int = 2
) -> str:
    """Fill the form, start, and return the session id once the gateway acknowledged it."""
    expect(page.locator("#connection")).to_have_text("live")
    page.fill("#prompt", prompt)
    page.fill("#max-rounds", str(rounds))
    page.fill("#threshold", str(threshold))
    page.fill("#critics", str(critics))
    if pinned:
        page.select_option("#pinned-model", pinned)
    page.click("#start")
    session = page.locator("#session")
    expect(session).to_have_attribute("data-session-id", re.compile(r".+"))
    return str(session.get_attribute("data-session-id"))


def assert_copy_of_pinned(target: Path, package: str, inner: str) -> None:
    """``target`` is the file ``inner`` of npm package ``package`` at the version package.json pins (skipped when
    node_modules is not installed; `make test` installs it)."""
    pinned = json.loads((REPO / "package.json").read_text())["devDependencies"][package]
    source = REPO / "node_modules" / package / inner
    if not source.exists():
        pytest.skip("node_modules is not installed (`make test` installs it)")
    installed = json.loads((REPO / "node_modules" / package / "package.json").read_text())["version"]
    assert installed == pinned, f"node_modules has {package} {installed}, package.json pins {pinned}"
    assert target.read_bytes() == source.read_bytes(), f"{target.name} differs from {package}/{inner}"
