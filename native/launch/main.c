/* nbs-launch: sub-command dispatch and usage. */
#include "nbs.h"
#include "wrap.h"

#include <stdio.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>

static const char usage[] =
    "usage: nbs-launch userns [OPTIONS] -- PROGRAM [ARG...]\n"
    "         --store HOSTDIR:PREFIX  bind HOSTDIR read-only at PREFIX\n"
    "         --bind SRC:DST          bind host SRC read-write at DST\n"
    "         --ro-bind SRC:DST       bind host SRC read-only at DST\n"
    "         --hide PATH             PATH appears empty (and read-only)\n"
    "         --tmpfs PATH            a private, writable, empty tmpfs at PATH\n"
    "         --chdir DIR             working directory (default: the caller's, else /)\n"
    "         --argv0 NAME            argv[0] of PROGRAM (default: PROGRAM)\n"
    "         --probe                 do every step but the exec; exit 0 if all worked\n"
    "       nbs-launch supervise [--tmpdir DIR [--leftovers PREFIX] [--glue PATH]] -- WRAPPER [ARG...]\n"
    "         an argument " STATUS_FD_PLACEHOLDER " becomes the status pipe's fd\n"
    "       nbs-launch report --fd N [--argv0 NAME] [--unsetenv NAME]... [--deny-untranslated]\n"
    "                         -- PROGRAM [ARG...]\n"
    "         --deny-untranslated  system calls PRoot does not translate fail with ENOSYS\n"
    "       nbs-launch restrict [RESTRICTIONS] [--argv0 NAME] -- PROGRAM [ARG...]\n"
    "       nbs-launch landlock-abi   print the kernel's Landlock ABI (0: none)\n"
    "  RESTRICTIONS (userns, report, restrict; Landlock, applied just before exec):\n"
    "         --allow-read PATH       read and execute beneath PATH\n"
    "         --allow-write PATH      read, write, create and remove beneath PATH\n"
    "         --no-network            no TCP bind or connect\n"
    "         --allow-loader /DIR/P   also read /DIR/P<parent pid>-* (PRoot's loader; report)\n"
    "         --report-seccomp        record the program's file and connect system calls on\n"
    "                                 $NBSANDBOX_REPORT_FD, except under $NBSANDBOX_REPORT_SKIP\n"
    "                                 (docs/access.md); the launcher stays as its parent\n"
    "\n"
    "Failures of nbs-launch itself exit with 125; a program that cannot be\n"
    "executed gives 126, one that is not found 127.\n";

int main(int argc, char **argv)
{
    ensure_std_fds();
    /* Started as a pack's bin/NAME (a hard link to this binary): a wrapper. */
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        if (wrap_invoked(exe))
            return cmd_wrap(exe, argc, argv);
    } else if (argc >= 1 && wrap_invoked(argv[0])) {
        die("cannot find out where this program is (/proc/self/exe: %s); mount /proc, or run "
            "the pack's programs with nbsandbox run", strerror(errno));
    }
    if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        fputs(usage, stdout);
        return 0;
    }
    if (argc >= 2) {
        if (!strcmp(argv[1], "userns"))
            return cmd_userns(argc - 1, argv + 1);
        if (!strcmp(argv[1], "supervise"))
            return cmd_supervise(argc - 1, argv + 1);
        if (!strcmp(argv[1], "report"))
            return cmd_report(argc - 1, argv + 1);
        if (!strcmp(argv[1], "restrict"))
            return cmd_restrict(argc - 1, argv + 1);
        if (!strcmp(argv[1], "landlock-abi"))
            return cmd_landlock_abi();
    }
    die("usage: nbs-launch userns|supervise|report|restrict|landlock-abi ...; see nbs-launch --help");
}
