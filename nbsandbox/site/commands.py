"""The ``site`` sub-commands of ``nbsandbox``: ``site install`` and ``site singleuser``."""

from __future__ import annotations

import argparse

from nbsandbox.errors import UsageError
from nbsandbox.site.layout import SITE_ENV, WRITABLE_PACK_CHOICES, site_dir


def register(subparsers) -> None:
    """Add ``site`` to the ``nbsandbox`` command."""
    p = subparsers.add_parser(
        "site", help="packed kernels for a cluster's JupyterHub (administrators)",
        description="A site directory on the shared file system holds the locked policy and "
                    "the packed kernels; batch jobs start single-user servers from a pack.")
    sub = p.add_subparsers(dest="site_command", metavar="ACTION")
    sub.required = True

    i = sub.add_parser(
        "install", help="write a site directory: policy, server root, one kernel per root",
        description="Write SITE/etc/jupyter/nbsandbox_admin_config.json (the administrator's "
                    "policy: users may only tighten it), SITE/etc/jupyter/nbsandbox_site.json "
                    "and SITE/share/jupyter/kernels/NAME for every root with ipykernel.")
    i.add_argument("--site", help=f"the site directory (default: ${SITE_ENV})")
    i.add_argument("--root", action="append", default=[], metavar="NAME=PATH", required=True,
                   help="a named, unpacked, read-only pack, as the nodes see it; repeatable")
    i.add_argument("--server-root", metavar="NAME",
                   help="root the single-user server runs from (default: the first --root); "
                        "its Python needs jupyterhub, jupyter_server, ipykernel and nbsandbox")
    i.add_argument("--engines", metavar="LIST",
                   help="comma-separated engines allowed at all (default: every engine)")
    i.add_argument("--engine", default="performance",
                   help="engine or meta-engine used when nobody names one (default: performance)")
    i.add_argument("--isolate-home", action="store_true",
                   help="kernels get an empty private home (users cannot turn it off)")
    i.add_argument("--bind", action="append", default=[], metavar="SRC[:DST]",
                   help="a read-write bind every kernel gets; repeatable")
    i.add_argument("--ro-bind", action="append", default=[], metavar="SRC[:DST]",
                   help="a read-only bind every kernel gets; repeatable")
    i.add_argument("--lock", metavar="LIST", default="",
                   help="comma-separated settings nobody may change, not even to tighten "
                        "(e.g. engine,roots)")
    i.add_argument("--writable-pack", choices=WRITABLE_PACK_CHOICES, default="refuse",
                   help="when the user can write into the server's pack: refuse to start "
                        "(default) or warn in the job's log")
    i.set_defaults(func=run_install)

    s = sub.add_parser(
        "singleuser", help="run a single-user server from the site's pack (in a batch job)",
        description="Choose the engine on this node within the site's policy, say which and "
                    "why on stderr, and exec PROGRAM from the server's root with Jupyter "
                    "and nbsandbox pointed at the site directory.")
    s.add_argument("--site", help=f"the site directory (default: ${SITE_ENV})")
    s.add_argument("--root", metavar="NAME", help="run from this root instead of the site's")
    s.add_argument("--engine", "-e", help="engine or meta-engine (default: the site policy's)")
    s.add_argument("command", nargs=argparse.REMAINDER, metavar="-- PROGRAM [ARGS]")
    s.set_defaults(func=run_singleuser)


def _list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def run_install(args: argparse.Namespace) -> int:
    from nbsandbox.policy import POLICY_TRAITS
    from nbsandbox.site.install import install_site

    roots: dict[str, str] = {}
    for item in args.root:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"--root {item}: give NAME=PATH")
        if name in roots:
            raise UsageError(f"--root {name} is given twice")
        roots[name] = path
    locked = _list(args.lock)
    unknown = [n for n in locked if n not in POLICY_TRAITS]
    if unknown:
        raise UsageError(f"--lock {unknown[0]}: not a setting; settings are "
                         f"{', '.join(POLICY_TRAITS)}")
    site = site_dir(args.site)
    names = install_site(
        site, roots, server_root=args.server_root,
        allowed_engines=_list(args.engines) if args.engines else None,
        engine=args.engine, isolate_home=args.isolate_home, binds=args.bind,
        ro_binds=args.ro_bind, locked=locked, writable_pack=args.writable_pack)
    print(f"site {site}: kernels {', '.join(names) or 'none'}; "
          f"jobs run: nbsandbox site singleuser --site {site} -- jupyterhub-singleuser")
    return 0


def run_singleuser(args: argparse.Namespace) -> int:
    from nbsandbox.site.singleuser import run_singleuser as run

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise UsageError("give the server's command after --, e.g. -- jupyterhub-singleuser")
    return run(site_dir(args.site), command, engine=args.engine, root_spec=args.root)
