"""The sessions list: search by prompt text (with the status filter and paging), whole rows that open their
session by mouse or keyboard, a stacked layout on phones, and counts in words with the right plural."""

from __future__ import annotations

import re
import time
import urllib.error
import uuid
from urllib.parse import parse_qs, urlparse

import pytest
from playwright.sync_api import Page, Request, expect

from tests.browser.conftest import CHROMIUM, Stack, screenshot

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing (`make test` installs Debian's chromium)", allow_module_level=True)

pytestmark = pytest.mark.browser

SESSION_TIMEOUT = 30_000


def finished(stack: Stack, prompt: str, **fields: object) -> str:
    """Start a session over REST and return its id once it has completed."""
    session_id = str(stack.rest("POST", "/v1/orchestrations", {"prompt": prompt, **fields})["session_id"])
    deadline = time.monotonic() + 30
    while (status := stack.rest("GET", f"/v1/orchestrations/{session_id}")["session"].get("status")) in (
        "SESSION_STATUS_RUNNING",
        None,
    ):
        assert time.monotonic() < deadline, "the session did not finish"
        time.sleep(0.1)  # polling the session's status with a deadline
    assert status == "SESSION_STATUS_COMPLETED", status
    return session_id


def listed(page: Page) -> list[str]:
    return [str(row.get_attribute("data-session-id")) for row in page.locator("#sessions-body tr").all()]


def record_requests(page: Page) -> list[Request]:
    """Every request the page makes from now on (Playwright wants a function, not a bound builtin)."""
    requests: list[Request] = []

    def on_request(request: Request) -> None:
        requests.append(request)

    page.on("request", on_request)
    return requests


def list_queries(requests: list[Request]) -> list[dict[str, list[str]]]:
    """The query strings of the page's GET /v1/orchestrations calls."""
    return [
        parse_qs(urlparse(r.url).query)
        for r in requests
        if urlparse(r.url).path == "/v1/orchestrations" and r.method == "GET"
    ]


def test_search_by_prompt_text(page: Page, stack: Stack) -> None:
    tag = uuid.uuid4().hex[:8]
    lighthouse = finished(stack, f"Describe a lighthouse at night ({tag}).", max_rounds=1, critic_count=0)
    desert = finished(stack, f"Describe a DESERT at noon ({tag}).", max_rounds=1, critic_count=0)
    requests = record_requests(page)
    page.goto("/#/sessions")
    expect(page.locator(f'#sessions-body tr[data-session-id="{desert}"]')).to_be_visible()

    search = page.locator("#sessions-q")
    before = len(list_queries(requests))
    # Typed key by key, the search waits for a pause: far fewer requests than keystrokes.
    search.press_sequentially(f"lighthouse at night ({tag}", delay=20)
    expect(page.locator("#view-sessions")).to_have_attribute("data-query", f"lighthouse at night ({tag}")
    expect(page.locator("#sessions-body tr")).to_have_count(1)
    assert listed(page) == [lighthouse]
    searches = list_queries(requests)[before:]
    assert 1 <= len(searches) <= 3, searches
    assert searches[-1]["q"] == [f"lighthouse at night ({tag}"]
    screenshot(page, "sessions-search")

    # Case-insensitive, and combined with the status filter.
    search.fill(f"desert at noon ({tag}")
    expect(page.locator("#view-sessions")).to_have_attribute("data-query", f"desert at noon ({tag}")
    expect(page.locator("#sessions-body tr")).to_have_count(1)
    assert listed(page) == [desert]
    page.select_option("#sessions-status", "failed")
    expect(page.locator("#sessions-body tr")).to_have_count(0)
    expect(page.locator("#sessions-note")).to_have_text(f"No sessions match “desert at noon ({tag}”.")
    assert list_queries(requests)[-1]["status"] == ["failed"]
    page.select_option("#sessions-status", "completed")
    expect(page.locator("#sessions-body tr")).to_have_count(1)

    # Nothing matches: the list says so.
    search.fill(f"no such prompt {uuid.uuid4()}")
    search.press("Enter")
    expect(page.locator("#sessions-body tr")).to_have_count(0)
    expect(page.locator("#sessions-note")).to_contain_text("No sessions match")

    # Cleared: every session again.
    search.fill("")
    expect(page.locator(f'#sessions-body tr[data-session-id="{lighthouse}"]')).to_be_visible()
    expect(page.locator("#sessions-note")).to_be_empty()


def test_search_pages_through_many_matches(page: Page, stack: Stack) -> None:
    """Paging keeps the search: "Load more" asks for the next page of the same query."""
    tag = uuid.uuid4().hex[:8]
    created = [
        str(
            stack.rest("POST", "/v1/orchestrations", {"prompt": f"Count to {i} ({tag}).", "max_rounds": 1})[
                "session_id"
            ]
        )
        for i in range(22)
    ]
    requests = record_requests(page)
    page.goto("/#/sessions")
    page.fill("#sessions-q", tag)
    expect(page.locator("#view-sessions")).to_have_attribute("data-query", tag)
    expect(page.locator("#sessions-body tr")).to_have_count(20)
    page.click("#sessions-more")
    expect(page.locator("#sessions-body tr")).to_have_count(22)
    assert sorted(listed(page)) == sorted(created)
    last = list_queries(requests)[-1]
    assert last["q"] == [tag] and last.get("page_token")
    expect(page.locator("#sessions-more")).to_be_hidden()


def test_a_whole_row_opens_its_session(page: Page, stack: Stack) -> None:
    marker = uuid.uuid4().hex[:10]
    session_id = finished(stack, f"Name three primary colours ({marker}).", max_rounds=1, critic_count=0)
    page.goto("/#/sessions")
    row = page.locator(f'#sessions-body tr[data-session-id="{session_id}"]')
    # A click anywhere on the row, here on its cost, far from the prompt's text (a real click at that point:
    # the prompt's link, stretched over the row, is what receives it).
    box = row.locator("td").last.bounding_box()
    assert box is not None
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    expect(page).to_have_url(re.compile(rf"#/session/{session_id}$"))
    expect(page.locator("#session")).to_have_attribute("data-session-id", session_id)
    expect(page.locator("#session-prompt")).to_contain_text(marker)

    # By keyboard: Tab reaches the row (its link), Enter opens it.
    page.goto("/#/sessions")
    expect(row).to_be_visible()
    page.locator("#sessions-refresh").focus()
    link = row.locator("a")
    for _ in range(40):
        page.keyboard.press("Tab")
        if link.evaluate("(a) => a === document.activeElement"):
            break
    else:
        pytest.fail("Tab never reached the row")
    page.keyboard.press("Enter")
    expect(page.locator("#session")).to_have_attribute("data-session-id", session_id)


def test_the_list_is_readable_on_a_phone(page: Page, stack: Stack) -> None:
    finished(
        stack,
        "A long prompt that goes on and on so that it has to wrap " * 4,
        max_rounds=1,
        critic_count=0,
        preferences={"pinned_model": "meta-llama/llama-4-maverick"},
    )
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto("/#/sessions")
    expect(page.locator("#sessions-body tr").first).to_be_visible()
    # No sideways scrolling, nothing sticking out (but the column headers, clipped to nothing: on a phone
    # each value carries its column's name).
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    overflowing = page.evaluate(
        """() => [...document.querySelectorAll('#view-sessions *:not(thead, thead *)')]
            .filter((e) => e.getBoundingClientRect().right > window.innerWidth + 1)
            .map((e) => `${e.tagName.toLowerCase()}.${e.className}`)"""
    )
    assert overflowing == []
    # Columns stack: each value sits under its column's name, the prompt spans the card.
    row = page.locator("#sessions-body tr").first
    assert row.evaluate("(tr) => getComputedStyle(tr).display") == "grid"
    status_label = row.locator("td[data-label=Status]").evaluate("(td) => getComputedStyle(td, '::before').content")
    assert status_label == '"Status"'
    wrap = page.locator("#view-sessions .table-wrap")
    assert wrap.evaluate("(w) => w.scrollWidth <= w.clientWidth"), "the table scrolls sideways"
    # Model ids may break after "/" (and "-"), never inside a word.
    model = page.locator("#sessions-body .model-id").first
    expect(model).to_have_text("meta-llama/llama-4-maverick")
    breaks_after = model.evaluate("(e) => [...e.querySelectorAll('wbr')].map((w) => w.previousSibling.textContent)")
    assert any(p.endswith("/") for p in breaks_after), breaks_after
    assert all(p.endswith(("/", "-")) for p in breaks_after), breaks_after
    assert model.evaluate("(e) => getComputedStyle(e).overflowWrap") == "break-word"
    assert model.evaluate("(e) => e.scrollWidth <= e.clientWidth + 1")
    screenshot(page, "sessions-list-phone")


def test_counts_use_the_right_plural(page: Page, stack: Stack) -> None:
    session_id = finished(stack, f"Suggest a name for a cat ({uuid.uuid4()}).", max_rounds=1, critic_count=0)
    try:
        stack.rest("POST", f"/v1/orchestrations/{session_id}/feedback", {"rating": 5})
    except urllib.error.HTTPError as exc:
        pytest.fail(f"the rating was refused: {exc.code} {exc.read().decode()}")
    page.goto("/#/dashboard")
    expect(page.locator("#dashboard")).to_have_attribute("data-loaded", "true")
    satisfaction = page.locator(".kpi", has_text="Satisfaction").locator(".kpi-detail")
    # The rating reaches analytics through the orchestrator's outbox: refresh until it is in.
    deadline = time.monotonic() + 20
    while satisfaction.text_content() != "1 rating":
        assert time.monotonic() < deadline, f"the rating never reached the dashboard: {satisfaction.text_content()!r}"
        page.click("#dashboard-refresh")
        expect(page.locator("#dashboard-note")).to_have_text("")
    details = page.locator(".kpi-detail").all_text_contents()
    assert not [d for d in details if re.match(r"^1 \w+s\b", d)], details
    assert any(re.fullmatch(r"[\d,]+ provider calls?", d) for d in details), details
