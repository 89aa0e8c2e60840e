"""PNG charts of an evaluation report, drawn with matplotlib's Agg backend (no display, no pyplot state).

Each chart is a function of the report dict built by :func:`services.evaluation.report.build_report` and
returns a :class:`~matplotlib.figure.Figure`, or None when the report has nothing to draw. Figures are small
(7 x 4.5 in at 100 dpi) and deterministic: the same report gives the same pixels. Names come from the
command line and the providers' model lists, so every label is escaped for mathtext (``$``) before drawing.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import PercentFormatter

FIGSIZE = (7.0, 4.5)
DPI = 100
_COLOUR = "#4C72B0"
_ORACLE_COLOUR = "#C44E52"
_SELECTED_COLOUR = "#55A868"
_PALETTE = ("#4C72B0", "#55A868", "#8172B2", "#CCB974", "#64B5CD", "#DD8452", "#937860", "#DA8BC3", "#8C8C8C")
"""Colours for strategies (the oracle's red is not among them)."""
_MARKERS = ("o", "s", "D", "^", "v", "P", "X")


def _label(text: object) -> str:
    """Plain text for matplotlib: a ``$`` would start mathtext (and a parse error on an odd model id)."""
    return str(text).replace("$", r"\$")


def _figure(report: Mapping[str, Any], title: str) -> tuple[Figure, Axes]:
    figure = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    suffix = " (simulated)" if report.get("simulated") else ""
    axes.set_title(_label(f"{title}{suffix}"), fontsize=11)
    axes.grid(True, alpha=0.3)
    return figure, axes


def _quality(report: Mapping[str, Any], entry: Mapping[str, Any]) -> tuple[float | None, list[float] | None]:
    """The headline quality of a strategy: the mean score for a judged suite, else accuracy; with its CI."""
    if report.get("kind") == "judged":
        return entry.get("mean_score"), entry.get("score_ci")
    return entry.get("accuracy"), entry.get("accuracy_ci")


def _quality_axis(report: Mapping[str, Any], axes: Axes, *, horizontal: bool = False) -> None:
    axis = axes.xaxis if horizontal else axes.yaxis
    if report.get("kind") == "judged":
        (axes.set_xlabel if horizontal else axes.set_ylabel)("Mean judge score (1-10)")
    else:
        (axes.set_xlabel if horizontal else axes.set_ylabel)("Accuracy")
        axis.set_major_formatter(PercentFormatter(1.0))


def _error(value: float, ci: Sequence[float] | None) -> tuple[float, float]:
    # A percentile interval need not contain the mean exactly; matplotlib rejects negative error lengths.
    if ci is None:
        return 0.0, 0.0
    return max(0.0, value - ci[0]), max(0.0, ci[1] - value)


def _entries(report: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    entries: list[Mapping[str, Any]] = list(report.get("strategies", []))
    if report.get("oracle"):
        entries.append(report["oracle"])
    return entries


def accuracy_vs_cost(report: Mapping[str, Any]) -> Figure | None:
    """Quality (accuracy, or mean score when judged) against mean cost per item, one point per strategy."""
    points = []
    for entry in _entries(report):
        value, ci = _quality(report, entry)
        cost = entry.get("cost_mean_usd")
        if value is not None and cost is not None:
            points.append((entry, float(cost), float(value), ci))
    if not points:
        return None
    figure, axes = _figure(report, "Quality against cost")
    # Strategies often cost about the same: labels written beside the points would overlap, so each point
    # gets its own colour and marker and its name goes in a legend beside the plot.
    for index, (entry, cost, value, ci) in enumerate(points):
        low, high = _error(value, ci)
        derived = bool(entry.get("derived"))
        colour = _ORACLE_COLOUR if derived else _PALETTE[index % len(_PALETTE)]
        axes.errorbar(
            [cost],
            [value],
            yerr=[[low], [high]],
            fmt="*" if derived else _MARKERS[index // len(_PALETTE) % len(_MARKERS)],
            markersize=14 if derived else 7,
            color=colour,
            ecolor=colour,
            elinewidth=1,
            alpha=0.9,
            capsize=3,
            label=_label(entry["strategy"]) + (" (derived: upper bound)" if derived else ""),
        )
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    axes.set_xlabel("Mean cost per item (USD)")
    axes.set_xlim(left=0)
    _quality_axis(report, axes)
    return figure


def accuracy_by_round(report: Mapping[str, Any]) -> Figure | None:
    """Accuracy had each refining strategy stopped after round k, one colour per strategy: the answer it would
    have returned (best critic score so far, solid) and its last version (dashed)."""
    curves = [
        c
        for c in report.get("accuracy_by_round", [])
        if any(r.get(key) is not None for r in c["rounds"] for key in ("returned_accuracy", "last_version_accuracy"))
    ]
    if not curves:
        return None
    figure, axes = _figure(report, "Accuracy by round")
    last = 1
    handles: list[Line2D] = []
    for index, curve in enumerate(curves):
        colour = _PALETTE[index % len(_PALETTE)]
        name = _label(curve["strategy"])
        # One legend entry per strategy (its colour); the line style says which curve, in a key of its own.
        for key, style, marker, label in (
            ("returned_accuracy", "-", "o", name),
            ("last_version_accuracy", "--", "x", f"_{name} (last version)"),  # "_": not in the legend
        ):
            rows = [r for r in curve["rounds"] if r.get(key) is not None]
            if not rows:
                continue
            rounds = [r["round"] for r in rows]
            last = max(last, *rounds)
            (line,) = axes.plot(
                rounds, [r[key] for r in rows], linestyle=style, marker=marker, color=colour, label=label
            )
            if style == "-":
                handles.append(line)
    handles += [
        Line2D([], [], color="#555555", linestyle="-", marker="o", label="returned (best score so far)"),
        Line2D([], [], color="#555555", linestyle="--", marker="x", label="last version"),
    ]
    axes.set_xlabel("Stopped after round")
    axes.set_xticks(range(1, last + 1))
    axes.set_ylim(0.0, 1.02)  # the whole scale: a 2-point change must not look like a cliff
    axes.set_ylabel("Accuracy")
    axes.yaxis.set_major_formatter(PercentFormatter(1.0))
    axes.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    return figure


def selection_vs_oracle(report: Mapping[str, Any]) -> Figure | None:
    """Bars: single:selected, each single:<model>, and the oracle, with 95% intervals."""
    bars: list[tuple[str, float, list[float] | None, str]] = []
    for entry in report.get("strategies", []):
        name = str(entry["strategy"])
        if name.startswith("single:"):
            value, ci = _quality(report, entry)
            if value is not None:
                colour = _SELECTED_COLOUR if name == "single:selected" else _COLOUR
                bars.append((name, float(value), ci, colour))
    bars.sort(key=lambda bar: bar[0] != "single:selected")  # the selector first, singles in report order
    oracle = report.get("oracle")
    if oracle:
        value, ci = _quality(report, oracle)
        if value is not None:
            bars.append(("oracle (derived)", float(value), ci, _ORACLE_COLOUR))
    if not bars:
        return None
    figure, axes = _figure(report, "Selector, single models and oracle")
    positions = list(range(len(bars)))
    errors = [_error(value, ci) for _, value, ci, _ in bars]
    axes.bar(
        positions,
        [value for _, value, _, _ in bars],
        yerr=[[e[0] for e in errors], [e[1] for e in errors]],
        color=[colour for *_, colour in bars],
        capsize=3,
    )
    axes.set_xticks(positions, [_label(name) for name, *_ in bars], rotation=20, ha="right", fontsize=8)
    _quality_axis(report, axes)
    return figure


def cost_per_correct(report: Mapping[str, Any]) -> Figure | None:
    """Horizontal bars: total cost divided by the number of right answers, per strategy (and the oracle)."""
    bars = [
        (_label(e["strategy"]) + (" (derived)" if e.get("derived") else ""), float(e["cost_per_correct_usd"]), e)
        for e in _entries(report)
        if e.get("cost_per_correct_usd") is not None
    ]
    if not bars:
        return None
    figure, axes = _figure(report, "Cost per correct answer")
    positions = list(range(len(bars)))
    axes.barh(
        positions,
        [value for _, value, _ in bars],
        color=[_ORACLE_COLOUR if e.get("derived") else _COLOUR for *_, e in bars],
    )
    axes.set_yticks(positions, [name for name, *_ in bars], fontsize=8)
    axes.invert_yaxis()
    axes.set_xlabel("USD per correct answer")
    return figure


CHARTS: dict[str, Callable[[Mapping[str, Any]], Figure | None]] = {
    "accuracy_vs_cost.png": accuracy_vs_cost,
    "accuracy_by_round.png": accuracy_by_round,
    "selection_vs_oracle.png": selection_vs_oracle,
    "cost_per_correct.png": cost_per_correct,
}
"""File name -> chart, in the order the report lists them."""


def write_charts(report: Mapping[str, Any], directory: Path) -> list[Path]:
    """Draw every chart that has data into ``directory``; return the files written, in :data:`CHARTS` order.

    A chart without data is skipped and any earlier file of that name removed, so the directory always
    matches the report that lists it.
    """
    written: list[Path] = []
    for name, draw in CHARTS.items():
        path = directory / name
        with warnings.catch_warnings():
            # A model id in a script DejaVu Sans lacks draws as boxes; that is no reason to fail a report.
            warnings.filterwarnings("ignore", message=r"Glyph .* missing from", category=UserWarning)
            figure = draw(report)
            if figure is None:
                path.unlink(missing_ok=True)
                continue
            directory.mkdir(parents=True, exist_ok=True)
            figure.savefig(path, dpi=DPI, bbox_inches="tight", format="png")
        written.append(path)
    return written
