"""The ask form: ranges checked before sending, the server's field errors shown next to their field, the
settings of an opened session, and follow-ups in the shown session's thread."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import pytest
from playwright.sync_api import Page, WebSocket, expect

from tests.browser.conftest import CHROMIUM, Stack, screenshot

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing (`make test` installs Debian's chromium)", allow_module_level=True)

pytestmark = pytest.mark.browser

SESSION_TIMEOUT = 30_000


class Frames:
    """The page's WebSocket traffic, parsed: what it sent and what it received."""

    def __init__(self, page: Page) -> None:
        self.sent: list[dict[str, Any]] = []
        self.received: list[dict[str, Any]] = []
        page.on("websocket", self._attach)

    def _attach(self, ws: WebSocket) -> None:
        ws.on("framesent", lambda payload: self.sent.append(json.loads(payload)))
        ws.on("framereceived", lambda payload: self.received.append(json.loads(payload)))

    def starts(self) -> list[dict[str, Any]]:
        """The requests of the `orchestrate` messages sent so far."""
        return [m["request"] for m in self.sent if m.get("type") == "orchestrate"]

    def session_started(self, session_id: str) -> dict[str, Any]:
        """The session_started event of ``session_id`` (request as accepted, thread_turns)."""
        for m in self.received:
            event = m.get("event") or {}
            if m.get("type") == "event" and event.get("session_id") == session_id and "session_started" in event:
                return dict(event["session_started"])
        raise AssertionError(f"no session_started event for {session_id}")


def ready_form(page: Page) -> None:
    page.goto("/")
    expect(page.locator("#connection")).to_have_text("live")
    expect(page.locator("#start")).to_be_enabled()


def wait_for_end(page: Page, status: str = "completed") -> None:
    expect(page.locator("#session")).to_have_attribute("data-status", status, timeout=SESSION_TIMEOUT)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max-rounds", "11", "Max rounds must be a whole number from 1 to 10."),
        ("max-rounds", "0", "Max rounds must be a whole number from 1 to 10."),
        ("max-rounds", "2.5", "Max rounds must be a whole number from 1 to 10."),
        ("max-rounds", "", "Max rounds is required."),
        ("threshold", "10.5", "Quality threshold must be a number from 0 to 10."),
        ("threshold", "-1", "Quality threshold must be a number from 0 to 10."),
        ("budget", "0", "Budget must be greater than 0"),
        ("budget", "-2", "Budget must be greater than 0"),
        ("critics", "6", "Critics must be a whole number from 0 to 5."),
    ],
)
def test_inputs_enforce_the_server_ranges_before_sending(page: Page, field: str, value: str, message: str) -> None:
    frames = Frames(page)
    ready_form(page)
    page.fill("#prompt", f"Name a colour. [{uuid.uuid4()}]")
    page.fill(f"#{field}", value)
    page.click("#start")
    error = page.locator(f"#{field}-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text(message)
    field_input = page.locator(f"#{field}")
    expect(field_input).to_have_attribute("aria-invalid", "true")
    expect(field_input).to_be_focused()
    # The message is the field's description for assistive technology.
    assert f"{field}-error" in (field_input.get_attribute("aria-describedby") or "").split()
    assert frames.starts() == [], "a request the server would refuse was sent"
    expect(page.locator("#session")).to_be_hidden()
    # Editing the field clears its error.
    page.fill(f"#{field}", "1")
    expect(error).to_be_hidden()
    expect(field_input).not_to_have_attribute("aria-invalid", "true")


def test_a_blank_prompt_is_refused_next_to_the_prompt(page: Page) -> None:
    frames = Frames(page)
    ready_form(page)
    page.fill("#prompt", "   ")
    page.click("#start")
    expect(page.locator("#prompt-error")).to_have_text("Write a prompt first.")
    expect(page.locator("#prompt")).to_be_focused()
    assert frames.starts() == []


def test_no_critics_holds_max_rounds_at_one(page: Page) -> None:
    frames = Frames(page)
    ready_form(page)
    page.fill("#prompt", f"Name a colour. [{uuid.uuid4()}]")
    page.fill("#max-rounds", "4")
    page.fill("#critics", "0")
    expect(page.locator("#max-rounds")).to_have_value("1")
    expect(page.locator("#critics-note")).to_be_visible()
    # More rounds are refused next to the field instead of being sent (the server would refuse them).
    page.fill("#max-rounds", "3")
    page.click("#start")
    expect(page.locator("#max-rounds-error")).to_contain_text("With no critics a session runs one round")
    assert frames.starts() == []
    screenshot(page, "form-field-error", full_page=False)
    page.fill("#max-rounds", "1")
    page.click("#start")
    wait_for_end(page)
    (request,) = frames.starts()
    assert request["critic_count"] == 0 and request["max_rounds"] == 1
    # Critics again: the full range is back.
    page.fill("#critics", "2")
    expect(page.locator("#critics-note")).to_be_hidden()
    expect(page.locator("#max-rounds")).to_have_attribute("max", "10")


def test_a_server_validation_error_is_shown_next_to_its_field(page: Page) -> None:
    """A page whose limits are out of date (here: the input's max removed) sends what the server refuses;
    the gateway's error names the field, and the form shows it there."""
    frames = Frames(page)
    ready_form(page)
    page.evaluate("document.getElementById('max-rounds').removeAttribute('max')")
    page.fill("#prompt", f"Name a colour. [{uuid.uuid4()}]")
    page.fill("#max-rounds", "11")
    page.click("#start")
    error = page.locator("#max-rounds-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text(re.compile(r"at most 10|between 1 and 10"))
    expect(error).not_to_contain_text("max_rounds:")  # the field's name is implied by where it is shown
    expect(page.locator("#max-rounds")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#max-rounds")).to_be_focused()
    assert [r["max_rounds"] for r in frames.starts()] == [11]
    expect(page.locator("#form-error")).to_have_text("")  # said once, next to the field, not again above the form
    # No card is left "starting…", and the form can be used again.
    expect(page.locator("#session-status:visible", has_text="starting")).to_have_count(0)
    expect(page.locator("#start")).to_be_enabled()
    page.fill("#max-rounds", "1")
    expect(error).to_be_hidden()


def test_opening_a_session_fills_the_form_with_its_settings(page: Page, stack: Stack) -> None:
    created = stack.rest(
        "POST",
        "/v1/orchestrations",
        {
            "prompt": f"Name three rivers. [{uuid.uuid4()}]",
            "max_rounds": 2,
            "quality_threshold": 6.5,
            "critic_count": 1,
            "budget_usd": 0.5,
            "preferences": {
                "quality_weight": 1,
                "cost_weight": 0.05,
                "latency_weight": 0.05,
                "pinned_model": "qwen/qwen3-coder",
            },
        },
    )
    session_id = created["session_id"]
    ready_form(page)
    page.fill("#prompt", "my draft, kept")
    page.evaluate("(id) => { location.hash = '#/session/' + id; }", session_id)
    expect(page.locator("#session")).to_have_attribute("data-session-id", session_id)
    expect(page.locator("#settings-note")).to_have_text(f"Settings of session {session_id[:8]}.")
    expect(page.locator("#max-rounds")).to_have_value("2")
    expect(page.locator("#threshold")).to_have_value("6.5")
    expect(page.locator("#critics")).to_have_value("1")
    expect(page.locator("#budget")).to_have_value("0.5")
    expect(page.locator("#preference")).to_have_value("quality")
    expect(page.locator("#pinned-model")).to_have_value("qwen/qwen3-coder")
    expect(page.locator("#prompt")).to_have_value("my draft, kept")
    # Changing a setting retires the note (the form no longer shows that session's settings).
    page.fill("#threshold", "7")
    expect(page.locator("#settings-note")).to_be_empty()


def test_weights_that_match_no_preset_are_kept_as_the_sessions_own(page: Page, stack: Stack) -> None:
    weights = {"quality_weight": 0.7, "cost_weight": 0.2, "latency_weight": 0.1}
    created = stack.rest(
        "POST",
        "/v1/orchestrations",
        {"prompt": f"Name a bird. [{uuid.uuid4()}]", "max_rounds": 1, "critic_count": 0, "preferences": weights},
    )
    frames = Frames(page)
    page.goto(f"/#/session/{created['session_id']}")
    wait_for_end(page)
    expect(page.locator("#preference")).to_have_value("custom")
    page.fill("#prompt", f"Name another bird. [{uuid.uuid4()}]")
    page.click("#start")
    wait_for_end(page)
    (request,) = frames.starts()
    assert {k: request["preferences"][k] for k in weights} == weights


def test_a_follow_up_continues_the_shown_sessions_thread(page: Page, stack: Stack) -> None:
    frames = Frames(page)
    ready_form(page)
    first_prompt = f"Name a famous bridge. [{uuid.uuid4()}]"
    page.fill("#prompt", first_prompt)
    page.fill("#critics", "0")
    page.click("#start")
    session = page.locator("#session")
    expect(session).to_have_attribute("data-session-id", re.compile(r".+"))
    first_id = str(session.get_attribute("data-session-id"))
    wait_for_end(page)
    thread_id = frames.session_started(first_id)["request"]["thread_id"]
    assert thread_id, "every session asked in the browser starts a thread"

    offer = page.locator("#follow-up-offer")
    expect(offer).to_be_visible()
    offer.click()
    expect(page.locator("#follow-up")).to_be_visible()
    expect(page.locator("#follow-up-context")).to_contain_text("Previous turn: “Name a famous bridge.")
    expect(page.locator("#prompt")).to_be_focused()
    screenshot(page, "form-follow-up", full_page=False)
    page.fill("#prompt", "How long is it?")
    page.click("#start")
    expect(session).not_to_have_attribute("data-session-id", first_id)
    expect(session).to_have_attribute("data-session-id", re.compile(r".+"))
    second_id = str(session.get_attribute("data-session-id"))
    wait_for_end(page)

    started = frames.session_started(second_id)
    assert started["request"]["thread_id"] == thread_id
    assert started.get("thread_turns") == 1, "the orchestrator should have used the first turn as context"
    listed = stack.rest("GET", f"/v1/orchestrations?thread_id={thread_id}")["sessions"]
    assert {s["session_id"] for s in listed} == {first_id, second_id}
    # The follow-up stays on for the next turn of the same thread, until ✕ ends it.
    expect(page.locator("#follow-up")).to_be_visible()
    expect(page.locator("#follow-up-context")).to_contain_text("How long is it?")
    page.click("#follow-up-clear")
    expect(page.locator("#follow-up")).to_be_hidden()
    expect(page.locator("#follow-up-offer")).to_be_visible()
    page.fill("#prompt", f"Name a famous tower. [{uuid.uuid4()}]")
    page.click("#start")
    wait_for_end(page)
    third = frames.starts()[-1]
    assert third["thread_id"] and third["thread_id"] != thread_id
