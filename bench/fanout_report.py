"""The tables and notes of ``python -m bench fanout`` (``bench/fanout.py``), text or Markdown."""

from __future__ import annotations

from typing import Any

from bench.report import format_number, markdown_table, text_table

__all__ = ["HEADER", "render", "table"]

#: (row key, header, unit for format_number; "" = a count)
COLUMNS = [
    ("offered_per_s", "offered/s", "/s"),
    ("delivered_per_s", "delivered/s", "/s"),
    ("lost", "lost", ""),
    ("closed", "clients closed (codes)", ""),
    ("memberships_left", "memberships left", ""),
    ("p50_ms", "p50 ms", "ms"),
    ("p99_ms", "p99 ms", "ms"),
    ("serve_cpu_pct", "server CPU %", "%"),
    ("worker_cpu_pct", "worker CPU %", "%"),
    ("redis_cpu_pct", "redis CPU %", "%"),
    ("client_cpu_pct", "client CPU %", "%"),
    ("serve_rss_mib", "server RSS MiB", "MiB"),
    ("worker_rss_mib", "worker RSS MiB", "MiB"),
]
HEADER = ["set-up", "events/s", "scenario", *(h for _k, h, _u in COLUMNS)]


def _cell(row: dict[str, Any], key: str, unit: str) -> str:
    value = row.get(key)
    if key == "closed" and value is not None:
        codes = ", ".join(f"{code}: {n:,}" for code, n in row.get("close_codes", {}).items())
        return f"{value:,}" + (f" ({codes})" if codes else "")
    if key == "memberships_left" and value is None:
        return "-" if row.get("members_at_start") is None else ""
    if key == "worker_rss_mib" and not value:
        return "-"  # no worker processes (Channels: the consumers live in the servers)
    if key == "worker_cpu_pct" and not row.get("worker_rss_mib"):
        return "-"
    if value is None or value != value:  # missing, NaN
        return ""
    if unit == "":
        return f"{value:,.0f}"
    return format_number(float(value), unit)


def _scenario(row: dict[str, Any]) -> str:
    """The scenario and, in a few words, what came of it."""
    scenario: str = row["scenario"]
    details: dict[str, Any] = row.get("details", {})
    if "error" in row or scenario == "steady":
        return scenario
    if scenario == "pause-server":
        return f"{details.get('paused', '?')} stopped {details.get('seconds', 0):g} s"
    if scenario == "mass-disconnect":
        left = details.get("memberships_left")
        text = f"{details.get('left', 0):,} left at once"
        if left is not None:
            text += f"; {left:,} memberships after {10:g} s"
        return text
    if scenario == "stalled-client":
        code = details.get("close_code")
        stalled = details.get("stalled", {})
        after = stalled.get("received_after_resume", 0)
        text = f"client 0 stalled {details.get('seconds', 0):g} s: {after} events after"
        text += f", {details.get('missing', 0)} missing"
        return text + (f", closed {code}" if code is not None else ", no close")
    if scenario == "kill-worker":
        refused = row.get("close_codes", {}).get("1013", 0)
        return (
            f"{details.get('killed')} killed: {row.get('resumed', 0):,} resumed, {refused:,} 1013"
        )
    return scenario


def table(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for row in results["rows"]:
        cells = [row["setup"], f"{row['rate']:g}", _scenario(row)]
        if "error" in row:
            cells += ["n/a"] + [""] * (len(COLUMNS) - 1)
        else:
            cells += [_cell(row, key, unit) for key, _h, unit in COLUMNS]
        rows.append(cells)
    return rows


def _notes(results: dict[str, Any]) -> list[str]:
    meta = results["meta"]
    notes = [
        f"{meta['clients']:,} WebSocket clients in one group, in {meta['client_procs']} client "
        f"processes; {meta['duration']:g} s of events per row; {meta['servers']} server "
        f"processes per set-up (+ {meta['workers']} towpath workers); a redis-server per row",
        "offered: clients ready x events/s; delivered/s: deliveries received / (first send "
        "to last receipt + one period); lost: deliveries missed by clients the server never "
        "closed; clients closed: by the server, with its close codes (1006: no close frame); "
        "memberships left: group members in Redis 10 s after every client closed (-: Pub/Sub "
        "keeps none); latency: send to receipt, every delivery; CPU: % of one core over "
        "publish + drain; RSS: peak, all server (worker) processes together",
        f"{meta['cpus']} CPUs; load average (1, 5, 15 min) at start: {meta['load_average']}; "
        f"wall time {meta.get('wall_seconds', '?')} s; {meta['command']}",
    ]
    for row in results["rows"]:
        name = f"{row['setup']} {row['rate']:g}/s {row['scenario']}"
        if "error" in row:
            notes.append(f"{name}: {row['error']}")
            continue
        notes.append(f"{name}: {_row_note(row)}")
    if meta.get("interrupted"):
        notes.append("INTERRUPTED: partial results")
    return notes


def _row_note(row: dict[str, Any]) -> str:
    published = row["publisher"]
    parts = [
        f"load average {row['load_average'][0]} -> {row['load_average'][1]}",
        f"{row['ready']:,}/{row['clients']:,} clients ready in {row['connect_seconds']:g} s",
        f"{row['published']:,} events in {published['seconds']:.1f} s "
        f"(group_send p50 {published['group_send_p50_ms']:.1f} ms, max "
        f"{published['group_send_max_ms']:.0f} ms)",
        f"{row['delivered']:,} deliveries, p99 {row['p99_ms']:.0f} ms, max {row['max_ms']:.0f} ms",
    ]
    per_connection = [
        f"{row[f'{role}_kib_per_connection']:.1f} KiB per idle connection in the {label}"
        for role, label in (("serve", "servers"), ("worker", "workers"))
        if row.get(f"{role}_kib_per_connection") is not None
    ]
    parts += per_connection
    if row.get("stack_cpu_us_per_delivery"):
        parts.append(f"{row['stack_cpu_us_per_delivery']:.0f} us server+worker CPU per delivery")
    if row["connect_errors"]:
        parts.append(f"connect errors {row['connect_errors']}")
    if row["missed_by_closed"]:
        parts.append(f"{row['missed_by_closed']:,} deliveries missed by the closed clients")
    if row["resumed"] and row["scenario"] != "kill-worker":
        parts.append(f"{row['resumed']:,} clients got a second ready frame (resumed)")
    if row["duplicates"] or row["out_of_order"]:
        parts.append(f"{row['duplicates']:,} duplicates, {row['out_of_order']:,} out of order")
    if not row["drained"]:
        parts.append(
            "NOT DRAINED: events were still arriving when the drain ended, so lost counts "
            "deliveries still on their way too"
        )
    if row.get("memberships_gone_after_s") is not None:
        parts.append(f"memberships gone {row['memberships_gone_after_s']:g} s after the close")
    for proc, counts in row.get("log_counts", {}).items():
        shown = {level: n for level, n in counts.items() if n}
        if shown:
            parts.append(f"{proc} logged {shown}")
    details = row.get("details", {})
    if details.get("serve_said"):
        parts.append("serve said: " + " / ".join(details["serve_said"]))
    return "; ".join(parts)


def render(results: dict[str, Any], markdown: bool) -> str:
    title = "Fan-out: one event to every WebSocket in a group"
    rows = table(results)
    bullet = "* " if markdown else "  "
    notes = "\n".join(bullet + note for note in _notes(results))
    if markdown:
        return f"**{title}**\n\n{markdown_table(HEADER, rows, text=(2,))}\n\n{notes}"
    return f"{title}\n{text_table(HEADER, rows, text=(2,))}\n\n{notes}"
