/* --report-seccomp for the steps that otherwise exec the program in place
 * (userns, restrict): the supervisor must be the program's ancestor (see
 * notify.c), so the launcher stays, as the program's parent, and behaves
 * like it, as `supervise` does for a wrapper:
 *
 *   - the program runs in its own process group, which gets the terminal
 *     when the launcher had it; signals sent to the launcher are forwarded
 *     (SIGINT to the program's group, as a terminal would);
 *   - the program gets SIGKILL if the launcher dies;
 *   - when the program has ended, what it left running gets SIGTERM, then
 *     SIGKILL (reap.c), and the launcher ends with the program's exit status
 *     or by its signal.
 */
#include "nbs.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#define GRACE_MS 2000

static const int forwarded[] = {SIGINT,  SIGTERM, SIGHUP,   SIGQUIT,
                                SIGUSR1, SIGUSR2, SIGWINCH, SIGALRM};

void report_seccomp_run(const char *program, char **argv, const struct landlock_req *req)
{
    sigset_t handled, blocked, saved_mask;
    sigemptyset(&handled);
    for (size_t k = 0; k < sizeof forwarded / sizeof *forwarded; k++)
        sigaddset(&handled, forwarded[k]);
    sigaddset(&handled, SIGCHLD);
    blocked = handled;
    /* Giving the terminal back from the background must not stop us. */
    sigaddset(&blocked, SIGTTOU);
    sigaddset(&blocked, SIGTTIN);
    if (sigprocmask(SIG_BLOCK, &blocked, &saved_mask) != 0)
        die_err(errno, NULL, "sigprocmask");
    int sfd = signalfd(-1, &handled, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0)
        die_err(errno, NULL, "signalfd");
    struct sigaction dfl, saved_chld;
    memset(&dfl, 0, sizeof dfl);
    sigemptyset(&dfl.sa_mask);
    dfl.sa_handler = SIG_DFL;
    /* An inherited SIG_IGN would reap the program for us and lose its status. */
    if (sigaction(SIGCHLD, &dfl, &saved_chld) != 0)
        die_err(errno, NULL, "sigaction");
    bool tty_fg = isatty(STDIN_FILENO) && tcgetpgrp(STDIN_FILENO) == getpgrp();

    int sv[2];
    report_seccomp_channel(sv);
    descendants_adopt();
    pid_t child = fork_tied();
    if (child == 0) {
        close(sv[0]);
        close(sfd);
        if (sigaction(SIGCHLD, &saved_chld, NULL) != 0 ||
            sigprocmask(SIG_SETMASK, &saved_mask, NULL) != 0)
            die_err(errno, NULL, "restoring the signal dispositions");
        /* Landlock first: its own opens are the launcher's, not the program's. */
        landlock_apply(req);
        report_seccomp_install(sv[1]);
        _exit(exec_program(program, argv));
    }
    (void)setpgid(child, child);
    close(sv[1]);
    bool tty_given = false;
    if (tty_fg && tcsetpgrp(STDIN_FILENO, child) == 0) {
        tty_given = true;
        (void)kill(-child, SIGCONT); /* stopped by SIGTTIN before it was its own */
    }
    report_seccomp_serve(sv[0]);

    int status = 0;
    bool done = false;
    while (!done) {
        struct pollfd p = {.fd = sfd, .events = POLLIN};
        if (poll(&p, 1, -1) < 0) {
            if (errno == EINTR)
                continue;
            die_err(errno, NULL, "poll");
        }
        struct signalfd_siginfo si;
        ssize_t n;
        while ((n = read(sfd, &si, sizeof si)) == (ssize_t)sizeof si) {
            int sig = (int)si.ssi_signo;
            if (sig != SIGCHLD) {
                (void)kill(sig == SIGINT ? -child : child, sig);
                continue;
            }
            /* SIGCHLDs merge; orphans adopted meanwhile are reaped too. */
            int st;
            pid_t w;
            while ((w = waitpid(-1, &st, WNOHANG)) > 0)
                if (w == child) {
                    done = true;
                    status = st;
                }
        }
        if (n < 0 && errno != EAGAIN && errno != EINTR)
            die_err(errno, NULL, "reading the signalfd");
    }
    if (tty_given)
        (void)tcsetpgrp(STDIN_FILENO, getpgrp()); /* SIGTTOU is blocked */
    descendants_end(GRACE_MS);
    reproduce_status(status);
}
