/* nbs-launch report: runs inside the wrapper (PRoot, bubblewrap), starts the
 * program and tells the supervisor its pid ("P <pid>\n") and, when it has
 * ended, its raw wait status ("S <status>\n") on fd N.
 *
 * The program gets its own process group (the supervisor sends ^C to it) and
 * SIGKILL if the reporter dies.  If the wrapper dies, the reporter gets
 * SIGTERM, kills every descendant of the program at once and dies.
 *
 * The run ends when the program ends: descendants it leaves behind get
 * SIGTERM, then SIGKILL after GRACE_MS (see reap.c).  With
 * --deny-untranslated, the program runs under the seccomp filter of
 * seccomp.c (for PRoot); with --allow-read, --allow-write or --no-network,
 * under the Landlock restrictions of landlock.c; with --report-seccomp, its
 * file and connect system calls are recorded by a thread of the reporter
 * (notify.c).  Under PRoot that needs PROOT_NO_SECCOMP=1: a USER_NOTIF
 * verdict takes precedence over the SECCOMP_RET_TRACE of PRoot's own filter,
 * which would then not translate those calls.  Without its filter PRoot
 * translates at the ptrace stop on system call entry, before seccomp, so the
 * supervisor sees the translated (host) paths.
 */
#include "nbs.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* Signals a terminal (or a lost status pipe) would send the reporter; the
 * program gets its original dispositions back before exec. */
/* How long descendants left behind by the program have between SIGTERM and
 * SIGKILL. */
#define GRACE_MS 2000

static const int quiet[] = {SIGINT, SIGQUIT, SIGTSTP, SIGTTIN, SIGTTOU, SIGHUP, SIGPIPE};
#define NQUIET (sizeof quiet / sizeof *quiet)

static void on_wrapper_death(int sig)
{
    (void)sig;
    descendants_hurry();
}

static void tell(int fd, char kind, long value)
{
    char msg[32];
    int n = snprintf(msg, sizeof msg, "%c %ld\n", kind, value);
    /* EPIPE: the supervisor is gone; the program's status still matters to
     * the wrapper, so carry on. */
    (void)write_all(fd, msg, (size_t)n);
}

/* The child's pid as the supervisor sees it.  When the wrapper made a pid
 * namespace (bwrap --unshare-pid) but the host's /proc is still mounted,
 * "NSpid:" lists the pid in /proc's namespace first. */
static pid_t outer_pid(pid_t child)
{
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%ld/status", (long)child);
    if (read_small_file(path, buf, sizeof buf) != 0)
        return child;
    const char *line = strstr(buf, "\nNSpid:");
    if (!line)
        return child; /* before Linux 4.1 */
    long v = strtol(line + strlen("\nNSpid:"), NULL, 10);
    return v > 0 ? (pid_t)v : child;
}

int cmd_report(int argc, char **argv)
{
    int fd = -1;
    const char *argv0 = NULL;
    bool deny_untranslated = false, report_seccomp = false;
    struct landlock_req restrictions = {0};
    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--")) {
            i++;
            break;
        }
        if (landlock_option(&restrictions, argc, argv, &i))
            continue;
        if (!strcmp(a, "--deny-untranslated")) {
            deny_untranslated = true;
            continue;
        }
        if (!strcmp(a, REPORT_SECCOMP_OPTION)) {
            report_seccomp_prepare();
            report_seccomp = true;
            continue;
        }
        if (i + 1 >= argc)
            die("report: unexpected argument %s", a);
        const char *val = argv[++i];
        if (!strcmp(a, "--fd")) {
            if (!parse_int(val, &fd))
                die("report: --fd %s: not a file descriptor number", val);
        } else if (!strcmp(a, "--argv0")) {
            argv0 = val;
        } else if (!strcmp(a, "--unsetenv")) {
            if (unsetenv(val) != 0)
                die_err(errno, NULL, "report: --unsetenv %s", val);
        } else {
            die("report: unknown option %s", a);
        }
    }
    if (fd < 0)
        die("report: --fd N is required (usage: nbs-launch report --fd N -- PROGRAM [ARG...])");
    if (i >= argc)
        die("report: no program given (usage: nbs-launch report --fd N -- PROGRAM [ARG...])");
    /* The program must not hold the status pipe: keep a close-on-exec copy
     * and close the original (unless it is a standard stream, which the
     * program needs too). */
    int status_fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (status_fd < 0)
        die_err(errno, NULL, "report: --fd %d", fd);
    if (fd > 2)
        close(fd);

    /* If the wrapper dies, we get SIGTERM: we kill every descendant at once
     * (the program would get SIGKILL from our death anyway, but not what it
     * detached) and die.  No SA_RESTART: waitpid() returns EINTR. */
    struct sigaction hurry, saved_term;
    memset(&hurry, 0, sizeof hurry);
    hurry.sa_handler = on_wrapper_death;
    sigemptyset(&hurry.sa_mask);
    if (sigaction(SIGTERM, &hurry, &saved_term) != 0)
        die_err(errno, NULL, "sigaction");
    pid_t parent = getppid();
    if (prctl(PR_SET_PDEATHSIG, SIGTERM, 0, 0, 0) != 0)
        die_err(errno, NULL, "prctl(PR_SET_PDEATHSIG)");
    if (getppid() != parent)
        _exit(EXIT_SETUP_FAILED);

    struct sigaction ign, saved[NQUIET], saved_chld, dfl;
    memset(&ign, 0, sizeof ign);
    ign.sa_handler = SIG_IGN;
    sigemptyset(&ign.sa_mask);
    dfl = ign;
    dfl.sa_handler = SIG_DFL;
    for (size_t k = 0; k < NQUIET; k++)
        if (sigaction(quiet[k], &ign, &saved[k]) != 0)
            die_err(errno, NULL, "sigaction");
    /* An inherited SIG_IGN for SIGCHLD would make waitpid() fail. */
    if (sigaction(SIGCHLD, &dfl, &saved_chld) != 0)
        die_err(errno, NULL, "sigaction");

    const char *program = argv[i];
    char **pargv = argv + i;
    if (argv0)
        pargv[0] = (char *)argv0;

    /* Under PRoot (--deny-untranslated) the listener goes out to the
     * supervisor, PRoot's parent, on the status socket: every system call of
     * a supervisor inside PRoot would be traced too, ten of them per record.
     * Inside bubblewrap (or with a status pipe) the reporter serves it: it
     * sees the sandbox's mount tree and pids as the program does. */
    struct stat st;
    bool serve_outside = report_seccomp && deny_untranslated && fstat(status_fd, &st) == 0 &&
                         S_ISSOCK(st.st_mode);
    int sv[2] = {-1, -1};
    if (report_seccomp && !serve_outside)
        report_seccomp_channel(sv);
    descendants_adopt();
    /* The supervisor signals the child as soon as "P" names it, maybe before
     * the child has given the program its dispositions back: a signal caught
     * by our handler or ignored then would be lost.  Every signal stays
     * blocked in the child until the dispositions are the program's, and is
     * delivered then (a SIGTERM before the program started ends it, as it
     * would have ended the program). */
    sigset_t all, mask;
    sigfillset(&all);
    if (sigprocmask(SIG_BLOCK, &all, &mask) != 0)
        die_err(errno, NULL, "sigprocmask");
    pid_t child = fork_tied();
    if (child == 0) {
        for (size_t k = 0; k < NQUIET; k++)
            (void)sigaction(quiet[k], &saved[k], NULL);
        (void)sigaction(SIGCHLD, &saved_chld, NULL);
        (void)sigaction(SIGTERM, &saved_term, NULL);
        (void)sigprocmask(SIG_SETMASK, &mask, NULL);
        /* EINVAL: no seccomp filters in this kernel, and so no PRoot
         * acceleration either; the calls then escape as before. */
        if (deny_untranslated && seccomp_deny_untranslated() != 0 && errno != EINVAL)
            die_err(errno, NULL, "report: installing the seccomp filter");
        /* Paths as the program sees them (inside the wrapper's view). */
        landlock_apply(&restrictions);
        /* Last: the setup's own calls are not the program's.  The reporter,
         * its parent, is the supervisor (notify.c). */
        if (serve_outside) {
            report_seccomp_install(status_fd);
        } else if (report_seccomp) {
            close(sv[0]);
            close(status_fd);
            report_seccomp_install(sv[1]);
        }
        _exit(exec_program(program, pargv));
    }
    (void)sigprocmask(SIG_SETMASK, &mask, NULL);
    if (report_seccomp && !serve_outside) {
        close(sv[1]);
        report_seccomp_serve(sv[0]);
    }
    /* Both sides set the group, so that it exists when "P" arrives.  EACCES:
     * the child has already exec'd (and so set it itself). */
    (void)setpgid(child, child);
    tell(status_fd, 'P', (long)outer_pid(child));

    /* Orphans adopted meanwhile are reaped here too. */
    int status;
    pid_t p;
    while ((p = waitpid(-1, &status, 0)) != child) {
        if (p < 0 && errno != EINTR)
            die_err(errno, NULL, "waitpid");
        if (descendants_hurried()) {
            descendants_end(0);
            _exit(128 + SIGKILL);
        }
    }
    tell(status_fd, 'S', (long)status);
    descendants_end(GRACE_MS);
    /* For the wrapper's sake: the status as a shell would show it. */
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}
