"""``orchestratex models sync`` against the OpenRouter stand-in: exact prices, targeted edits, errors."""

from __future__ import annotations

import asyncio
import difflib
import io
import os
import sys
from argparse import Namespace
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from orchestratex.config import Settings
from services.providers.catalogue import DEFAULT_CATALOGUE, load_catalogue_file
from services.providers.models_sync import SyncError, plan, rewrite, run, sync_catalogue
from tests.providers.openrouter_standin import DEFAULT_KEY, OpenRouterStandIn, error_reply

BASE = "https://openrouter.ai/api/v1"


@pytest.fixture
async def standin() -> AsyncIterator[OpenRouterStandIn]:
    async with OpenRouterStandIn() as server:
        yield server


@pytest.fixture
def catalogue_copy(tmp_path: Path) -> Path:
    path = tmp_path / "catalogue.toml"
    path.write_text(text_of(DEFAULT_CATALOGUE), encoding="utf-8")
    return path


def text_of(path: Path) -> str:
    """The file's text (tiny local files: reading them blocks the loop for microseconds)."""
    return path.read_text(encoding="utf-8")


def write_text(path: Path, text: str) -> None:
    """Replace the file's text (tiny local files, like :func:`text_of`)."""
    path.write_text(text, encoding="utf-8")


def settings_for(standin: OpenRouterStandIn, path: Path, key: str = DEFAULT_KEY) -> Settings:
    return Settings.from_env(
        {
            "ORX_DATA_DIR": str(path.parent),
            "ORX_CATALOGUE": str(path),
            "OPENROUTER_API_KEY": key,
            "ORX_OPENROUTER_BASE_URL": standin.base_url,
        }
    )


def upstream(standin: OpenRouterStandIn, model_id: str) -> dict[str, Any]:
    return next(m for m in standin.models if m["id"] == model_id)


def changed_lines(before: str, after: str) -> list[str]:
    return [
        line
        for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]


async def test_sync_rewrites_only_the_changed_values(standin: OpenRouterStandIn, catalogue_copy: Path) -> None:
    before = text_of(catalogue_copy)
    upstream(standin, "z-ai/glm-4.5")["pricing"]["prompt"] = "0.00000065"
    kimi = upstream(standin, "moonshotai/kimi-k2")
    kimi["context_length"] = 262_144
    kimi["top_provider"]["max_completion_tokens"] = 65_536
    upstream(standin, "openai/gpt-oss-120b")["pricing"]["completion"] = "1.9e-7"  # a float-ish string

    result = await sync_catalogue(settings_for(standin, catalogue_copy))

    after = text_of(catalogue_copy)
    assert result.written and result.text == after
    assert changed_lines(before, after) == [
        "-input_price_per_mtok = 0.60",
        "+input_price_per_mtok = 0.65",
        "-output_price_per_mtok = 0.18",
        "+output_price_per_mtok = 0.19",
        "-context_length = 131072",
        "-max_output_tokens = 16384",
        "+context_length = 262144",
        "+max_output_tokens = 65536",
    ]
    assert [(c.model, c.key, c.old, c.new) for c in result.changes] == [
        ("z-ai/glm-4.5", "input_price_per_mtok", "0.60", "0.65"),
        ("openai/gpt-oss-120b", "output_price_per_mtok", "0.18", "0.19"),
        ("moonshotai/kimi-k2", "context_length", "131072", "262144"),
        ("moonshotai/kimi-k2", "max_output_tokens", "16384", "65536"),
    ]
    catalogue = load_catalogue_file(catalogue_copy, BASE)
    glm, kimi_spec = catalogue.get("z-ai/glm-4.5"), catalogue.get("moonshotai/kimi-k2")
    assert glm is not None and kimi_spec is not None
    assert (glm.input_price_per_mtok, glm.output_price_per_mtok) == (0.65, 2.20)
    assert (kimi_spec.context_length, kimi_spec.max_output_tokens) == (262_144, 65_536)
    assert standin.requests[-1].path == "/api/v1/models"
    assert standin.requests[-1].headers["Authorization"] == f"Bearer {DEFAULT_KEY}"


async def test_second_sync_is_a_no_op_and_prices_are_exact(standin: OpenRouterStandIn, catalogue_copy: Path) -> None:
    settings = settings_for(standin, catalogue_copy)
    await sync_catalogue(settings)
    first = text_of(catalogue_copy)
    again = await sync_catalogue(settings)
    assert again.changes == () and not again.written
    assert text_of(catalogue_copy) == first
    # 0.000000039 USD per token is exactly 0.039 per million (no float noise such as 0.039000000000000004).
    assert "input_price_per_mtok = 0.039\n" in first


async def test_dry_run_prints_and_writes_nothing(standin: OpenRouterStandIn, catalogue_copy: Path) -> None:
    before = text_of(catalogue_copy)
    upstream(standin, "qwen/qwen3-coder")["pricing"]["completion"] = "0.000002"
    out, err = io.StringIO(), io.StringIO()
    code = await asyncio.to_thread(
        run, settings_for(standin, catalogue_copy), Namespace(output=None, dry_run=True), out, err
    )
    assert code == 0 and err.getvalue() == ""
    assert text_of(catalogue_copy) == before
    assert out.getvalue() == (
        "qwen/qwen3-coder\n  output_price_per_mtok  1.80 -> 2.0\n1 change(s) in 1 model(s); dry run, nothing written\n"
    )


async def test_output_elsewhere_leaves_the_source(standin: OpenRouterStandIn, catalogue_copy: Path) -> None:
    before = text_of(catalogue_copy)
    upstream(standin, "z-ai/glm-4.5")["pricing"]["completion"] = "0.0000025"
    target = catalogue_copy.parent / "synced.toml"
    out = io.StringIO()
    code = await asyncio.to_thread(
        run, settings_for(standin, catalogue_copy), Namespace(output=target, dry_run=False), out, io.StringIO()
    )
    assert code == 0
    assert text_of(catalogue_copy) == before
    assert "output_price_per_mtok = 2.5" in text_of(target)
    assert f"written to {target}" in out.getvalue()


async def test_missing_models_and_unusable_prices_are_warnings(
    standin: OpenRouterStandIn, catalogue_copy: Path
) -> None:
    standin.models = [m for m in standin.models if m["id"] != "tngtech/deepseek-r1t2-chimera"]
    upstream(standin, "z-ai/glm-4.5")["pricing"]["prompt"] = "-1"
    upstream(standin, "meta-llama/llama-4-maverick")["top_provider"]["max_completion_tokens"] = None
    result = await sync_catalogue(settings_for(standin, catalogue_copy), dry_run=True)
    assert result.missing == ("tngtech/deepseek-r1t2-chimera",)
    assert result.warnings == ("z-ai/glm-4.5: pricing.prompt is missing or not a price ('-1'); kept",)
    assert result.changes == ()


async def test_an_invalid_result_is_refused(standin: OpenRouterStandIn, catalogue_copy: Path) -> None:
    before = text_of(catalogue_copy)
    glm = upstream(standin, "z-ai/glm-4.5")
    glm["context_length"] = 50_000  # below the catalogue's max_output_tokens of 98304
    glm["top_provider"]["max_completion_tokens"] = None
    with pytest.raises(
        SyncError, match=r"the updated catalogue would be invalid: .*max_output_tokens.*nothing written"
    ):
        await sync_catalogue(settings_for(standin, catalogue_copy))
    assert text_of(catalogue_copy) == before


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("no-key", "no OpenRouter API key: set OPENROUTER_API_KEY (or ORX_OPENROUTER_API_KEY_FILE)"),
        ("401", "HTTP 401: the API key was rejected (missing, invalid or disabled)"),
        ("429", "HTTP 429: rate limited (Rate limit exceeded: free-models-per-min.); retry after 30s"),
        ("500", "HTTP 500: the service is unavailable (Internal Server Error)"),
        ("down", "cannot connect (ConnectError)"),
    ],
)
async def test_errors_are_clear(standin: OpenRouterStandIn, catalogue_copy: Path, setup: str, message: str) -> None:
    settings = settings_for(standin, catalogue_copy, key="" if setup == "no-key" else DEFAULT_KEY)
    if setup == "401":
        standin.models_reply = error_reply(401)
    elif setup == "429":
        standin.models_reply = error_reply(429, retry_after="30")
    elif setup == "500":
        standin.models_reply = error_reply(500)
    elif setup == "down":
        settings = Settings.from_env(
            {
                "ORX_DATA_DIR": str(catalogue_copy.parent),
                "ORX_CATALOGUE": str(catalogue_copy),
                "OPENROUTER_API_KEY": DEFAULT_KEY,
                "ORX_OPENROUTER_BASE_URL": "http://127.0.0.1:9/api/v1",
            }
        )
    err = io.StringIO()
    code = await asyncio.to_thread(run, settings, Namespace(output=None, dry_run=False), io.StringIO(), err)
    assert code == 1
    assert message in err.getvalue()
    assert err.getvalue().startswith("orchestratex models sync: ")
    assert DEFAULT_KEY not in err.getvalue()


def test_rewrite_keeps_comments_and_layout() -> None:
    text = (
        "# top comment\n"
        "[[models]]\n"
        'id = "a/b"  # the id\n'
        "input_price_per_mtok   =   1.50   # hand-aligned, with a comment\n"
        "output_price_per_mtok = 2\n"
        "context_length = 1_000\n"
        "max_output_tokens = 100\r\n"
        "[[models]]\n"
        'id = "c/d"\n'
        "input_price_per_mtok = 1.0\n"
    )
    updates, missing, warnings = plan(
        ["a/b", "c/d"],
        [
            {
                "id": "a/b",
                "pricing": {"prompt": "0.0000015", "completion": "0.000003"},
                "context_length": 2000,
                "top_provider": {"max_completion_tokens": 5000},
            }
        ],
    )
    assert missing == ["c/d"] and warnings == []
    new, changes = rewrite(text, updates)
    assert new == (
        "# top comment\n"
        "[[models]]\n"
        'id = "a/b"  # the id\n'
        "input_price_per_mtok   =   1.50   # hand-aligned, with a comment\n"
        "output_price_per_mtok = 3.0\n"
        "context_length = 2000\n"
        "max_output_tokens = 2000\r\n"  # capped at the context length
        "[[models]]\n"
        'id = "c/d"\n'
        "input_price_per_mtok = 1.0\n"
    )
    assert [c.key for c in changes] == ["output_price_per_mtok", "context_length", "max_output_tokens"]


async def test_cli_subcommand(standin: OpenRouterStandIn, catalogue_copy: Path) -> None:
    upstream(standin, "z-ai/glm-4.5")["pricing"]["prompt"] = "0.0000007"
    env = {
        **os.environ,
        "ORX_DATA_DIR": str(catalogue_copy.parent),
        "ORX_CATALOGUE": str(catalogue_copy),
        "OPENROUTER_API_KEY": DEFAULT_KEY,
        "ORX_OPENROUTER_BASE_URL": standin.base_url,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        "models",
        "sync",
        "--dry-run",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, stderr.decode()
    assert "z-ai/glm-4.5\n  input_price_per_mtok   0.60 -> 0.7\n" in stdout.decode()
    assert "dry run, nothing written" in stdout.decode()


async def test_a_vendor_error_that_echoes_the_key_in_any_form_never_shows_it(
    standin: OpenRouterStandIn, catalogue_copy: Path
) -> None:
    from urllib.parse import quote

    body = DEFAULT_KEY.split("-", 3)[-1]  # the key without its "sk-or-v1-" prefix
    standin.models_reply = error_reply(500, message=f"bad token {body} (also {quote(DEFAULT_KEY, safe='')})")
    err = io.StringIO()
    code = await asyncio.to_thread(
        run, settings_for(standin, catalogue_copy), Namespace(output=None, dry_run=False), io.StringIO(), err
    )
    assert code == 1 and "HTTP 500" in err.getvalue()
    for fragment in (DEFAULT_KEY, body, body[:16], body[-16:], quote(DEFAULT_KEY, safe="")[:20]):
        assert fragment not in err.getvalue()


async def test_sync_sets_structured_outputs_from_supported_parameters(
    standin: OpenRouterStandIn, catalogue_copy: Path
) -> None:
    before = text_of(catalogue_copy)
    qwen = upstream(standin, "qwen/qwen3-coder")
    qwen["supported_parameters"] = [p for p in qwen["supported_parameters"] if p != "structured_outputs"]
    upstream(standin, "tngtech/deepseek-r1t2-chimera")["supported_parameters"].append("structured_outputs")

    result = await sync_catalogue(settings_for(standin, catalogue_copy))

    assert [(c.model, c.key, c.old, c.new) for c in result.changes] == [
        ("qwen/qwen3-coder", "supports_structured_outputs", "true", "false"),
        ("tngtech/deepseek-r1t2-chimera", "supports_structured_outputs", "false", "true"),
    ]
    assert changed_lines(before, text_of(catalogue_copy)) == [
        "-supports_structured_outputs = true",
        "+supports_structured_outputs = false",
        "-supports_structured_outputs = false",
        "+supports_structured_outputs = true",
    ]
    catalogue = load_catalogue_file(catalogue_copy, BASE)
    flags = {m.id: m.supports_structured_outputs for m in catalogue}
    assert flags["qwen/qwen3-coder"] is False and flags["tngtech/deepseek-r1t2-chimera"] is True


async def test_sync_adds_a_missing_structured_outputs_line_after_json_mode(
    standin: OpenRouterStandIn, catalogue_copy: Path
) -> None:
    # A catalogue written before the flag existed: the key is optional (false) and absent.
    old = text_of(catalogue_copy).replace("supports_structured_outputs = true\n", "")
    write_text(catalogue_copy, old)
    glm = load_catalogue_file(catalogue_copy, BASE).get("z-ai/glm-4.5")
    assert glm is not None and glm.supports_structured_outputs is False

    out = io.StringIO()
    code = await asyncio.to_thread(
        run, settings_for(standin, catalogue_copy), Namespace(output=None, dry_run=False), out, io.StringIO()
    )

    assert code == 0
    new = text_of(catalogue_copy)
    assert new == text_of(DEFAULT_CATALOGUE)  # each line back where the packaged file has it
    assert "  supports_structured_outputs  (not set) -> true\n" in out.getvalue()
    assert "5 change(s) in 5 model(s)" in out.getvalue()


def test_rewrite_inserts_with_the_anchors_indent_and_line_ending() -> None:
    text = '[[models]]\r\n  id = "a/b"\r\n  supports_json_mode = false\r\n  context_length = 10\r\n'
    updates, _, _ = plan(["a/b"], [{"id": "a/b", "supported_parameters": ["structured_outputs"]}])
    assert updates == {"a/b": {"supports_structured_outputs": True}}
    new, changes = rewrite(text, updates)
    assert new == (
        '[[models]]\r\n  id = "a/b"\r\n  supports_json_mode = false\r\n  supports_structured_outputs = true\r\n'
        "  context_length = 10\r\n"
    )
    assert [(c.key, c.old, c.new) for c in changes] == [("supports_structured_outputs", "(not set)", "true")]
    without_anchor = '[[models]]\nid = "a/b"\n'
    with pytest.raises(SyncError, match="supports_structured_outputs is not set on its own line"):
        rewrite(without_anchor, updates)
