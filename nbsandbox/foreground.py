"""Running a command as a child that stands in for the program, then returning.

``nbsandbox run`` replaces itself with the command (:func:`nbsandbox.launch.exec_in_place`),
unless it has work to do once the program ends (an access report).  Then it
starts the command as its child and waits: signals sent to it by another
process (``kill``) are passed on to the child; those the terminal sends to the
whole foreground process group (Ctrl-C, Ctrl-\\) reach the child by themselves
and are not sent twice.  :func:`die_like` ends this process as the child ended.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

from nbsandbox.engines.base import Command

#: Signals passed on to the child.
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
             signal.SIGUSR2, signal.SIGWINCH, signal.SIGCONT, signal.SIGTSTP)
#: ``si_code`` of a signal the kernel sends (the terminal's), not a process.
_SI_KERNEL = 0x80


def run(command: Command) -> int:
    """Run ``command`` as a child until it ends; its return code as Popen gives it."""
    from nbsandbox.launch import spawn

    waited = {*FORWARDED, signal.SIGCHLD}
    sys.stdout.flush()
    sys.stderr.flush()
    old = signal.pthread_sigmask(signal.SIG_BLOCK, waited)
    try:
        proc = spawn(command, preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_SETMASK,
                                                                         old))
        while True:
            code = proc.poll()
            if code is not None:
                return code
            info = signal.sigtimedwait(waited, 0.5)
            if info is None or info.si_signo == signal.SIGCHLD:
                continue
            if info.si_code != _SI_KERNEL:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, info.si_signo)
    finally:
        while signal.sigtimedwait(waited, 0) is not None:  # e.g. the terminal's Ctrl-C
            pass
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def die_like(returncode: int) -> int:
    """End as a process that exited with ``returncode`` (negative: killed by that signal);
    returns the exit status when the signal does not end this process."""
    if returncode >= 0:
        return returncode
    sig = -returncode
    sys.stdout.flush()
    sys.stderr.flush()
    signal.signal(sig, signal.SIG_DFL)
    os.kill(os.getpid(), sig)
    return 128 + sig
