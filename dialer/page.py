"""The campaign page: `dialer report CAMPAIGN.toml --out FILE.html`.

One self-contained HTML file (no script, no external style, font or image: it opens
offline and prints) with the campaign's figures, read from the journal, whichever store
keeps it, by the SQL aggregates of `dialer.store.figures` (`JournalStore.page_figures`),
and its charts drawn by matplotlib as inline SVG. This module only renders them.

matplotlib because it is the well-kept plotting library that writes SVG with no
JavaScript: the page needs no script at all, prints as vectors, and the library is
imported only here, when a page is written (it costs ~0.3 s), never by `--help` or
`status`. Each chart carries a <title> and <desc> (role="img"), axis labels, its
numbers written next to its bars, and the Okabe-Ito palette, which stays distinct
under the common colour blindnesses. Every chart has a table of the same numbers.

Figures a test compares with `dialer status` carry `data-figure` / `data-status` /
`data-call-status` attributes holding the raw numbers.
"""

from __future__ import annotations

import html
import io
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dialer.config import Campaign
from dialer.model import Status
from dialer.store import JournalStore
from dialer.store import figures as fig

if TYPE_CHECKING:
    from matplotlib.axes import Axes

# Okabe & Ito (2008), "Color Universal Design": told apart with any of the common
# colour-vision deficiencies.
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#F0E442", "#000000")
CALLS_COLOUR, PICKUP_COLOUR = OKABE_ITO[0], OKABE_ITO[2]
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
STATUS_ORDER = tuple(Status)
NO_CALLS = "no calls followed yet"


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def percent(rate: float | None) -> str:
    return "–" if rate is None else f"{100 * rate:.1f}%"


# -- charts ------------------------------------------------------------------------


@dataclass
class Chart:
    key: str  # unique on the page: names the SVG's ids
    title: str
    desc: str  # what the chart shows, in words, for a screen reader
    draw: Callable[[Axes], None]
    height: float = 3.2
    width: float = 7.2  # inches: text keeps its size whatever the width, so half-width charts are narrower


Chart_draw = Callable[["Axes"], None]


def render_svg(chart: Chart) -> str:
    """The chart as an inline <svg> element, sized by CSS, with <title> and <desc>."""
    import matplotlib
    from cycler import cycler
    from matplotlib.figure import Figure

    style: Any = {
        "svg.fonttype": "none",  # text stays text: searchable, selectable, read by screen readers
        "svg.hashsalt": chart.key,  # ids the same from run to run, and unique among the page's charts
        "font.size": 10,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.prop_cycle": cycler(color=list(OKABE_ITO)),
    }
    with matplotlib.rc_context(style):
        figure = Figure(figsize=(chart.width, chart.height), layout="tight")
        axes = figure.subplots()
        axes.set_title(chart.title, loc="left", fontsize=11)
        chart.draw(axes)
        buffer = io.StringIO()
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg") :]
    title_id, desc_id = f"{chart.key}-title", f"{chart.key}-desc"
    opening = svg[: svg.index(">") + 1]
    opening_new = re.sub(r'\s(width|height)="[^"]*"', "", opening).replace(
        "<svg", f'<svg role="img" aria-labelledby="{title_id} {desc_id}" class="chart"', 1
    )
    return (
        opening_new
        + f'<title id="{title_id}">{esc(chart.title)}</title><desc id="{desc_id}">{esc(chart.desc)}</desc>'
        + svg[len(opening) :]
    )


def hbars(labels: Sequence[str], values: Sequence[float], shown: Sequence[str], xlabel: str) -> Chart_draw:
    def draw(axes: Axes) -> None:
        colours = [OKABE_ITO[i % len(OKABE_ITO)] for i in range(len(labels))]
        bars = axes.barh(list(labels), list(values), color=colours)
        axes.invert_yaxis()
        axes.bar_label(bars, labels=list(shown), padding=3)
        axes.set_xlabel(xlabel)
        axes.margins(x=0.15)

    return draw


def rate_bars(labels: Sequence[str], groups: Sequence[fig.Rates], xlabel: str) -> Chart_draw:
    """Pick-up rate per group as bars, each labelled with its rate and its calls."""

    def draw(axes: Axes) -> None:
        rates = [100 * (g.rate or 0.0) for g in groups]
        bars = axes.bar(list(labels), rates, color=PICKUP_COLOUR)
        shown = [f"{percent(g.rate)}\n{g.calls}" if g.calls else "" for g in groups]
        axes.bar_label(bars, labels=shown, padding=2, fontsize=7)
        axes.set_ylabel("pick-up rate (%); calls below it")
        axes.set_xlabel(xlabel)
        axes.set_ylim(0, max([*rates, 10.0]) * 1.3)

    return draw


def count_bars(labels: Sequence[str], values: Sequence[int], xlabel: str, ylabel: str) -> Chart_draw:
    def draw(axes: Axes) -> None:
        bars = axes.bar(list(labels), list(values), color=CALLS_COLOUR)
        axes.bar_label(bars, labels=[str(v) for v in values], padding=2, fontsize=8)
        axes.set_xlabel(xlabel)
        axes.set_ylabel(ylabel)
        axes.margins(y=0.15)

    return draw


def time_bars(buckets: Sequence[tuple[datetime, fig.Rates]], step: float) -> Chart_draw:
    def draw(axes: Axes) -> None:
        labels = [_bucket_label(moment, step) for moment, _ in buckets]
        x = list(range(len(buckets)))
        calls = [r.calls for _, r in buckets]
        done = [r.completed for _, r in buckets]
        bars = axes.bar(x, calls, color=CALLS_COLOUR, label="calls placed")
        axes.bar(x, done, color=PICKUP_COLOUR, label="of them completed", width=0.5)
        if len(buckets) <= 24:
            axes.bar_label(bars, labels=[str(c) for c in calls], padding=2, fontsize=8)
        every = max(1, len(x) // 12)
        axes.set_xticks(x[::every], labels[::every], rotation=30, ha="right", fontsize=8)
        axes.set_xlabel(f"time placed (UTC), per {_step_name(step)}")
        axes.set_ylabel("calls")
        axes.legend(frameon=False, loc="upper left", ncols=2)
        axes.set_ylim(0, max(calls) * 1.35)

    return draw


def _step_name(step: float) -> str:
    if step < 60:
        return f"{int(step)} seconds"
    if step < 3600:
        minutes = int(step // 60)
        return "minute" if minutes == 1 else f"{minutes} minutes"
    if step < 86400:
        hours = int(step // 3600)
        return "hour" if hours == 1 else f"{hours} hours"
    days = int(step // 86400)
    return "day" if days == 1 else f"{days} days"


def _bucket_label(moment: datetime, step: float) -> str:
    return moment.strftime("%b %d" if step >= 86400 else "%b %d %H:%M" if step >= 60 else "%H:%M:%S")


# -- the page's sections -------------------------------------------------------------


@dataclass
class Page:
    campaign: Campaign
    counts: dict[str, int]
    calls: fig.CallCharts | None  # None: no call placed or followed yet


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]], caption: str = "") -> str:
    head = "".join(f'<th scope="col">{esc(h)}</th>' for h in headers)
    body = "".join(
        "<tr>" + "".join(c if isinstance(c, Markup) else f"<td>{esc(c)}</td>" for c in row) + "</tr>"
        for row in rows
    )
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class Markup(str):
    """A table cell already written as HTML (a <td> with data attributes)."""


def _cell(shown: object, **data: object) -> Markup:
    attrs = "".join(f' data-{esc(k.replace("_", "-"))}="{esc(v)}"' for k, v in data.items())
    return Markup(f'<td class="num"{attrs}>{esc(shown)}</td>')


def _section(title: str, anchor: str, *parts: str) -> str:
    return f'<section id="{anchor}"><h2>{esc(title)}</h2>{"".join(parts)}</section>'


def headline(page: Page) -> str:
    counts, calls = page.counts, page.calls
    leads = sum(counts.values())
    items: list[tuple[str, str, str]] = [("leads", "leads", f"{leads:,}")]
    if calls is not None:
        totals, figures = calls.totals, calls.figures
        items += [
            ("dialed", "leads dialed", f"{totals.leads_called:,}"),
            ("reached", "leads reached", f"{totals.leads_reached:,}"),
            ("pickup-rate", "pick-up rate", percent(figures.pick_up_rate)),
            ("talk-minutes", "talk minutes", f"{totals.talk_seconds / 60:,.1f}"),
            ("live", "calls live", f"{figures.live:,}"),
        ]
    else:
        items.append(("dialed", "rows sent", f"{counts.get(Status.SENT, 0):,}"))
    items += [
        ("failed", "failed", f"{counts.get(Status.FAILED, 0):,}"),
        ("invalid", "invalid", f"{counts.get(Status.INVALID, 0):,}"),
    ]
    raw = _headline_values(page)
    cells = "".join(
        f'<div class="figure"><dt>{esc(label)}</dt><dd data-figure="{key}" data-value="{esc(raw[key])}">'
        f"{esc(shown)}</dd></div>"
        for key, label, shown in items
    )
    note = "" if calls is not None else f'<p class="note">Calls: {NO_CALLS}.</p>'
    return f'<section id="headline"><h2>Headline</h2><dl class="figures">{cells}</dl>{note}</section>'


def _headline_values(page: Page) -> dict[str, object]:
    counts, calls = page.counts, page.calls
    values: dict[str, object] = {
        "leads": sum(counts.values()),
        "failed": counts.get(Status.FAILED, 0),
        "invalid": counts.get(Status.INVALID, 0),
        "dialed": counts.get(Status.SENT, 0),
    }
    if calls is not None:
        rate = calls.figures.pick_up_rate
        values.update(
            dialed=calls.totals.leads_called,
            reached=calls.totals.leads_reached,
            live=calls.figures.live,
            **{
                "pickup-rate": "" if rate is None else f"{rate:.4f}",
                "talk-minutes": f"{calls.totals.talk_seconds / 60:.1f}",
            },
        )
    return values


def outcomes(page: Page, calls: fig.CallCharts | None) -> str:
    present = [s for s in STATUS_ORDER if page.counts.get(s)]
    values = [page.counts[s] for s in present]
    total = sum(values) or 1
    shown = [f"{n:,} ({100 * n / total:.0f}%)" for n in values]
    parts = [
        "<h3>Rows per dialer_status</h3>",
        render_svg(
            Chart(
                "chart-status",
                "Rows per dialer_status",
                "Horizontal bars: " + ", ".join(f"{s} {n}" for s, n in zip(present, values, strict=True)),
                hbars([str(s) for s in present], values, shown, "rows"),
                height=0.5 + 0.35 * max(len(present), 2),
            )
        )
        if present
        else "<p>No rows.</p>",
        _table(
            ("dialer_status", "rows"),
            [(str(s), _cell(f"{page.counts[s]:,}", status=s, value=page.counts[s])) for s in present],
        ),
    ]
    parts.append("<h3>Calls per call status</h3>")
    if calls is None:
        parts.append(f"<p>{NO_CALLS}.</p>")
    else:
        parts += call_statuses(calls)
    return _section("Outcomes", "outcomes", *parts)


def call_statuses(calls: fig.CallCharts) -> list[str]:
    """Calls per final status, then those live or given up on: `dialer status`'s figures."""
    figures = calls.figures
    # The order `status` prints them in: most calls first (ties in the order SQLite gave them).
    ended = dict(figures.by_status.most_common())
    parts = []
    if ended:
        all_ended = sum(ended.values())
        parts.append(
            render_svg(
                Chart(
                    "chart-call-status",
                    "Calls per final status",
                    "Horizontal bars: " + ", ".join(f"{s} {n}" for s, n in ended.items()),
                    hbars(
                        list(ended),
                        list(ended.values()),
                        [f"{n:,} ({100 * n / all_ended:.0f}%)" for n in ended.values()],
                        "calls ended",
                    ),
                    height=0.5 + 0.35 * max(len(ended), 2),
                )
            )
        )
    rows: list[tuple[object, ...]] = [(s, _cell(f"{n:,}", call_status=s, value=n)) for s, n in ended.items()]
    rows.append(("still live", _cell(f"{figures.live:,}", call_figure="live", value=figures.live)))
    if figures.timed_out:
        given_up = figures.timed_out
        rows.append(
            ("never ended (given up)", _cell(f"{given_up:,}", call_figure="given-up", value=given_up))
        )
    parts.append(_table(("call status", "calls"), rows))
    return parts


def over_time(calls: fig.CallCharts) -> str:
    step, buckets = calls.step, calls.over_time
    if not buckets:
        return _section("Calls over time", "over-time", "<p>No call placed yet.</p>")
    busiest = max(buckets, key=lambda b: b[1].calls)
    chart = Chart(
        "chart-over-time",
        "Calls placed over time",
        f"{sum(r.calls for _, r in buckets)} calls in {len(buckets)} periods of {_step_name(step)};"
        f" the busiest, {_bucket_label(busiest[0], step)} UTC, had {busiest[1].calls}.",
        time_bars(buckets, step),
        height=3.4,
    )
    rows = [(_bucket_label(m, step), f"{r.calls:,}", f"{r.completed:,}", percent(r.rate)) for m, r in buckets]
    return _section(
        "Calls over time",
        "over-time",
        render_svg(chart),
        _details(_table(("period (UTC)", "calls", "completed", "pick-up rate"), rows)),
    )


def _details(table: str, summary: str = "the numbers") -> str:
    # Closed: the chart has its numbers on its bars; the long table is there to read or copy.
    return f"<details><summary>{esc(summary)}</summary>{table}</details>"


def local_time(calls: fig.CallCharts) -> str:
    hours, days = calls.by_hour, calls.by_weekday
    hour_labels = [f"{h:02d}" for h in range(24)]
    best = max(hours.items(), key=lambda kv: kv[1].rate or 0.0)
    hour_chart = Chart(
        "chart-hour",
        "Pick-up rate by the lead's local hour",
        "Bars per hour of the lead's own clock when the call was placed; the best hour is"
        f" {best[0]:02d}:00 with {percent(best[1].rate)} of {best[1].calls} calls.",
        rate_bars(hour_labels, [hours[h] for h in range(24)], "lead's local hour"),
    )
    day_chart = Chart(
        "chart-weekday",
        "Pick-up rate by the lead's local weekday",
        "Bars per weekday: " + ", ".join(f"{WEEKDAYS[d]} {percent(days[d].rate)}" for d in range(7)),
        rate_bars(WEEKDAYS, [days[d] for d in range(7)], "lead's local weekday"),
        height=2.8,
    )
    hour_rows = [
        (f"{h:02d}:00", f"{r.calls:,}", f"{r.completed:,}", percent(r.rate)) for h, r in hours.items()
    ]
    day_rows = [(WEEKDAYS[d], f"{r.calls:,}", f"{r.completed:,}", percent(r.rate)) for d, r in days.items()]
    head = ("", "calls", "completed", "pick-up rate")
    return _section(
        "When people pick up",
        "local-time",
        render_svg(hour_chart),
        _details(_table(("local hour", *head[1:]), [r for r in hour_rows if r[1] != "0"])),
        render_svg(day_chart),
        _details(_table(("weekday", *head[1:]), day_rows)),
    )


def caller_ids(page: Page, calls: fig.CallCharts) -> str:
    found = calls.callers
    if not found:
        return _section("Caller ids", "caller-ids", "<p>No call placed yet.</p>")
    chart = Chart(
        "chart-caller-ids",
        "Pick-up rate per caller id",
        "Horizontal bars: " + ", ".join(f"{c.number} {percent(c.rates.rate)}" for c in found),
        hbars(
            [c.number for c in found],
            [100 * (c.rates.rate or 0.0) for c in found],
            [f"{percent(c.rates.rate)} of {c.rates.calls:,}" for c in found],
            "pick-up rate (%)",
        ),
        height=0.6 + 0.35 * max(len(found), 2),
    )
    cap = page.campaign.numbers.daily_cap
    rows = [
        (
            c.number,
            _cell(f"{c.rates.calls:,}", caller=c.number, value=c.rates.calls),
            f"{c.rates.completed:,}",
            percent(c.rates.rate),
            str(c.rested_days) if cap else "no cap",
        )
        for c in found
    ]
    return _section(
        "Caller ids",
        "caller-ids",
        render_svg(chart),
        _table(("caller id", "calls", "completed", "pick-up rate", "days rested at the daily cap"), rows),
    )


def attempts(calls: fig.CallCharts) -> str:
    per_lead, by_ordinal = calls.per_lead, calls.by_ordinal
    if not per_lead:
        return _section("Attempts", "attempts", "<p>No call placed yet.</p>")
    lead_chart = Chart(
        "chart-calls-per-lead",
        "Leads per number of calls they had",
        "Bars: " + ", ".join(f"{n} leads had {k} call{'s' if k != 1 else ''}" for k, n in per_lead.items()),
        count_bars([str(k) for k in per_lead], list(per_lead.values()), "calls placed for the lead", "leads"),
        height=3.0,
        width=4.2,
    )
    ordinal_chart = Chart(
        "chart-by-attempt",
        "Pick-up rate by attempt",
        "Bars: " + ", ".join(f"call {k}: {percent(r.rate)} of {r.calls}" for k, r in by_ordinal.items()),
        rate_bars(
            [str(k) for k in by_ordinal], list(by_ordinal.values()), "attempt (1 = the lead's first call)"
        ),
        height=3.0,
        width=4.2,
    )
    rows = [(k, f"{r.calls:,}", f"{r.completed:,}", percent(r.rate)) for k, r in by_ordinal.items()]
    return _section(
        "Attempts",
        "attempts",
        '<div class="pair">',
        render_svg(lead_chart),
        render_svg(ordinal_chart),
        "</div>",
        _table(("attempt", "calls", "completed", "pick-up rate"), rows),
    )


def problems(found: list[fig.Reason]) -> str:
    if not found:
        return _section("Rows that failed or are invalid", "problems", "<p>None.</p>")
    rows = [
        (
            r.status,
            r.reason,
            _cell(f"{r.rows:,}", problem=r.status, value=r.rows),
            ", ".join(str(p) for p in r.examples) + (", …" if r.rows > len(r.examples) else ""),
        )
        for r in found
    ]
    return _section(
        "Rows that failed or are invalid",
        "problems",
        "<p>Grouped by reason: values, numbers and rows in the reasons are shown as …;"
        " the examples are spreadsheet rows (the report's lines).</p>",
        _table(("status", "reason", "rows", "example rows"), rows),
    )


def settings(campaign: Campaign) -> str:
    limits, hours, numbers = campaign.limits, campaign.hours, campaign.numbers
    rows: list[tuple[str, object]] = [
        ("mode", campaign.mode),
        ("rate", f"{limits.rate_per_second:g} requests per second"),
        ("requests in flight", limits.concurrency),
        ("attempts per row", limits.max_attempts),
    ]
    live = getattr(limits, "max_live_calls", None)
    if live:
        rows.append(("live calls at most", live))
    rows.append(("calling hours (lead's local time)", f"{hours.start}–{hours.end}, {' '.join(hours.days)}"))
    if hours.skip_dates:
        rows.append(("no calls on", ", ".join(hours.skip_dates)))
    rows += [
        ("caller ids", f"{len(numbers.pool)} ({numbers.strategy})"),
        ("daily cap per caller id", numbers.daily_cap or "none"),
    ]
    redial: Any = getattr(campaign, "redial", None)
    if redial is not None:
        policy = redial.model_dump(by_alias=True) if hasattr(redial, "model_dump") else dict(redial)
        rows.append(("redial", ", ".join(f"{k} = {v}" for k, v in policy.items() if v is not None)))
    else:
        rows.append(("redial", "none: a sent row is not called again"))
    return _section("Settings that shaped it", "settings", _table(("setting", "value"), rows))


# -- the whole page ------------------------------------------------------------------

CSS = """
:root { color-scheme: light; --ink: #1a1a1a; --muted: #555; --rule: #ddd; --accent: #0072B2; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
  color: var(--ink); margin: 0 auto; padding: 1rem; max-width: 60rem; }
header h1 { margin: 0 0 .2rem; font-size: 1.6rem; }
header p { margin: 0; color: var(--muted); }
nav { margin: .8rem 0; font-size: .9rem; }
nav a { margin-right: .8rem; color: var(--accent); }
h2 { border-bottom: 2px solid var(--rule); padding-bottom: .2rem; margin-top: 2rem; }
h3 { font-size: 1rem; margin: 1.2rem 0 .3rem; }
dl.figures { display: grid; grid-template-columns: repeat(auto-fit, minmax(9rem, 1fr)); gap: .6rem;
  margin: 0; }
.figure { border: 1px solid var(--rule); border-radius: .4rem; padding: .5rem .7rem; }
.figure dt { font-size: .8rem; color: var(--muted); text-transform: uppercase; letter-spacing: .03em; }
.figure dd { margin: 0; font-size: 1.5rem; font-weight: 600; font-variant-numeric: tabular-nums; }
svg.chart { width: 100%; height: auto; display: block; margin: .4rem 0; }
.pair { display: grid; grid-template-columns: 1fr; gap: .5rem; }
@media (min-width: 48rem) { .pair { grid-template-columns: 1fr 1fr; } }
table { border-collapse: collapse; width: auto; min-width: 50%; margin: .4rem 0 1rem; font-size: .9rem; }
th, td { text-align: left; padding: .25rem .5rem; border-bottom: 1px solid var(--rule); vertical-align: top; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.tablewrap, details { overflow-x: auto; }
summary { cursor: pointer; color: var(--muted); font-size: .9rem; }
.note { color: var(--muted); }
footer { margin-top: 2rem; color: var(--muted); font-size: .8rem; }
@media (max-width: 30rem) { body { font-size: 14px; padding: .6rem; } .figure dd { font-size: 1.25rem; } }
@media print {
  body { max-width: none; padding: 0; font-size: 11pt; }
  nav, summary { display: none; }
  section { break-inside: avoid-page; }
  svg.chart, table { break-inside: avoid; }
  h2 { break-after: avoid; }
  a { color: inherit; text-decoration: none; }
}
"""

SECTIONS = (
    ("headline", "Headline"),
    ("outcomes", "Outcomes"),
    ("over-time", "Over time"),
    ("local-time", "Local hour & weekday"),
    ("caller-ids", "Caller ids"),
    ("attempts", "Attempts"),
    ("problems", "Failed & invalid"),
    ("settings", "Settings"),
)


def build_page(campaign: Campaign, figures: fig.PageFigures, now: datetime | None = None) -> str:
    """The page's HTML, from the journal's aggregates."""
    calls = figures.calls  # None: sent rows from a dialer that did not follow its calls, or none sent
    page = Page(campaign, figures.counts, calls)
    parts = [headline(page), outcomes(page, calls)]
    if calls:
        parts += [over_time(calls), local_time(calls), caller_ids(page, calls), attempts(calls)]
    else:
        for anchor, title in SECTIONS[2:6]:
            parts.append(_section(title, anchor, f"<p>{NO_CALLS}.</p>"))
    parts += [problems(figures.problems), settings(campaign)]
    first, last = figures.first_request, figures.last_request
    span = f"requests from {first:%Y-%m-%d %H:%M} to {last:%Y-%m-%d %H:%M} UTC" if first and last else ""
    made = (now or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC")
    nav = "".join(f'<a href="#{a}">{esc(t)}</a>' for a, t in SECTIONS)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        # No favicon request: the page must not ask the network (or the disk) for anything.
        '<link rel="icon" href="data:,">'
        f"<title>Campaign {esc(campaign.name)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>Campaign {esc(campaign.name)}</h1><p>{esc(campaign.mode)} campaign · {esc(span)}"
        f'</p></header><nav aria-label="sections">{nav}</nav><main>{"".join(parts)}</main>'
        f"<footer>Written by dialer report at {esc(made)} from {esc(figures.source)}.</footer>"
        "</body></html>\n"
    )


def write_page(campaign: Campaign, journal: JournalStore, path: Path, now: datetime | None = None) -> int:
    """Write the page atomically (a reader never sees half of it); the number of rows it covers."""
    figures = journal.page_figures(campaign.numbers.daily_cap)
    text = build_page(campaign, figures, now)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp makes the file 0600; a page is for sharing, like the report.
        os.chmod(name, path.stat().st_mode & 0o777 if path.exists() else 0o644)
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return sum(figures.counts.values())


__all__ = ["build_page", "write_page"]
