"""``nbsandbox doctor``: what each engine can do on this host, and for a root, what runs.

Engines are judged through the same resolver as every launch
(:func:`nbsandbox.engines.resolve`) with the effective policy: an engine the
policy does not allow is shown as such and never offered by a meta-engine or
chain.  The same facts feed the command line (text or JSON) and the
``%sandbox_doctor`` magic (HTML).
"""

from __future__ import annotations

import html
import os
import platform
from typing import TYPE_CHECKING, Any

from nbsandbox import gpu, landlock
from nbsandbox.engines import META, NOT_ALLOWED, all_engines, resolve
from nbsandbox.errors import NbsandboxError
from nbsandbox.program import host_machine, inspect_program
from nbsandbox.store import StoreRoot

if TYPE_CHECKING:
    from nbsandbox.policy import Policy

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
        "landlock_abi": landlock.abi(),
    }


def gpu_report(engines: list[dict[str, Any]], policy: Policy | None = None) -> dict[str, Any]:
    """The host's GPU driver (GPUs, version, files, devices, why it cannot be used) and,
    per engine, whether it can pass the driver through here; the driver is looked for
    where ``policy`` says too (``gpu_driver_paths``, ``gpu_devices``)."""
    paths = policy.gpu_driver_paths if policy is not None else ()
    devices = policy.gpu_devices if policy is not None else gpu.DEFAULT_DEVICES
    try:
        driver = gpu.discover(paths, devices, gpus=True)
        data: dict[str, Any] = driver.summary()
    except gpu.GpuError as exc:
        data = {"usable": False, "problem": str(exc), "version": None, "gpus": [],
                "libraries": {}, "programs": {}, "devices": [], "sources": []}
    passthrough = {}
    for e in engines:
        how = gpu.PASSTHROUGH.get(e["name"], "unknown: a third-party engine")
        if e.get("allowed") is False:
            status = "engine not allowed"
        elif not e["available"]:
            status = "engine unavailable"
        elif not data["usable"]:
            status = "no driver"
        else:
            status = "yes" if e["name"] in gpu.PASSTHROUGH else "unknown"
        passthrough[e["name"]] = {"can": status == "yes", "status": status, "how": how}
    data["engines"] = passthrough
    return data


def _resolve(name: str, policy: Policy | None, program: Any = None) -> Any:
    if policy is None:
        return resolve(name, program)
    return resolve(name, program, chains=policy.chains, allowed=policy.allowed_engines)


def report(root: StoreRoot | None = None, policy: Policy | None = None) -> dict[str, Any]:
    """Everything doctor shows, as plain data; judged under ``policy`` when given
    (``nbsandbox doctor`` and ``%sandbox_doctor`` pass the effective policy)."""
    engines = []
    for e in all_engines():
        entry = {"name": e.name, "rank": e.rank, "summary": e.summary,
                 "available": e.probe().available, "detail": e.probe().reason}
        if policy is not None:
            entry["allowed"] = policy.allowed(e.name)
        engines.append(entry)
    meta: dict[str, Any] = {}
    for name in [*META, *(policy.chains if policy is not None else ())]:
        try:
            r = _resolve(name, policy)
            meta[name] = {"picks": r.engine.name, "skipped": r.skipped}
        except NbsandboxError as exc:
            meta[name] = {"picks": None, "error": str(exc)}
    data: dict[str, Any] = {"host": host_facts(), "engines": engines, "meta": meta,
                            "gpu": gpu_report(engines, policy)}
    if root is not None:
        data["root"] = root_report(root, policy)
    if policy is not None:
        data["policy"] = policy.summary()
    return data


def root_report(root: StoreRoot, policy: Policy | None = None) -> dict[str, Any]:
    """For each program of the root's ``bin/``: what ``auto`` picks and, under a
    policy, what its engine picks (what ``nbsandbox run`` would use)."""
    programs = []
    names = root.profile_programs()[:MAX_PROGRAMS]
    requested = None
    if policy is not None:
        try:
            requested = policy.requested()[0]
        except NbsandboxError:  # e.g. $NBSANDBOX_ENGINE names a forbidden engine
            requested = None
    for name in names:
        entry: dict[str, Any] = {"name": name}
        try:
            info = inspect_program(root, root.find_program(name))
            entry["kind"] = info.describe()
            r = _resolve("auto", policy, info)
            entry["auto"] = r.engine.name
            entry["skipped"] = r.skipped
        except NbsandboxError as exc:
            entry["auto"] = None
            entry["error"] = str(exc)
        if requested is not None and "kind" in entry:
            entry["engine"] = requested
            try:
                entry["picks"] = _resolve(requested, policy, info).engine.name
            except NbsandboxError as exc:
                entry["picks"] = None
                entry["engine_error"] = str(exc)
        programs.append(entry)
    return {
        "path": str(root.path),
        "prefix": root.prefix,
        "items": len(root.items()),
        "present_on_host": root.present_on_host(),
        "programs": programs,
        "more_programs": max(0, len(root.profile_programs()) - len(names)),
    }


def _status(e: dict[str, Any]) -> tuple[str, str]:
    if e.get("allowed") is False:
        return "not allowed", NOT_ALLOWED
    return ("available" if e["available"] else "unavailable"), e["detail"]


def policy_line(data: dict[str, Any]) -> str | None:
    """One line on the policy doctor judged by, if any."""
    policy = data.get("policy")
    if not policy:
        return None
    allowed = policy.get("allowed_engines")
    return (f"policy: engine {policy['engine']}; allowed: "
            f"{', '.join(allowed) if allowed else 'every engine'}")


def format_text(data: dict[str, Any]) -> str:
    host = data["host"]
    out = [
        f"host: {host['machine']}, Linux {host['kernel']}, uid {host['uid']}, "
        f"max_user_namespaces={host['max_user_namespaces']}",
        landlock.enforceable(host.get("landlock_abi", 0)),
        "",
        f"{'engine':<12} {'status':<12} detail",
    ]
    for e in data["engines"]:
        status, detail = _status(e)
        out.append(f"{e['name']:<12} {status:<12} {detail}")
    out += ["", "meta-engines:"]
    for name, m in data["meta"].items():
        if m["picks"]:
            skipped = "".join(f"; skips {n}: {r}" for n, r in m["skipped"])
            out.append(f"  {name:<12} -> {m['picks']}{skipped}")
        else:
            out.append(f"  {name:<12} -> none: {m['error']}")
    out += ["", *gpu_text(data["gpu"])]
    root = data.get("root")
    if root:
        out += ["", f"root {root['path']} (prefix {root['prefix']}, {root['items']} items"
                + (", present on this host" if root["present_on_host"] else "") + ")"]
        for p in root["programs"]:
            if "engine" in p:
                picks = p["picks"] or f"none: {p['engine_error']}"
                out.append(f"  {p['name']:<20} {p['engine']} -> {picks:<11} {p['kind']}")
            elif p["auto"]:
                out.append(f"  {p['name']:<20} auto -> {p['auto']:<11} {p['kind']}")
            else:
                out.append(f"  {p['name']:<20} error: {p['error']}")
        if root["more_programs"]:
            out.append(f"  ... and {root['more_programs']} more in bin/")
    line = policy_line(data)
    if line:
        out += ["", line]
    return "\n".join(out)


def gpu_text(g: dict[str, Any]) -> list[str]:
    if not g["usable"]:
        out = [f"GPU: none usable: {g['problem']}"]
    else:
        names = ", ".join(g["gpus"]) or f"{len(g['devices'])} device node(s)"
        out = [f"GPU: {names}; driver {g['version'] or 'version unknown'} "
               f"({len(g['libraries'])} libraries from {' and '.join(g['sources'])}; devices "
               f"{' '.join(g['devices'])})"]
    for name, e in g["engines"].items():
        out.append(f"  {name + ':':<13} {e['status']:<18} {e['how']}")
    return out


def format_html(data: dict[str, Any]) -> str:
    esc = html.escape
    rows = "".join(
        f"<tr><td><code>{esc(e['name'])}</code></td>"
        f"<td>{'✔' if _status(e)[0] == 'available' else '✘'} {esc(_status(e)[0])}</td>"
        f"<td>{esc(_status(e)[1])}</td></tr>"
        for e in data["engines"]
    )
    meta = "".join(
        f"<li><code>{esc(n)}</code> → <b>{esc(m['picks'] or 'none')}</b>"
        + (f": {esc(m['error'])}" if not m["picks"] else "")
        + "</li>"
        for n, m in data["meta"].items()
    )
    line = policy_line(data)
    g = data["gpu"]
    if g["usable"]:
        gpus = (f"<p>GPU: <b>{esc(', '.join(g['gpus']) or str(len(g['devices'])) + ' device(s)')}"
                f"</b>; driver <code>{esc(g['version'] or 'version unknown')}</code>; devices "
                f"<code>{esc(' '.join(g['devices']))}</code></p>")
    else:
        gpus = f"<p>GPU: none usable: {esc(g['problem'] or '')}</p>"
    gpu_rows = "".join(
        f"<tr><td><code>{esc(n)}</code></td><td>{'✔' if e['can'] else '✘'} {esc(e['status'])}</td>"
        f"<td>{esc(e['how'])}</td></tr>"
        for n, e in g["engines"].items()
    )
    return (
        "<table><thead><tr><th>engine</th><th>status</th><th>detail</th></tr></thead>"
        f"<tbody>{rows}</tbody></table><p>meta-engines:</p><ul>{meta}</ul>{gpus}"
        "<table><thead><tr><th>engine</th><th>GPU</th><th>how</th></tr></thead>"
        f"<tbody>{gpu_rows}</tbody></table>"
        + (f"<p>{esc(line)}</p>" if line else "")
    )
