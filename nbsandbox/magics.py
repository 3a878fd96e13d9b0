"""The IPython extension: ``%%sandbox``, ``%sandbox``, ``%sandbox_doctor``.

Load it with ``%load_ext nbsandbox`` or from configuration
(``c.InteractiveShellApp.extensions = ["nbsandbox"]``).  The flags mirror
IPython's ``%%script`` where they overlap (``--out``, ``--err``, ``--bg``,
``--proc``, ``--no-raise-error``); unlike ``%%script``, an interrupt stops the
whole sandboxed process tree (see :mod:`nbsandbox.jupyter_runs`).

Settings come from :class:`~nbsandbox.policy.SandboxPolicy` (the class of this
extension inherits its traits): ``c.SandboxMagics.default_root = "py311"`` in
``ipython_config.py`` or ``ipython_kernel_config.py``.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import threading
from argparse import REMAINDER
from typing import Any

from IPython.core.error import UsageError as IPythonUsageError
from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from IPython.utils.process import arg_split
from traitlets import List, Unicode

from nbsandbox.errors import NbsandboxError, UsageError
from nbsandbox.jupyter_runs import SandboxedRun, Timeouts
from nbsandbox.notebook import cellrun
from nbsandbox.policy import Policy, SandboxPolicy

_SOURCE = "this cell"


class DoctorReport:
    """``nbsandbox doctor``'s report, shown as HTML in a notebook and as text elsewhere."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def _repr_html_(self) -> str:
        from nbsandbox.doctor import format_html

        return format_html(self.data)

    def __repr__(self) -> str:
        from nbsandbox.doctor import format_text

        return format_text(self.data)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self))


class _Capture:
    """Output sink: the console, or a variable of the user's namespace (``--out``)."""

    def __init__(self, shell: Any, var: str | None, stream: Any) -> None:
        self.shell, self.var, self.stream = shell, var, stream
        if var:
            shell.user_ns[var] = ""

    def __call__(self, text: str) -> None:
        if self.var:
            self.shell.user_ns[self.var] += text
        else:
            self.stream.write(text)
            self.stream.flush()


def _discard(text: str) -> None:
    pass


#: The options both forms of ``%sandbox`` take, in the order their help lists them.
_OPTIONS = [
    argument("--root", "-r", metavar="ROOT",
             help="store root: a name from SandboxPolicy.roots or a path "
                  "(default: SandboxPolicy.default_root, else $NBSANDBOX_ROOT)"),
    argument("--python", action="store_true",
             help="run the cell as Python in the root's interpreter, not as a shell script"),
    argument("--isolate-home", action="store_true",
             help="give the sandbox an empty private home (the working directory stays)"),
    argument("--gpu", dest="gpu", action="store_const", const="on",
             help="give the sandbox the host's GPU driver and devices (an error where there is "
                  "none; default: SandboxPolicy.gpu)"),
    argument("--no-gpu", dest="gpu", action="store_const", const="off",
             help="do not give the sandbox the host's GPU driver"),
    argument("--env", action="append", default=[], metavar="K=V",
             help="set a variable in the sandbox (repeatable)"),
    argument("--allow-read", action="append", default=[], metavar="PATH",
             help="Landlock: read only beneath these paths (and the store); repeatable"),
    argument("--allow-write", action="append", default=[], metavar="PATH",
             help="Landlock: write only beneath these paths; repeatable"),
    argument("--no-network", action="store_true",
             help="Landlock: no TCP bind or connect"),
    argument("--out", metavar="VAR",
             help="store stdout in this variable instead of showing it; with --bg, the "
                  "stdout pipe"),
    argument("--err", metavar="VAR",
             help="store stderr in this variable instead of showing it; with --bg, the "
                  "stderr pipe"),
    argument("--bg", action="store_true",
             help="run in the background; its output is then only available with "
                  "--out/--err"),
    argument("--proc", metavar="VAR",
             help="store the Popen object of a --bg run in this variable"),
    argument("--no-raise-error", action="store_false", dest="raise_error",
             help="do not raise CalledProcessError (or KeyboardInterrupt, TimeoutExpired) "
                  "when the program fails, is interrupted or times out"),
    argument("--timeout", type=float, metavar="SECONDS",
             help="stop the process tree after this many seconds"),
    argument("--report", nargs="?", const="", metavar="FILE",
             help="show the host paths the run used (outside the store), grouped, under "
                  "its output; with FILE (--report=FILE), also write them there as JSON"),
]


def _options(func: Any) -> Any:
    """Declare :data:`_OPTIONS` on a magic (as its ``@argument`` lines would)."""
    for option in reversed(_OPTIONS):
        func = option(func)
    return func


@magics_class
class SandboxMagics(Magics, SandboxPolicy):
    """Run cells and commands from a store root, through an engine, within the policy."""

    shells = List(
        Unicode(),
        default_value=["bash", "sh"],
        help="""Programs tried, in order, in the root's bin/ to run a %%sandbox cell as a
        shell script (without --python).""",
    ).tag(config=True)

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        self.bg_runs: list[SandboxedRun] = []
        self._lock = threading.Lock()
        atexit.register(self.stop_bg_runs)

    # -- the magics ------------------------------------------------------------------------

    @magic_arguments()
    @argument("engine", nargs="?", metavar="ENGINE",
              help="engine, meta-engine or chain (default: the policy's engine)")
    @_options
    @line_cell_magic
    def sandbox(self, line: str, cell: str | None = None) -> None:
        """Run a cell (``%%sandbox``) or one command (``%sandbox``) from a store root.

        ``%%sandbox [ENGINE] [options]`` runs the cell as a shell script with the root's
        ``bash`` or ``sh`` (as Python with ``--python``), through ENGINE.  Output
        streams as it comes.  A non-zero exit raises ``CalledProcessError`` unless
        ``--no-raise-error``.  Interrupting the cell stops the whole sandboxed process
        tree: SIGINT to its process group, then SIGTERM, then SIGKILL (timeouts:
        ``SandboxPolicy.interrupt_timeout``, ``terminate_timeout``, ``kill_timeout``).

        ``%sandbox [options] [ENGINE] [--] PROGRAM [ARGS...]`` runs PROGRAM (a name in
        the root's ``bin/`` or a store path) with ARGS, without a shell.

        ``--report`` shows the host paths the run used, grouped, under its output
        (``--report=FILE.json`` also writes them there; docs/access.md).

        Examples::

            %%sandbox userns --root py311
            python3 --version

            %%sandbox --python --out version
            import sys; print(sys.version)

            %sandbox --root py311 python3 -c "print('hello')"
        """
        try:
            if cell is None:
                args, command = self._parse_line(line)
                self._run(args, command=command, cell=None)
            else:
                args = self._parse(line)
                self._run(args, command=None, cell=cell)
        except NbsandboxError as exc:
            raise IPythonUsageError(str(exc)) from None

    @magic_arguments()
    @argument("--root", "-r", metavar="ROOT", help="also report on this root (name or path)")
    @line_magic
    def sandbox_doctor(self, line: str) -> None:
        """Show which engines work here, what each meta-engine picks and the policy
        (an HTML table in a notebook, text in a terminal)."""
        from IPython.display import display

        from nbsandbox.doctor import report

        try:
            args = self._parse(line, self.sandbox_doctor)
            policy = self.effective_policy()
            root = policy.open_root(args.root, _SOURCE) if args.root else None
            data = report(root, policy)
        except NbsandboxError as exc:
            raise IPythonUsageError(str(exc)) from None
        display(DoctorReport(data))

    @line_magic
    def sandbox_killbg(self, line: str = "") -> None:
        """Stop every background run started with ``%%sandbox --bg``."""
        self.stop_bg_runs()
        print("All background sandboxed runs were stopped.")

    # -- parsing ----------------------------------------------------------------------------

    def _parse(self, line: str, func: Any = None) -> Any:
        """``line`` parsed by the declaration of ``func`` (default: the cell form's);
        a bad line is a :class:`UsageError` that ends with the usage."""
        func = func or self.sandbox
        try:  # split as a shell would: the command's words lose their quotes
            return func.parser.parse_args(arg_split(line, posix=True))
        except IPythonUsageError as exc:
            usage = " ".join(func.parser.format_usage().replace("::", "").split())
            raise UsageError(f"{exc}; {usage}") from None

    @staticmethod
    @magic_arguments(name="sandbox")
    @_options
    @argument("command", nargs=REMAINDER, metavar="[ENGINE] [--] PROGRAM [ARGS...]",
              help="the engine (if the first word names one and a program follows), then "
                   "the program and its arguments")
    def _line_form(line: str) -> None:
        """``%sandbox``'s declaration (the line form takes a command, not an engine
        alone); :meth:`sandbox` is the magic."""

    def _parse_line(self, line: str) -> tuple[Any, list[str]]:
        """``%sandbox``'s options, engine and command, as :meth:`_line_form` declares them."""
        args = self._parse(line, self._line_form)
        command = list(args.command)
        args.engine = None
        if command[:1] == ["--"]:
            command = command[1:]
        elif len(command) > 1 and command[0] in self.effective_policy().engine_choices():
            args.engine = command.pop(0)
            if command[:1] == ["--"]:
                command = command[1:]
        if args.python:
            raise UsageError("--python applies to %%sandbox cells; for one line use "
                             "%sandbox python3 -c '...'")
        if not command:
            raise UsageError("no program given; usage: %sandbox [options] [ENGINE] [--] "
                             "PROGRAM [ARGS...]")
        return args, command

    # -- running -----------------------------------------------------------------------------

    def _policy_for(self, args: Any) -> Policy:
        request: dict[str, Any] = {}
        if args.isolate_home:
            request["isolate_home"] = True
        if args.allow_read:
            request["allowed_read"] = list(args.allow_read)
        if args.allow_write:
            request["allowed_write"] = list(args.allow_write)
        if args.no_network:
            request["network"] = False
        if args.gpu:
            request["gpu"] = args.gpu
        return self.effective_policy(request, _SOURCE)

    def _program(self, root: Any, args: Any, command: list[str] | None,
                 ) -> tuple[str, list[str]]:
        from nbsandbox.errors import StoreError

        if command is not None:
            return command[0], command[1:]
        if args.python:
            return root.python(), ["-"]
        for name in self.shells:
            try:
                return root.find_program(name), ["-s"]
            except StoreError:
                continue
        raise StoreError(
            f"store root {root.path} has no shell ({', '.join(self.shells)}) in bin/; use "
            "--python, or pack one with the root (nbsandbox pack --program /bin/sh)")

    def _run(self, args: Any, *, command: list[str] | None, cell: str | None) -> None:
        from nbsandbox.launch import RequestOptions, request
        from nbsandbox.plan import parse_env

        policy = self._policy_for(args)
        if args.report and args.engine is None and args.report in policy.engine_choices():
            args.engine, args.report = args.report, ""  # "--report userns": the engine
        if args.engine is not None:  # the cell's flags first, before its root is opened
            policy.check_engine(args.engine, _SOURCE)
        if args.proc and not args.bg:
            raise UsageError("--proc only applies to background runs (--bg)")
        if args.timeout is not None and args.timeout <= 0:
            raise UsageError("--timeout must be a positive number of seconds")
        if args.report is not None and args.bg:
            raise UsageError("--report applies to runs in the foreground, not --bg")
        explicit = parse_env(args.env)
        root = policy.open_root(cellrun.redirect(args.root), _SOURCE)
        program, program_args = self._program(root, args, command)
        env = {**os.environ, **explicit}
        if args.python:
            env.setdefault("PYTHONUNBUFFERED", "1")  # stream as it comes
        launch = request(policy, root, program, program_args, engine=args.engine,
                         source=_SOURCE,
                         options=RequestOptions(env=env, keep_env=(*explicit, "PYTHONUNBUFFERED"),
                                                cwd=os.getcwd(), report=args.report))
        cellrun.publish(self.shell, root, args.root, launch.resolution)  # saved with the cell
        stdin = None
        if cell is not None:
            stdin = (cell if cell.endswith("\n") else cell + "\n").encode("utf-8", "replace")
        timeouts = Timeouts(policy.interrupt_timeout, policy.terminate_timeout,
                            policy.kill_timeout)
        try:
            run = SandboxedRun(launch.command, stdin=stdin, timeouts=timeouts)
        except OSError as exc:
            if launch.recording is not None:
                launch.recording.abandon()
            raise UsageError(f"cannot start {launch.command.path}: {exc.strerror}") from None
        if args.bg:
            self._start_bg(run, args)
            return
        try:
            self._run_fg(run, args, launch.plan.argv)
        finally:
            if launch.recording is not None:
                self._show_report(launch.recording, run.returncode)

    @staticmethod
    def _show_report(recording: Any, returncode: int | None) -> None:
        """The access report under the cell's output (and in its file, if one was named)."""
        from IPython.display import display

        from nbsandbox.report.render import ReportView

        try:
            report = recording.finish(returncode)
        except OSError as exc:
            print(f"nbsandbox: cannot write the report {recording.target}: {exc.strerror}",
                  file=sys.stderr, flush=True)
            return
        sys.stdout.flush()
        display(ReportView(report))

    def _run_fg(self, run: SandboxedRun, args: Any, argv: list[str]) -> None:
        import time

        out = _Capture(self.shell, args.out, sys.stdout)
        err = _Capture(self.shell, args.err, sys.stderr)
        until = time.monotonic() + args.timeout if args.timeout else None
        try:
            try:
                finished = run.pump(out, err, until=until)
            except KeyboardInterrupt:
                how = run.stop(out, err)
                self._report_stop("interrupted", how)
                if args.raise_error:
                    raise
                return
            if not finished:
                how = run.stop(out, err)
                self._report_stop(f"timed out after {args.timeout:g} s", how)
                if args.raise_error:
                    raise subprocess.TimeoutExpired(argv, args.timeout) from None
                return
        finally:
            run.close()
        code = run.returncode
        if code and args.raise_error:
            raise subprocess.CalledProcessError(code, argv)

    @staticmethod
    def _report_stop(what: str, how: str | None) -> None:
        if how == "unkillable":
            detail = "some processes survived SIGKILL"
        elif how:
            detail = f"its processes ended after {how}"
        else:
            detail = "it had already ended"
        print(f"nbsandbox: {what}; {detail}", file=sys.stderr, flush=True)

    # -- background runs ------------------------------------------------------------------------

    def _start_bg(self, run: SandboxedRun, args: Any) -> None:
        import time

        if args.out:
            self.shell.user_ns[args.out] = run.popen.stdout
        if args.err:
            self.shell.user_ns[args.err] = run.popen.stderr
        if args.proc:
            self.shell.user_ns[args.proc] = run.popen
        with self._lock:
            self.bg_runs = [r for r in self.bg_runs if r.alive()]
            self.bg_runs.append(run)
        until = time.monotonic() + args.timeout if args.timeout else None

        def follow() -> None:
            # Drain the streams the user did not take, so that the program never
            # blocks on a full pipe; stop the tree at the time limit.
            if args.out or args.err:
                # The user reads some pipes: feed stdin, then only wait (and enforce the
                # time limit).
                run.feed(until)
                while run.alive():
                    if until is not None and time.monotonic() >= until:
                        run.stop()
                        break
                    time.sleep(0.1)
                run.popen.poll()
                return
            if not run.pump(_discard, _discard, until=until):
                run.stop(_discard, _discard)
            run.close()

        threading.Thread(target=follow, name=f"nbsandbox-bg-{run.pid}", daemon=True).start()

    def stop_bg_runs(self) -> None:
        """Stop every background run still alive (interrupt, terminate, kill).

        Called by ``%sandbox_killbg``, when the extension is unloaded and at exit.
        """
        with self._lock:
            runs, self.bg_runs = self.bg_runs, []
        for run in runs:
            if run.alive():
                run.stop()

    def close(self) -> None:
        """Stop background runs and forget the exit hook (extension unloaded)."""
        self.stop_bg_runs()
        atexit.unregister(self.stop_bg_runs)


def load_ipython_extension(ipython: Any) -> None:
    """Register the magics (``%load_ext nbsandbox``)."""
    if "SandboxMagics" in ipython.magics_manager.registry:
        return
    # (Magics adds itself to the shell's configurables, so %config SandboxMagics works)
    ipython.register_magics(SandboxMagics(shell=ipython, parent=ipython))


def unload_ipython_extension(ipython: Any) -> None:
    """Stop background runs and remove the magics (``%unload_ext nbsandbox``)."""
    magics = ipython.magics_manager.registry.pop("SandboxMagics", None)
    if magics is None:
        return
    magics.close()
    if magics in ipython.configurables:
        ipython.configurables.remove(magics)
    for kind in ("line", "cell"):
        table = ipython.magics_manager.magics[kind]
        for name in [n for n, f in table.items() if getattr(f, "__self__", None) is magics]:
            del table[name]
