/* nbs-launch: error reporting, bounded path formatting, exec, small helpers. */
#include "nbs.h"
#include "../common/execpath.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

const char *nbs_progname = "nbs-launch";

/* One line, written with a single write(2) so that concurrent writers do not
 * interleave inside it and so that it is safe after fork(). */
static void vreport(int err, const char *hint, const char *fmt, va_list ap)
{
    char line[1024];
    size_t n = 0;
    int r = snprintf(line, sizeof line, "%s: ", nbs_progname);
    if (r > 0)
        n = (size_t)r;
    r = vsnprintf(line + n, sizeof line - n, fmt, ap);
    if (r > 0)
        n += (size_t)r;
    if (n >= sizeof line)
        n = sizeof line - 1;
    if (err) {
        r = snprintf(line + n, sizeof line - n, ": %s", strerror(err));
        if (r > 0)
            n += (size_t)r;
        if (n >= sizeof line)
            n = sizeof line - 1;
    }
    if (hint && *hint) {
        r = snprintf(line + n, sizeof line - n, " (%s)", hint);
        if (r > 0)
            n += (size_t)r;
        if (n >= sizeof line)
            n = sizeof line - 1;
    }
    /* Room for the newline: a truncated line loses its last character. */
    if (n >= sizeof line - 1)
        n = sizeof line - 2;
    line[n++] = '\n';
    (void)write_all(STDERR_FILENO, line, n);
}

void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(0, NULL, fmt, ap);
    va_end(ap);
    _exit(EXIT_SETUP_FAILED);
}

void die_err(int err, const char *hint, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(err, hint, fmt, ap);
    va_end(ap);
    _exit(EXIT_SETUP_FAILED);
}

void warn_err(int err, const char *fmt, ...)
{
    int saved = errno;
    va_list ap;
    va_start(ap, fmt);
    vreport(err, NULL, fmt, ap);
    va_end(ap);
    errno = saved;
}

void path_fmt(char out[PATH_MAX], const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, PATH_MAX, fmt, ap);
    va_end(ap);
    if (n < 0)
        die_err(errno, NULL, "formatting a path");
    if (n >= PATH_MAX) {
        /* Show the beginning of what did not fit. */
        die_err(ENAMETOOLONG, NULL, "path %.64s...", out);
    }
}

int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int read_small_file(const char *path, char *buf, size_t size)
{
    if (size == 0) {
        errno = EINVAL;
        return -1;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t n = 0;
    while (n < size - 1) {
        ssize_t r = read(fd, buf + n, size - 1 - n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            int e = errno;
            close(fd);
            errno = e;
            return -1;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
        n--;
    buf[n] = '\0';
    return 0;
}

void ensure_std_fds(void)
{
    for (int fd = 0; fd <= 2; fd++) {
        if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF)
            continue;
        /* The lowest free descriptor is fd itself. */
        int n = open("/dev/null", O_RDWR);
        if (n < 0)
            _exit(EXIT_SETUP_FAILED); /* cannot even report it */
        if (n != fd) {
            close(n);
            _exit(EXIT_SETUP_FAILED);
        }
    }
}

bool parse_int(const char *s, int *out)
{
    if (!s || *s < '0' || *s > '9')
        return false;
    errno = 0;
    char *end;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < 0 || v > INT_MAX)
        return false;
    *out = (int)v;
    return true;
}

void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        die_err(ENOMEM, NULL, "allocating memory");
    return p;
}

char *xstrdup(const char *s)
{
    char *p = strdup(s);
    if (!p)
        die_err(ENOMEM, NULL, "allocating memory");
    return p;
}

void strvec_push(struct strvec *v, const char *s)
{
    if (v->len == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 16;
        char **items = reallocarray(v->items, cap, sizeof *items);
        if (!items)
            die_err(ENOMEM, NULL, "allocating memory");
        v->items = items;
        v->cap = cap;
    }
    v->items[v->len++] = xstrdup(s);
}

static int exec_status(const char *file, int err)
{
    warn_err(err, "cannot execute %s", file);
    return (err == ENOENT || err == ENOTDIR) ? EXIT_NOT_FOUND : EXIT_CANNOT_EXEC;
}

static int try_exec(const char *candidate, void *ctx)
{
    execve(candidate, (char *const *)ctx, environ);
    return errno;
}

int exec_program(const char *file, char *const argv[])
{
    if (!*file)
        return exec_status(file, ENOENT);
    if (strchr(file, '/')) {
        execve(file, argv, environ);
        return exec_status(file, errno);
    }
    char stopped_at[PATH_MAX] = "";
    int err = nbs_search_path(file, getenv("PATH"), try_exec, (void *)argv, stopped_at,
                              sizeof stopped_at);
    return exec_status(stopped_at[0] ? stopped_at : file, err);
}

void reproduce_status(int status)
{
    if (WIFEXITED(status))
        exit(WEXITSTATUS(status));
    if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        /* The program may have dumped core; the launcher must not add its own.
         * RLIMIT_CORE alone does not stop a core_pattern pipe (systemd-coredump),
         * a non-dumpable process never dumps. */
        struct rlimit none = {0, 0};
        (void)setrlimit(RLIMIT_CORE, &none);
        (void)prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = SIG_DFL;
        sigemptyset(&sa.sa_mask);
        (void)sigaction(sig, &sa, NULL);
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, sig);
        (void)kill(getpid(), sig);
        (void)sigprocmask(SIG_UNBLOCK, &set, NULL);
        /* Still here: a signal whose default action is not to terminate. */
        exit(128 + sig);
    }
    exit(EXIT_SETUP_FAILED);
}

pid_t fork_tied(void)
{
    pid_t me = getpid();
    pid_t child = fork();
    if (child < 0)
        die_err(errno, NULL, "fork");
    if (child == 0) {
        (void)setpgid(0, 0);
        if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0)
            die_err(errno, NULL, "prctl(PR_SET_PDEATHSIG)");
        if (getppid() != me)
            _exit(EXIT_SETUP_FAILED); /* the parent is already gone */
    }
    return child;
}
