# Run by the IPython kernels nbsandbox starts, as their ``$PYTHONSTARTUP`` (never imported).
#
# The first traceback a kernel shows costs thousands of file-system calls: IPython's
# formatter imports its helpers, and ``inspect`` resolves the real path of every loaded
# module's file, one ``lstat`` per path component.  Natively that is a fraction of a
# second; under PRoot every such call is a round trip through the tracer, and the
# first interrupt (a ``KeyboardInterrupt`` traceback) took seconds to answer.  So
# when the kernel is traced (PRoot), this pays that cost once, at start-up, before
# the kernel answers.  Not in a background thread: under ptrace, a SIGINT for the
# process may then be taken by that thread, and the main thread's sleep goes on.
#
# It runs in the kernel's namespace, so it binds no name there; it must work on every
# Python and IPython a pack may hold, and it never fails the kernel.
# (Comments, not a docstring: a docstring would set __doc__ there.)

exec(r"""
try:
    with open("/proc/self/status") as status:
        traced = any(line.split()[1:] != ["0"] for line in status
                     if line.startswith("TracerPid:"))
except BaseException:
    traced = False
try:
    if traced:
        import inspect
        import os.path
        from IPython.core.ultratb import AutoFormattedTB

        # inspect resolves the real path of every module's file, one lstat per
        # component: the same few store directories, hundreds of times.  For the
        # time of the warm-up, a directory's real path is resolved once.
        realpath, known = os.path.realpath, {}

        def resolved(path, *args, **kwargs):
            if args or kwargs or not isinstance(path, str) or not os.path.isabs(path):
                return realpath(path, *args, **kwargs)
            head, tail = os.path.split(path)
            if tail in ("", ".", ".."):
                return realpath(path)
            if head not in known:
                known[head] = resolved(head)
            full = os.path.join(known[head], tail)
            return realpath(full) if os.path.islink(full) else full

        os.path.realpath = resolved
        try:
            try:
                raise KeyboardInterrupt
            except KeyboardInterrupt as exc:
                AutoFormattedTB(mode="Context").structured_traceback(type(exc), exc,
                                                                     exc.__traceback__)
            # A cell's frame has no file on disk: inspect walks every module (and caches).
            inspect.getmodule(compile("", "<nbsandbox-warm-up>", "exec"))
        finally:
            os.path.realpath = realpath
except BaseException:
    pass
try:
    if traced:
        import os

        # Started on one CPU with its tracer (nbs-launch supervise --one-cpu):
        # the kernel and PRoot get the CPUs of the supervisor (PRoot's parent) back.
        def field(pid, name):
            with open(f"/proc/{pid}/status") as status:
                return next(line.split(":", 1)[1].strip() for line in status
                            if line.startswith(name + ":"))

        tracer = int(field("self", "TracerPid"))
        cpus = os.sched_getaffinity(int(field(tracer, "PPid")))
        if len(os.sched_getaffinity(0)) == 1 and len(cpus) > 1:
            for task in (*os.listdir("/proc/self/task"), tracer):
                try:
                    os.sched_setaffinity(int(task), cpus)
                except OSError:
                    pass
except BaseException:
    pass
""", {})
