"""The browser app end to end: live sessions, cancel, reload and reconnect, rating, past sessions, the
dashboard, API keys, and model output that tries to run script."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from typing import Any

import pytest
from playwright.sync_api import Page, WebSocketRoute, expect

from tests.browser.conftest import API_KEY, CHROMIUM, HOSTILE_MODEL, PageErrors, Stack, screenshot, start_session

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing (`make test` installs Debian's chromium)", allow_module_level=True)

pytestmark = pytest.mark.browser

SESSION_TIMEOUT = 30_000


def record_timeline(page: Page, marks: dict[str, str]) -> None:
    """Record, in the page, the order in which each CSS selector first matches.

    A MutationObserver checks after every task that changed the DOM, so transient states (text streaming,
    a round with critiques but no successor yet) are seen however loaded the machine is. Read the result
    with :func:`timeline`.
    """
    page.evaluate(
        """(marks) => {
            window.__timeline = [];
            const check = () => {
                for (const [name, selector] of Object.entries(marks)) {
                    if (!window.__timeline.includes(name) && document.querySelector(selector)) {
                        window.__timeline.push(name);
                    }
                }
            };
            new MutationObserver(check).observe(document.body,
                { subtree: true, childList: true, attributes: true, characterData: true });
            check();
        }""",
        marks,
    )


def timeline(page: Page) -> list[str]:
    return list(page.evaluate("window.__timeline"))


def wait_for_end(page: Page, status: str = "completed") -> None:
    expect(page.locator("#session")).to_have_attribute("data-status", status, timeout=SESSION_TIMEOUT)


def assert_no_gap_or_duplicate(page: Page) -> None:
    """Every event was applied exactly once, in order."""
    session = page.locator("#session")
    expect(session).to_have_attribute("data-gaps", "0")
    assert session.get_attribute("data-applied") == session.get_attribute("data-last-sequence")


def test_session_runs_live_end_to_end(page: Page) -> None:
    page.goto("/")
    expect(page.locator("#sim-banner")).to_be_visible()
    record_timeline(
        page,
        {
            "streaming": "#session:has(#final[hidden]) #rounds .answer.streaming",
            "round 1 critique": '#rounds:not(:has([data-round="2"])) [data-round="1"] .critique',
            "round 2": '[data-round="2"]',
            "final": "#final:not([hidden])",
        },
    )
    # A creative prompt answered by a coding model: scores stay below 10, so several rounds run.
    start_session(page, f"Write a short poem about the sea. [{uuid.uuid4()}]", threshold=10, pinned="qwen/qwen3-coder")

    # Live: round 1 streams while nothing is final, then its critiques arrive (with scores and reasons)
    # before round 2 exists, and only then the final answer.
    first_critique = page.locator('[data-round="1"] .critique').first
    expect(first_critique.locator(".score")).to_have_text(re.compile(r"\d+\.\d / 10"))
    expect(first_critique.locator(".rationale")).not_to_be_empty()
    # ... and the selection is shown with its reasons, models marked as simulated.
    expect(page.locator("#primary-model .badge-sim")).to_be_visible()
    page.click("#ranking summary")
    expect(page.locator("#candidates tr").first).to_be_visible()
    expect(page.locator("#candidates tr.chosen td").last).not_to_be_empty()

    wait_for_end(page)
    assert timeline(page) == ["streaming", "round 1 critique", "round 2", "final"]
    rounds = page.locator("#rounds .round")
    assert rounds.count() >= 2, "a weak author and a threshold of 10 should take more than one round"
    expect(page.locator('[data-round="2"] .critique').first).to_be_visible()
    # The score chart has one aggregate point per round.
    points = page.evaluate("Chart.getChart(document.getElementById('score-chart')).data.datasets[0].data")
    assert len(points) == rounds.count() and all(isinstance(p, int | float) for p in points)
    stats = page.locator("#final-stats")
    expect(stats).to_contain_text("Stop reason")
    expect(stats).to_contain_text(re.compile(r"max rounds|plateau|threshold"))
    expect(stats).to_contain_text(re.compile(r"Cost\s*\$\d"))
    expect(stats).to_contain_text(re.compile(r"Tokens\s*[\d,]+ \(prompt"))
    expect(page.locator("#final-text")).not_to_be_empty()
    assert_no_gap_or_duplicate(page)
    screenshot(page, "session-completed")

    # At phone width (the page reloaded, replaying the session) nothing overflows sideways.
    page.set_viewport_size({"width": 390, "height": 844})
    page.reload()
    wait_for_end(page)
    overflowing = page.evaluate(
        """() => [...document.querySelectorAll('body *')]
            .filter((e) => !e.closest('.table-wrap, pre') && e.getBoundingClientRect().right > window.innerWidth + 1)
            .map((e) => `${e.tagName.toLowerCase()}.${e.className} ${Math.round(e.getBoundingClientRect().right)}px`)"""
    )
    assert overflowing == []
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    screenshot(page, "session-completed-phone")


def test_a_session_no_critic_scored_shows_unscored(page: Page) -> None:
    page.goto("/")
    session_id = start_session(page, f"Name a colour. [{uuid.uuid4()}]", rounds=1, critics=0)
    wait_for_end(page)
    stats = page.locator("#final-stats")
    expect(stats).to_contain_text(re.compile(r"Score\s*unscored"))
    expect(stats).not_to_contain_text(re.compile(r"Score\s*0"))
    # ... and so does the list of past sessions
    page.goto("/#/sessions")
    row = page.locator(f'#sessions-body tr[data-session-id="{session_id}"]')
    expect(row.locator("td.num").first).to_have_text("unscored")  # the score column, before the cost


def test_cancel_stops_the_session(page: Page) -> None:
    page.goto("/")
    start_session(page, f"Write a long essay on the history of compilers. [{uuid.uuid4()}]", rounds=10, threshold=10)
    expect(page.locator("#rounds .answer").first).to_be_attached()
    expect(page.locator("#cancel")).to_be_enabled()
    page.click("#cancel")
    wait_for_end(page, "cancelled")
    expect(page.locator("#failure")).to_be_visible()
    expect(page.locator("#session-status")).to_have_text("cancelled")
    expect(page.locator("#cancel")).to_be_disabled()
    expect(page.locator("#start")).to_be_enabled()
    screenshot(page, "session-cancelled")


def test_reload_mid_session_resumes(page: Page) -> None:
    page.goto("/")
    # A weak author for the prompt and a threshold of 10: the session cannot end after round 1.
    prompt = f"Write a limerick about a cat. [{uuid.uuid4()}]"
    session_id = start_session(page, prompt, rounds=3, threshold=10, pinned="qwen/qwen3-coder")
    expect(page.locator('[data-round="1"] .critique').first).to_be_visible()
    assert session_id in page.url

    page.reload()
    # The page replays the session from its URL and follows it to the end.
    expect(page.locator("#session")).to_have_attribute("data-session-id", session_id)
    expect(page.locator('[data-round="1"] .answer')).not_to_be_empty()
    wait_for_end(page)
    expect(page.locator('[data-round="2"]')).to_be_visible()
    assert_no_gap_or_duplicate(page)
    screenshot(page, "session-resumed-after-reload")


def test_dropped_websocket_resumes_without_gap_or_duplicate(page: Page) -> None:
    # Per connection: the sequences the server sent, and the after_sequence of the page's watch requests.
    sent: list[list[int]] = []
    watched: list[list[int]] = []
    cut = threading.Event()

    def relay(ws: WebSocketRoute) -> None:
        index = len(sent)
        sent.append([])
        watched.append([])
        server = ws.connect_to_server()

        def from_page(message: str | bytes) -> None:
            data = json.loads(message)
            if data.get("type") == "watch":
                watched[index].append(int(data.get("after_sequence", 0)))
            server.send(message)

        def from_server(message: str | bytes) -> None:
            if cut.is_set() and index == 0:
                return  # frames already in flight when the connection was cut never reach the page
            data = json.loads(message)
            ws.send(message)
            if data.get("type") != "event":
                return
            event = data["event"]
            sent[index].append(int(event["sequence"]))
            # Cut the first connection right after round 1's first critique (mid-session).
            if index == 0 and "critique_completed" in event:
                cut.set()
                ws.close(code=1012, reason="test: connection dropped")
                server.close()

        ws.on_message(from_page)
        server.on_message(from_server)

    page.route_web_socket(re.compile(r".*/v1/ws$"), relay)
    page.goto("/")
    start_session(page, f"Give three tips for writing clear commit messages. [{uuid.uuid4()}]", threshold=10)
    wait_for_end(page)

    assert len(sent) >= 2, "the page should have reconnected"
    first, second = sent[0], sent[1]
    assert first == list(range(1, len(first) + 1))
    # The page resumed from the last event it had applied (frames in flight when the socket was cut may
    # be lost, never skipped), and the server resumed right after it.
    assert len(watched[1]) == 1
    after = watched[1][0]
    assert 1 <= after <= len(first)
    assert second == list(range(after + 1, after + 1 + len(second)))
    last = second[-1]
    expect(page.locator("#session")).to_have_attribute("data-last-sequence", str(last))
    assert_no_gap_or_duplicate(page)
    expect(page.locator("#final-text")).not_to_be_empty()


def test_rating_and_dashboard(page: Page, stack: Stack) -> None:
    page.goto("/")
    session_id = start_session(page, f"Suggest names for a bakery. [{uuid.uuid4()}]", rounds=1)
    wait_for_end(page)
    expect(page.locator("#rating")).to_be_visible()
    page.click('label[for="star-4"]')
    page.fill("#rating-comment", "Good ideas")
    page.click("#rating-form button[type=submit]")
    expect(page.locator("#rating-note")).to_contain_text("Thanks")
    expect(page.locator("#rating")).to_have_attribute("data-rated", "4")
    screenshot(page, "session-rated")

    satisfaction = stack.rest("GET", "/v1/analytics/satisfaction")
    assert int(satisfaction["overall"]["count"]) >= 1

    page.click('nav.tabs a[data-view="dashboard"]')
    expect(page.locator("#dashboard")).to_have_attribute("data-loaded", "true")
    expect(page.locator("#kpis .kpi")).to_have_count(5)
    expect(page.locator("#chart-satisfaction")).to_be_visible()
    # Outcomes reach analytics through the orchestrator's outbox: refresh until they are in.
    deadline = time.monotonic() + 20
    while not page.locator("#chart-performance").is_visible():
        assert time.monotonic() < deadline, "performance data never reached the dashboard"
        page.click("#dashboard-refresh")
        expect(page.locator("#dashboard-note")).to_have_text("")
    expect(page.locator("#chart-cost")).to_be_visible()
    expect(page.locator("#performance-body tr").first).to_be_visible()
    expect(page.locator("#performance-body .badge-sim").first).to_be_visible()
    assert session_id
    screenshot(page, "dashboard")


def test_past_sessions_can_be_browsed_and_replayed(page: Page, stack: Stack) -> None:
    marker = uuid.uuid4().hex[:10]
    created = stack.rest("POST", "/v1/orchestrations", {"prompt": f"Name three primary colours ({marker})."})
    session_id = created["session_id"]
    deadline = time.monotonic() + 30
    while stack.rest("GET", f"/v1/orchestrations/{session_id}")["session"].get("status") == "SESSION_STATUS_RUNNING":
        assert time.monotonic() < deadline, "the session did not finish"
        time.sleep(0.1)  # polling the session's status with a deadline

    page.goto("/#/sessions")
    row = page.locator(f'#sessions-body tr[data-session-id="{session_id}"]')
    expect(row).to_be_visible()
    expect(row).to_contain_text(marker)
    expect(row).to_contain_text("completed")
    screenshot(page, "sessions-list")
    row.locator("a").click()
    expect(page.locator("#session")).to_have_attribute("data-session-id", session_id)
    wait_for_end(page)
    expect(page.locator("#session-prompt")).to_contain_text(marker)
    expect(page.locator("#final-text")).not_to_be_empty()
    assert_no_gap_or_duplicate(page)
    applied = page.locator("#session").get_attribute("data-applied")

    # Replay at the recorded pace: the view is rebuilt event by event and ends in the same state.
    record_timeline(page, {"rebuilding": "#session[data-replaying] #final[hidden]"})
    page.click("#replay")
    expect(page.locator("#session")).not_to_have_attribute("data-replaying", "true", timeout=SESSION_TIMEOUT)
    expect(page.locator("#final-text")).not_to_be_empty()
    expect(page.locator("#session")).to_have_attribute("data-applied", str(applied))
    assert timeline(page) == ["rebuilding"]


# ---- untrusted model output -----------------------------------------------------------------------------


def assert_nothing_executable(page: Page) -> None:
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator("#session script, #session img, #session iframe, #session style").count() == 0
    assert page.locator("[onerror], [onload], [onclick]").count() == 0
    assert page.locator('a[href^="javascript:" i]').count() == 0
    for link in page.locator("#session a[href]").all():
        assert (link.get_attribute("href") or "").startswith(("http:", "https:", "mailto:"))
        assert "noopener" in (link.get_attribute("rel") or "")


def test_hostile_model_output_is_inert(page: Page) -> None:
    page.goto("/")
    start_session(page, f"Summarise the plot of Hamlet. [{uuid.uuid4()}]", rounds=2, pinned=HOSTILE_MODEL)
    expect(page.locator("#primary-model")).to_contain_text(HOSTILE_MODEL)
    wait_for_end(page)
    final = page.locator("#final-text")
    # The payload is visible as text, not interpreted.
    expect(final).to_contain_text("<script>window.__pwned=1</script>")
    expect(final).to_contain_text('<img src=x onerror="window.__pwned=1">')
    expect(final).to_contain_text("click")
    assert_nothing_executable(page)
    screenshot(page, "hostile-output-inert")


PAYLOADS: dict[str, str] = {
    "script": "<script>window.__pwned=1</script>",
    "img_onerror": '<img src=x onerror="window.__pwned=1">',
    "svg_onload": "<svg onload=window.__pwned=1></svg>",
    "iframe": '<iframe src="javascript:window.__pwned=1"></iframe>',
    "style": "<style>body{display:none}</style>",
    "form": '<form action="https://evil.example"><input name=q><button>go</button></form>',
    "md_js_link": "[click](javascript:window.__pwned=1)",
    "md_js_link_upper": "[click](JaVaScRiPt:window.__pwned=1)",
    "md_js_link_entity": "[click](&#106;avascript:window.__pwned=1)",
    "md_data_link": "[click](data:text/html,<script>window.__pwned=1</script>)",
    "md_image": "![x](https://evil.example/track.png)",
    "html_link": '<a href="javascript:window.__pwned=1">x</a>',
    "autolink_js": "<javascript:window.__pwned=1>",
    "reference_link": "[click][r]\n\n[r]: javascript:window.__pwned=1",
}


def test_markdown_sanitiser_rejects_every_payload(page: Page) -> None:
    """renderMarkdown itself, in the real browser, against a list of classic payloads."""
    response = page.goto("/")
    assert response is not None
    # The gateway sends the policy as a header too (the <meta> copy cannot carry frame-ancestors).
    policy = response.headers.get("content-security-policy", "")
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    expect(page.locator("#connection")).to_have_text("live")
    results: dict[str, Any] = page.evaluate(
        """async (payloads) => {
            const { renderMarkdown } = await import('/static/render.js');
            const out = {};
            for (const [name, md] of Object.entries(payloads)) {
                const div = document.createElement('div');
                renderMarkdown(div, md + '\\n\\n[ok](https://example.com) and **bold**');
                document.body.appendChild(div);
                const hrefs = [...div.querySelectorAll('[href], [src], [action]')].map(
                    (e) => e.getAttribute('href') || e.getAttribute('src') || e.getAttribute('action'));
                const attrs = [...div.querySelectorAll('*')].flatMap((e) => [...e.attributes].map((a) => a.name));
                out[name] = {
                    tags: [...new Set([...div.querySelectorAll('*')].map((e) => e.tagName.toLowerCase()))],
                    hrefs, attrs, text: div.textContent,
                    rel: [...div.querySelectorAll('a[href]')].map((a) => a.rel),
                };
                div.remove();
            }
            return out;
        }""",
        PAYLOADS,
    )
    assert page.evaluate("typeof window.__pwned") == "undefined"
    allowed_tags = {"p", "a", "strong", "em", "code", "pre", "br", "del"}
    for name, result in results.items():
        assert set(result["tags"]) <= allowed_tags, (name, result["tags"])
        assert result["hrefs"] == ["https://example.com"], (name, result["hrefs"])
        assert not [a for a in result["attrs"] if a.startswith("on") or a == "style"], (name, result["attrs"])
        assert all("noopener" in rel for rel in result["rel"]), (name, result["rel"])
        assert "ok" in result["text"] and "bold" in result["text"], name
    # Raw HTML is shown as text rather than dropped silently.
    assert "<script>" in results["script"]["text"]


# ---- API keys ------------------------------------------------------------------------------------------------


def test_page_asks_for_an_api_key_on_401(page: Page, stack: Stack, page_errors: PageErrors) -> None:
    # The 401s themselves are logged by Chromium as failed resource loads.
    page_errors.allowed.append("401")
    page.goto(stack.keyed_url + "/")
    dialog = page.locator("#key-dialog")
    expect(dialog).to_be_visible()
    page.fill("#key-input", "wrong-key")
    page.click("#key-form button[type=submit]")
    expect(dialog).to_be_visible()
    expect(page.locator("#key-message")).to_contain_text("refused")
    screenshot(page, "api-key-dialog", full_page=False)
    page.fill("#key-input", API_KEY)
    page.click("#key-form button[type=submit]")
    expect(dialog).to_be_hidden()
    expect(page.locator("#connection")).to_have_text("live")
    expect(page.locator("#sim-banner")).to_be_visible()
    start_session(page, f"What is 2 + 2? [{uuid.uuid4()}]", rounds=1, critics=0)
    wait_for_end(page)
