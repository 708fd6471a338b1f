"""Bar charts as hand-written SVG, and the length histogram they draw. Pure logic.

The judge-score histogram and the answer-length distribution of a build, drawn for
the dataset card (files beside it) and the Prefect run report (inlined as data: URIs).
Each bar is a <rect class="bar"> with data-series, data-bin and data-count attributes,
its height proportional to its count.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from collections import Counter
from xml.sax.saxutils import escape

WIDTH, HEIGHT = 560, 260
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 30, 44
COLORS = ("#4c78a8", "#f58518", "#54a24b", "#b279a2")
MAX_BINS = 20


def bin_width(largest: int, max_bins: int = MAX_BINS) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50, ... that covers 0..largest in at most max_bins bins."""
    step = 1
    while (largest // step) + 1 > max_bins:
        step = _next_step(step)
    return step


def _next_step(step: int) -> int:
    digits = str(step)
    lead, zeros = int(digits[0]), len(digits) - 1
    return {1: 2, 2: 5, 5: 10}[lead] * 10**zeros


def length_histogram(series: Mapping[str, Sequence[int]], unit: str) -> dict:
    """Fixed-width bins from 0 shared by every series: {"unit", "bin_width", "counts": {name: [...]}, "stats"}."""
    return length_histogram_of_counts({name: Counter(values) for name, values in series.items()}, unit)


def length_histogram_of_counts(series: Mapping[str, Mapping[int, int]], unit: str) -> dict:
    """`length_histogram` from how many rows have each length (what a build keeps instead of
    every row's length)."""
    largest = max((max(c) for c in series.values() if c), default=0)
    width = bin_width(largest)
    bins = largest // width + 1
    counts, stats = {}, {}
    for name, per_length in series.items():
        row = [0] * bins
        for v, c in per_length.items():
            row[v // width] += c
        counts[name] = row
        rows = sum(per_length.values())
        stats[name] = {"rows": rows, "min": min(per_length, default=None), "median": _median(per_length) if rows else None,
                       "mean": round(sum(v * c for v, c in per_length.items()) / rows, 1) if rows else None,
                       "max": max(per_length, default=None)}
    return {"unit": unit, "bin_width": width, "counts": counts, "stats": stats}


def _median(per_length: Mapping[int, int]):
    """statistics.median of the values the counts describe."""
    rows = sum(per_length.values())
    wanted = [(rows - 1) // 2, rows // 2]  # the middle one, or the two middle ones
    found, seen = [], 0
    for v in sorted(per_length):
        while len(found) < 2 and wanted[len(found)] < seen + per_length[v]:
            found.append(v)
        seen += per_length[v]
    return found[0] if rows % 2 else (found[0] + found[1]) / 2


def bar_chart(title: str, labels: Sequence[str], series: Mapping[str, Sequence[int]], x_label: str, y_label: str = "rows") -> str:
    """An SVG bar chart: one bar per label per series (side by side), heights proportional to the counts."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top = max((c for counts in series.values() for c in counts), default=0) or 1
    slot = plot_w / max(len(labels), 1)
    bar = slot * 0.8 / max(len(series), 1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        'font-family="sans-serif" font-size="11">',
        f"<title>{escape(title)}</title>",
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{WIDTH / 2}" y="18" text-anchor="middle" font-size="13">{escape(title)}</text>',
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{LEFT + plot_w}" y2="{TOP + plot_h}" stroke="#333"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_h}" stroke="#333"/>',
        f'<text x="{LEFT - 4}" y="{TOP + 4}" text-anchor="end">{top}</text>',
        f'<text x="{LEFT - 4}" y="{TOP + plot_h}" text-anchor="end">0</text>',
        f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 6}" text-anchor="middle">{escape(x_label)}</text>',
        f'<text x="12" y="{TOP + plot_h / 2}" text-anchor="middle" transform="rotate(-90 12 {TOP + plot_h / 2})">{escape(y_label)}</text>',
    ]
    every = math.ceil(len(labels) / 12)  # at most ~12 axis labels, so they do not overlap
    for i, label in enumerate(labels):
        if i % every == 0:
            parts.append(f'<text x="{LEFT + slot * (i + 0.5):.1f}" y="{TOP + plot_h + 14}" text-anchor="middle">{escape(label)}</text>')
    for s, (name, counts) in enumerate(series.items()):
        color = COLORS[s % len(COLORS)]
        for i, count in enumerate(counts):
            h = plot_h * count / top
            x = LEFT + slot * i + slot * 0.1 + bar * s
            parts.append(
                f'<rect class="bar" data-series="{escape(name)}" data-bin="{escape(labels[i])}" data-count="{count}" '
                f'x="{x:.2f}" y="{TOP + plot_h - h:.2f}" width="{bar:.2f}" height="{h:.2f}" fill="{color}">'
                f"<title>{escape(name)} {escape(labels[i])}: {count}</title></rect>"
            )
    if len(series) > 1:
        for s, name in enumerate(series):
            x = LEFT + plot_w - 110
            parts.append(f'<rect x="{x}" y="{TOP + 2 + 14 * s}" width="10" height="10" fill="{COLORS[s % len(COLORS)]}"/>')
            parts.append(f'<text x="{x + 14}" y="{TOP + 11 + 14 * s}">{escape(name)}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def judge_chart(histogram: Mapping[str, int]) -> str:
    return bar_chart("Judge scores (every judged answer)", list(histogram), {"answers": list(histogram.values())}, "judge score (1-10)")


def length_chart(lengths: Mapping) -> str:
    width = lengths["bin_width"]
    bins = len(next(iter(lengths["counts"].values()), []))
    labels = [str(i * width) for i in range(bins)]
    return bar_chart("Answer lengths (published rows)", labels, lengths["counts"],
                     f"{lengths['unit']} per answer (bins of {width}, labelled by their lower edge)")


def data_uri(svg: str) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode("ascii")
