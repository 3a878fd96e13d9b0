"""Showing a report to a person: a short text table, Markdown, HTML."""

from __future__ import annotations

import html
from typing import Any

from nbsandbox.report.groups import GROUPS

#: Rows shown per group in the short forms (the magic); the JSON has them all.
SHORT_ROWS = 12


def _outcome(item: dict[str, Any]) -> str:
    parts = ["ok"] if item.get("ok") else []
    parts += [name if n == 1 else f"{name}x{n}" for name, n in item.get("failed", {}).items()]
    if item.get("unknown"):
        parts.append("tried")
    return ",".join(parts) or "-"


def _shown(path: str) -> str:
    """``path`` on one line (tabs and newlines as escapes)."""
    return path.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def _status(run: dict[str, Any]) -> str:
    exit_ = run.get("exit") or {}
    if exit_.get("signal"):
        return f"killed by {exit_['signal']}"
    if exit_.get("status") is None:
        return "exit status unknown"
    return f"exit status {exit_['status']}"


def headline(report: dict[str, Any]) -> str:
    run = report["run"]
    summary = report.get("summary", {})
    program = run.get("program_name") or run.get("program", "?")
    return (f"access report: {program} under {run.get('engine', '?')}, {_status(run)}; "
            f"{summary.get('paths', 0)} host paths, {summary.get('failed', 0)} with failures")


def grouped(report: dict[str, Any], limit: int | None = None
            ) -> list[tuple[str, list[dict[str, Any]], int]]:
    """``(title, rows, rows left out)`` per non-empty group, in the order of GROUPS."""
    out = []
    for key, title in GROUPS:
        rows = [a for a in report["accesses"] if a.get("group") == key]
        if rows:
            shown = rows if limit is None else rows[:limit]
            out.append((title, shown, len(rows) - len(shown)))
    return out


def text(report: dict[str, Any], limit: int | None = None) -> str:
    """The report as a short table, grouped."""
    lines = [headline(report)]
    for title, rows, more in grouped(report, limit):
        lines.append("")
        lines.append(f"{title}:")
        for item in rows:
            programs = ",".join(item.get("programs", []))
            lines.append(f"  {item['op']:<8} {_outcome(item):<12} {item['count']:>5}  "
                         f"{_shown(item['path'])}  ({programs})")
        if more:
            lines.append(f"  ... and {more} more")
    if not report["accesses"]:
        lines.append("no host paths outside the store were used")
    return "\n".join(lines)


def markdown(report: dict[str, Any], limit: int | None = SHORT_ROWS) -> str:
    lines = [f"**{headline(report)}**", ""]
    for title, rows, more in grouped(report, limit):
        lines += [f"*{title}*", "", "| op | result | count | path | programs |",
                  "|---|---|---:|---|---|"]
        for item in rows:
            path = _shown(item["path"]).replace("|", "\\|").replace("`", "'")
            lines.append(f"| {item['op']} | {_outcome(item)} | {item['count']} | `{path}` | "
                         f"{', '.join(item.get('programs', []))} |")
        if more:
            lines.append(f"| | | | … and {more} more | |")
        lines.append("")
    return "\n".join(lines)


def html_table(report: dict[str, Any], limit: int | None = SHORT_ROWS) -> str:
    esc = html.escape
    parts = [f"<div class='nbsandbox-report'><b>{esc(headline(report))}</b>",
             "<table><tr><th>group</th><th>op</th><th>result</th><th>count</th>"
             "<th>path</th><th>programs</th></tr>"]
    for title, rows, more in grouped(report, limit):
        for i, item in enumerate(rows):
            group = f"<th rowspan='{len(rows) + bool(more)}'>{esc(title)}</th>" if i == 0 else ""
            parts.append(f"<tr>{group}<td>{esc(item['op'])}</td><td>{esc(_outcome(item))}</td>"
                         f"<td>{item['count']}</td><td><code>{esc(item['path'])}</code></td>"
                         f"<td>{esc(', '.join(item.get('programs', [])))}</td></tr>")
        if more:
            parts.append(f"<tr><td colspan='5'>… and {more} more</td></tr>")
    parts.append("</table></div>")
    return "".join(parts)


class ReportView:
    """A report as IPython shows it: HTML in notebooks, Markdown, text elsewhere."""

    def __init__(self, report: dict[str, Any]) -> None:
        self.report = report

    def _repr_html_(self) -> str:
        return html_table(self.report)

    def _repr_markdown_(self) -> str:
        return markdown(self.report)

    def __repr__(self) -> str:
        return text(self.report, SHORT_ROWS)
