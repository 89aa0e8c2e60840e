"""Train the prompt-domain classifier on the project's own data and write the committed artefact.

Usage::

    python scripts/train_domain_classifier.py            # CV report + write services/selector/classifier/model/
    python scripts/train_domain_classifier.py --search   # also cross-validate the hyper-parameter grid
    python scripts/train_domain_classifier.py --check    # retrain and verify the committed artefact matches

Deterministic: fixed seed, fixed folds, fixed zip timestamps. Uses only
``services/selector/classifier/data/train.jsonl`` (never the shared dev set).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

from services.selector.classifier.artefact import DATA_PATH, MODEL_DIR, data_sha256
from services.selector.classifier.classifier import read_artefact
from services.selector.classifier.model import ArtefactError
from services.selector.classifier.training import (
    DEFAULT_SPEC,
    SEARCH_GRID,
    SEED,
    CrossValidation,
    ModelSpec,
    cross_validate,
    load_examples,
    train,
    write_artefact,
)


def _describe(spec: ModelSpec) -> str:
    return f"{spec.estimator:9s} C={spec.c:<5g} min_df={spec.min_df} blocks={'+'.join(spec.blocks)}"


def _report(cv: CrossValidation) -> str:
    per_domain = " ".join(f"{d}={v:.2f}" for d, v in cv.per_domain_f1_with_rules.items())
    return (
        f"CV {cv.folds}-fold: macro-F1 {cv.macro_f1:.4f} (with rules {cv.macro_f1_with_rules:.4f}), "
        f"accuracy {cv.accuracy:.4f} ({cv.accuracy_with_rules:.4f}), log loss {cv.log_loss:.4f}, "
        f"softmax scale {cv.scale:g}\n  per-domain F1 with rules: {per_domain}"
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA_PATH, help="training JSONL (default: the shipped file)")
    parser.add_argument("--out", type=Path, default=MODEL_DIR, help="artefact directory (default: the package's)")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--search", action="store_true", help="cross-validate the hyper-parameter grid first")
    parser.add_argument("--check", action="store_true", help="do not write; compare with the committed artefact")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    if not args.data.is_file():
        print(f"error: training data not found: {args.data}", file=sys.stderr)
        return 2
    examples = load_examples(args.data)
    print(f"{len(examples)} examples from {args.data} (sha256 {data_sha256(args.data)[:12]}...)")

    if args.search:
        print("hyper-parameter search (macro-F1 of the learned model; with the rule layer):")
        for spec in SEARCH_GRID:
            started = time.perf_counter()
            cv = cross_validate(examples, spec, seed=args.seed)
            marker = "  <- default" if spec == DEFAULT_SPEC else ""
            print(
                f"  {_describe(spec)}  {cv.macro_f1:.4f}  {cv.macro_f1_with_rules:.4f}"
                f"  ({time.perf_counter() - started:.1f} s){marker}",
                flush=True,
            )

    started = time.perf_counter()
    cv = cross_validate(examples, DEFAULT_SPEC, seed=args.seed)
    result = train(examples, DEFAULT_SPEC, seed=args.seed, data_hash=data_sha256(args.data), cv=cv)
    print(f"{DEFAULT_SPEC.version}: {_describe(DEFAULT_SPEC)}")
    print(_report(cv))
    print(f"trained in {time.perf_counter() - started:.1f} s (CV included)")

    if args.check:
        try:
            shipped = read_artefact(args.out, args.data)
        except ArtefactError as exc:
            print(f"the committed artefact is unusable or stale: {exc}", file=sys.stderr)
            return 1
        texts = [e.prompt for e in examples]
        fresh = np.array([result.model.scores(t) for t in texts])
        committed = np.array([shipped.model.scores(t) for t in texts])
        difference = float(np.abs(fresh - committed).max())
        print(f"max |score difference| vs the committed artefact: {difference:.2e}")
        return 0 if difference < 1e-6 else 1

    model_path, metadata_path = write_artefact(result, args.out)
    print(f"wrote {model_path} ({model_path.stat().st_size / 1e6:.2f} MB) and {metadata_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
