"""Refinement visibly works in simulation: default sessions through the real loop mostly run 2-3 rounds.

The real selector, providers service (the simulator with its packaged profile), analytics and orchestrator, in
process on port-0 servers; no exploration, no history and no shadow evaluation, so every session is a pure
function of the seeds and the prompts.
"""

from __future__ import annotations

import statistics
from collections import Counter
from pathlib import Path

from orchestratex.v1 import orchestrator_pb2 as pb
from tests.orchestrator.real_stack import real_services

PROMPTS = (
    "Write a Python function that merges two sorted lists",
    "Implement an LRU cache in TypeScript",
    "Refactor a nested for-loop in Go into a map lookup",
    "Solve 2x + 7 = 3x - 5",
    "Compute the sum of the first 100 odd numbers",
    "What is the probability of two sixes in three dice rolls?",
    "Three boxes are mislabeled; you may draw one fruit. How do you fix the labels?",
    "Alice is taller than Bob, Bob than Carol. Who is shortest?",
    "Write a haiku about the first snow in a city",
    "Write a short story about a lighthouse keeper who finds a message in a bottle",
    "What causes the seasons on Earth?",
    "How does a vaccine train the immune system?",
    "Summarize: The city council met on Tuesday to discuss the new budget, which increases park funding.",
    "Summarize the plot of Hamlet in three sentences",
    "Extract all dates from: The meeting moved from 3 March to 14 April, then to 2 May.",
    "Classify the sentiment of this review: the battery lasts all day but the screen scratches easily.",
    "Brainstorm ten ideas for a team offsite",
    "Suggest ways to reduce food waste at home",
)


async def _sessions(tmp_path: Path) -> list[list[float]]:
    """Each prompt's session with default settings: its rounds' aggregate scores."""
    env = {
        "ORX_DATA_DIR": str(tmp_path),
        "ORX_SIM_SPEED": "1000",
        "ORX_EXPLORATION": "0",
        "ORX_SELECTOR_HISTORY": "off",
        "ORX_SHADOW_SAMPLE_RATE": "0",
    }
    sessions = []
    async with real_services(env) as stub:
        for prompt in PROMPTS:
            events = [r.event async for r in stub.Orchestrate(pb.OrchestrateRequest(prompt=prompt), timeout=120)]
            assert events[-1].HasField("session_completed"), prompt
            sessions.append([e.round_completed.aggregate_score for e in events if e.HasField("round_completed")])
    return sessions


async def test_default_sessions_mostly_refine_once_or_twice(tmp_path: Path) -> None:
    sessions = await _sessions(tmp_path)
    rounds = Counter(len(scores) for scores in sessions)
    firsts = [scores[0] for scores in sessions]
    assert (rounds[2] + rounds[3]) / len(sessions) >= 0.6, rounds
    assert 1.8 <= statistics.fmean(len(scores) for scores in sessions) <= 3.0, rounds
    assert 5.0 <= statistics.median(firsts) <= 7.5, firsts  # first drafts leave room to improve
    # refinement pays: a session that refined ends on a better score than it started with, as a rule
    refined = [scores for scores in sessions if len(scores) > 1]
    assert sum(max(scores[1:]) > scores[0] for scores in refined) >= 0.8 * len(refined), refined
