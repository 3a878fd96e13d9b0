/* nbs-launch supervise: run a wrapper (PRoot, bubblewrap) that cannot exec the
 * program in place, and behave like the program: forward its signals, hand
 * it the terminal, end with its exit status or signal.
 *
 *   supervisor (this process)
 *   ├── wrapper, own process group, SIGKILL when we die (PR_SET_PDEATHSIG)
 *   │   └── nbs-launch report --fd N   (writes "P <pid>" and "S <status>")
 *   │       └── program, own process group, SIGKILL when the reporter dies
 *   └── janitor (only with --tmpdir), see janitor.c
 *
 * Signals are handled synchronously: they are blocked and read from a
 * signalfd in the poll loop, together with the status socket.
 */
#include "nbs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

static const int forwarded[] = {SIGINT,  SIGTERM,  SIGHUP,  SIGQUIT,
                                SIGUSR1, SIGUSR2, SIGWINCH, SIGALRM};

struct state {
    pid_t wrapper;
    pid_t program;   /* 0 until the reporter tells */
    bool have_status;
    int status;      /* the program's raw wait status */
    int pending[16]; /* signals that came before the program's pid */
    size_t npending;
    bool tty_fg;     /* stdin is our controlling terminal and we own it */
    bool tty_given;
    char line[64];   /* partial line from the status pipe */
    size_t linelen;
};

/* Whether the main thread of PID takes SIG itself: it does not block it and
 * has not ended (a main thread that called pthread_exit stays a zombie while
 * the other threads run).  False when /proc cannot tell. */
static bool main_thread_takes(pid_t pid, int sig)
{
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%ld/task/%ld/status", (long)pid, (long)pid);
    if (read_small_file(path, buf, sizeof buf) != 0)
        return false;
    const char *state = strstr(buf, "\nState:\t");
    const char *blocked = strstr(buf, "\nSigBlk:\t");
    if (!state || !blocked || state[8] == 'Z' || state[8] == 'X')
        return false;
    errno = 0;
    char *end;
    unsigned long long mask = strtoull(blocked + 9, &end, 16);
    if (errno || end == blocked + 9)
        return false;
    return !(mask & (1ULL << (sig - 1)));
}

/* Send SIG to the process PID, to its main thread when that thread takes it.
 *
 * The kernel gives a signal sent to a process to any of its threads that
 * can take it, the main thread first unless it is stopped by a tracer at
 * that moment.  Under PRoot every system call stops the thread for the
 * tracer: a ^C that comes while the main thread stops on its way into
 * sleep() (or any blocking call) goes to another thread, whose handler
 * (Python's: set a flag for the main thread) does not wake the main thread,
 * which sleeps on to the end.  Sent to the main thread itself, the signal
 * waits for it and cuts that call short, as it does natively. */
static void deliver(pid_t pid, int sig)
{
    if (main_thread_takes(pid, sig) && syscall(SYS_tgkill, pid, pid, sig) == 0)
        return;
    (void)kill(pid, sig);
}

/* The process group of PID: its 5th field of /proc/PID/stat, or -1. */
static pid_t group_of(long pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    if (read_small_file(path, buf, sizeof buf) != 0)
        return -1;
    /* "pid (comm) state ppid pgrp ...": comm may contain anything. */
    const char *p = strrchr(buf, ')');
    char state;
    long ppid, pgrp;
    if (!p || sscanf(p + 1, " %c %ld %ld", &state, &ppid, &pgrp) != 3)
        return -1;
    return (pid_t)pgrp;
}

/* SIG to every process of the group PGID (the program's), each as deliver()
 * does; the whole group at once with kill() when /proc cannot be read. */
static void signal_group(pid_t pgid, int sig)
{
    DIR *proc = opendir("/proc");
    if (!proc) {
        (void)kill(-pgid, sig);
        return;
    }
    bool any = false;
    struct dirent *e;
    while ((e = readdir(proc)) != NULL) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (pid <= 0 || *end || group_of(pid) != pgid)
            continue;
        deliver((pid_t)pid, sig);
        any = true;
    }
    closedir(proc);
    if (!any)
        (void)kill(-pgid, sig);
}

static void forward(struct state *s, int sig)
{
    if (s->program <= 0) {
        /* Standard signals do not queue; keep each once, in order. */
        for (size_t i = 0; i < s->npending; i++)
            if (s->pending[i] == sig)
                return;
        if (s->npending < sizeof s->pending / sizeof *s->pending)
            s->pending[s->npending++] = sig;
        return;
    }
    /* ^C means the program's whole process group, as on a terminal. */
    if (sig == SIGINT)
        signal_group(s->program, sig);
    else
        deliver(s->program, sig);
}

/* Whether PID descends from ANCESTOR, as /proc tells: 1 yes, 0 no, -1 cannot
 * tell (e.g. PID has already ended). */
static int descends_from(pid_t pid, pid_t ancestor)
{
    for (int depth = 0; depth < 16 && pid > 1; depth++) {
        char path[64], buf[512];
        snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
        if (read_small_file(path, buf, sizeof buf) != 0)
            return -1;
        /* "pid (comm) state ppid ...": comm may contain anything. */
        const char *p = strrchr(buf, ')');
        char state;
        long ppid;
        if (!p || sscanf(p + 1, " %c %ld", &state, &ppid) != 2)
            return -1;
        if (ppid == ancestor)
            return 1;
        pid = (pid_t)ppid;
    }
    return 0;
}

static void program_started(struct state *s, pid_t pid)
{
    if (s->program > 0 || pid <= 0)
        return;
    /* A pid from another pid namespace would name an unrelated process:
     * never send it signals. */
    if (descends_from(pid, s->wrapper) == 0) {
        warn_err(0, "supervise: the wrapper reported pid %ld, which is not its descendant "
                    "(a pid namespace?); signals will not be forwarded", (long)pid);
        return;
    }
    s->program = pid;
    if (s->tty_fg && tcsetpgrp(STDIN_FILENO, pid) == 0) {
        s->tty_given = true;
        /* The program may have tried to read the terminal before it was
         * its own, and been stopped by SIGTTIN: let it go on. */
        (void)kill(-pid, SIGCONT);
    }
    for (size_t i = 0; i < s->npending; i++)
        forward(s, s->pending[i]);
    s->npending = 0;
}

static void parse_line(struct state *s, const char *line)
{
    int v;
    if (line[0] == 'P' && line[1] == ' ' && parse_int(line + 2, &v))
        program_started(s, v);
    else if (line[0] == 'S' && line[1] == ' ' && parse_int(line + 2, &v)) {
        s->have_status = true;
        s->status = v;
    }
}

/* Read what the status socket has; false at end-of-file (or error).  The
 * program may send its --report-seccomp listener along (see report.c):
 * served here, outside the wrapper. */
static bool read_status(struct state *s, int fd)
{
    for (;;) {
        char buf[128];
        struct iovec iov = {.iov_base = buf, .iov_len = sizeof buf};
        union {
            char buf[CMSG_SPACE(sizeof(int))];
            struct cmsghdr align;
        } u;
        struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                             .msg_controllen = sizeof u.buf};
        ssize_t n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
        int listener = n > 0 ? report_seccomp_take_listener(&msg) : -1;
        if (listener >= 0) {
            report_seccomp_prepare(); /* the same environment as the program's */
            record_skip_loader((long)s->wrapper);
            report_seccomp_start(listener);
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno == EAGAIN;
        }
        if (n == 0)
            return false;
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] == '\n') {
                s->line[s->linelen] = '\0';
                parse_line(s, s->line);
                s->linelen = 0;
            } else if (s->linelen < sizeof s->line - 1) {
                s->line[s->linelen++] = buf[i];
            }
        }
    }
}

/* Split DIR into an fd of its parent directory and its last component. */
static int open_parent(const char *dir, char name[PATH_MAX])
{
    char path[PATH_MAX];
    size_t len = strlen(dir);
    if (len == 0 || len >= sizeof path)
        die_err(len ? ENAMETOOLONG : ENOENT, NULL, "--tmpdir %.64s", dir);
    memcpy(path, dir, len + 1);
    while (len > 1 && path[len - 1] == '/')
        path[--len] = '\0';
    char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    if (!*base || !strcmp(base, ".") || !strcmp(base, ".."))
        die("--tmpdir %s: not a name for a new directory", dir);
    strcpy(name, base);
    const char *parent = ".";
    if (slash == path)
        parent = "/";
    else if (slash) {
        *slash = '\0';
        parent = path;
    }
    int fd = open(parent, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        die_err(errno, NULL, "--tmpdir %s: opening %s", dir, parent);
    return fd;
}

/* The scratch directory's layout, for the engines (see supervised.py):
 * tmp/ for the wrapper's temporary files, empty/ (read-only) to hide
 * directories with, home/ for an isolated home. */
static void make_scratch_subdirs(int parentfd, const char *name, const char *tmpdir)
{
    static const struct { const char *name; mode_t mode; } subdirs[] = {
        {"tmp", 0700}, {"empty", 0500}, {"home", 0700},
    };
    int dfd = openat(parentfd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0)
        die_err(errno, NULL, "--tmpdir %s: open", tmpdir);
    for (size_t i = 0; i < sizeof subdirs / sizeof subdirs[0]; i++)
        if (mkdirat(dfd, subdirs[i].name, subdirs[i].mode) != 0)
            die_err(errno, NULL, "--tmpdir %s: mkdir %s", tmpdir, subdirs[i].name);
    close(dfd);
}

/* --one-cpu: the wrapper (PRoot) and what it starts run on the CPU this
 * process runs on now.  A tracer and its tracee hand the CPU to each other at
 * every system call; on different CPUs each hand-over wakes an idle one, which
 * on a virtual machine costs more than the call itself (a PRoot kernel's start:
 * 2.1 s spread, 0.73 s on one CPU).  The program widens it again when its
 * start is over (see nbsandbox/ipython_startup.py).  Best effort. */
static void stay_on_this_cpu(void)
{
    int cpu = sched_getcpu();
    if (cpu < 0 || cpu >= CPU_SETSIZE)
        return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    (void)sched_setaffinity(0, sizeof set, &set);
}

int cmd_supervise(int argc, char **argv)
{
    const char *tmpdir = NULL;
    bool one_cpu = false;
    int i = 1;
    for (; i < argc; i++) {
        if (!strcmp(argv[i], "--")) {
            i++;
            break;
        }
        if (!strcmp(argv[i], "--tmpdir") && i + 1 < argc)
            tmpdir = argv[++i];
        else if (!strcmp(argv[i], "--leftovers") && i + 1 < argc)
            janitor_set_leftovers(argv[++i]);
        else if (!strcmp(argv[i], "--glue") && i + 1 < argc)
            janitor_set_glue(argv[++i]);
        else if (!strcmp(argv[i], "--one-cpu"))
            one_cpu = true;
        else
            die("supervise: unexpected argument %s (usage: nbs-launch supervise "
                "[--tmpdir DIR [--leftovers PREFIX] [--glue PATH]] [--one-cpu] -- WRAPPER [ARG...])",
                argv[i]);
    }
    if (i >= argc)
        die("supervise: no wrapper given (usage: nbs-launch supervise [--tmpdir DIR] -- "
            "WRAPPER [ARG...])");
    char **wargv = xcalloc((size_t)(argc - i + 1), sizeof *wargv);

    /* Blocked from now on, read from the signalfd; children unblock them. */
    sigset_t handled, saved_mask;
    sigemptyset(&handled);
    for (size_t k = 0; k < sizeof forwarded / sizeof *forwarded; k++)
        sigaddset(&handled, forwarded[k]);
    sigaddset(&handled, SIGCHLD);
    sigset_t blocked = handled;
    /* Blocked, not handled: giving the terminal back from the background
     * must not stop us. */
    sigaddset(&blocked, SIGTTOU);
    sigaddset(&blocked, SIGTTIN);
    if (sigprocmask(SIG_BLOCK, &blocked, &saved_mask) != 0)
        die_err(errno, NULL, "sigprocmask");
    int sfd = signalfd(-1, &handled, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0)
        die_err(errno, NULL, "signalfd");

    /* SIGCHLD ignored (inherited through exec) would reap the wrapper for
     * us and lose its status; SIGPIPE must not kill us if the janitor is
     * gone.  The wrapper gets the caller's dispositions back. */
    struct sigaction dfl, ign, saved_chld, saved_pipe;
    memset(&dfl, 0, sizeof dfl);
    sigemptyset(&dfl.sa_mask);
    ign = dfl;
    dfl.sa_handler = SIG_DFL;
    ign.sa_handler = SIG_IGN;
    if (sigaction(SIGCHLD, &dfl, &saved_chld) != 0 || sigaction(SIGPIPE, &ign, &saved_pipe) != 0)
        die_err(errno, NULL, "sigaction");

    struct state s;
    memset(&s, 0, sizeof s);
    s.tty_fg = isatty(STDIN_FILENO) && tcgetpgrp(STDIN_FILENO) == getpgrp();

    int parentfd = -1, life[2] = {-1, -1};
    char name[PATH_MAX];
    pid_t janitor = -1;
    if (tmpdir) {
        parentfd = open_parent(tmpdir, name);
        if (pipe2(life, O_CLOEXEC) != 0)
            die_err(errno, NULL, "pipe");
        /* Started first, so that it watches before anything exists. */
        janitor = janitor_start(life[0], life[1], parentfd, name, sfd);
        close(life[0]);
        if (mkdirat(parentfd, name, 0700) != 0)
            die_err(errno, NULL, "--tmpdir %s: mkdir", tmpdir);
        make_scratch_subdirs(parentfd, name, tmpdir);
        if (write_all(life[1], "D", 1) != 0)
            die_err(errno, NULL, "telling the janitor");
    }

    int status_pipe[2], go[2] = {-1, -1};
    /* A socket, not a pipe: the program can send its --report-seccomp
     * listener out of the wrapper on it (SCM_RIGHTS). */
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, status_pipe) != 0)
        die_err(errno, NULL, "socketpair");
    if (fcntl(status_pipe[0], F_SETFL, O_NONBLOCK) != 0)
        die_err(errno, NULL, "fcntl(O_NONBLOCK)");
    /* With a janitor, the wrapper waits for "go" until the janitor knows its
     * pid: if we die before, it never runs. */
    if (tmpdir && pipe2(go, O_CLOEXEC) != 0)
        die_err(errno, NULL, "pipe");
    char fdnum[16];
    snprintf(fdnum, sizeof fdnum, "%d", status_pipe[1]);
    for (int k = i; k < argc; k++)
        wargv[k - i] = strcmp(argv[k], STATUS_FD_PLACEHOLDER) ? argv[k] : fdnum;

    /* The wrapper's own process group: a ^C for the program must not hit
     * the wrapper (we forward it to the program's group). */
    pid_t wrapper = fork_tied();
    if (wrapper == 0) {
        if (tmpdir) {
            close(life[1]);
            close(go[1]);
            char c;
            ssize_t n;
            while ((n = read(go[0], &c, 1)) < 0 && errno == EINTR)
                ;
            if (n != 1)
                _exit(EXIT_SETUP_FAILED);
            close(go[0]);
        }
        close(status_pipe[0]);
        close(sfd);
        if (fcntl(status_pipe[1], F_SETFD, 0) != 0)
            die_err(errno, NULL, "fcntl(status fd)");
        if (sigaction(SIGCHLD, &saved_chld, NULL) != 0 ||
            sigaction(SIGPIPE, &saved_pipe, NULL) != 0 ||
            sigprocmask(SIG_SETMASK, &saved_mask, NULL) != 0)
            die_err(errno, NULL, "restoring the signal dispositions");
        if (one_cpu)
            stay_on_this_cpu();
        _exit(exec_program(wargv[0], wargv));
    }
    /* Both sides set the group, so that it exists whoever runs first. */
    (void)setpgid(wrapper, wrapper);
    s.wrapper = wrapper;
    close(status_pipe[1]);
    if (tmpdir) {
        char msg[32];
        int n = snprintf(msg, sizeof msg, "W%ld\n", (long)wrapper);
        if (write_all(life[1], msg, (size_t)n) != 0)
            die_err(errno, NULL, "telling the janitor");
        if (write_all(go[1], "g", 1) != 0)
            die_err(errno, NULL, "starting the wrapper");
        close(go[0]);
        close(go[1]);
    }

    int wrapper_status = 0;
    bool wrapper_done = false, pipe_open = true;
    while (!wrapper_done) {
        struct pollfd pfd[2] = {{.fd = sfd, .events = POLLIN},
                                {.fd = status_pipe[0], .events = POLLIN}};
        if (poll(pfd, pipe_open ? 2 : 1, -1) < 0) {
            if (errno == EINTR)
                continue;
            die_err(errno, NULL, "poll");
        }
        if (pipe_open && (pfd[1].revents & (POLLIN | POLLHUP | POLLERR)))
            pipe_open = read_status(&s, status_pipe[0]);
        if (pfd[0].revents & POLLIN) {
            struct signalfd_siginfo si;
            ssize_t n;
            while ((n = read(sfd, &si, sizeof si)) == (ssize_t)sizeof si) {
                int sig = (int)si.ssi_signo;
                if (sig != SIGCHLD) {
                    forward(&s, sig);
                    continue;
                }
                /* SIGCHLDs merge: reap whatever has ended. */
                int st;
                pid_t p;
                while ((p = waitpid(-1, &st, WNOHANG)) > 0) {
                    if (p == wrapper) {
                        wrapper_done = true;
                        wrapper_status = st;
                    } else if (p == janitor) {
                        janitor = -1;
                    }
                }
            }
            if (n < 0 && errno != EAGAIN && errno != EINTR)
                die_err(errno, NULL, "reading the signalfd");
        }
    }
    /* The reporter wrote its last line before it, and so the wrapper, ended. */
    if (pipe_open)
        (void)read_status(&s, status_pipe[0]);
    close(status_pipe[0]);

    if (s.tty_given)
        (void)tcsetpgrp(STDIN_FILENO, getpgrp()); /* SIGTTOU is blocked */
    if (tmpdir) {
        janitor_remove_leftovers(s.wrapper);
        janitor_remove_glue();
        if (rmtree_at(parentfd, name) == 0)
            (void)write_all(life[1], "R", 1);
        else
            warn_err(errno, "removing %s", tmpdir); /* the janitor tries again */
        close(life[1]);
    }
    free(wargv);
    reproduce_status(s.have_status ? s.status : wrapper_status);
}
