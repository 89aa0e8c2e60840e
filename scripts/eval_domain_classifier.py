"""Evaluate the prompt-domain classifier on a labelled JSONL file (``{"prompt", "domain", "source"?}`` rows).

Usage::

    python scripts/eval_domain_classifier.py [--data ../shared/datasets/prompt_domains/dev.jsonl]
        [--classifier trained|model-only|rules] [--errors N] [--latency]

Prints per-domain precision/recall/F1, macro-F1, the confusion matrix (rows: true, columns: predicted)
and the accuracy per ``source`` (the part before the first ``/`` and the full source). The file is
only read, never copied. Exit status 2 when the file is missing or malformed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestratex.domains import DOMAINS
from services.selector.analysis import RuleClassifier
from services.selector.classifier.classifier import load_trained_classifier

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "prompt_domains" / "dev.jsonl"


@dataclass(frozen=True)
class Row:
    """One labelled prompt."""

    prompt: str
    domain: str
    source: str


def read_rows(path: Path) -> list[Row]:
    """Labelled rows of ``path``; raises ``ValueError`` naming the line on a bad row."""
    rows: list[Row] = []
    with path.open(encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not JSON ({exc.msg})") from exc
            prompt, domain = data.get("prompt"), data.get("domain")
            if not isinstance(prompt, str) or domain not in DOMAINS:
                raise ValueError(f"{path}:{number}: needs a string 'prompt' and a 'domain' in {', '.join(DOMAINS)}")
            rows.append(Row(prompt, domain, str(data.get("source") or "unknown")))
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


def make_predictor(kind: str) -> Callable[[str], dict[str, float]]:
    """``trained`` (model + rules, the default), ``model-only`` or the old ``rules`` classifier."""
    if kind == "rules":
        return RuleClassifier().predict
    classifier = load_trained_classifier()
    if kind == "model-only":
        return classifier.model.probabilities
    return classifier.predict


def report(rows: Sequence[Row], predicted: Sequence[str]) -> tuple[str, float]:
    """The printable report and the macro-F1."""
    lines: list[str] = []
    confusion: dict[str, Counter[str]] = {d: Counter() for d in DOMAINS}
    for row, guess in zip(rows, predicted, strict=True):
        confusion[row.domain][guess] += 1
    lines.append(f"{'domain':16s} {'precision':>9s} {'recall':>9s} {'f1':>9s} {'support':>8s}")
    f1s: list[float] = []
    for domain in DOMAINS:
        true_positive = confusion[domain][domain]
        support = sum(confusion[domain].values())
        predicted_n = sum(confusion[d][domain] for d in DOMAINS)
        precision = true_positive / predicted_n if predicted_n else 0.0
        recall = true_positive / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        if support:
            f1s.append(f1)
        lines.append(f"{domain:16s} {precision:9.3f} {recall:9.3f} {f1:9.3f} {support:8d}")
    macro_f1 = sum(f1s) / len(f1s) if f1s else 0.0
    accuracy = sum(r.domain == p for r, p in zip(rows, predicted, strict=True)) / len(rows)
    lines.append(f"\nmacro-F1: {macro_f1:.4f}   accuracy: {accuracy:.4f}   n={len(rows)}")

    short = [d[:5] for d in DOMAINS]
    lines.append("\nconfusion matrix (rows: true, columns: predicted)")
    lines.append(f"{'':16s}" + "".join(f"{s:>7s}" for s in short))
    for domain in DOMAINS:
        lines.append(f"{domain:16s}" + "".join(f"{confusion[domain][d]:7d}" for d in DOMAINS))

    by_source: dict[str, list[bool]] = defaultdict(list)
    for row, guess in zip(rows, predicted, strict=True):
        by_source[row.source.split("/", 1)[0]].append(row.domain == guess)
        if "/" in row.source:
            by_source[f"  {row.source}"].append(row.domain == guess)
    lines.append("\naccuracy per source")
    for source in sorted(by_source, key=lambda s: (s.strip().split("/", 1)[0], s.startswith(" "), s)):
        hits = by_source[source]
        lines.append(f"{source:60s} {sum(hits) / len(hits):6.3f}  n={len(hits)}")
    return "\n".join(lines), macro_f1


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"labelled JSONL (default: {DEFAULT_DATA})")
    parser.add_argument("--classifier", choices=("trained", "model-only", "rules"), default="trained")
    parser.add_argument("--errors", type=int, default=0, metavar="N", help="print N misclassified prompts")
    parser.add_argument("--latency", action="store_true", help="print per-prompt predict latency percentiles")
    args = parser.parse_args(argv)

    if not args.data.is_file():
        print(f"error: evaluation file not found: {args.data}", file=sys.stderr)
        return 2
    try:
        rows = read_rows(args.data)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    predict = make_predictor(args.classifier)
    predicted: list[str] = []
    timings: list[float] = []
    for row in rows:
        started = time.perf_counter()
        probabilities = predict(row.prompt)
        timings.append(time.perf_counter() - started)
        predicted.append(max(DOMAINS, key=lambda d: probabilities.get(d, 0.0)))

    text, _ = report(rows, predicted)
    print(f"classifier: {args.classifier}   data: {args.data}\n")
    print(text)
    if args.latency:
        ordered = sorted(timings)
        pct = {p: ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1e6 for p in (50, 90, 99)}
        print(f"\npredict latency: p50 {pct[50]:.0f} us, p90 {pct[90]:.0f} us, p99 {pct[99]:.0f} us")
    if args.errors:
        print(f"\nfirst {args.errors} errors:")
        wrong = [(r, p) for r, p in zip(rows, predicted, strict=True) if r.domain != p][: args.errors]
        for row, guess in wrong:
            print(f"- [{row.source}] {row.domain} -> {guess}: {row.prompt[:200]!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
