"""The session view in the browser: what each refinement changed and which critique points it took up, copy
and export, highlighted code, live progress, how a cancelled or refused session reads, and the screenshots a
designer reviews (desktop and phone, light and dark). Also checks the libraries it vendors (jsdiff,
highlight.js) against their pinned npm packages."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, WebSocketRoute, expect

from tests.browser.conftest import (
    ARTIFACTS,
    HOSTILE_MODEL,
    REPO,
    PageErrors,
    Stack,
    assert_copy_of_pinned,
    start_session,
)

STATIC = REPO / "gateway" / "static"
SESSION_TIMEOUT = 45_000
# A coding prompt answered by a middling coder with a threshold of 10: several rounds, code blocks, and the
# simulator's refinements add a section for each point the critics raised.
CODING_PROMPT = "Write a Python function that merges two sorted lists into one sorted list."
CODER = "qwen/qwen3-coder"

# Vendored file -> (npm package, file inside the package). Licences are checked per directory below.
VENDORED = {
    "vendor/diff/diff/word.js": ("diff", "libesm/diff/word.js"),
    "vendor/diff/diff/base.js": ("diff", "libesm/diff/base.js"),
    "vendor/diff/util/string.js": ("diff", "libesm/util/string.js"),
    "vendor/highlight/core.min.js": ("@highlightjs/cdn-assets", "es/core.min.js"),
    "vendor/highlight/github.min.css": ("@highlightjs/cdn-assets", "styles/github.min.css"),
    "vendor/highlight/github-dark.min.css": ("@highlightjs/cdn-assets", "styles/github-dark.min.css"),
    **{
        f"vendor/highlight/languages/{name}.min.js": ("@highlightjs/cdn-assets", f"es/languages/{name}.min.js")
        for name in (
            "bash",
            "c",
            "cpp",
            "css",
            "go",
            "java",
            "javascript",
            "json",
            "plaintext",
            "python",
            "rust",
            "shell",
            "sql",
            "typescript",
            "xml",
            "yaml",
        )
    },
}
LICENCES = {"vendor/diff": "LICENSE", "vendor/highlight": "LICENSE"}


# ---- vendored libraries (no browser needed) ----------------------------------------------------------------


@pytest.mark.parametrize("vendored", sorted(VENDORED))
def test_vendored_file_is_the_pinned_package_file(vendored: str) -> None:
    package, inner = VENDORED[vendored]
    target = STATIC / vendored
    assert target.is_file()
    folder, licence = next((f, name) for f, name in LICENCES.items() if vendored.startswith(f + "/"))
    assert (STATIC / folder / licence).is_file(), f"{licence} missing in {folder}"
    pinned = json.loads((REPO / "package.json").read_text())["devDependencies"][package]
    if package == "@highlightjs/cdn-assets" and vendored.endswith(".js"):
        assert pinned in target.read_text(encoding="utf-8")[:200], f"{vendored} does not announce {pinned}"
    assert_copy_of_pinned(target, package, inner)


def test_every_vendored_module_import_resolves() -> None:
    """The ES modules import each other by relative path: every such import names a vendored file."""
    for path in [*(STATIC / "vendor" / "diff").rglob("*.js"), STATIC / "diff.js", STATIC / "render.js"]:
        for spec in re.findall(r"""(?:^|;)\s*import\b[^'"]*?from\s*['"](\.[^'"]+)['"]""", path.read_text(), re.M):
            assert (path.parent / spec).resolve().is_file(), f"{path.name} imports {spec}, which is not vendored"


# ---- helpers -----------------------------------------------------------------------------------------------


def start(
    page: Page, prompt: str, *, rounds: int = 3, threshold: float = 10, pinned: str = CODER, critics: int = 2
) -> str:
    """Fill the form, start, and return the session id (a threshold of 10 and the coder model: several rounds)."""
    return start_session(page, prompt, rounds=rounds, threshold=threshold, pinned=pinned, critics=critics)


def wait_for_end(page: Page, status: str = "completed") -> None:
    expect(page.locator("#session")).to_have_attribute("data-status", status, timeout=SESSION_TIMEOUT)


def record_texts(page: Page, selector: str) -> None:
    """Record in the page every distinct text `selector` shows (a MutationObserver sees transient ones)."""
    page.evaluate(
        """(selector) => {
            window.__seen = [];
            const check = () => {
                const el = document.querySelector(selector);
                const text = el && !el.closest('[hidden]') ? el.textContent : '';
                if (text && window.__seen.at(-1) !== text) window.__seen.push(text);
            };
            new MutationObserver(check).observe(document.body,
                { subtree: true, childList: true, attributes: true, characterData: true });
            check();
        }""",
        selector,
    )


def seen(page: Page) -> list[str]:
    return list(page.evaluate("window.__seen"))


def assert_nothing_executable(page: Page) -> None:
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator("#session script, #session img, #session iframe, #session style").count() == 0
    assert page.locator("[onerror], [onload], [onclick]").count() == 0
    for link in page.locator("#session a[href]").all():
        assert (link.get_attribute("href") or "").startswith(("http:", "https:", "mailto:"))


def shoot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


@pytest.fixture
def clip_page(browser: Browser, stack: Stack, page_errors: PageErrors) -> Iterator[Page]:
    """A page whose context may read and write the clipboard (and downloads files)."""
    context = browser.new_context(
        viewport={"width": 1280, "height": 800},
        base_url=stack.url,
        permissions=["clipboard-read", "clipboard-write"],
        accept_downloads=True,
    )
    context.set_default_timeout(20_000)
    page = context.new_page()
    page.on("console", page_errors.console)
    page.on("pageerror", page_errors.page_error)
    yield page
    context.close()
    problems = page_errors.unexpected()
    assert not problems, "the page logged errors:\n" + "\n".join(problems)


# ---- refinements: what changed, which points were addressed, the final answer once -------------------------


@pytest.mark.browser
def test_refinement_shows_what_changed_and_addressed_points(page: Page) -> None:
    page.goto("/")
    start(page, f"{CODING_PROMPT} [{uuid.uuid4()}]")
    wait_for_end(page)
    round2 = page.locator('[data-round="2"]')
    changes = round2.locator("details.changes")
    expect(changes).to_be_visible()
    expect(changes).not_to_have_attribute("open", "")  # collapsed by default
    expect(changes.locator(".changes-summary")).to_contain_text(re.compile(r"\+\d+ / −\d+ words"))
    changes.locator("summary").click()
    expect(changes.locator(".changes-base")).to_contain_text(re.compile(r"Round 2 against round 1"))
    insertion = changes.locator(".diff ins").first
    expect(insertion).to_be_visible()
    # Not by colour alone: each change carries a label for screen readers.
    expect(insertion.locator(".visually-hidden").first).to_have_text("[added: ")
    addressed = changes.locator('.addressed li[data-addressed="true"]')
    expect(addressed.first).to_be_visible()
    expect(addressed.first.locator(".verdict")).to_have_text("addressed")
    expect(changes.locator(".addressed-block h4")).to_contain_text("estimate")
    # Round 1 is not a refinement.
    expect(page.locator('[data-round="1"] details.changes')).to_be_hidden()

    # The final answer is shown once: the round it came from keeps its copy collapsed behind a reference.
    best = page.locator("#final-stats").inner_text()
    match = re.search(r"round (\d+) by", best)
    assert match, best
    best_round = page.locator(f'[data-round="{match.group(1)}"]')
    expect(best_round.locator(".round-final-ref")).to_be_visible()
    expect(best_round.locator(".answer")).to_be_hidden()
    best_round.locator(".round-show").click()
    expect(best_round.locator(".answer")).to_be_visible()
    visible_copies = page.locator("#rounds .answer:visible, #final-text").count()
    assert visible_copies == page.locator("#rounds .round").count() + 1

    # Code blocks are highlighted, in the rounds and in the final answer.
    expect(page.locator("#final-text pre code.hljs .hljs-keyword").first).to_be_visible()


# ---- copy and export ------------------------------------------------------------------------------------------


@pytest.mark.browser
def test_copy_answer_and_export_markdown_and_json(clip_page: Page) -> None:
    page = clip_page
    page.goto("/")
    marker = uuid.uuid4().hex[:10]
    session_id = start(page, f"{CODING_PROMPT} ({marker})", rounds=2)
    wait_for_end(page)

    page.click("#copy-answer")
    expect(page.locator("#copy-note")).to_have_text("Copied (Markdown).")
    copied = page.evaluate("navigator.clipboard.readText()")

    with page.expect_download() as json_download:
        page.click("#export-json")
    download = json_download.value
    assert download.suggested_filename == f"orchestratex-session-{session_id}.json"
    document = json.loads(Path(download.path()).read_text(encoding="utf-8"))
    assert document["session_id"] == session_id
    events = document["events"]
    applied = int(page.locator("#session").get_attribute("data-applied") or 0)
    assert len(events) == applied >= 10
    assert [int(e["sequence"]) for e in events] == list(range(1, applied + 1))
    assert all(e["session_id"] == session_id for e in events)
    final_text = events[-1]["session_completed"]["final_text"]
    # The clipboard has the raw Markdown of the final answer, not its HTML.
    assert copied == final_text
    assert "```" in copied and "<code" not in copied

    with page.expect_download() as md_download:
        page.click("#export-md")
    assert md_download.value.suggested_filename == f"orchestratex-session-{session_id}.md"
    markdown = Path(md_download.value.path()).read_text(encoding="utf-8")
    assert markdown.startswith(f"# OrchestrateX session {session_id}\n")
    assert marker in markdown
    assert "## Round 1 · answer by" in markdown
    assert "### Critiques of round 1" in markdown
    assert f"## Final answer\n\n{final_text}\n" in markdown


@pytest.mark.browser
def test_copy_without_a_clipboard_says_so(page: Page) -> None:
    page.add_init_script("Object.defineProperty(navigator, 'clipboard', { value: undefined })")
    page.goto("/")
    start(page, f"Name three primary colours. [{uuid.uuid4()}]", rounds=1, critics=0, pinned="")
    wait_for_end(page)
    page.click("#copy-answer")
    expect(page.locator("#copy-note")).to_contain_text("Copying is not available here")


# ---- highlighting and hostile output -------------------------------------------------------------------------


@pytest.mark.browser
def test_code_is_highlighted_and_hostile_output_stays_inert(page: Page) -> None:
    page.goto("/")
    start(page, f"{CODING_PROMPT} [{uuid.uuid4()}]", rounds=1, critics=1, pinned=HOSTILE_MODEL)
    wait_for_end(page)
    final = page.locator("#final-text")
    expect(final.locator("pre code.hljs .hljs-keyword").first).to_be_visible()
    expect(final).to_contain_text("<script>window.__pwned=1</script>")
    # Highlighting adds spans with highlight.js classes only; the payload is text inside them.
    classes = page.evaluate("[...document.querySelectorAll('#session code span')].map((s) => s.className)")
    assert classes and all(re.fullmatch(r"((hljs-[a-z_-]+|[a-z]+_+)( |$))+", c) for c in classes), classes
    assert_nothing_executable(page)


# ---- progress ----------------------------------------------------------------------------------------------


@pytest.mark.browser
def test_progress_tells_each_step_while_running(page: Page) -> None:
    page.goto("/")
    record_texts(page, "#progress-label")
    start(page, f"{CODING_PROMPT} [{uuid.uuid4()}]", rounds=2)
    wait_for_end(page)
    labels = seen(page)
    assert any(re.search(r"waiting for the first token from \S+ · \d+ s$", t, re.I) for t in labels), labels
    assert any(re.search(r"^Critics reviewing \(\d of 2 done\) · \d+ s$", t) for t in labels), labels
    assert any(t.startswith("Refining (round 2") for t in labels), labels
    expect(page.locator("#progress")).to_be_hidden()
    # Screen readers were told the steps, without the seconds.
    assert re.search(r"\d+ s", page.locator("#progress-live").inner_text()) is None


@pytest.mark.browser
def test_a_silent_orchestrator_is_shown_as_stuck(page: Page) -> None:
    """Events stop reaching the page mid-session; with the page's clock moved on, the view says so."""
    holding = {"on": False}

    def relay(ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()
        ws.on_message(server.send)

        def from_server(message: str | bytes) -> None:
            data = json.loads(message)
            if data.get("type") == "event" and "critique_completed" in data["event"]:
                holding["on"] = True
            if not holding["on"]:
                ws.send(message)

        server.on_message(from_server)

    page.clock.install()
    page.route_web_socket(re.compile(r".*/v1/ws$"), relay)
    page.goto("/")
    start(page, f"{CODING_PROMPT} [{uuid.uuid4()}]", rounds=2)
    expect(page.locator("#progress-label")).to_contain_text("Critics reviewing")
    expect(page.locator("#progress-stuck")).to_be_hidden()
    page.clock.run_for(25_000)
    expect(page.locator("#progress-stuck")).to_have_text(
        re.compile(r"No news from the orchestrator for 2\d s — still waiting")
    )
    expect(page.locator("#progress-live")).to_contain_text("No news from the orchestrator")


# ---- endings: cancelled, replayed, refused ----------------------------------------------------------------


@pytest.mark.browser
def test_cancelled_session_reads_cancelled_and_cancel_stays_disabled(page: Page) -> None:
    page.goto("/")
    start(page, f"Write a long essay on the history of compilers. [{uuid.uuid4()}]", rounds=10, pinned="")
    expect(page.locator('[data-round="1"] .critique').first).to_be_visible(timeout=SESSION_TIMEOUT)
    page.click("#cancel")
    wait_for_end(page, "cancelled")
    expect(page.locator("#session-status")).to_have_text("cancelled")
    expect(page.locator("#failure-title")).to_have_text("Cancelled — showing the best answer so far")
    expect(page.locator("#failure-best")).not_to_be_empty()
    # The best version is on the page once: round 1, whose draft it is, refers to it.
    expect(page.locator('[data-round="1"] .round-final-note')).to_have_text(
        "This version is the best answer so far, shown below."
    )
    expect(page.locator('[data-round="1"] .answer')).to_be_hidden()
    expect(page.locator("#cancel")).to_be_disabled()
    notices = page.locator("#notices").inner_text()
    assert "usage estimated" not in notices and "tokens received" not in notices, notices

    # A replay shows the real outcome meanwhile, and Cancel stays disabled throughout.
    page.click("#replay")
    expect(page.locator("#session-status")).to_have_text("cancelled · replaying")
    expect(page.locator("#cancel")).to_be_disabled()
    expect(page.locator("#session")).not_to_have_attribute("data-replaying", "true", timeout=SESSION_TIMEOUT)
    expect(page.locator("#session-status")).to_have_text("cancelled")
    expect(page.locator("#cancel")).to_be_disabled()


@pytest.mark.browser
def test_a_refused_start_leaves_no_starting_card(page: Page) -> None:
    """A start the gateway refuses (max_rounds 11, sent past the form) puts the view back as it was."""
    state = {"tamper": False}

    def relay(ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()

        def from_page(message: str | bytes) -> None:
            data = json.loads(message)
            if state["tamper"] and data.get("type") == "orchestrate":
                data["request"]["max_rounds"] = 11
                message = json.dumps(data)
            server.send(message)

        ws.on_message(from_page)
        server.on_message(ws.send)

    page.route_web_socket(re.compile(r".*/v1/ws$"), relay)
    page.goto("/")
    # First, on an empty view: the card does not appear at all.
    state["tamper"] = True
    page.fill("#prompt", f"Name a colour. [{uuid.uuid4()}]")
    expect(page.locator("#connection")).to_have_text("live")
    page.click("#start")
    # The gateway names the field: the message goes next to it (once), not above the form too.
    expect(page.locator("#max-rounds-error")).to_contain_text(re.compile(r"at most 10|between 1 and 10"))
    expect(page.locator("#form-error")).to_have_text("")
    expect(page.locator("#session")).to_be_hidden()
    expect(page.locator("#start")).to_be_enabled()

    # Then over a finished session: that session stays shown, with its own status.
    state["tamper"] = False
    session_id = start(page, f"Name three primary colours. [{uuid.uuid4()}]", rounds=1, critics=0, pinned="")
    wait_for_end(page)
    state["tamper"] = True
    page.fill("#prompt", f"Name a colour. [{uuid.uuid4()}]")
    page.click("#start")
    expect(page.locator("#max-rounds-error")).to_contain_text(re.compile(r"at most 10|between 1 and 10"))
    expect(page.locator("#session")).to_have_attribute("data-session-id", session_id)
    expect(page.locator("#session-status")).to_have_text("completed")
    expect(page.locator("#final-text")).not_to_be_empty()
    expect(page.locator("#start")).to_be_enabled()


# ---- layout: long prompts, model ids, the screenshots ------------------------------------------------------------

FITS = "() => document.documentElement.scrollWidth <= window.innerWidth + 1"


@pytest.mark.browser
def test_long_prompt_collapses_and_screenshots(page: Page) -> None:
    page.goto("/")
    lines = [f"Requirement {i}: the merged list keeps duplicates from both inputs." for i in range(1, 11)]
    start(page, f"{CODING_PROMPT} [{uuid.uuid4()}]\n" + "\n".join(lines), rounds=2)
    wait_for_end(page)
    prompt = page.locator("#session-prompt")
    toggle = page.locator("#prompt-toggle")
    expect(toggle).to_have_text("Show full prompt")
    expect(toggle).to_have_attribute("aria-expanded", "false")
    expect(prompt).to_have_attribute("data-collapsed", "true")
    assert prompt.evaluate("(e) => e.scrollHeight > e.clientHeight + 20")
    page.locator('[data-round="2"] details.changes summary').click()
    page.emulate_media(reduced_motion="reduce")  # no chart animation mid-screenshot
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        # The score chart follows a scheme that changes under it (its text would vanish on the dark background).
        page.wait_for_function(
            "() => Chart.getChart(document.getElementById('score-chart')).options.color"
            " === getComputedStyle(document.documentElement).getPropertyValue('--text').trim()"
        )
        page.set_viewport_size({"width": 1280, "height": 800})
        shoot(page, f"session-desktop-{scheme}")
        page.set_viewport_size({"width": 390, "height": 844})
        # The score chart resizes on its ResizeObserver's next callback, after the viewport changed: wait for the
        # page to fit (nothing may overflow sideways on a phone) before the screenshot and the checks below.
        page.wait_for_function(FITS)
        shoot(page, f"session-phone-{scheme}")
    # On a phone, model ids break only at the <wbr> after "/" and "-", and nothing overflows sideways.
    assert page.locator("#session .model-id wbr").count() > 0
    wrap = page.locator("#primary-model .model-id").evaluate("(e) => getComputedStyle(e).overflowWrap")
    assert wrap == "normal"
    assert page.evaluate(FITS)
    toggle.click()
    expect(toggle).to_have_text("Show less")
    expect(prompt).not_to_have_attribute("data-collapsed", "true")
    assert prompt.evaluate("(e) => e.scrollHeight <= e.clientHeight + 1")
