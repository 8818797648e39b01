"""The report's figures as PNG bytes. `matplotlib.figure.Figure` directly, no pyplot: no global
state, no display backend, safe in a headless process and in threads."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

# Imported inside functions: matplotlib is imported inside the function that draws: a report without plots never loads it.

COLOURS = {"INVERT": "#d95f02", "PUNISH": "#7570b3", "RETAIN": "#1b9e77", "UNKNOWN": "#999999"}
PALETTE = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


def _figure(width: float = 7.0, height: float = 3.6) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    return fig, fig.add_subplot(1, 1, 1)


def triage_bars(counts: dict[str, dict[str, int]]) -> bytes:
    """Pairs per triage category, one group per run."""
    fig, ax = _figure()
    runs = list(counts)
    cats = [c for c in COLOURS if any(counts[r].get(c) for r in runs)] or list(COLOURS)
    width = 0.8 / max(1, len(runs))
    for j, run in enumerate(runs):
        xs = [i + (j - (len(runs) - 1) / 2) * width for i in range(len(cats))]
        # one run: colour by category, as in every other figure; several: colour by run
        colour = [COLOURS[c] for c in cats] if len(runs) == 1 else PALETTE[j % len(PALETTE)]
        ax.bar(xs, [counts[run].get(c, 0) for c in cats], width, label=run, color=colour)
    ax.set_xticks(range(len(cats)), cats)
    ax.set_ylabel("pairs")
    ax.set_title("Triage under the new policy")
    if len(runs) > 1:
        ax.legend(fontsize=8)
    return _png(fig)


def harm_bars(harm: dict[str, dict[str, Any]]) -> bytes:
    """Stacked triage categories per harm category: where the policy change bites."""
    fig, ax = _figure(8.0, 3.8)
    tags = list(harm)
    bottom = [0.0] * len(tags)
    for cat, colour in COLOURS.items():
        values = [float(harm[t].get(cat, 0)) for t in tags]
        if any(values):
            ax.bar(range(len(tags)), values, 0.7, bottom=bottom, label=cat, color=colour)
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_xticks(range(len(tags)), tags, rotation=45 if len(tags) > 8 else 0, fontsize=8)
    ax.set_ylabel("pairs")
    ax.set_title("Triage by harm category")
    ax.legend(fontsize=8)
    return _png(fig)


def weight_histogram(weights: dict[str, Sequence[float]]) -> bytes:
    """Impact weights of the conflicts, one colour per category."""
    fig, ax = _figure()
    values = [v for vs in weights.values() for v in vs]
    hi = max(values) if values and max(values) > 0 else 1.0
    bins = [hi * i / 20 for i in range(21)]
    for cat, vs in weights.items():
        if vs:
            ax.hist(
                list(vs), bins=bins, alpha=0.7, label=f"{cat} ({len(vs)})", color=COLOURS.get(cat, "#444444")
            )
    ax.set_xlabel("impact weight")
    ax.set_ylabel("conflicts")
    ax.set_title("Alignment impact weights")
    ax.legend(fontsize=8)
    return _png(fig)


def training_curves(method: str, history: Sequence[dict[str, Any]]) -> bytes | None:
    """Loss per category (and the KL anchor) against the step; None when nothing was logged."""
    keys = sorted({k for h in history for k in h if k == "loss" or k.endswith("/loss") or k == "kl"})
    if not keys:
        return None
    fig, ax = _figure()
    for k, key in enumerate(keys):
        points = [(h["step"], h[key]) for h in history if key in h and "step" in h]
        if points:
            colour = COLOURS.get(key.split("/")[0].upper(), PALETTE[k % len(PALETTE)])
            style = "--" if key in ("loss", "kl") else "-"
            ax.plot(
                [p[0] for p in points], [p[1] for p in points], style, marker=".", label=key, color=colour
            )
    ax.set_xlabel("step")
    ax.set_ylabel("value")
    ax.set_title(f"Training: {method}")
    ax.legend(fontsize=8)
    return _png(fig)


def rate_bars(
    title: str, groups: list[str], series: dict[str, list[dict[str, Any] | None]], ylabel: str
) -> bytes:
    """Grouped bars of rates with their 95% intervals: one group per x label, one bar per series."""
    fig, ax = _figure(8.0, 3.8)
    names = list(series)
    width = 0.8 / max(1, len(names))
    for j, name in enumerate(names):
        xs, ys, lo, hi = [], [], [], []
        for i, entry in enumerate(series[name]):
            if not entry or entry.get("rate") is None:
                continue
            x = i + (j - (len(names) - 1) / 2) * width
            r = 100 * entry["rate"]
            xs.append(x)
            ys.append(r)
            ci = entry.get("ci95") or [entry["rate"], entry["rate"]]
            # clamped: at a rate of 0 or 1 the interval's end can miss the rate by a rounding error
            lo.append(max(0.0, r - 100 * ci[0]))
            hi.append(max(0.0, 100 * ci[1] - r))
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, label=name, color=PALETTE[j % len(PALETTE)])
    ax.set_xticks(range(len(groups)), groups, fontsize=8)
    ax.set_ylim(0, 105)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _png(fig)


def tradeoff_curves(
    curves: dict[str, Sequence[dict[str, Any]]], x_key: str, x_label: str, y_key: str = "tpa"
) -> bytes | None:
    """Agreement against another axis over training steps: one curve per method, each point labelled
    with its step, so a reader sees whether a method is ahead at every budget or only at one."""
    fig, ax = _figure(7.0, 4.6)
    drawn = False
    for j, (method, points) in enumerate(curves.items()):
        pts = [p for p in points if p.get(x_key) is not None and p.get(y_key) is not None]
        if not pts:
            continue
        drawn = True
        colour = PALETTE[j % len(PALETTE)]
        xs, ys = [100 * p[x_key] for p in pts], [100 * p[y_key] for p in pts]
        # a marker of its own as well as a colour: eight curves crowd the corner near zero
        marker = MARKERS[j % len(MARKERS)]
        ax.plot(xs, ys, "-", marker=marker, markersize=4, label=method, color=colour)
        for p, x, y in zip(pts, xs, ys, strict=True):
            ax.annotate(
                str(p["step"]), (x, y), fontsize=6, color=colour, xytext=(2, 2), textcoords="offset points"
            )
    if not drawn:
        return None
    ax.set_xlim(-3, 103)
    ax.set_ylim(-3, 103)
    ax.set_xlabel(f"{x_label} (%)")
    ax.set_ylabel("agreement with the new policy (%)")
    ax.set_title(f"Agreement against {x_label} over training steps")
    ax.legend(fontsize=7)
    return _png(fig)


def scale_curves(series: dict[str, dict[float, Any]]) -> bytes:
    """Agreement (mean and 95% interval over seeds) against the share of old pairs, one line per method."""
    fig, ax = _figure(6.0, 3.6)
    for i, (method, cells) in enumerate(series.items()):
        xs = sorted(f for f, c in cells.items() if c and c.get("mean") is not None)
        ys = [100 * cells[f]["mean"] for f in xs]
        lo = [ys[j] - 100 * (cells[f].get("ci95") or [cells[f]["mean"]] * 2)[0] for j, f in enumerate(xs)]
        hi = [100 * (cells[f].get("ci95") or [cells[f]["mean"]] * 2)[1] - ys[j] for j, f in enumerate(xs)]
        ax.errorbar([100 * x for x in xs], ys, yerr=[lo, hi], label=method, color=PALETTE[i % len(PALETTE)],
                    marker=MARKERS[i % len(MARKERS)], capsize=3)  # fmt: skip
    ax.set_xlabel("share of the old pairs (%)")
    ax.set_ylabel("agreement on held-out prompts (%)")
    ax.set_title("How much old data it needs")
    ax.legend(fontsize=8)
    return _png(fig)
