/* nbs-launch supervise --tmpdir: removing the scratch directory, even after
 * the supervisor was killed with SIGKILL.
 *
 * The janitor is a child of the supervisor in a session of its own (a ^C on
 * the terminal does not reach it, nor does a kill of the caller's session)
 * that ignores every signal it can.  It reads
 * the supervisor's messages from a pipe whose write end only the supervisor
 * holds, so end-of-file means the supervisor is gone, however it ended:
 *
 *   D          the directory was created (by the supervisor)
 *   W<pid>\n   the wrapper was started with this pid
 *   R          the supervisor removed the directory itself
 *
 * At end-of-file, if the directory was created and not removed, the janitor
 * waits until the wrapper has exited (it was sent SIGKILL by
 * PR_SET_PDEATHSIG), removes the directory and exits.
 */
#include "nbs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434 /* the same number on every architecture */
#endif

#define MAX_DEPTH 256

static int rmtree_depth(int dirfd, const char *name, int depth)
{
    if (unlinkat(dirfd, name, 0) == 0 || errno == ENOENT)
        return 0;
    if (errno != EISDIR && errno != EPERM) /* EPERM: what POSIX allows for a directory */
        return -1;
    if (depth >= MAX_DEPTH) {
        errno = ELOOP;
        return -1;
    }
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno == EACCES) {
        /* A directory the program made unreadable: it is ours, open it up. */
        if (fchmodat(dirfd, name, 0700, 0) == 0)
            fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    }
    if (fd < 0)
        return errno == ENOENT ? 0 : -1;
    (void)fchmod(fd, 0700); /* entries of a read-only directory cannot be removed */
    DIR *d = fdopendir(fd);
    if (!d) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    int first_error = 0;
    /* Removing entries while reading the directory may make readdir skip
     * some; read it again until a pass finds nothing left. */
    for (int pass = 0; pass < 8; pass++) {
        bool found = false;
        struct dirent *e;
        rewinddir(d);
        for (errno = 0; (e = readdir(d)) != NULL; errno = 0) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            found = true;
            if (rmtree_depth(fd, e->d_name, depth + 1) != 0 && !first_error)
                first_error = errno;
        }
        if (errno && !first_error)
            first_error = errno;
        if (!found || first_error)
            break;
    }
    closedir(d);
    if (unlinkat(dirfd, name, AT_REMOVEDIR) == 0 || errno == ENOENT)
        return 0;
    if (first_error)
        errno = first_error;
    return -1;
}

int rmtree_at(int dirfd, const char *name)
{
    return rmtree_depth(dirfd, name, 0);
}

/* Until process PID has exited.  PIDFD (from pidfd_open, Linux >= 5.3) is
 * stable against pid reuse; without it, poll with kill(pid, 0). */
static void wait_gone(pid_t pid, int pidfd)
{
    if (pidfd >= 0) {
        struct pollfd pfd = {.fd = pidfd, .events = POLLIN};
        while (poll(&pfd, 1, -1) < 0 && errno == EINTR)
            ;
        return;
    }
    if (pid <= 0)
        return;
    struct timespec tick = {0, 20 * 1000 * 1000};
    /* ESRCH: gone; EPERM: the pid now belongs to someone else. */
    while (kill(pid, 0) == 0)
        nanosleep(&tick, NULL);
}

/* See janitor_set_leftovers(): "DIR/BASE" prefixes, in the order given. */
#define MAX_LEFTOVERS 4
static const char *leftovers[MAX_LEFTOVERS];
static size_t nleftovers;

void janitor_set_leftovers(const char *prefix)
{
    if (nleftovers >= MAX_LEFTOVERS)
        die("supervise: at most %d --leftovers", MAX_LEFTOVERS);
    leftovers[nleftovers++] = prefix;
}

/* Remove DIR/BASE<pid>-* where PREFIX = "DIR/BASE". */
static void remove_leftovers(const char *prefix, pid_t pid)
{
    const char *slash = strrchr(prefix, '/');
    if (!slash || slash[1] == '\0')
        return;
    char dir[PATH_MAX], start[NAME_MAX + 1];
    size_t dlen = (size_t)(slash - prefix);
    if (dlen == 0)
        dlen = 1; /* "/base" */
    if (dlen >= sizeof dir)
        return;
    memcpy(dir, prefix, dlen);
    dir[dlen] = '\0';
    int n = snprintf(start, sizeof start, "%s%d-", slash + 1, (int)pid);
    if (n < 0 || (size_t)n >= sizeof start)
        return;
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return;
    DIR *d = fdopendir(dfd);
    if (!d) {
        close(dfd);
        return;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (!strncmp(e->d_name, start, (size_t)n) && rmtree_at(dfd, e->d_name) != 0)
            warn_err(errno, "janitor: removing %s/%s", dir, e->d_name);
    closedir(d);
}

void janitor_remove_leftovers(pid_t pid)
{
    if (pid <= 0)
        return;
    for (size_t i = 0; i < nleftovers; i++)
        remove_leftovers(leftovers[i], pid);
}

/* See janitor_set_glue(): absolute paths, in the order given. */
static const char *glue[MAX_LEFTOVERS];
static size_t nglue;

void janitor_set_glue(const char *path)
{
    if (path[0] != '/' || !strcmp(path, "/"))
        die("supervise: --glue needs an absolute path below /, not %s", path);
    if (nglue >= MAX_LEFTOVERS)
        die("supervise: at most %d --glue", MAX_LEFTOVERS);
    glue[nglue++] = path;
}

/* Remove DIRFD/NAME if it is glue: an empty directory of mode 000 (the
 * binding's destination), or a directory holding nothing but glue (the
 * directories above it).  Anything else (a file, a directory someone made
 * or filled) is left as it is.  0 when removed or absent. */
static int remove_glue_at(int dirfd, const char *name, int depth)
{
    struct stat st;
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
        return errno == ENOENT ? 0 : -1;
    if (!S_ISDIR(st.st_mode) || depth > 64)
        return -1;
    bool leaf = (st.st_mode & 07777) == 0;
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return -1;
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return -1;
    }
    int rc = 0, entries = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            entries++;
            rc = leaf ? -1 : remove_glue_at(fd, e->d_name, depth + 1);
        }
    closedir(d);
    if (rc != 0 || (!leaf && entries == 0))
        return -1;
    return unlinkat(dirfd, name, AT_REMOVEDIR) == 0 || errno == ENOENT ? 0 : -1;
}

void janitor_remove_glue(void)
{
    for (size_t i = 0; i < nglue; i++) {
        const char *slash = strrchr(glue[i], '/');
        char dir[PATH_MAX];
        size_t dlen = slash == glue[i] ? 1 : (size_t)(slash - glue[i]);
        if (dlen >= sizeof dir)
            continue;
        memcpy(dir, glue[i], dlen);
        dir[dlen] = '\0';
        int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0)
            continue;
        (void)remove_glue_at(dfd, slash + 1, 0); /* not glue, or in use: leave it */
        close(dfd);
    }
}

static _Noreturn void janitor_main(int life_rd, int parentfd, const char *name)
{
    bool created = false, removed = false, in_pid = false;
    char num[16];
    size_t nlen = 0;
    pid_t wrapper = 0;
    int pidfd = -1;
    for (;;) {
        char buf[64];
        ssize_t n = read(life_rd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break; /* the supervisor is gone */
        for (ssize_t i = 0; i < n; i++) {
            char c = buf[i];
            if (in_pid) {
                if (c == '\n') {
                    num[nlen] = '\0';
                    int v;
                    in_pid = false;
                    if (!parse_int(num, &v) || v <= 0)
                        continue;
                    wrapper = v;
                    /* Pin the wrapper now: it is the supervisor's child and
                     * cannot be reaped (nor its pid reused) before this. */
                    pidfd = (int)syscall(SYS_pidfd_open, wrapper, 0);
                    if (pidfd < 0 && errno == ESRCH)
                        wrapper = 0;
                } else if (nlen < sizeof num - 1) {
                    num[nlen++] = c;
                }
            } else if (c == 'D') {
                created = true;
            } else if (c == 'R') {
                removed = true;
            } else if (c == 'W') {
                in_pid = true;
                nlen = 0;
            }
        }
    }
    if (!created || removed)
        _exit(0);
    wait_gone(wrapper, pidfd);
    janitor_remove_leftovers(wrapper);
    janitor_remove_glue();
    if (rmtree_at(parentfd, name) != 0) {
        warn_err(errno, "janitor: removing %s", name);
        _exit(1);
    }
    _exit(0);
}

pid_t janitor_start(int life_rd, int life_wr, int parentfd, const char *name, int close_fd)
{
    pid_t pid = fork();
    if (pid < 0)
        die_err(errno, NULL, "fork (janitor)");
    if (pid > 0)
        return pid;

    /* A session of its own, so out of the terminal's way and out of reach of
     * whoever ends the caller's whole session (a kernel's provisioner kills
     * every process of the kernel's session); deaf to signals: only a SIGKILL
     * sent to it by pid ends it. */
    if (setsid() < 0)
        (void)setpgid(0, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    sigemptyset(&sa.sa_mask);
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP && sig != SIGCHLD)
            (void)sigaction(sig, &sa, NULL); /* EINVAL for a few: fine */
    sigset_t none;
    sigemptyset(&none);
    (void)sigprocmask(SIG_SETMASK, &none, NULL);

    close(life_wr);
    if (close_fd >= 0)
        close(close_fd);
    /* Do not hold the caller's stdin/stdout open (a reader waits for EOF). */
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null >= 0) {
        (void)dup2(null, STDIN_FILENO);
        (void)dup2(null, STDOUT_FILENO);
        close(null);
    }
    if (chdir("/") != 0) {
        /* harmless: paths are relative to parentfd */
    }
    janitor_main(life_rd, parentfd, name);
}
