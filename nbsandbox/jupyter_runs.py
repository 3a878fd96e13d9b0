"""A sandboxed process tree run on behalf of a front end (a cell, a background job).

:class:`SandboxedRun` starts an engine's command in a session of its own, feeds
it its standard input, streams its output as text (decoded incrementally, so a
multibyte character split across two reads is never garbled), and stops the
whole tree when asked: SIGINT to its process group, then SIGTERM, then
SIGKILL to every process left in its session, each after a timeout.

The *tree* is the session the command was started in: every process it starts
stays in that session unless it calls ``setsid()`` itself (nothing in nbsandbox
does).  Engines that keep a wrapper between the caller and the program (PRoot,
bubblewrap) put the program in a process group of its own, inside the same
session, so the session is what is watched and swept.
"""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

from nbsandbox.engines import Command

#: Sink for decoded output.
Sink = Callable[[str], None]

_PR_SET_PDEATHSIG = 1
_POLL = 0.05  # seconds between checks while waiting for processes to end

try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # pragma: no cover - not Linux
    _prctl = None


def _die_with_parent() -> None:
    """``preexec_fn``: the child gets SIGKILL if the thread that started it dies."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


@dataclass(frozen=True)
class Timeouts:
    """Seconds granted after SIGINT, after SIGTERM, and to disappear after SIGKILL."""

    interrupt: float = 1.0
    terminate: float = 2.0
    kill: float = 2.0


def _launcher() -> str | None:
    from nbsandbox.native import native_path

    try:
        return os.path.realpath(native_path("nbs-launch"))
    except Exception:  # not built: then there are no janitors either
        return None


def session_members(sid: int) -> list[int]:
    """PIDs of the live processes whose session id is ``sid`` (from ``/proc``).

    Janitors of ``nbs-launch supervise`` are left out: they remove an engine's
    scratch directory once the engine is gone, then exit by themselves, and must
    not be killed (they lead a process group of their own and run ``nbs-launch``).
    """
    launcher = _launcher()
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        # fields: state ppid pgrp session ...; zombies are already dead
        if len(fields) <= 3 or int(fields[3]) != sid or fields[0] == b"Z":
            continue
        pid = int(entry)
        if launcher and int(fields[2]) == pid != sid and _exe(pid) == launcher:
            continue  # a janitor
        members.append(pid)
    return members


def _exe(pid: int) -> str | None:
    try:
        return os.path.realpath(f"/proc/{pid}/exe")
    except OSError:
        return None


def signal_session(sid: int, signum: int) -> int:
    """Send ``signum`` to every process of session ``sid``; returns how many got it."""
    sent = 0
    for pid in session_members(sid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)
            sent += 1
    return sent


class SandboxedRun:
    """One engine command running as a child, in a session of its own."""

    def __init__(
        self,
        command: Command,
        *,
        stdin: bytes | None = None,
        timeouts: Timeouts = Timeouts(),
        cwd: str | None = None,
    ) -> None:
        from nbsandbox.launch import spawn

        self.command = command
        self.timeouts = timeouts
        self.popen: subprocess.Popen[bytes] = spawn(
            command,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self.sid = self.popen.pid
        self._stdin = stdin or b""
        self._decoders = {
            self.popen.stdout.fileno(): codecs.getincrementaldecoder("utf-8")("replace"),
            self.popen.stderr.fileno(): codecs.getincrementaldecoder("utf-8")("replace"),
        }
        self._open: dict[int, str] = {self.popen.stdout.fileno(): "out",
                                      self.popen.stderr.fileno(): "err"}
        if stdin is not None:
            os.set_blocking(self.popen.stdin.fileno(), False)
        self._exited_at: float | None = None
        self._swept = False
        self._stopping = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    # -- the tree ------------------------------------------------------------------------

    def alive(self) -> bool:
        """Whether any process of the run's session is still alive."""
        return self.popen.poll() is None or bool(session_members(self.sid))

    def signal_group(self, signum: int) -> None:
        """Send ``signum`` to the run's process group (the command and what it started)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.sid, signum)

    # -- output --------------------------------------------------------------------------

    def pump(self, out: Sink, err: Sink, *, until: float | None = None,
             stop_when_gone: bool = False) -> bool:
        """Feed stdin and pass output to ``out``/``err`` until the run is over (the
        command exited and its output ended), or until the monotonic time ``until``.

        Returns True when the run is over.  When the command has exited but other
        processes of its session still hold its output open, those are terminated:
        a run ends with its command.  ``stop_when_gone``: return as soon as no
        process of the session is left, even if output is still open.
        KeyboardInterrupt propagates; calling :meth:`pump` again resumes.
        """
        sinks = {"out": out, "err": err}
        with selectors.DefaultSelector() as sel:
            for fd in self._open:
                sel.register(fd, selectors.EVENT_READ)
            stdin_fd = None
            if self.popen.stdin is not None and not self.popen.stdin.closed:
                stdin_fd = self.popen.stdin.fileno()
                if self._stdin:
                    sel.register(stdin_fd, selectors.EVENT_WRITE)
                else:
                    self._close_stdin()
                    stdin_fd = None
            while True:
                # Done when the output is closed, the command has exited and its
                # session is empty: a process closes its files while it exits, a
                # moment before it is gone.
                if not self._open and self.popen.poll() is not None and \
                        not session_members(self.sid):
                    self.popen.wait()
                    return True
                now = time.monotonic()
                if until is not None and now >= until:
                    return False
                if self.popen.poll() is not None:
                    if stop_when_gone and not session_members(self.sid):
                        self._finish(sinks)
                        return True
                    self._after_exit(now, sinks)
                wait = _POLL if until is None else max(0.0, min(_POLL, until - now))
                for key, _ in sel.select(wait):
                    fd = key.fd
                    if fd == stdin_fd:
                        if not self._write_stdin():
                            sel.unregister(fd)
                            self._close_stdin()
                            stdin_fd = None
                        continue
                    data = os.read(fd, 65536)
                    decoder = self._decoders[fd]
                    text = decoder.decode(data, final=not data)
                    if text:
                        sinks[self._open[fd]](text)
                    if not data:
                        sel.unregister(fd)
                        del self._open[fd]  # the file is closed with the Popen's

    def feed(self, until: float | None = None) -> None:
        """Write all of stdin, then close it (for when someone else reads the output);
        give up at the monotonic time ``until``."""
        if self.popen.stdin is None or self.popen.stdin.closed:
            return
        with selectors.DefaultSelector() as sel:
            sel.register(self.popen.stdin.fileno(), selectors.EVENT_WRITE)
            while self._stdin and self.popen.poll() is None and (
                    until is None or time.monotonic() < until):
                if sel.select(_POLL) and not self._write_stdin():
                    break
        self._close_stdin()

    def _write_stdin(self) -> bool:
        """Write what fits; False once everything is written or the reader is gone."""
        try:
            written = os.write(self.popen.stdin.fileno(), self._stdin[:65536])
        except BlockingIOError:
            return True
        except BrokenPipeError:
            self._stdin = b""
            return False
        self._stdin = self._stdin[written:]
        return bool(self._stdin)

    def _close_stdin(self) -> None:
        with contextlib.suppress(OSError):
            self.popen.stdin.close()

    def _after_exit(self, now: float, sinks: dict[str, Sink]) -> None:
        """The command has exited: end what is left of its session, then of its output."""
        if self._exited_at is None:
            self._exited_at = now
            return
        waited = now - self._exited_at
        if self._stopping:  # stop() is sending the signals
            if waited > self.timeouts.kill and not session_members(self.sid):
                self._finish(sinks)
            return
        if not self._swept and session_members(self.sid):
            if waited > _POLL * 2:  # let short-lived children flush and go
                signal_session(self.sid, signal.SIGTERM)
                self._swept = True
            return
        if self._swept and session_members(self.sid):
            if waited > self.timeouts.terminate:
                signal_session(self.sid, signal.SIGKILL)
            return
        # Nobody of the session is left; a process that escaped it may hold the output.
        if waited > self.timeouts.kill:
            self._finish(sinks)

    def _finish(self, sinks: dict[str, Sink]) -> None:
        for fd, name in list(self._open.items()):
            text = self._decoders[fd].decode(b"", final=True)
            if text:
                sinks[name](text)
        self._open.clear()

    def close(self) -> None:
        """Close our ends of the pipes."""
        for f in (self.popen.stdin, self.popen.stdout, self.popen.stderr):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()

    # -- stopping -------------------------------------------------------------------------

    def stop(self, out: Sink | None = None, err: Sink | None = None) -> str | None:
        """Stop the whole tree: SIGINT to the group, then SIGTERM, then SIGKILL to every
        process of the session, each after its timeout.  Output keeps flowing to
        ``out``/``err`` meanwhile (when given; else it is not read, e.g. because a
        background thread reads it).  A KeyboardInterrupt while waiting skips to the
        next step.

        Returns the name of the signal after which the tree was gone (``None`` if the
        run was already over, ``"unkillable"`` if processes survived SIGKILL).
        """
        if not self.alive():
            return None
        self._stopping = True
        steps = ((signal.SIGINT, self.timeouts.interrupt),
                 (signal.SIGTERM, self.timeouts.terminate),
                 (signal.SIGKILL, self.timeouts.kill))
        for signum, grace in steps:
            if signum == signal.SIGKILL:
                signal_session(self.sid, signum)
                self.signal_group(signum)
            else:
                self.signal_group(signum)
            try:
                if self._wait_gone(time.monotonic() + grace, out, err):
                    return signal.Signals(signum).name
            except KeyboardInterrupt:
                continue
        return "unkillable"

    def _wait_gone(self, until: float, out: Sink | None, err: Sink | None) -> bool:
        while True:
            if out is not None and err is not None:
                self.pump(out, err, until=min(until, time.monotonic() + _POLL),
                          stop_when_gone=True)
            else:
                time.sleep(_POLL)
            self.popen.poll()
            if not self.alive():
                return True
            if time.monotonic() >= until:
                return False
