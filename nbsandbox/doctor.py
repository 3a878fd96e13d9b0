"""``nbsandbox doctor``: what each engine can do on this host, and for a root, what ``auto`` picks.

The same facts feed the command line (text or JSON) and the ``%sandbox_doctor``
magic (HTML).
"""

from __future__ import annotations

import html
import os
import platform
from typing import Any

from nbsandbox.engines import META, all_engines, resolve
from nbsandbox.errors import NbsandboxError
from nbsandbox.program import host_machine, inspect_program
from nbsandbox.store import StoreRoot

MAX_PROGRAMS = 12


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def host_facts() -> dict[str, Any]:
    return {
        "machine": host_machine(),
        "kernel": platform.release(),
        "uid": os.getuid(),
        "max_user_namespaces": _read("/proc/sys/user/max_user_namespaces"),
        "apparmor_restrict_unprivileged_userns": _read(
            "/proc/sys/kernel/apparmor_restrict_unprivileged_userns"),
        "unprivileged_userns_clone": _read("/proc/sys/kernel/unprivileged_userns_clone"),
    }


def report(root: StoreRoot | None = None) -> dict[str, Any]:
    """Everything doctor shows, as plain data."""
    engines = [
        {"name": e.name, "rank": e.rank, "summary": e.summary,
         "available": e.probe().available, "detail": e.probe().reason}
        for e in all_engines()
    ]
    meta: dict[str, Any] = {}
    for name in META:
        try:
            r = resolve(name)
            meta[name] = {"picks": r.engine.name, "skipped": r.skipped}
        except NbsandboxError as exc:
            meta[name] = {"picks": None, "error": str(exc)}
    data: dict[str, Any] = {"host": host_facts(), "engines": engines, "meta": meta}
    if root is not None:
        data["root"] = root_report(root)
    return data


def root_report(root: StoreRoot) -> dict[str, Any]:
    programs = []
    names = root.profile_programs()[:MAX_PROGRAMS]
    for name in names:
        entry: dict[str, Any] = {"name": name}
        try:
            info = inspect_program(root, root.find_program(name))
            entry["kind"] = info.describe()
            r = resolve("auto", info)
            entry["auto"] = r.engine.name
            entry["skipped"] = r.skipped
        except NbsandboxError as exc:
            entry["auto"] = None
            entry["error"] = str(exc)
        programs.append(entry)
    return {
        "path": str(root.path),
        "prefix": root.prefix,
        "items": len(root.items()),
        "present_on_host": root.present_on_host(),
        "programs": programs,
        "more_programs": max(0, len(root.profile_programs()) - len(names)),
    }


def format_text(data: dict[str, Any]) -> str:
    host = data["host"]
    out = [
        f"host: {host['machine']}, Linux {host['kernel']}, uid {host['uid']}, "
        f"max_user_namespaces={host['max_user_namespaces']}",
        "",
        f"{'engine':<12} {'status':<12} detail",
    ]
    for e in data["engines"]:
        status = "available" if e["available"] else "unavailable"
        out.append(f"{e['name']:<12} {status:<12} {e['detail']}")
    out += ["", "meta-engines:"]
    for name, m in data["meta"].items():
        if m["picks"]:
            skipped = "".join(f"; skips {n}: {r}" for n, r in m["skipped"])
            out.append(f"  {name:<12} -> {m['picks']}{skipped}")
        else:
            out.append(f"  {name:<12} -> none: {m['error']}")
    root = data.get("root")
    if root:
        out += ["", f"root {root['path']} (prefix {root['prefix']}, {root['items']} items"
                + (", present on this host" if root["present_on_host"] else "") + ")"]
        for p in root["programs"]:
            if p["auto"]:
                out.append(f"  {p['name']:<20} auto -> {p['auto']:<11} {p['kind']}")
            else:
                out.append(f"  {p['name']:<20} error: {p['error']}")
        if root["more_programs"]:
            out.append(f"  ... and {root['more_programs']} more in bin/")
    return "\n".join(out)


def format_html(data: dict[str, Any]) -> str:
    esc = html.escape
    rows = "".join(
        f"<tr><td><code>{esc(e['name'])}</code></td>"
        f"<td>{'✔ available' if e['available'] else '✘ unavailable'}</td>"
        f"<td>{esc(e['detail'])}</td></tr>"
        for e in data["engines"]
    )
    meta = "".join(
        f"<li><code>{esc(n)}</code> → <b>{esc(m['picks'] or 'none')}</b>"
        + (f": {esc(m['error'])}" if not m["picks"] else "")
        + "</li>"
        for n, m in data["meta"].items()
    )
    return (
        "<table><thead><tr><th>engine</th><th>status</th><th>detail</th></tr></thead>"
        f"<tbody>{rows}</tbody></table><p>meta-engines:</p><ul>{meta}</ul>"
    )
