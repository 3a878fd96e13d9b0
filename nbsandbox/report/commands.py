"""``nbsandbox report FILE.json``: show an access report again, or as a policy."""

from __future__ import annotations

import argparse
import sys

from nbsandbox.report import as_policy, document, render


def register(subparsers) -> None:
    """Add ``report`` to the ``nbsandbox`` command."""
    p = subparsers.add_parser(
        "report", help="show an access report (nbsandbox run --report FILE.json)",
        description="Show the host paths a recorded run used, grouped; with --as-policy, a "
                    "configuration (nbsandbox_config.json) whose Landlock settings allow "
                    "just that.")
    p.add_argument("file", metavar="FILE.json")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--as-policy", action="store_true",
                   help="print allowed_read, allowed_write and network as a configuration "
                        "file that a later run enforces (save it as nbsandbox_config.json)")
    g.add_argument("--markdown", action="store_true", help="print the report as Markdown")
    p.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> int:
    report = document.load(args.file)
    if args.as_policy:
        text, notes = as_policy.config_text(report)
        for note in notes:
            print(f"nbsandbox: note: {note}", file=sys.stderr)
        sys.stdout.write(text)
    elif args.markdown:
        print(render.markdown(report, limit=None))
    else:
        print(render.text(report))
    return 0
