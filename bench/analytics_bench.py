"""Analytics benchmarks (issue #6): read RPCs over a large history, and the event write path under load.

    .venv/bin/python -m bench.analytics_bench [--quick] [--out bench/results/analytics.json]

Part A generates 100,000 sessions / about 1,000,000 events (90 days, 3 tenants, 12 models, 9 domains, 10%
with shadow evaluation, 5% rated) and ingests them through the real ingest path (protobuf events ->
``facts_from_request`` -> ``SqliteAnalyticsStore.ingest``, 2,000 events per batch). The database is cached
under ``bench/.data/`` (self-ignored by git), keyed by GENERATOR_VERSION. A copy is then served by a real
``orchestratex serve analytics`` subprocess and every RPC is called 50 times over gRPC with varied time
ranges (1 to 366 days, ending now or at random points), tenants and filters; p50/p95/max are reported.

Part B drives the orchestrator's write path with many concurrent simulated sessions in one process: each
session emits events at a realistic pace into the real ``EventWriter`` (services/orchestrator/hub.py)
over a ``SqliteSessionStore``; the real ``Outbox`` forwards them with ``IngestEvents`` to an analytics
server on port 0 whose store is instrumented. Recorded: rows per round trip (per ``append_events``
transaction, per ingest transaction), write lag (event created -> committed) p50/p99, and loss (events
emitted minus events stored, in both stores).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from bench._suite import cluster, free_port, percentile
from orchestratex.grpc_server import ServiceBinding, create_server
from orchestratex.v1 import analytics_pb2 as apb
from orchestratex.v1 import analytics_pb2_grpc, common_pb2, selector_pb2
from orchestratex.v1 import orchestrator_pb2 as pb
from services.analytics.ingest import facts_from_request
from services.analytics.server import SERVICE_NAME, AnalyticsServicer
from services.analytics.store.model import EventFacts, IngestResult
from services.analytics.store.sqlite import SqliteAnalyticsStore
from services.orchestrator.hub import EventWriter
from services.orchestrator.outbox import Outbox
from services.orchestrator.store.sqlite import SqliteSessionStore

GENERATOR_VERSION = 3
SECOND = 1_000_000_000
DAY = 86_400 * SECOND
MODELS = [f"vendor-{i % 4}/model-{i}" for i in range(12)]
DOMAINS = list(range(1, 10))
TENANTS = [("acme", 0.6), ("globex", 0.3), ("initech", 0.1)]
DATA_DIR = Path(__file__).parent / ".data"


def _ts(ns: int) -> Timestamp:
    value = Timestamp()
    value.FromNanoseconds(ns)
    return value


def _dur(ns: int) -> Duration:
    value = Duration()
    value.FromNanoseconds(ns)
    return value


def _usage(rng: random.Random) -> common_pb2.Usage:
    prompt, completion = rng.randint(50, 4000), rng.randint(20, 1500)
    return common_pb2.Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        cost_usd=round(rng.uniform(0.00001, 0.02), 9),
    )


def generate_session(rng: random.Random, start_ns: int) -> list[pb.OrchestrationEvent]:
    """About ten events: two rounds with two critics, or one round with shadow evaluation; some failures."""
    sid = f"bench-{uuid.UUID(int=rng.getrandbits(128)).hex}"
    primary, runner, c1, c2 = rng.sample(MODELS, 4)
    domain = rng.choice(DOMAINS)
    events: list[pb.OrchestrationEvent] = []

    def add(**kind: Any) -> None:
        sequence = len(events) + 1
        events.append(
            pb.OrchestrationEvent(session_id=sid, sequence=sequence, time=_ts(start_ns + sequence * SECOND), **kind)
        )

    def answer(model: str, round_no: int, shadow: bool = False) -> None:
        latency = int(rng.lognormvariate(22, 0.6))  # about 3.6 s median
        add(
            response_completed=pb.ResponseCompleted(
                round=round_no,
                model=model,
                served_model=model,
                usage=_usage(rng),
                latency=_dur(latency),
                time_to_first_token=_dur(latency // rng.randint(4, 12)),
                shadow=shadow,
            )
        )

    def critique(critic: str, author: str, round_no: int, shadow: bool = False) -> None:
        latency = int(rng.lognormvariate(21, 0.5))
        add(
            critique_completed=pb.CritiqueCompleted(
                round=round_no,
                critic_model=critic,
                author_model=author,
                score=rng.randint(8, 20) / 2,
                usage=_usage(rng),
                latency=_dur(latency),
                time_to_first_token=_dur(latency // 5),
                shadow=shadow,
            )
        )

    add(session_started=pb.SessionStarted(request=pb.OrchestrateRequest(prompt="bench")))
    add(
        model_selected=pb.ModelSelected(
            primary_model=primary,
            critic_models=[c1, c2],
            analysis=selector_pb2.PromptAnalysis(primary_domain=domain),  # type: ignore[arg-type]
        )
    )
    if rng.random() < 0.02:
        add(
            provider_fallback=pb.ProviderFallback(
                round=1,
                failed_model=primary,
                replacement_model=runner,
                failure_kind=rng.choice([1, 2, 3, 4, 5]),  # type: ignore[arg-type]
                usage=_usage(rng),
                latency=_dur(rng.randint(1, 30) * SECOND),
            )
        )
    else:
        answer(primary, 1)
    critique(c1, primary, 1)
    critique(c2, primary, 1)
    if rng.random() < 0.1:
        answer(runner, 1, shadow=True)
        critique(c1, runner, 1, shadow=True)
        critique(c2, runner, 1, shadow=True)
        add(round_completed=pb.RoundCompleted(round=1, aggregate_score=8))
    else:
        add(round_completed=pb.RoundCompleted(round=1, aggregate_score=6))
        answer(primary, 2)
        if rng.random() < 0.05:
            add(
                warning=pb.SessionWarning(
                    code=pb.WARNING_CODE_CRITIC_FAILED,
                    round=2,
                    model=c1,
                    failure_kind=rng.choice([1, 2, 3, 9]),  # type: ignore[arg-type]
                    usage=_usage(rng),
                    latency=_dur(rng.randint(1, 20) * SECOND),
                    purpose=common_pb2.CALL_PURPOSE_CRITIQUE,
                )
            )
        else:
            critique(c1, primary, 2)
        add(round_completed=pb.RoundCompleted(round=2, aggregate_score=8))
    add(session_completed=pb.SessionCompleted(final_score=8, best_model=primary, rounds_used=2))
    return events


async def generate_history(path: Path, sessions: int, seed: int = GENERATOR_VERSION) -> dict[str, Any]:
    """Ingest ``sessions`` generated sessions into a new store at ``path`` through the real ingest path."""
    rng = random.Random(seed)
    now = time.time_ns()
    store = await SqliteAnalyticsStore.open(path)
    started = time.perf_counter()
    total_events = 0
    rated: list[str] = []
    try:
        pending: dict[str, list[pb.OrchestrationEvent]] = {name: [] for name, _ in TENANTS}
        names = [name for name, _ in TENANTS]
        weights = [w for _, w in TENANTS]
        for index in range(sessions):
            tenant = rng.choices(names, weights)[0]
            events = generate_session(rng, now - rng.randint(0, 90 * DAY))
            pending[tenant].extend(events)
            total_events += len(events)
            if rng.random() < 0.05:
                rated.append(events[0].session_id)
            for name, batch in pending.items():
                if len(batch) >= 2000 or (index == sessions - 1 and batch):
                    facts, _ = facts_from_request(apb.IngestEventsRequest(events=batch, tenant=name))
                    await store.ingest(name, facts)
                    pending[name] = []
            if index % 10_000 == 9_999:
                print(f"  {index + 1:,} sessions, {total_events:,} events, {time.perf_counter() - started:.0f} s")
        for session_id in rated:
            await store.put_feedback(session_id, rng.choice(["u1", "u2"]), rng.randint(1, 5), "", now)
    finally:
        await store.close()
    return {
        "sessions": sessions,
        "events": total_events,
        "ratings": len(rated),
        "generate_seconds": round(time.perf_counter() - started, 1),
        "events_per_second": round(total_events / (time.perf_counter() - started)),
    }


async def cached_history(sessions: int) -> tuple[Path, dict[str, Any]]:
    """The generated database (generated on first use) and its description."""
    DATA_DIR.mkdir(exist_ok=True)
    (DATA_DIR / ".gitignore").write_text("*\n")
    path = DATA_DIR / f"analytics-v{GENERATOR_VERSION}-{sessions}.db"
    meta_path = path.with_suffix(".json")
    if path.exists() and meta_path.exists():
        return path, json.loads(meta_path.read_text())
    for stale in DATA_DIR.glob(f"{path.name}*"):
        stale.unlink()
    print(f"generating {sessions:,} sessions into {path} ...")
    meta = await generate_history(path, sessions)
    meta_path.write_text(json.dumps(meta))
    return path, meta


def _range(rng: random.Random, now_ns: int) -> common_pb2.TimeRange:
    days = rng.choice([1, 7, 30, 90, 366])
    end = now_ns if rng.random() < 0.5 else now_ns - rng.randint(0, 60 * DAY)
    return common_pb2.TimeRange(start_time=_ts(end - days * DAY), end_time=_ts(end))


async def measure_reads(path: Path, calls: int) -> dict[str, Any]:
    """Serve a copy of the database with a real analytics subprocess; time every RPC over gRPC."""
    rng = random.Random(11)
    with tempfile.TemporaryDirectory(prefix="orx-analytics-bench-") as tmp:
        shutil.copy(path, Path(tmp) / "analytics.db")
        with cluster(Path(tmp)) as c:
            await asyncio.to_thread(c.start, "analytics")
            async with grpc.aio.insecure_channel(c.addr["analytics"]) as channel:
                stub: Any = analytics_pb2_grpc.AnalyticsServiceStub(channel)
                now = time.time_ns()
                sample = await stub.GetCostReport(apb.GetCostReportRequest(session_limit=1000))
                finished = [s.session_id for s in sample.sessions]
                ids = iter(range(10**9))

                def tenant_md() -> tuple[tuple[str, str], ...]:
                    tenant = rng.choice(["", "acme", "globex", "initech"])
                    return (("x-orx-tenant", tenant),) if tenant else ()

                def ingest_request() -> apb.IngestEventsRequest:
                    events = [e for _ in range(10) for e in generate_session(rng, now - rng.randint(0, DAY))]
                    return apb.IngestEventsRequest(events=events, tenant="acme")

                rpcs: dict[str, Any] = {
                    "GetModelPerformance": lambda: stub.GetModelPerformance(
                        apb.GetModelPerformanceRequest(
                            range=_range(rng, now),
                            model=rng.choice(["", "", rng.choice(MODELS)]),
                            domain=cast(Any, rng.choice([0, 0, rng.choice(DOMAINS)])),
                        ),
                        metadata=tenant_md(),
                    ),
                    "GetCostReport": lambda: stub.GetCostReport(
                        apb.GetCostReportRequest(range=_range(rng, now), session_limit=rng.choice([0, 100, 1000])),
                        metadata=tenant_md(),
                    ),
                    "GetSelectionAccuracy": lambda: stub.GetSelectionAccuracy(
                        apb.GetSelectionAccuracyRequest(range=_range(rng, now)), metadata=tenant_md()
                    ),
                    "GetSatisfaction": lambda: stub.GetSatisfaction(
                        apb.GetSatisfactionRequest(range=_range(rng, now)), metadata=tenant_md()
                    ),
                    "SubmitFeedback": lambda: stub.SubmitFeedback(
                        apb.SubmitFeedbackRequest(
                            session_id=rng.choice(finished), rating=rng.randint(1, 5), user_id=f"bench-{next(ids)}"
                        )
                    ),
                    "IngestEvents (100 events)": lambda: stub.IngestEvents(ingest_request()),
                }
                results: dict[str, Any] = {}
                for name, make in rpcs.items():
                    await make()  # warm-up
                    times = []
                    for _ in range(calls):
                        request = make()
                        began = time.perf_counter()
                        await request
                        times.append((time.perf_counter() - began) * 1000)
                    results[name] = {
                        "calls": calls,
                        "p50_ms": round(statistics.median(times), 1),
                        "p95_ms": round(percentile(times, 95), 1),
                        "max_ms": round(max(times), 1),
                    }
                    print(f"  {name}: p50 {results[name]['p50_ms']} ms, p95 {results[name]['p95_ms']} ms")
                return results


class _MeteredSessionStore(SqliteSessionStore):
    """The orchestrator's SQLite store, recording each ``append_events`` round trip and its lag."""

    created: dict[tuple[str, int], float]
    batches: list[int]
    lags_ms: list[float]

    async def append_events(self, events: Sequence[tuple[str, int, bytes]]) -> None:
        await super().append_events(events)
        done = time.perf_counter()
        self.batches.append(len(events))
        self.lags_ms.extend((done - self.created.pop((sid, seq), done)) * 1000 for sid, seq, _ in events)


class _MeteredAnalyticsStore(SqliteAnalyticsStore):
    """The analytics store, recording rows per ingest transaction and the lag from event time to commit."""

    batches: list[int]
    lags_ms: list[float]

    async def ingest(self, tenant: str, events: Sequence[EventFacts]) -> IngestResult:
        result = await super().ingest(tenant, events)
        done = time.time_ns()
        self.batches.append(len(events))
        self.lags_ms.extend((done - e.time_ns) / 1e6 for e in events)
        return result


async def measure_writes(
    sessions: int, events_per_session: int, pace_s: float, outbox_interval: float, linger: float = 0.05
) -> dict[str, Any]:
    """Concurrent sessions -> EventWriter -> SQLite -> Outbox -> IngestEvents -> analytics store."""
    rng = random.Random(sessions)
    with tempfile.TemporaryDirectory(prefix="orx-write-bench-") as tmp:
        session_db = await SqliteSessionStore.open(Path(tmp) / "orchestrator.db")
        store = _MeteredSessionStore(session_db.db)
        store.created, store.batches, store.lags_ms = {}, [], []
        # Analytics runs in its own process, as in production; it reports its round trips and lags
        # in a JSON file when it is stopped.
        port = free_port()
        stats_path = Path(tmp) / "analytics-stats.json"
        server = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.analytics_bench", "--serve-metered", str(port), tmp, str(stats_path)
        )
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        await _wait_serving(analytics_pb2_grpc.AnalyticsServiceStub(channel))
        # linger 0 is the writer without group commit (it writes whatever is pending when it wakes).
        writer = EventWriter(store, linger=linger)
        writer.start()
        outbox = Outbox(store, analytics_pb2_grpc.AnalyticsServiceStub(channel), outbox_interval)
        outbox.start()
        emitted = 0
        useful = 0

        async def session(index: int) -> None:
            nonlocal emitted, useful
            sid = f"w-{index}-{uuid.uuid4().hex[:8]}"
            record = pb.Session(session_id=sid, status=pb.SESSION_STATUS_RUNNING, create_time=_ts(time.time_ns()))
            await store.create_session("acme", record)
            template = generate_session(rng, 0)
            await asyncio.sleep(rng.uniform(0, pace_s * 2))
            for sequence in range(1, events_per_session + 1):
                # Mostly text deltas, as a streaming session's log is; the template's events in between.
                if sequence % 3 == 0 and sequence // 3 <= len(template) - 1:
                    event = pb.OrchestrationEvent()
                    event.CopyFrom(template[sequence // 3])
                elif sequence == events_per_session:
                    event = pb.OrchestrationEvent()
                    event.CopyFrom(template[-1])
                else:
                    event = pb.OrchestrationEvent(response_delta=pb.ResponseDelta(round=1, model="m", text="x" * 40))
                event.session_id, event.sequence = sid, sequence
                event.time.CopyFrom(_ts(time.time_ns()))
                store.created[(sid, sequence)] = time.perf_counter()
                writer.append(event)
                emitted += 1
                useful += 0 if event.HasField("response_delta") else 1
                await asyncio.sleep(rng.expovariate(1 / pace_s))
            outbox.kick()

        began = time.perf_counter()
        await asyncio.gather(*(session(i) for i in range(sessions)))
        await writer.flush()
        elapsed = time.perf_counter() - began

        def count(path: Path) -> int:
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
                return int(db.execute("SELECT COUNT(*) FROM events").fetchone()[0])

        # Wait until analytics has every useful event (a condition, with a deadline).
        analytics_file = Path(tmp) / "analytics.db"
        deadline = time.monotonic() + 120
        while count(analytics_file) < useful and time.monotonic() < deadline:
            outbox.kick()
            await asyncio.sleep(0.05)
        await outbox.stop()
        await writer.close()
        stored = count(Path(tmp) / "orchestrator.db")
        recorded = count(analytics_file)
        await channel.close(None)
        server.send_signal(signal.SIGTERM)
        await asyncio.wait_for(server.wait(), 60)
        await store.close()
        analytics = json.loads(stats_path.read_text())

    def batch_stats(sizes: list[int]) -> dict[str, Any]:
        weighted = sum(s * s for s in sizes) / max(1, sum(sizes))
        return {
            "round_trips": len(sizes),
            "rows": sum(sizes),
            "mean_rows_per_round_trip": round(sum(sizes) / max(1, len(sizes)), 1),
            "p50_rows_per_round_trip": percentile(sizes, 50),
            "rows_weighted_mean": round(weighted, 1),
            "min": min(sizes, default=0),
            "max": max(sizes, default=0),
        }

    return {
        "writer": f"EventWriter, group commit (linger {linger * 1000:.0f} ms, min 64)"
        if linger
        else "EventWriter, no linger",
        "sessions": sessions,
        "events_per_session": events_per_session,
        "mean_gap_ms": pace_s * 1000,
        "events": emitted,
        "events_per_second": round(emitted / elapsed),
        "event_writer": {
            **batch_stats(store.batches),
            "lag_p50_ms": round(percentile(store.lags_ms, 50), 1),
            "lag_p99_ms": round(percentile(store.lags_ms, 99), 1),
            "lost": emitted - stored,
        },
        "analytics_ingest": {
            "outbox_interval_s": outbox_interval,
            **batch_stats(analytics["batches"]),
            "lag_p50_ms": round(percentile(analytics["lags_ms"], 50), 1),
            "lag_p99_ms": round(percentile(analytics["lags_ms"], 99), 1),
            "lost": useful - recorded,
            "duplicates_delivered": sum(analytics["batches"]) - recorded,
        },
    }


async def _wait_serving(stub: Any, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            await stub.GetSatisfaction(apb.GetSatisfactionRequest(), timeout=1)
            return
        except grpc.aio.AioRpcError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def serve_metered(port: int, data_dir: Path, stats_path: Path) -> None:
    """The analytics server with a metered store, until SIGTERM; then its figures go to ``stats_path``."""
    store = cast(_MeteredAnalyticsStore, await _MeteredAnalyticsStore.open(data_dir / "analytics.db"))
    store.batches, store.lags_ms = [], []
    binding = ServiceBinding(
        analytics_pb2_grpc.add_AnalyticsServiceServicer_to_server, AnalyticsServicer(store), SERVICE_NAME
    )
    server = create_server([binding], f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(1)
    await store.close()
    await asyncio.to_thread(stats_path.write_text, json.dumps({"batches": store.batches, "lags_ms": store.lags_ms}))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sessions", type=int, default=100_000, help="sessions in the generated history")
    parser.add_argument("--calls", type=int, default=50, help="calls per RPC")
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the script")
    parser.add_argument("--skip-reads", action="store_true")
    parser.add_argument("--skip-writes", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("bench/results/analytics.json"))
    parser.add_argument("--serve-metered", nargs=3, metavar=("PORT", "DIR", "STATS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_metered:
        port, data_dir, stats = args.serve_metered
        await serve_metered(int(port), Path(data_dir), Path(stats))
        return
    sessions = 2_000 if args.quick else args.sessions
    results: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
    }
    if not args.skip_reads:
        path, meta = await cached_history(sessions)
        results["history"] = {**meta, "db_mb": round(path.stat().st_size / 2**20)}
        print(f"history: {meta}")
        results["reads"] = await measure_reads(path, 10 if args.quick else args.calls)
    if not args.skip_writes:
        loads = [(50, 60)] if args.quick else [(100, 100), (250, 100), (500, 60)]
        results["writes"] = []
        for n, per_session in loads:
            for linger in (0.0, 0.05):
                print(f"write path: {n} sessions x {per_session} events, 50 ms apart, linger {linger * 1000:.0f} ms")
                outcome = await measure_writes(n, per_session, 0.05, outbox_interval=0.2, linger=linger)
                print(json.dumps(outcome))
                results["writes"].append(outcome)
    if not args.quick:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    asyncio.run(main())
