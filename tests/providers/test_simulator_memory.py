"""The simulator's memory of drafts and attempts stays bounded: a long-running providers service must not grow
with every simulated session (issue 18: it grew about 3 MiB per 1,000 sessions)."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Iterator

import pytest

from services.providers import simulator as simulator_module
from services.providers.backend import Purpose
from services.providers.catalogue import Catalogue
from services.providers.sim_profile import load_profile
from services.providers.simulator import MAX_REMEMBERED, Simulator
from tests.providers.test_simulator import FAST, TASK, critique_prompt, draft_id, req, run

BUDGET_BYTES = 4 * 1024 * 1024
"""What a full memo (``MAX_REMEMBERED`` drafts and as many attempt counters) may hold."""

MODEL = "z-ai/glm-4.5"
CRITIC = "openai/gpt-oss-120b"


def bounded(catalogue: Catalogue, limit: int) -> Simulator:
    return Simulator(catalogue, load_profile(None, catalogue), speed=FAST, max_remembered=limit)


async def answer(sim: Simulator, catalogue: Catalogue, n: int) -> str:
    """One short answer to a prompt no other call uses; returns its draft id."""
    done = await run(sim, req(catalogue, MODEL, f"{TASK} (variant {n})", max_tokens=16))
    return draft_id(done.text)


@pytest.fixture
def traced() -> Iterator[None]:
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()


def retained_by_simulator() -> int:
    """Bytes allocated in simulator.py and still alive (drafts, their ids, attempt keys, the memo's nodes)."""
    gc.collect()
    only = tracemalloc.Filter(inclusive=True, filename_pattern=simulator_module.__file__)
    snapshot = tracemalloc.take_snapshot().filter_traces([only])
    return sum(stat.size for stat in snapshot.statistics("filename"))


async def test_the_oldest_drafts_are_forgotten_beyond_the_limit(catalogue: Catalogue) -> None:
    sim = bounded(catalogue, 20)
    ids = [await answer(sim, catalogue, n) for n in range(60)]
    assert all(sim.draft(i) is None for i in ids[:40])
    assert all(sim.draft(i) is not None for i in ids[40:])


async def test_a_draft_in_use_is_kept_and_the_least_recently_used_goes(catalogue: Catalogue) -> None:
    sim = bounded(catalogue, 3)
    first, second, third = [await answer(sim, catalogue, n) for n in range(3)]
    draft = sim.draft(first)
    assert draft is not None
    # A critique of the first draft uses it; the next answer then pushes out the second, not the first.
    text = f"_(simulated answer · draft {first})_\n\nbody"
    await run(sim, req(catalogue, CRITIC, critique_prompt(TASK, text), Purpose.CRITIQUE))
    await answer(sim, catalogue, 3)
    assert sim.draft(first) == draft
    assert sim.draft(second) is None
    assert sim.draft(third) is not None


async def test_memory_stays_flat_once_the_memo_is_full(catalogue: Catalogue, traced: None) -> None:
    limit = 300
    sim = bounded(catalogue, limit)
    empty = retained_by_simulator()
    # Past twice the limit the memo has also churned once (its hash table then has its steady size).
    for n in range(2 * limit):
        await answer(sim, catalogue, n)
    full = retained_by_simulator() - empty
    for n in range(2 * limit, 6 * limit):
        await answer(sim, catalogue, n)
    later = retained_by_simulator() - empty
    assert full > 0
    assert later <= full * 1.05, (full, later)


async def test_a_full_memo_fits_its_budget(catalogue: Catalogue, traced: None) -> None:
    limit = 500
    sim = bounded(catalogue, limit)
    empty = retained_by_simulator()
    for n in range(2 * limit):
        await answer(sim, catalogue, n)
    per_entry = (retained_by_simulator() - empty) / limit  # one draft and one attempt counter
    assert per_entry * MAX_REMEMBERED <= BUDGET_BYTES, per_entry
