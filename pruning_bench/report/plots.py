"""Report plots (matplotlib, Agg backend, PNG): per budget level, accuracy vs sparsity, vs training cost
and vs inference FLOPs; across levels, per target sparsity, accuracy vs the budget multiple (the
compute-matched curves).

Every plot takes the tidy cell table of :func:`pruning_bench.report.cells.cell_table`: one point per
(method, target sparsity), error bars = sample std over seeds, the dense baseline as a horizontal band
(mean ± std) where it is not a point of its own. A method keeps its colour and marker in every plot.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator  # noqa: E402

from pruning_bench.core.units import unit_suffix
from pruning_bench.report.cells import level_cells, levels, pct  # noqa: E402
from pruning_bench.report.stats import si_split  # noqa: E402

MARKERS = "osD^vP*Xh<>p"


def _styles(rows: list[str]) -> dict[str, dict]:
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {r: {"color": colors[i % len(colors)], "marker": MARKERS[i % len(MARKERS)]} for i, r in enumerate(rows)}


def _split(cells: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    done = cells[cells["n"] > 0]
    return done[done["target_sparsity"] > 0], done[done["target_sparsity"] == 0]


def _dense_band(ax, refs: pd.DataFrame, scale: float) -> None:
    for _, ref in refs.iterrows():
        mean = ref["mean"] * scale
        std = 0.0 if math.isnan(ref["std"]) else ref["std"] * scale
        ax.axhline(mean, color="0.35", lw=1.2, ls="--", label=f"{ref['method']} (0% sparsity)", zorder=1)
        if std > 0:
            ax.axhspan(mean - std, mean + std, color="0.5", alpha=0.18, lw=0, zorder=0)


def _yerr(frame: pd.DataFrame, scale: float) -> list[float]:
    return [0.0 if math.isnan(s) else s * scale for s in frame["std"]]


def _finish(ax, fig, path: Path, title: str) -> None:
    ax.set_title(title, fontsize=11)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="best", framealpha=0.85)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def _log_ticks(lo: float, hi: float) -> list[float]:
    """Readable ticks (1-2-5 per decade, denser when the range is narrow) covering [lo, hi]."""
    for mantissas in ((1, 2, 5), (1, 1.5, 2, 3, 5, 7)):
        ticks = [m * 10.0 ** k for k in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
                 for m in mantissas]
        ticks = [t for t in ticks if lo <= t <= hi]
        if len(ticks) >= 3:
            return ticks
    return ticks


def _si_label(value: float) -> str:
    scaled, prefix = si_split(value)
    return f"{scaled:g}{prefix}"


def _log_axis(ax, values: list[float], *, invert: bool = False, si: bool = False) -> None:
    """Log x axis padded around ``values`` with plain-number tick labels."""
    lo, hi = min(values) / 1.35, max(values) * 1.35
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(_log_ticks(lo, hi)))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _si_label(v) if si else f"{v:g}"))
    ax.set_xlim((hi, lo) if invert else (lo, hi))


def plot_vs_sparsity(cells: pd.DataFrame, path: Path, *, label: str, scale: float, title: str = "",
                     styles: dict[str, dict] | None = None) -> None:
    """Accuracy vs remaining weights (%, log scale, decreasing to the right as sparsity grows)."""
    pruned, refs = _split(cells)
    fig, ax = plt.subplots(figsize=(7, 4.6))
    _dense_band(ax, refs, scale)
    styles = styles or _styles(sorted(pruned["method"].unique()))
    xs: list[float] = []
    for row, group in pruned.groupby("method"):
        group = group.sort_values("target_sparsity")
        achieved = group["sparsity_mean"].fillna(group["target_sparsity"])
        x = [100 * (1 - s) for s in achieved]
        xs += x
        ax.errorbar(x, group["mean"] * scale, yerr=_yerr(group, scale), capsize=3, lw=1.4, ms=5, label=row,
                    **styles[row])
    if xs:
        _log_axis(ax, xs + [100.0 * (1 - t) for t in pruned["target_sparsity"]], invert=True)
    ax.margins(y=0.08)
    ax.set_xlabel("remaining weights (%, log scale; achieved sparsity)")
    ax.set_ylabel(label)
    _finish(ax, fig, path, f"{label} vs sparsity{title} (error bars: std over seeds)")


def _plot_vs_cost(cells: pd.DataFrame, path: Path, *, column: str, xlabel: str, title: str, label: str,
                  scale: float, styles: dict[str, dict] | None = None) -> None:
    done = cells[(cells["n"] > 0) & cells[column].notna()]
    pruned, refs = _split(done)
    fig, ax = plt.subplots(figsize=(7, 4.6))
    styles = styles or _styles(sorted(pruned["method"].unique()))
    for row, group in pruned.groupby("method"):
        group = group.sort_values(column)
        ax.errorbar(group[column], group["mean"] * scale, yerr=_yerr(group, scale), capsize=3, lw=1.0, ms=5,
                    label=row, **styles[row])
        for _, cell in group.iterrows():
            ax.annotate(f"{cell['target_sparsity'] * 100:g}%", (cell[column], cell["mean"] * scale),
                        textcoords="offset points", xytext=(4, 4), fontsize=7, color=styles[row]["color"])
    for _, ref in refs.iterrows():
        std = 0.0 if math.isnan(ref["std"]) else ref["std"] * scale
        ax.errorbar([ref[column]], [ref["mean"] * scale], yerr=[std], fmt="*", ms=11, color="0.2", capsize=3,
                    label=f"{ref['method']} (0% sparsity)")
    xs = done[column].tolist()
    if xs:
        _log_axis(ax, xs, si=True)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(label)
    _finish(ax, fig, path, title)


def plot_vs_budget(cells: pd.DataFrame, path: Path, *, target: float, label: str, scale: float,
                   title: str, styles: dict[str, dict]) -> None:
    """One target sparsity: each method's accuracy against the budget multiple it was given (log2 axis),
    the dense baseline of each budget as a dashed line; budgets a method did not fit leave no point."""
    done = cells[cells["n"] > 0]
    fig, ax = plt.subplots(figsize=(7, 4.6))
    refs = done[done["target_sparsity"] == 0]
    for row, group in refs.groupby("method"):
        group = group.sort_values("budget_multiple")
        ax.errorbar(group["budget_multiple"], group["mean"] * scale, yerr=_yerr(group, scale), color="0.3",
                    ls="--", marker="*", ms=8, capsize=3, lw=1.2, label=f"{row} (0% sparsity)")
    pruned = done[done["target_sparsity"] == target]
    for row, group in pruned.groupby("method"):
        group = group.sort_values("budget_multiple")
        ax.errorbar(group["budget_multiple"], group["mean"] * scale, yerr=_yerr(group, scale), capsize=3,
                    lw=1.4, ms=5, label=row, **styles[row])
    multiples = sorted(cells["budget_multiple"].unique())
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(multiples))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.set_xlim(min(multiples) / 1.3, max(multiples) * 1.3)
    ax.margins(y=0.08)
    ax.set_xlabel("budget (multiple of the base run, log scale)")
    ax.set_ylabel(label)
    _finish(ax, fig, path, title)


def write_plots(cells: pd.DataFrame, out: Path, *, metric: str, label: str, scale: float) -> dict[str, Path]:
    """Write the PNG plots into ``out``; returns caption -> path. Per budget level: accuracy vs sparsity,
    vs training FLOPs and vs inference FLOPs; with several multiples, per (policy, unit) and target
    sparsity, accuracy vs budget (captions containing "vs budget")."""
    out.mkdir(parents=True, exist_ok=True)
    styles = _styles(sorted(cells.loc[cells["target_sparsity"] > 0, "method"].unique()))
    plots: dict[str, Path] = {}
    all_levels = levels(cells)
    for level in all_levels:
        policy, unit, name = level
        here = level_cells(cells, level)
        tag = f"_{policy}_{unit}_{name}" if len(all_levels) > 1 else ""
        where = f" ({policy}, {name}{unit_suffix(unit)})" if len(all_levels) > 1 else ""
        paths = [out / f"{metric}_vs_sparsity{tag}.png", out / f"{metric}_vs_train_flops{tag}.png",
                 out / f"{metric}_vs_inference_flops{tag}.png"]
        plot_vs_sparsity(here, paths[0], label=label, scale=scale, title=where, styles=styles)
        _plot_vs_cost(here, paths[1], column="train_flops_mean", xlabel="training FLOPs charged (log scale)",
                      title=f"{label} vs training cost{where} (labels: target sparsity)", label=label,
                      scale=scale, styles=styles)
        _plot_vs_cost(here, paths[2], column="flops_effective_mean",
                      xlabel="effective inference FLOPs per sample (log scale)",
                      title=f"{label} vs inference FLOPs{where} (labels: target sparsity)", label=label,
                      scale=scale, styles=styles)
        plots[f"{label} vs remaining weights{where}"] = paths[0]
        plots[f"{label} vs training cost (FLOPs charged){where}"] = paths[1]
        plots[f"{label} vs effective inference FLOPs{where}"] = paths[2]
    # a run in two levels (a 2x trial that was also a plan's fit) is one point on the budget axis
    unique = cells.drop_duplicates(["policy", "unit", "method", "target_sparsity", "budget_multiple"])
    for (policy, unit), group in unique.groupby(["policy", "unit"]):
        if group["budget_multiple"].nunique() < 2:
            continue
        for target in sorted(t for t in group["target_sparsity"].unique() if t > 0):
            path = out / f"{metric}_vs_budget_{policy}_{unit}_{round(target * 1000):04d}.png"
            title = f"{label} at {pct(target)} sparsity vs budget ({policy}, {unit})"
            plot_vs_budget(group, path, target=target, label=label, scale=scale, title=title, styles=styles)
            plots[f"{label} at {pct(target)} sparsity vs budget ({policy}, {unit})"] = path
    return plots
