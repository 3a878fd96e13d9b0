"""What an IPython kernel (ipykernel) started from a root gets beyond its own argv.

* History: with an isolated home, IPython's history database would live in a home
  that is thrown away at exit (or, where the engine maps the home to an empty
  read-only directory, could not be written at all): the kernel keeps its history
  in memory instead (``--HistoryManager.hist_file=:memory:``), so ``%history``
  works for the session and nothing fails at exit.
* Start-up: ``$PYTHONSTARTUP`` runs :mod:`nbsandbox.ipython_startup`, which, in a
  kernel traced by PRoot, formats a throw-away traceback before the kernel answers,
  so that the first interrupt is answered as fast as the next ones (it took
  seconds).  Not when the kernel has a ``$PYTHONSTARTUP`` of its own, nor when the
  sandbox would not see this file (an isolated home or a hidden path over it).

Used by :func:`nbsandbox.kernels.kernel_request`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from nbsandbox.paths import is_under

STARTUP_FILE = str(Path(__file__).resolve().with_name("ipython_startup.py"))
HISTORY_IN_MEMORY = "--HistoryManager.hist_file=:memory:"
STARTUP_VAR = "PYTHONSTARTUP"


def is_ipython_kernel(argv: list[str]) -> bool:
    """Whether ARGV (a Python, then its arguments) starts ipykernel: ``-m ipykernel[_launcher]``
    or its launcher script, after the interpreter's own options."""
    words = iter(argv[1:])
    for word in words:
        if word == "-m":
            return next(words, "") in ("ipykernel_launcher", "ipykernel")
        if word in ("-X", "-W", "--check-hash-based-pycs"):
            next(words, "")  # the option's argument
        elif not word.startswith("-"):
            return os.path.basename(word) == "ipykernel_launcher.py"
    return False


def ipython_kernel_additions(argv: list[str], env: Mapping[str, str], *, isolate_home: bool,
                             home: str, hidden: Iterable[str] = ()
                             ) -> tuple[list[str], dict[str, str], tuple[str, ...]]:
    """(argv, env, variables to keep) for an IPython kernel; ARGV and ENV unchanged otherwise."""
    if not is_ipython_kernel(argv):
        return list(argv), dict(env), ()
    argv, env = list(argv), dict(env)
    if isolate_home and not any(a.startswith("--HistoryManager.hist_file") for a in argv):
        argv.append(HISTORY_IN_MEMORY)
    unseen = [*hidden, *([home] if isolate_home else [])]
    if not env.get(STARTUP_VAR) and not any(is_under(STARTUP_FILE, p) for p in unseen):
        env[STARTUP_VAR] = STARTUP_FILE
        return argv, env, (STARTUP_VAR,)
    return argv, env, ()
