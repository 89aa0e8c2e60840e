"""``orchestratex models sync``: refresh catalogue prices and limits from OpenRouter's ``/models``.

For every catalogue model served by the ``openrouter`` provider, ``GET {base_url}/models`` gives
``pricing.prompt`` / ``pricing.completion`` (strings, USD per TOKEN — multiplied by 10^6 with exact
decimal arithmetic into the catalogue's USD per MILLION tokens), ``context_length``,
``top_provider.max_completion_tokens`` and ``supported_parameters`` (``structured_outputs`` in it sets
``supports_structured_outputs``: the model takes a JSON Schema). Only those values are rewritten, in
place on their own lines (a missing ``supports_structured_outputs`` line is added after
``supports_json_mode``): comments, layout and everything else in the file stay as they are
(``tomllib`` cannot write TOML, so this is a careful line edit). The result is re-parsed and validated
as a catalogue before it replaces the file (atomically); ``--dry-run`` prints the changes and writes
nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import stat
import sys
import tempfile
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TextIO

import httpx

from orchestratex.config import Settings
from orchestratex.errors import ConfigError
from orchestratex.secrets import SecretScrubber
from services.providers.catalogue import DEFAULT_CATALOGUE, load_catalogue_file
from services.providers.openrouter import OPENROUTER_KEY_ENV, resolve_keys

PROVIDER = "openrouter"
_MILLION = Decimal(1_000_000)
_STRUCTURED = "supports_structured_outputs"
_KEYS = ("input_price_per_mtok", "output_price_per_mtok", "context_length", "max_output_tokens", _STRUCTURED)
# A key that may be missing from a model's block (it is optional in the catalogue): the line it goes after.
_INSERT_AFTER = {_STRUCTURED: "supports_json_mode"}
_MODELS_HEADER = re.compile(r"^\s*\[\[\s*models\s*\]\]\s*(#.*)?$")
_TABLE_HEADER = re.compile(r"^\s*\[")
# `key = value  # comment` for the keys this command owns (values are numbers or a basic string).
_ASSIGNMENT = re.compile(
    r"^(?P<lead>\s*)(?P<key>id|"
    + "|".join((*_KEYS, *_INSERT_AFTER.values()))
    + r")(?P<eq>\s*=\s*)(?P<value>[^#]*?)(?P<tail>\s*(#.*)?)$"
)


class SyncError(Exception):
    """The sync could not be done; the message says why (never contains the key)."""


@dataclass(frozen=True)
class Change:
    """One value that changed: ``model``'s ``key`` from ``old`` to ``new`` (as written in the file)."""

    model: str
    key: str
    old: str
    new: str


@dataclass(frozen=True)
class SyncResult:
    """What a sync found and did."""

    changes: tuple[Change, ...]
    missing: tuple[str, ...]
    """Catalogue models that ``/models`` does not list (left as they are)."""
    warnings: tuple[str, ...]
    text: str
    """The new file content."""
    written: bool


async def fetch_models(base_url: str, key: str, *, wait: float = 30.0) -> list[dict[str, Any]]:
    """``GET {base_url}/models`` with the key (``wait``: seconds allowed); the ``data`` list.

    Raises :class:`SyncError` with a clear message.
    """
    url = f"{base_url.rstrip('/')}/models"
    try:
        async with httpx.AsyncClient(timeout=wait) as client:
            response = await client.get(url, headers={"Authorization": f"Bearer {key}"})
    except httpx.TimeoutException:
        raise SyncError(f"{url}: no reply within {wait:g}s") from None
    except httpx.TransportError as exc:
        raise SyncError(f"{url}: cannot connect ({type(exc).__name__})") from None
    if response.status_code != 200:
        # the vendor's message may echo the key, in any form: never let it into the error
        raise SyncError(f"{url}: {SecretScrubber([key]).scrub(_http_problem(response))}")
    try:
        payload = response.json()
    except ValueError:
        payload = None
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list):
        raise SyncError(f"{url}: unexpected reply (no 'data' list)")
    return [item for item in data if isinstance(item, dict)]


def _http_problem(response: httpx.Response) -> str:
    status = response.status_code
    message = ""
    with contextlib.suppress(ValueError):
        error = response.json().get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            message = " ".join(error["message"].split())[:200]
    meaning = {
        401: "the API key was rejected (missing, invalid or disabled)",
        402: "insufficient credits",
        403: "forbidden",
        404: "not found (is the base URL right?)",
        429: "rate limited",
    }.get(status, "the service is unavailable" if status >= 500 else "the request was rejected")
    retry = response.headers.get("retry-after")
    suffix = f"; retry after {retry}s" if retry and status in (429, 503) else ""
    return f"HTTP {status}: {meaning}{f' ({message})' if message and status != 401 else ''}{suffix}"


def plan(
    ids: Sequence[str], upstream: Sequence[Mapping[str, Any]]
) -> tuple[dict[str, dict[str, Any]], list[str], list[str]]:
    """The new values per model id (only those upstream states), the ids it does not list, and warnings."""
    by_id = {str(m.get("id")): m for m in upstream}
    updates: dict[str, dict[str, Any]] = {}
    missing: list[str] = []
    warnings: list[str] = []
    for model_id in ids:
        entry = by_id.get(model_id)
        if entry is None:
            missing.append(model_id)
            continue
        values: dict[str, Any] = {}
        pricing = entry.get("pricing")
        pricing = pricing if isinstance(pricing, dict) else {}
        for key, name in (("input_price_per_mtok", "prompt"), ("output_price_per_mtok", "completion")):
            price = _per_million(pricing.get(name))
            if price is None:
                warnings.append(f"{model_id}: pricing.{name} is missing or not a price ({pricing.get(name)!r}); kept")
            else:
                values[key] = price
        context = _positive_int(entry.get("context_length"))
        if context is not None:
            values["context_length"] = context
        top = entry.get("top_provider")
        max_out = _positive_int(top.get("max_completion_tokens")) if isinstance(top, dict) else None
        if max_out is not None:
            values["max_output_tokens"] = min(max_out, context) if context is not None else max_out
        parameters = entry.get("supported_parameters")
        if isinstance(parameters, list):  # absent: the flag is kept as it is
            values[_STRUCTURED] = "structured_outputs" in parameters
        updates[model_id] = values
    return updates, missing, warnings


def _per_million(value: Any) -> Decimal | None:
    """A per-token price string (``"0.00000035"``) as USD per million tokens, exactly; None if unusable."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    try:
        # str() of a float is its shortest round-trip form, so 3.5e-07 stays exactly 0.00000035.
        price = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    if not price.is_finite() or price < 0:  # OpenRouter's routers report "-1" (variable price)
        return None
    return price * _MILLION


def _positive_int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return None
    return value


def _format(value: bool | int | Decimal) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    text = format(value.normalize(), "f")
    return text if "." in text else f"{text}.0"


def _same(current: Any, new: bool | int | Decimal) -> bool:
    if isinstance(new, bool):
        return current is new
    if isinstance(current, bool) or not isinstance(current, int | float):
        return False
    if isinstance(new, int):
        return isinstance(current, int) and current == new
    # repr() is the shortest decimal that round-trips: exactly what the file says.
    return Decimal(repr(current)) == new


def rewrite(text: str, updates: Mapping[str, Mapping[str, Any]]) -> tuple[str, list[Change]]:
    """``text`` with the values of ``updates`` written into each ``[[models]]`` block; other lines untouched."""
    lines = text.splitlines(keepends=True)
    changes: list[Change] = []
    blocks: list[list[int]] = []
    current: list[int] | None = None
    for index, line in enumerate(lines):
        if _MODELS_HEADER.match(line):
            current = []
            blocks.append(current)
        elif _TABLE_HEADER.match(line):
            current = None
        elif current is not None:
            current.append(index)
    insertions: list[tuple[int, str]] = []  # (index of the line to insert after, the new line)
    for block in blocks:
        found: dict[str, tuple[int, re.Match[str]]] = {}
        for index in block:
            match = _ASSIGNMENT.match(lines[index].rstrip("\r\n"))
            if match:
                found[match.group("key")] = (index, match)
        if "id" not in found:
            continue
        model_id = _value(found["id"][1])
        wanted = updates.get(str(model_id))
        if not wanted:
            continue
        for key, new in wanted.items():
            anchor = found.get(_INSERT_AFTER.get(key, ""))
            if key not in found and anchor is not None:
                index, match = anchor
                ending = lines[index][len(lines[index].rstrip("\r\n")) :] or "\n"
                insertions.append((index, f"{match.group('lead')}{key} = {_format(new)}{ending}"))
                changes.append(Change(str(model_id), key, "(not set)", _format(new)))
                continue
            if key not in found:
                raise SyncError(f"{model_id}: {key} is not set on its own line in the catalogue; edit it by hand")
            index, match = found[key]
            old_text = match.group("value").strip()
            if _same(_value(match), new):
                continue
            ending = lines[index][len(lines[index].rstrip("\r\n")) :]
            lines[index] = f"{match.group('lead')}{key}{match.group('eq')}{_format(new)}{match.group('tail')}{ending}"
            changes.append(Change(str(model_id), key, old_text, _format(new)))
    for index, line in sorted(insertions, reverse=True):
        if not lines[index].endswith(("\n", "\r")):  # the anchor was the file's last line
            lines[index] += line[len(line.rstrip("\r\n")) :]
        lines.insert(index + 1, line)
    return "".join(lines), changes


def _value(match: re.Match[str]) -> Any:
    try:
        return tomllib.loads(f"v = {match.group('value').strip()}")["v"]
    except tomllib.TOMLDecodeError:
        return None


def _verify(old_text: str, new_text: str, updates: Mapping[str, Mapping[str, Any]], source: str) -> None:
    """Re-parse: only the planned values changed, and the result is a valid catalogue."""
    old, new = tomllib.loads(old_text), tomllib.loads(new_text)
    old_models, new_models = old.pop("models", []), new.pop("models", [])
    if old != new or len(old_models) != len(new_models):
        raise SyncError("internal error: the rewrite changed more than model values; nothing written")
    for before, after in zip(old_models, new_models, strict=True):
        wanted = updates.get(str(before.get("id")), {})
        for key in set(before) | set(after):
            if key in wanted:
                if not _same(after.get(key), wanted[key]):
                    raise SyncError(f"internal error: {before.get('id')}: {key} was not written; nothing written")
            elif before.get(key) != after.get(key):
                raise SyncError(f"internal error: {before.get('id')}: {key} changed unexpectedly; nothing written")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "catalogue.toml"
        path.write_text(new_text, encoding="utf-8")
        try:
            load_catalogue_file(path, "https://openrouter.ai/api/v1")
        except ConfigError as exc:
            problem = str(exc).replace(str(path), source)
            raise SyncError(f"the updated catalogue would be invalid: {problem}; nothing written") from None


async def sync_catalogue(settings: Settings, output: Path | None = None, *, dry_run: bool = False) -> SyncResult:
    """Update the catalogue (``settings.providers.catalogue_path`` or the packaged one) from ``/models``.

    Writes to ``output`` (default: the catalogue read) unless ``dry_run``. Raises :class:`SyncError`.
    """
    source = settings.providers.catalogue_path or DEFAULT_CATALOGUE
    target = output or source
    try:
        catalogue = load_catalogue_file(source, settings.providers.openrouter_base_url)
        text = source.read_text(encoding="utf-8")
    except (ConfigError, OSError) as exc:
        raise SyncError(f"cannot read the catalogue: {exc}") from None
    provider = catalogue.providers.get(PROVIDER)
    ids = [m.id for m in catalogue if m.provider == PROVIDER]
    if provider is None or not ids:
        raise SyncError(f"{source}: no model is served by the {PROVIDER!r} provider; nothing to sync")
    key = resolve_keys(settings, catalogue).get(PROVIDER)
    if not key:
        raise SyncError(
            f"no OpenRouter API key: set {provider.api_key_env}"
            + (" (or ORX_OPENROUTER_API_KEY_FILE)" if provider.api_key_env == OPENROUTER_KEY_ENV else "")
        )
    upstream = await fetch_models(provider.base_url, key.get())
    updates, missing, warnings = plan(ids, upstream)
    new_text, changes = rewrite(text, updates)
    _verify(text, new_text, updates, str(target))
    written = False
    if not dry_run and (changes or target != source):
        _atomic_write(target, new_text)
        written = True
    return SyncResult(tuple(changes), tuple(missing), tuple(warnings), new_text, written)


def _atomic_write(path: Path, text: str) -> None:
    temporary = ""
    try:
        mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o644
        with tempfile.NamedTemporaryFile(
            "w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.", delete=False
        ) as handle:
            temporary = handle.name
            handle.write(text)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except OSError as exc:
        if temporary:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
        raise SyncError(f"cannot write {path}: {exc.strerror or exc}") from None


def report(result: SyncResult, target: Path, dry_run: bool, out: TextIO) -> None:
    """Print the changes (grouped by model), what was not found, and where it was written."""
    width = max(len("output_price_per_mtok"), *(len(c.key) for c in result.changes))
    model = None
    for change in result.changes:
        if change.model != model:
            model = change.model
            out.write(f"{model}\n")
        out.write(f"  {change.key:<{width}}  {change.old} -> {change.new}\n")
    for warning in result.warnings:
        out.write(f"warning: {warning}\n")
    for model_id in result.missing:
        out.write(f"warning: {model_id} is not listed by /models; kept as is\n")
    models = len({c.model for c in result.changes})
    summary = f"{len(result.changes)} change(s) in {models} model(s)" if result.changes else "already up to date"
    if dry_run:
        out.write(f"{summary}; dry run, nothing written\n")
    elif result.written:
        out.write(f"{summary}; written to {target}\n")
    else:
        out.write(f"{summary}; {target} left unchanged\n")


def run(settings: Settings, args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """The ``models sync`` command: 0 on success, 1 on failure (the reason on ``err``)."""
    output: Path | None = args.output
    target = output or settings.providers.catalogue_path or DEFAULT_CATALOGUE
    try:
        result = asyncio.run(sync_catalogue(settings, output, dry_run=args.dry_run))
    except SyncError as exc:
        err.write(f"orchestratex models sync: {exc}\n")
        return 1
    report(result, target, args.dry_run, out)
    return 0
