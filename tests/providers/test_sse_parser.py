"""The SSE parser against the WHATWG "interpret an event stream" steps, and the upstream read path (aiohttp's
reader + the parser) against a vendor that splits its bytes at awkward places.

The pure tests feed the parser the stream cut after every ``\\n`` (as lines), and the property tests cut it
anywhere (inside a line, a CRLF, a UTF-8 sequence or the BOM) and check that every cut gives the events the whole
stream gives; the wire tests go through a real aiohttp server and the real ``OpenRouterBackend``.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestratex.config import Secret, Settings
from services.providers.backend import (
    BackendError,
    FailureKind,
    GenerationRequest,
    Message,
    Role,
    StreamEnd,
    StreamEvent,
    TextDelta,
)
from services.providers.catalogue import load_catalogue
from services.providers.openrouter import OpenRouterBackend, OpenRouterConfig
from services.providers.sse import EventStreamParser, LineTooLong, ServerSentEvent


def readline_pieces(stream: bytes) -> list[bytes]:
    """``stream`` cut as ``StreamReader.readline`` cuts it: after every ``\\n``, the rest at the end."""
    pieces = stream.split(b"\n")
    out = [piece + b"\n" for piece in pieces[:-1]]
    if pieces[-1]:
        out.append(pieces[-1])
    return out


def parse(stream: bytes, parser: EventStreamParser | None = None) -> list[ServerSentEvent]:
    parser = parser or EventStreamParser()
    return [event for raw in readline_pieces(stream) for event in parser.feed(raw)]


def datas(stream: bytes) -> list[str]:
    return [event.data for event in parse(stream)]


# ------------------------------------------------------------------------------------ the spec's examples


def test_multi_line_data_is_joined_with_line_feeds() -> None:
    assert datas(b"data: YHOO\ndata: +2\ndata: 10\n\n") == ["YHOO\n+2\n10"]


def test_comments_ids_and_the_single_optional_space() -> None:
    events = parse(b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n")
    assert events == [
        ServerSentEvent("first event", "message", "1"),
        ServerSentEvent("second event", "message", ""),  # a bare `id` resets the last event id
        ServerSentEvent(" third event", "message", ""),  # only ONE leading space is removed
    ]


def test_empty_data_fields_and_an_unterminated_event() -> None:
    # `data` alone is a field with an empty value; the last event never gets its blank line: discarded.
    assert datas(b"data\n\ndata\ndata\n\ndata:") == ["", "\n"]


def test_space_after_the_colon_is_optional() -> None:
    assert datas(b"data:test\n\ndata: test\n\n") == ["test", "test"]


def test_event_types_and_the_last_id_carries_over() -> None:
    events = parse(b"event: add\nid: 7\ndata: 73857293\n\nevent: remove\ndata: 2153\n\ndata: 113411\n\n")
    assert events == [
        ServerSentEvent("73857293", "add", "7"),
        ServerSentEvent("2153", "remove", "7"),
        ServerSentEvent("113411", "message", "7"),
    ]


# ------------------------------------------------------------------------------------ the other rules


def test_a_blank_line_without_data_dispatches_nothing_and_resets_the_type() -> None:
    assert parse(b"event: ping\n\ndata: x\n\n\n\n") == [ServerSentEvent("x", "message", "")]


def test_comment_lines_never_reach_the_data() -> None:
    stream = b": OPENROUTER PROCESSING\n\n: OPENROUTER PROCESSING\n\ndata: {}\n: inside an event\n\n"
    assert datas(stream) == ["{}"]


def test_unknown_fields_colons_in_values_and_ids_with_nul() -> None:
    events = parse(b'id: 1\nfoo: bar\ndata: {"a": "b:c"}\nid: x\x00y\n\n')
    assert events == [ServerSentEvent('{"a": "b:c"}', "message", "1")]


def test_retry_sets_the_reconnection_time_only_when_all_digits() -> None:
    parser = EventStreamParser()
    assert parser.reconnection_time is None
    parse(b"retry: 3000\n\n", parser)
    assert parser.reconnection_time == 3000
    parse(b"retry: 1e3\nretry:\nretry: -5\nretry: \xd9\xa3\n\n", parser)  # the last is an Arabic-Indic 3
    assert parser.reconnection_time == 3000


@pytest.mark.parametrize(
    "stream",
    [
        b"data: a\r\ndata: b\r\n\r\ndata: c\r\n\r\n",  # CRLF
        b"data: a\rdata: b\r\rdata: c\r\r\n",  # lone CRs (one readline piece holds several lines)
        b"data: a\ndata: b\r\n\rdata: c\n\r\n",  # mixed
    ],
    ids=["crlf", "cr", "mixed"],
)
def test_every_line_ending(stream: bytes) -> None:
    assert datas(stream) == ["a\nb", "c"]


def test_one_leading_bom_is_ignored_and_only_at_the_start() -> None:
    assert datas(b"\xef\xbb\xbfdata: a\n\n") == ["a"]
    # A second BOM is part of the next field's name, which is then unknown: that line is ignored.
    assert datas(b"\xef\xbb\xbf\xef\xbb\xbfdata: a\n\ndata: b\n\n") == ["b"]
    assert datas(b"data: a\n\n\xef\xbb\xbfdata: b\n\n") == ["a"]


def test_utf8_is_decoded_and_invalid_bytes_become_replacement_characters() -> None:
    assert datas("data: héllo ✓\n\n".encode()) == ["héllo ✓"]
    assert datas(b"data: a\xffb\n\n") == ["a\ufffdb"]


_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=20)


@settings(max_examples=200, deadline=None)
@given(
    events=st.lists(st.lists(_TEXT, min_size=1, max_size=3), max_size=5),
    ending=st.sampled_from(["\n", "\r\n", "\r"]),
)
def test_round_trip_any_data_any_line_ending(events: list[list[str]], ending: str) -> None:
    stream = ""
    for lines in events:
        stream += f": keep-alive{ending}"
        stream += "".join(f"data: {line}{ending}" for line in lines) + ending
    assert datas(stream.encode()) == ["\n".join(lines) for lines in events]


# ------------------------------------------------------------------------------------ pieces cut anywhere


def parse_pieces(stream: bytes, cuts: Sequence[int], parser: EventStreamParser | None = None) -> list[ServerSentEvent]:
    """``stream`` fed in pieces cut at the offsets ``cuts`` (any order, repeats give empty pieces)."""
    parser = parser or EventStreamParser()
    bounds = [0, *sorted(min(max(c, 0), len(stream)) for c in cuts), len(stream)]
    return [event for a, b in itertools.pairwise(bounds) for event in parser.feed(stream[a:b])]


_AWKWARD = (
    "\ufeff: OPENROUTER PROCESSING\r\n\r\nevent: add\r\nid: 7\r\ndata: héllo ✓ 😀\r\ndata:x\r\r"
    ': inside\ndata: {"a": "b:c"}\n\nretry: 250\ndata\n\n\rdata: last\r\n\r\ndata: cut off'
).encode()


def test_every_single_cut_gives_the_same_events() -> None:
    whole = parse_pieces(_AWKWARD, [])
    assert [e.data for e in whole] == ["héllo ✓ 😀\nx", '{"a": "b:c"}', "", "last"]
    assert whole[0] == ServerSentEvent("héllo ✓ 😀\nx", "add", "7")
    for cut in range(len(_AWKWARD) + 1):
        assert parse_pieces(_AWKWARD, [cut]) == whole, cut


def test_byte_by_byte() -> None:
    parser = EventStreamParser()
    assert parse_pieces(_AWKWARD, range(len(_AWKWARD)), parser) == parse_pieces(_AWKWARD, [])
    assert parser.reconnection_time == 250


@settings(max_examples=300, deadline=None)
@given(cuts=st.lists(st.integers(0, len(_AWKWARD)), max_size=12))
def test_any_cuts_give_the_same_events(cuts: list[int]) -> None:
    assert parse_pieces(_AWKWARD, cuts) == parse_pieces(_AWKWARD, [])


@settings(max_examples=200, deadline=None)
@given(
    events=st.lists(st.lists(_TEXT, min_size=1, max_size=3), max_size=5),
    ending=st.sampled_from(["\n", "\r\n", "\r"]),
    cuts=st.lists(st.integers(0, 400), max_size=8),
)
def test_round_trip_any_data_any_line_ending_any_cuts(events: list[list[str]], ending: str, cuts: list[int]) -> None:
    stream = "".join(
        f": keep-alive{ending}" + "".join(f"data: {x}{ending}" for x in lines) + ending for lines in events
    )
    assert [e.data for e in parse_pieces(stream.encode(), cuts)] == ["\n".join(lines) for lines in events]


def test_a_crlf_cut_between_its_cr_and_lf_is_one_line_ending() -> None:
    parser = EventStreamParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\n") == []  # the LF of the CRLF, not a blank line
    assert parser.feed(b"\r") == [ServerSentEvent("a")]
    assert parser.feed(b"\ndata: b\n\n") == [ServerSentEvent("b")]


def test_a_bom_cut_in_pieces_is_still_ignored() -> None:
    parser = EventStreamParser()
    assert parser.feed(b"\xef") == parser.feed(b"\xbb") == []
    assert parser.feed(b"\xbfdata: a\n\n") == [ServerSentEvent("a")]


def test_a_line_longer_than_the_limit_is_refused_whole_or_in_pieces() -> None:
    with pytest.raises(LineTooLong):
        EventStreamParser(max_line=8).feed(b"data: 123\n\n")
    with pytest.raises(LineTooLong):
        EventStreamParser(max_line=8).feed(b"data:\r\ndata: 123\r\n")
    parser = EventStreamParser(max_line=8)
    assert parser.feed(b"data: 12") == []  # 8 bytes pending: still within the limit
    with pytest.raises(LineTooLong):
        parser.feed(b"3")
    assert EventStreamParser(max_line=8).feed(b"data: 12\n\n") == [ServerSentEvent("12")]


# ------------------------------------------------------------------------------------ through aiohttp


class RawVendor:
    """An OpenAI-compatible endpoint that answers every chat request with ``chunks``, written one by one
    (each flushed on its own, so the client's reader sees them as separate reads)."""

    def __init__(self) -> None:
        self.chunks: Sequence[bytes] = ()
        self.hold: asyncio.Event | None = None
        """When set, the handler stops after the chunks and waits for it (a hung stream)."""
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.seen: list[tuple[str, dict[str, str]]] = []
        """(request target, headers) of every request."""

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        self.seen.append((request.raw_path, dict(request.headers)))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for chunk in self.chunks:
            await response.write(chunk)
            await asyncio.sleep(0)  # let the transport send it on its own
        if self.hold is not None:
            await self.hold.wait()
        await response.write_eof()
        return response

    async def __aenter__(self) -> RawVendor:
        app = web.Application()
        app.router.add_post("/api/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def vendor() -> AsyncIterator[RawVendor]:
    async with RawVendor() as server:
        yield server


@pytest.fixture
async def backend(vendor: RawVendor, tmp_path: Path) -> AsyncIterator[OpenRouterBackend]:
    settings = Settings.from_env(
        {"ORX_DATA_DIR": str(tmp_path), "ORX_OPENROUTER_BASE_URL": f"http://127.0.0.1:{vendor.port}/api/v1"}
    )
    catalogue = load_catalogue(settings)
    backend = OpenRouterBackend(
        catalogue, {"openrouter": Secret("sk-test-" + "0" * 20)}, OpenRouterConfig(idle_timeout=0.3)
    )
    yield backend
    await backend.aclose()


def glm(backend: OpenRouterBackend) -> GenerationRequest:
    model = backend._catalogue.get("z-ai/glm-4.5")
    assert model is not None
    return GenerationRequest(model=model, messages=(Message(Role.USER, "Hi"),), max_tokens=64)


def chunk(content: str, **extra: object) -> bytes:
    return orjson.dumps(
        {"id": "gen-1", "model": "z-ai/glm-4.5", "choices": [{"index": 0, "delta": {"content": content}}], **extra}
    )


async def test_awkward_bytes_still_give_the_right_deltas(vendor: RawVendor, backend: OpenRouterBackend) -> None:
    first, second = chunk("héllo"), chunk(" wörld")
    usage = orjson.dumps({"id": "gen-1", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}})
    finish = orjson.dumps({"id": "gen-1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    split = first.index("é".encode()) + 1
    cut = second.index(b',"model"') + 1  # between two members
    vendor.chunks = [
        b"\xef\xbb\xbf: OPENROUTER PROCESSING\r\n\r\n",  # a BOM, a comment, CRLF
        b"event: message\r\nid: 1\r\nretry: 100\r\ndata: " + first[:split],  # split inside "é"
        first[split:] + b"\r",  # ... and between the CR and the LF of a CRLF
        b"\n\r\n: OPENROUTER PROCESSING\n\n",
        # one event's JSON over two data lines (joined with \n, which JSON allows here), lone CR endings
        b"data: " + second[:cut] + b"\rdata: " + second[cut:] + b"\r\r",
        b"data: " + finish + b"\n\ndata: " + usage + b"\n\ndata: [DONE]\n\n",
    ]
    events = [event async for event in backend.stream(glm(backend))]
    assert events[:2] == [TextDelta("héllo"), TextDelta(" wörld")]
    end = events[2]
    assert isinstance(end, StreamEnd) and end.usage is not None
    assert (end.usage.prompt_tokens, end.usage.completion_tokens, end.generation_id) == (3, 2, "gen-1")
    assert len(events) == 3


async def test_a_line_beyond_the_reader_limit_is_an_invalid_reply(
    vendor: RawVendor, backend: OpenRouterBackend
) -> None:
    vendor.chunks = [b"data: " + b"x" * (1 << 20) + b"\n\n"]
    with pytest.raises(BackendError) as info:
        [event async for event in backend.stream(glm(backend))]
    assert info.value.kind is FailureKind.INVALID_OUTPUT
    assert "a stream line is too long" in info.value.message


async def test_a_consumer_slower_than_the_idle_timeout_is_not_a_stall(
    vendor: RawVendor, backend: OpenRouterBackend
) -> None:
    # The vendor sent everything at once; the caller takes longer than the idle timeout (0.3 s) per event.
    finish = orjson.dumps({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    vendor.chunks = [
        b"data: " + chunk("a") + b"\n\ndata: " + chunk("b") + b"\n\ndata: " + finish + b"\n\ndata: [DONE]\n\n"
    ]
    events: list[StreamEvent] = []
    async for event in backend.stream(glm(backend)):
        events.append(event)
        await asyncio.sleep(0.4)  # the slow consumer IS the scenario, not synchronisation
    assert events[:2] == [TextDelta("a"), TextDelta("b")] and isinstance(events[2], StreamEnd)


async def test_the_idle_timer_never_cancels_the_consumer(vendor: RawVendor, backend: OpenRouterBackend) -> None:
    # The deadline passes while the caller holds an event and waits on something of its own: that wait must
    # complete undisturbed, and the stall is reported on the next read instead.
    vendor.chunks = [b"data: " + chunk("a") + b"\n\n"]
    vendor.hold = asyncio.Event()
    own_wait_finished = False
    stream = backend.stream(glm(backend))
    try:
        assert await anext(stream) == TextDelta("a")
        await asyncio.sleep(0.5)  # past the 0.3 s idle deadline; a CancelledError here would fail the test
        own_wait_finished = True
        with pytest.raises(BackendError) as info:
            await anext(stream)
    finally:
        await stream.aclose()
        vendor.hold.set()
    assert own_wait_finished
    assert info.value.kind is FailureKind.TIMEOUT and "stalled for 0.3s" in info.value.message


async def test_the_environment_proxy_is_used_read_once_per_pool(
    vendor: RawVendor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "ALL_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(var, raising=False)
    # The vendor plays the proxy: the upstream host does not exist, so only a proxied request reaches it.
    monkeypatch.setenv("HTTP_PROXY", f"http://bob:s3cret@127.0.0.1:{vendor.port}")
    monkeypatch.setenv("NO_PROXY", "elsewhere.invalid")
    settings = Settings.from_env(
        {"ORX_DATA_DIR": str(tmp_path), "ORX_OPENROUTER_BASE_URL": "http://upstream.invalid/api/v1"}
    )
    backend = OpenRouterBackend(load_catalogue(settings), {"openrouter": Secret("sk-test-" + "0" * 20)})
    finish = orjson.dumps({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    vendor.chunks = [b"data: " + chunk("a") + b"\n\ndata: " + finish + b"\n\ndata: [DONE]\n\n"]
    try:
        first = [e async for e in backend.stream(glm(backend))]
        monkeypatch.setenv("NO_PROXY", "upstream.invalid")  # read once: this pool keeps its proxy
        second = [e async for e in backend.stream(glm(backend))]
    finally:
        await backend.aclose()
    assert first[0] == second[0] == TextDelta("a")
    assert [target for target, _ in vendor.seen] == ["http://upstream.invalid/api/v1/chat/completions"] * 2
    assert vendor.seen[0][1]["Proxy-Authorization"] == "Basic Ym9iOnMzY3JldA=="  # bob:s3cret
