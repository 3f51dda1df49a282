"""Matplotlib plots of probe DataFrames: latency histograms, p50/p95 over time, pool utilisation,
cache hit ratio.

Each function draws on ``ax`` when given, else on a new :class:`matplotlib.figure.Figure` that is not
registered with pyplot (no global figure list to leak from tests or re-run cells), and returns the
Figure: the last expression of a notebook cell displays it once. matplotlib is imported lazily.
"""

from __future__ import annotations

from typing import Any

__all__ = ["latency_histogram", "percentiles_over_time", "pool_utilisation", "cache_hit_ratio"]


def _axes(ax: Any, size: tuple[float, float] = (7.0, 3.6)) -> tuple[Any, Any]:
    if ax is not None:
        return ax.figure, ax
    try:
        from matplotlib.figure import Figure
    except ImportError as e:  # matplotlib is the `notebook` extra; the probes' DataFrames need only pandas
        from letta_nb.errors import OptionalDependencyError

        raise OptionalDependencyError(
            "probe plots need matplotlib, which is not installed. Run: pip install 'letta-nb[notebook]' "
            "(or: pip install matplotlib). The probes' DataFrames (letta_nb.probes.steps() ...) work without it."
        ) from e
    fig = Figure(figsize=size, layout="constrained")
    return fig, fig.add_subplot()


def _empty(ax: Any, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what} recorded yet", ha="center", va="center", transform=ax.transAxes)


def latency_histogram(df: Any, column: str, *, by: str | None = None, bins: int = 40, ax: Any = None,
                      title: str | None = None) -> Any:
    """Histogram of ``df[column]`` (ms), one overlaid series per value of ``by`` (e.g. tool name)."""
    fig, ax = _axes(ax)
    values = df[column].dropna()
    if values.empty:
        _empty(ax, column)
    elif by is None:
        ax.hist(values, bins=bins)
    else:
        groups = [(str(k), g[column].dropna()) for k, g in df.groupby(by, observed=True)]
        for name, g in groups:
            ax.hist(g, bins=bins, alpha=0.6 if len(groups) > 1 else 1.0, label=f"{name} (n={len(g)})")
        ax.legend(fontsize="small", loc="upper left")  # "best" scans every point (slow, warns)
    ax.set_xlabel(column.replace("_ms", " (ms)"))
    ax.set_ylabel("count")
    ax.set_title(title or f"{column} distribution")
    return fig


def percentiles_over_time(df: Any, time_column: str, column: str, *, window: str | None = None, ax: Any = None,
                          title: str | None = None) -> Any:
    """p50 and p95 of ``df[column]`` per time window (default: the run split in about 20 windows)."""
    import pandas as pd

    fig, ax = _axes(ax)
    data = df[[time_column, column]].dropna().sort_values(time_column)
    if data.empty:
        _empty(ax, column)
    else:
        if window is None:
            span = data[time_column].iloc[-1] - data[time_column].iloc[0]
            window = f"{max(1, int(span / pd.Timedelta(milliseconds=1) / 20))}ms"
        grouped = data.set_index(time_column)[column].resample(window)
        stats = pd.DataFrame({"p50": grouped.median(), "p95": grouped.quantile(0.95)}).dropna()
        elapsed = (stats.index - data[time_column].iloc[0]).total_seconds()
        ax.plot(elapsed, stats["p50"], marker=".", label="p50")
        ax.plot(elapsed, stats["p95"], marker=".", label="p95")
        ax.legend(fontsize="small", loc="upper left")  # "best" scans every point (slow, warns)
        ax.set_xlabel(f"seconds since first event (windows of {window})")
    ax.set_ylabel(column.replace("_ms", " (ms)"))
    ax.set_title(title or f"{column} p50 / p95 over time")
    return fig


def pool_utilisation(df: Any, *, ax: Any = None, title: str | None = None) -> Any:
    """Connections checked out and open over time, against the pool's capacity."""
    fig, ax = _axes(ax)
    if df.empty:
        _empty(ax, "pool events")
    else:
        elapsed = (df["time"] - df["time"].iloc[0]).dt.total_seconds()
        ax.step(elapsed, df["checked_out"], where="post", label="checked out")
        ax.step(elapsed, df["total"], where="post", label="open (total)", alpha=0.7)
        ax.axhline(int(df["capacity"].max()), color="grey", linestyle="--", label="capacity")
        ax.set_xlabel("seconds since first pool event")
        ax.legend(fontsize="small", loc="upper left")  # "best" scans every point (slow, warns)
    ax.set_ylabel("connections")
    ax.set_title(title or "DB pool utilisation")
    return fig


def cache_hit_ratio(df: Any, *, ax: Any = None, title: str | None = None) -> Any:
    """Hit ratio per cache, each bar labelled with hits / lookups."""
    fig, ax = _axes(ax)
    used = df[df["lookups"] > 0]
    if used.empty:
        _empty(ax, "cache lookups")
    else:
        names = list(used["cache"].astype(str))
        bars = ax.barh(names, used["hit_ratio"])
        for bar, hits, lookups in zip(bars, used["hits"], used["lookups"], strict=True):
            ax.text(min(bar.get_width(), 0.98), bar.get_y() + bar.get_height() / 2, f" {hits}/{lookups}",
                    va="center", ha="right" if bar.get_width() > 0.8 else "left", fontsize="small")
        ax.set_xlim(0, 1)
    ax.set_xlabel("hit ratio")
    ax.set_title(title or "cache hit ratio")
    return fig
