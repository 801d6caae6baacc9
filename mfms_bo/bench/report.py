"""Benchmark report: summary over seeds, the markdown table, the JSON and the plot.

Everything here is computed from :class:`~mfms_bo.bench.harness.RunResult` s alone (which the
JSON holds in full), so a table can be rebuilt from a saved run with ``mfms bench --from``.
Costs are shown as a fraction of the problem's budget, which makes problems with different
cost units (GPU-hours, PFLOP) readable side by side; the JSON keeps absolute costs.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mfms_bo.bench.harness import RunResult
from mfms_bo.bench.metrics import (
    GAP_FLOOR,
    bootstrap_median,
    bootstrap_ratio,
    cost_to_first_hit,
    cost_to_settle,
    final_gap,
    gap_at,
    interval_coverage,
    largest_rise,
    mean_log_gap,
)

__all__ = ["bands_of", "summarize", "format_table", "format_problems", "format_headline",
           "format_convergence", "write_json", "RunsWriter",
           "read_json", "write_plot", "git_commit", "REFERENCE"]

#: The strategy every speed-up is measured against.
REFERENCE = "mfms-bo"
_FIXED_BANDS = (("0.5pct", 0.005), ("0.25pct", 0.0025))
_BAND_LABELS = {"0.5pct": "0.5%", "0.25pct": "0.25%", "u10": "10% of uniform gap"}


def bands_of(uniform_gap: float) -> dict[str, float]:
    """The relative bands a problem is scored at: 0.5%, 0.25%, and a tenth of the uniform
    mixture's own gap (what "most of the way from doing nothing to the optimum" means on that
    problem, whatever its scale)."""
    out = dict(_FIXED_BANDS)
    if math.isfinite(uniform_gap) and uniform_gap > 0:
        out["u10"] = 0.1 * uniform_gap
    return out


def _row(runs: Sequence[RunResult], bands: dict[str, float]) -> dict[str, Any]:
    row: dict[str, Any] = {"runs": len(runs), "capped": sum(r.capped for r in runs),
                           "median_trials": float(np.median([r.n_trials for r in runs])),
                           "settle": {}, "first_hit": {}, "_settle_values": {}}
    for key, band in bands.items():
        settle = [cost_to_settle(r.curve, r.optimum, band) for r in runs]
        row["_settle_values"][key] = settle
        row["settle"][key] = list(bootstrap_median(settle))
        row["first_hit"][key] = list(bootstrap_median(
            [cost_to_first_hit(r.curve, r.optimum, band) for r in runs]))
    row["final_gap"] = list(bootstrap_median([final_gap(r.curve, r.optimum) for r in runs]))
    row["mean_log_gap"] = list(bootstrap_median(
        [mean_log_gap(r.curve, r.optimum, r.start_cost, r.budget, r.uniform_gap)
         for r in runs]))
    rises = [x for x in (largest_rise(r.curve, r.optimum, 0.01) for r in runs)
             if not math.isnan(x)]
    row["rise_after_1pct"] = {"runs": len(rises),
                              "median": float(np.median(rises)) if rises else math.nan,
                              "max": max(rises, default=math.nan)}
    inside, total = interval_coverage([(t.interval[0], t.interval[1], t.true_objective)
                                       for r in runs for t in r.trials
                                       if t.interval and t.true_objective is not None])
    row["coverage90"] = {"inside": inside, "total": total}
    return row


def summarize(runs: Sequence[RunResult], reference: str = REFERENCE) -> dict[str, Any]:
    """Per problem: its budget, uniform gap and bands; per strategy: median and bootstrap 90%
    interval of the cost to settle and to first hit at each band, of the final gap and of
    the mean log10 gap, how many runs ``max_trials`` capped, and the speed-up of
    ``reference`` over the strategy (its settle cost / the reference's) with an interval."""
    out: dict[str, Any] = {}
    for prob in dict.fromkeys(r.problem for r in runs):
        mine = [r for r in runs if r.problem == prob]
        first = mine[0]
        bands = bands_of(first.uniform_gap)
        rows = {s: _row([r for r in mine if r.strategy == s], bands)
                for s in dict.fromkeys(r.strategy for r in mine)}
        ref = rows.get(reference)
        for row in rows.values():
            row["speedup_settle"] = {}
            if ref is not None:
                for key in bands:
                    row["speedup_settle"][key] = list(bootstrap_ratio(
                        row["_settle_values"][key], ref["_settle_values"][key]))
        for row in rows.values():
            del row["_settle_values"]
        out[prob] = {"budget": first.budget, "optimum": first.optimum,
                     "uniform_gap": first.uniform_gap, "start_cost": first.start_cost,
                     "bands": bands, "rows": rows}
    return out


def _pct_of_budget(v: float, budget: float) -> str:
    if math.isnan(v):
        return "-"
    if math.isinf(v):
        return "never"
    f = 100.0 * v / budget
    return f"{f:.2g}" if f < 10 else f"{f:.0f}"


def _cost_cell(m: Sequence[float], budget: float) -> str:
    med, lo, hi = m
    if math.isinf(med):
        return "never"
    return f"{_pct_of_budget(med, budget)} [{_pct_of_budget(lo, budget)}, " \
           f"{_pct_of_budget(hi, budget)}]"


def _gap_cell(m: Sequence[float]) -> str:
    def g(v: float) -> str:
        return "-" if math.isnan(v) else ("inf" if math.isinf(v) else f"{100 * v:.2g}")

    return f"{g(m[0])} [{g(m[1])}, {g(m[2])}]"


def _log_cell(m: Sequence[float]) -> str:
    if math.isnan(m[0]):
        return "-"
    return f"{m[0]:.2f} [{m[1]:.2f}, {m[2]:.2f}]"


def _ratio_cell(m: Sequence[float] | None) -> str:
    if not m or math.isnan(m[0]):
        return "-"
    if math.isinf(m[0]) and math.isinf(m[1]):
        return "inf (it never settles)"

    def x(v: float) -> str:
        return "-" if math.isnan(v) else ("inf" if math.isinf(v) else f"{v:.2g}")

    return f"{x(m[0])}x [{x(m[1])}, {x(m[2])}]"


def format_table(summary: dict[str, Any], reference: str = REFERENCE) -> str:
    """Markdown table, one row per problem x strategy. Costs are % of the budget, median over
    seeds [bootstrap 90% interval]; "never": the median run did not settle. A ``*`` marks a
    strategy some of whose runs ``max_trials`` stopped before the budget was spent."""
    head = ("| problem | strategy | settle 0.5% | settle 0.25% | settle 10% of uniform gap | "
            f"first hit 0.5% | final gap (%) | mean log10 gap | {reference} speed-up "
            "(settle 0.5%) |")
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    capped = False
    for prob, p in summary.items():
        b = p["budget"]
        for strat, row in p["rows"].items():
            mark = ""
            if row["capped"]:
                mark, capped = f" *{row['capped']}/{row['runs']}", True
            speedup = ("-" if strat == reference
                       else _ratio_cell(row["speedup_settle"].get("0.5pct")))
            settle = [_cost_cell(row["settle"][k], b) if k in row["settle"] else "-"
                      for k in ("0.5pct", "0.25pct", "u10")]
            lines.append(
                f"| {prob} | {strat}{mark} | {' | '.join(settle)} | "
                f"{_cost_cell(row['first_hit']['0.5pct'], b)} | {_gap_cell(row['final_gap'])} | "
                f"{_log_cell(row['mean_log_gap'])} | {speedup} |")
    if capped:
        lines.append("\n`*n/m`: n of the m runs were stopped by `--max-trials` before the "
                     "budget was spent.")
    return "\n".join(lines)


def format_problems(summary: dict[str, Any]) -> str:
    """Markdown: each problem's budget, optimum, uniform gap and the third band."""
    lines = ["| problem | budget | optimum | uniform gap (%) | 10% of uniform gap (%) |",
             "|---|---|---|---|---|"]
    for prob, p in summary.items():
        opt = "-" if p["optimum"] is None else f"{p['optimum']:.4f}"
        u = p["uniform_gap"]
        lines.append(f"| {prob} | {p['budget']:.4g} | {opt} | {100 * u:.2f} | "
                     f"{100 * p['bands'].get('u10', math.nan):.3f} |")
    return "\n".join(lines)


def _cheapest_other(rows: dict[str, Any], reference: str, band: str
                    ) -> tuple[float, str | None]:
    """``(median settle cost, name)`` of the strategy other than ``reference`` that settles
    for least at ``band``; ``(inf, None)`` when there is none."""
    others = [(row["settle"][band][0], s) for s, row in rows.items() if s != reference]
    return min(others, default=(math.inf, None), key=lambda t: t[0])


def format_headline(summary: dict[str, Any], reference: str = REFERENCE,
                    band: str = "0.5pct") -> str:
    """Markdown, one row per problem: the reference's median cost to settle and final gap,
    the cheapest other strategy to settle (by median), and the reference's speed-up over it
    with its interval (below 1: the other strategy settles for less)."""
    lines = [f"| problem | uniform gap (%) | {reference}: settle 0.5% | {reference}: final gap "
             "(%) | cheapest other strategy to settle 0.5% | speed-up over it |",
             "|---|---|---|---|---|---|"]
    for prob, p in summary.items():
        rows, b = p["rows"], p["budget"]
        ref = rows.get(reference)
        if ref is None:
            continue
        best = _cheapest_other(rows, reference, band)
        if best[1] is None or math.isinf(best[0]):
            other = "none settles"
            ratio = "-"
        else:
            other = f"{best[1]}: {_cost_cell(rows[best[1]]['settle'][band], b)}"
            ratio = _ratio_cell(rows[best[1]]["speedup_settle"].get(band))
        lines.append(f"| {prob} | {100 * p['uniform_gap']:.2f} | "
                     f"{_cost_cell(ref['settle'][band], b)} | {_gap_cell(ref['final_gap'])} | "
                     f"{other} | {ratio} |")
    return "\n".join(lines)


def format_convergence(summary: dict[str, Any], reference: str = REFERENCE,
                       band: str = "0.5pct") -> str:
    """Markdown, one row per problem, for ``reference``: whether its recommendation stays
    put once it is close (the largest rise of its true gap after first coming within 1%,
    median and worst run), how often its 90% interval held the truth, and its speed-up
    over the cheapest other strategy to settle; then the geometric mean of those speed-ups
    over the problems where both settle."""
    lines = [f"| problem | {reference}: runs within 1% | largest rise after 1% (% points, "
             "median / worst run) | 90% interval coverage | speed-up over the cheapest "
             "other to settle 0.5% |", "|---|---|---|---|---|"]
    logs: list[float] = []
    for prob, p in summary.items():
        rows = p["rows"]
        ref = rows.get(reference)
        if ref is None or "rise_after_1pct" not in ref:
            continue
        rise, cov = ref["rise_after_1pct"], ref["coverage90"]
        rise_cell = ("-" if not rise["runs"]
                     else f"{100 * rise['median']:.2f} / {100 * rise['max']:.2f}")
        cov_cell = (f"{cov['inside'] / cov['total']:.2f} ({cov['total']} recommendations)"
                    if cov["total"] else "-")
        best = _cheapest_other(rows, reference, band)
        ratio = "-"
        if best[1] is not None:
            r = rows[best[1]]["speedup_settle"].get(band)
            ratio = f"{best[1]}: {_ratio_cell(r)}"
            if r and math.isfinite(r[0]) and r[0] > 0:
                logs.append(math.log(r[0]))
        lines.append(f"| {prob} | {rise['runs']}/{ref['runs']} | {rise_cell} | {cov_cell} | "
                     f"{ratio} |")
    if logs:
        lines.append(f"\nGeometric mean of {reference}'s speed-up over the cheapest other "
                     f"strategy, over the {len(logs)} problems where both settle: "
                     f"{math.exp(sum(logs) / len(logs)):.2f}x.")
    return "\n".join(lines)


def git_commit(cwd: str | Path | None = None) -> str | None:
    """The checkout's commit (``-dirty`` when tracked files differ), or None outside git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             check=True, cwd=cwd).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True,
                               cwd=cwd).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return sha + ("-dirty" if dirty else "")


#: The packages whose versions decide a run's numbers: the GP's fit and every acquisition go
#: through them, so two installs of one commit can take different paths from the same seed.
NUMERIC_PACKAGES = ("torch", "botorch", "gpytorch", "linear_operator", "numpy", "scipy",
                    "lightgbm", "optuna", "dehb")


def numeric_environment() -> dict[str, str | None]:
    """Python's and :data:`NUMERIC_PACKAGES`' versions (None: not installed). Recorded with
    the runs because the same commit and seed reproduce a run only on the same versions."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in NUMERIC_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _jsonable(x: Any) -> Any:
    """Strict JSON: ``inf`` as the string "inf" (never reached), ``nan`` as null."""
    if isinstance(x, float):
        if math.isnan(x):
            return None
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        return x
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    return x


def write_json(runs: Sequence[RunResult], path: str | Path, command: str | None = None,
               summary: dict[str, Any] | None = None, commit: str | None = None) -> None:
    """``{commit, command, environment, summary, runs: [{problem, strategy, seed, optimum,
    curve, trials: [{mixture, model_size, steps, cost, cumulative_cost, recommendation,
    true_objective}], ...}]}``: enough for an outside tool to recompute every metric, and
    to know which package versions a rerun needs to take the same paths.
    ``commit`` should be read when the runs start (default: now)."""
    writer = RunsWriter(path, command=command, commit=commit)
    for r in runs:
        writer.add(r, save=False)
    writer.save(summary)


class RunsWriter:
    """:func:`write_json`'s file, saved as runs finish (``mfms bench --json``), so a suite
    stopped part-way keeps the runs it finished.

    Each run is encoded once, when added, and a save joins the encoded runs: re-encoding
    every run at every save cost 0.5 s per save at 140 runs, quadratic over a suite, in the
    process that hands out the jobs."""

    def __init__(self, path: str | Path, command: str | None = None,
                 commit: str | None = None) -> None:
        self.path = Path(path)
        if commit is None:
            commit = git_commit(Path(__file__).parent)
        self._head = {"commit": commit, "command": command,
                      "environment": numeric_environment()}
        self._runs: list[str] = []

    def add(self, run: RunResult, save: bool = True) -> None:
        """Encode ``run``; then save the file without a summary unless ``save`` is off."""
        self._runs.append(json.dumps(_jsonable(run.to_json()), indent=1, allow_nan=False))
        if save:
            self.save()

    def save(self, summary: dict[str, Any] | None = None) -> None:
        """Write the document: whole to a temporary file, then renamed over ``path``, so a
        benchmark stopped while saving keeps the last complete file."""
        parts = [f"{json.dumps(k)}: {json.dumps(_jsonable(v), indent=1, allow_nan=False)}"
                 for k, v in {**self._head, "summary": summary}.items()]
        parts.append('"runs": [\n' + ",\n".join(self._runs) + "\n]")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("{\n" + ",\n".join(parts) + "\n}")
        os.replace(tmp, self.path)


def read_json(path: str | Path) -> tuple[dict[str, Any], list[RunResult]]:
    """``(document, runs)`` from :func:`write_json`'s file."""
    doc = json.loads(Path(path).read_text())

    def back(x: Any) -> Any:
        if x == "inf":
            return math.inf
        if x is None:
            return math.nan
        return x

    runs = []
    for d in doc["runs"]:
        d = dict(d)
        for key in ("budget", "uniform_gap", "start_cost"):
            if key in d:
                d[key] = back(d[key])
        runs.append(RunResult.from_json(d))
    return doc, runs


def _gap_matrix(runs: Sequence[RunResult], grid: np.ndarray) -> np.ndarray:
    """Seeds x grid: the true gap of the recommendation held at each cost (the uniform
    mixture's before the first one), floored at :data:`GAP_FLOOR`."""
    out = np.empty((len(runs), grid.size))
    for i, r in enumerate(runs):
        assert r.optimum is not None
        for j, c in enumerate(grid):
            out[i, j] = gap_at(r.curve, r.optimum, float(c), r.uniform_gap)
    return np.maximum(out, GAP_FLOOR)


def write_plot(runs: Sequence[RunResult], path: str | Path) -> None:
    """True gap of the *current* recommendation vs cumulative cost (never a running minimum),
    median and interquartile band over seeds, log-log, one panel per problem."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    probs = list(dict.fromkeys(r.problem for r in runs if r.optimum is not None))
    if not probs:
        return
    ncol = min(4, len(probs))
    nrow = math.ceil(len(probs) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.4 * ncol, 3.5 * nrow), squeeze=False)
    strategies = list(dict.fromkeys(r.strategy for r in runs))
    colours = {s: plt.get_cmap("tab10")(i % 10) for i, s in enumerate(strategies)}
    for ax, prob in zip(axes.flat, probs, strict=False):
        mine = [r for r in runs if r.problem == prob]
        lo = max(min(r.start_cost for r in mine), 1e-12)
        hi = max(r.budget for r in mine)
        grid = np.geomspace(lo, hi, 200)
        for strat in strategies:
            rs = [r for r in mine if r.strategy == strat]
            if not rs:
                continue
            g = _gap_matrix(rs, grid)
            q25, med, q75 = np.percentile(g, [25, 50, 75], axis=0)
            ax.plot(grid, 100 * med, label=strat, color=colours[strat], lw=1.4,
                    ls="--" if strat == "uniform" else "-")
            ax.fill_between(grid, 100 * q25, 100 * q75, color=colours[strat], alpha=0.12,
                            lw=0)
        ax.axhline(0.5, color="grey", lw=0.6, ls=":")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(prob, fontsize=9)
        ax.set_xlabel("cumulative cost")
        ax.set_ylabel("gap of recommendation (%)")
    for ax in list(axes.flat)[len(probs):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 10), fontsize=8,
               frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
