"""``orchestratex eval`` on a real model: the suite on the real-model catalogue (Gemma 3 270M behind llama.cpp's
server), two GSM8K items through a single model and a short orchestration, checked and reported.

The model is tiny and a base model: what is checked is that the harness works end to end on real output
(real tokens and usage, verdicts from the checker, a report that does not say "simulation"), not accuracy.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import BIN, Suite, launch_suite
from tests.evaluation.test_suites import EVAL_DATA
from tests.real_model.llama import MODELS, LlamaServer, catalogue_for

MAX_TOKENS = 96


@pytest.fixture(scope="module")
def real_suite(llama_server: LlamaServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    directory = tmp_path_factory.mktemp("real-eval")
    catalogue = directory / "catalogue.toml"
    catalogue.write_text(
        catalogue_for(llama_server.base_url).replace("max_output_tokens = 1024", f"max_output_tokens = {MAX_TOKENS}"),
        encoding="utf-8",
    )
    with launch_suite(
        directory,
        ORX_CATALOGUE=str(catalogue),
        ORX_PROVIDER_MODE="live",
        ORX_SHADOW_SAMPLE_RATE="0",
        ORX_SELECTOR_SECOND_OPINION="off",
    ) as suite:
        yield suite


def test_eval_runs_checks_and_reports_real_answers(real_suite: Suite, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORX_")}
    env.update({f"ORX_{n.upper()}_ADDR": a for n, a in real_suite.addr.items() if n != "gateway"})
    out = tmp_path / "run"
    strategies = f"single:{MODELS[0]},orchestrate:rounds=2,critics=1"
    done = subprocess.run(
        [
            str(BIN / "orchestratex"),
            "eval",
            "--data-dir",
            str(EVAL_DATA),
            "--no-progress",
            "--suite",
            "gsm8k",
            "--limit",
            "2",
            "--strategies",
            strategies,
            "--max-tokens",
            str(MAX_TOKENS),
            "--concurrency",
            "2",
            "--output",
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "simulated" not in done.stdout
    records = [json.loads(line) for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(records) == 4 and all(r["status"] == "ok" for r in records), [r["error"] for r in records]
    for r in records:
        assert isinstance(r["verdict"]["correct"], bool) and r["answers"][0].strip()
        answer_calls = [c for c in r["calls"] if c["role"] in ("answer", "refine")]
        assert answer_calls and all(c["model"] in MODELS and not c["simulated"] for c in answer_calls)
        assert all(c["completion_tokens"] > 0 for c in answer_calls)
    orchestrated = [r for r in records if r["strategy"].startswith("orchestrate")]
    assert all(1 <= r["rounds"] <= 2 and r["round_history"] for r in orchestrated)
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["manifest"]["simulated"] is False
    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert "Simulation" not in markdown and "## Strategies" in markdown
