/* nbs-preload: recording host accesses (mechanism `preload`, issue #12).
 *
 * When NBSANDBOX_REPORT_FD names a usable descriptor, every path function
 * of preload_fs.c and preload_exec.c records its event after the call
 * (RECORD in preload.h), unless the path, as the program named it, made
 * absolute and normalised, lies under a NBSANDBOX_REPORT_SKIP prefix.
 * Without the variables nothing changes: the wrappers test one word.
 *
 * The same code runs under the fakechroot engine (paths are the sandbox's
 * view) and as a pure recorder under the other engines (no configuration:
 * no translation).  Like the exec path, recording uses stack buffers and
 * raw system calls only, takes no lock and allocates nothing.
 *
 * This file also interposes connect, and fchdir (the working directory is
 * cached for relative paths); preload_fds.c keeps the record descriptor
 * open.
 */
#include "preload.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>

struct rec_conf R = {.fd = -1, .mech = "preload"};
char rec_fd_var[sizeof REC_ENV_FD + 16];
char rec_skip_var[sizeof REC_ENV_SKIP + REC_SKIP_MAX];

/* ------------------------------------------------------------------------ */
/* init */

static void set_fd_var(int fd)
{
    char d[16];
    size_t n = 0, pos = sizeof REC_ENV_FD - 1;
    unsigned v = (unsigned)fd;
    memcpy(rec_fd_var, REC_ENV_FD, pos);
    do {
        d[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        rec_fd_var[pos++] = d[--n];
    rec_fd_var[pos] = '\0';
}

void report_init(void)
{
    const char *fd = NULL, *skip = NULL;
    for (char **e = environ; e && *e; e++) {
        if ((*e)[0] != 'N' || !pm_startswith(*e, "NBSANDBOX_REPORT_"))
            continue;
        if (pm_startswith(*e, REC_ENV_FD))
            fd = *e + sizeof REC_ENV_FD - 1;
        else if (pm_startswith(*e, REC_ENV_SKIP))
            skip = *e + sizeof REC_ENV_SKIP - 1;
    }
    if (!fd)
        return;
    size_t skip_len = skip ? pm_strlen(skip) : 0;
    if (skip_len >= REC_SKIP_MAX) {
        /* keep whole entries (the store's come first) */
        skip_len = REC_SKIP_MAX - 1;
        while (skip_len > 0 && skip[skip_len] != ':')
            skip_len--;
    }
    /* the program's name until the constructor knows argv[0] */
    if (exe_sbx[0]) {
        rec_set_program(&R, exe_sbx, pm_strlen(exe_sbx));
    } else {
        char exe[PM_PATH_MAX];
        long n = nbs_readlinkat(AT_FDCWD, "/proc/self/exe", exe, sizeof exe - 1);
        if (n > 0)
            rec_set_program(&R, exe, (size_t)n);
    }
    int r = rec_setup(&R, "preload", fd, skip, skip_len);
    if (r < 0)
        return;
    set_fd_var(r);
    memcpy(rec_skip_var, REC_ENV_SKIP, sizeof REC_ENV_SKIP - 1);
    memcpy(rec_skip_var + sizeof REC_ENV_SKIP - 1, skip ? skip : "", skip_len);
    rec_skip_var[sizeof REC_ENV_SKIP - 1 + skip_len] = '\0';
}

void report_program(const char *argv0)
{
    if (R.fd >= 0 && argv0 && *argv0)
        rec_set_program(&R, argv0, pm_strlen(argv0));
}

/* ------------------------------------------------------------------------ */
/* the working directory, cached for relative paths: a seqlock, refreshed
 * after chdir/fchdir (an epoch counter) by whoever needs it first */

static char cwd_cache[PM_PATH_MAX];
static unsigned cwd_seq;           /* odd while the cache is written */
static unsigned cwd_epoch = 1;     /* bumped by every change of directory */
static unsigned cwd_cache_epoch;   /* the epoch the cache holds, 0: none */
static char cwd_writing;

void cwd_changed(void)
{
    __atomic_add_fetch(&cwd_epoch, 1, __ATOMIC_ACQ_REL);
}

/* The working directory (the program's view) into OUT (PM_PATH_MAX).
 * Only with PUBLISH does a miss refill the cache: the exec path does not,
 * since in a vfork child (which may have changed directory) the cache is
 * its parent's. */
static int cwd_get(char *out, int publish)
{
    unsigned epoch = __atomic_load_n(&cwd_epoch, __ATOMIC_ACQUIRE);
    unsigned seq = __atomic_load_n(&cwd_seq, __ATOMIC_ACQUIRE);
    if (!(seq & 1) && __atomic_load_n(&cwd_cache_epoch, __ATOMIC_ACQUIRE) == epoch) {
        size_t i = 0;
        for (; i < PM_PATH_MAX - 1; i++) {
            char c = __atomic_load_n(&cwd_cache[i], __ATOMIC_RELAXED);
            out[i] = c;
            if (!c)
                break;
        }
        out[i] = '\0';
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (__atomic_load_n(&cwd_seq, __ATOMIC_RELAXED) == seq && out[0] == '/')
            return 0;
    }
    int r = base_dir(AT_FDCWD, out, PM_PATH_MAX);
    if (r < 0)
        return r;
    if (publish && !__atomic_test_and_set(&cwd_writing, __ATOMIC_ACQUIRE)) {
        __atomic_add_fetch(&cwd_seq, 1, __ATOMIC_ACQ_REL);
        size_t n = pm_strlen(out);
        for (size_t i = 0; i <= n; i++)
            __atomic_store_n(&cwd_cache[i], out[i], __ATOMIC_RELAXED);
        __atomic_store_n(&cwd_cache_epoch, epoch, __ATOMIC_RELEASE);
        __atomic_add_fetch(&cwd_seq, 1, __ATOMIC_ACQ_REL);
        __atomic_clear(&cwd_writing, __ATOMIC_RELEASE);
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* events */

/* The absolute, normalised path of PATH (relative to DIRFD) in the
 * program's view, into OUT (PM_PATH_MAX); PUBLISH as for cwd_get. */
static int absolute(int dirfd, const char *path, char *out, int publish)
{
    char base[PM_PATH_MAX];
    if (path[0] == '/')
        return rec_normalise(out, PM_PATH_MAX, NULL, path);
    int r = dirfd == AT_FDCWD ? cwd_get(base, publish) : base_dir(dirfd, base, sizeof base);
    if (r < 0)
        return r;
    return rec_normalise(out, PM_PATH_MAX, base, path);
}

/* Normalised absolute path of PATH into OUT; 0 when it is to be recorded. */
static int wanted(int dirfd, const char *path, char *out, int publish)
{
    if (!MAYBE_NULL(path) || !*path || rec_quick_skip(&R, path))
        return -1;
    if (absolute(dirfd, path, out, publish) < 0 || rec_skipped(&R, out))
        return -1;
    return 0;
}

__attribute__((noinline, cold)) void rec_path(int op, int dirfd, const char *path, int result)
{
    if (op < 0)
        return;
    int saved = errno;
    char abs[PM_PATH_MAX];
    if (wanted(dirfd, path, abs, op != REC_EXEC) == 0)
        rec_emit(&R, op, result, NULL, abs, pm_strlen(abs));
    errno = saved;
}

__attribute__((noinline, cold)) void rec_result(int op, int dirfd, const char *path, int failed)
{
    rec_path(op, dirfd, path, failed ? errno : 0);
}

__attribute__((noinline, cold)) int rec_exec_before(int dirfd, const char *path,
                                                    const char *check)
{
    int saved = errno, done = 0;
    char abs[PM_PATH_MAX];
    if (wanted(dirfd, path, abs, 0) == 0 && check &&
        nbs_faccessat(dirfd, check, X_OK) == 0) {
        rec_emit(&R, REC_EXEC, 0, NULL, abs, pm_strlen(abs));
        done = 1;
    }
    errno = saved;
    return done;
}

/* ------------------------------------------------------------------------ */
/* the record descriptor moved (preload_fds.c: a dup2/dup3 onto its number) */

void report_fd_moved(int fd)
{
    set_fd_var(fd);
    __atomic_store_n(&R.fd, fd, __ATOMIC_RELEASE);
    /* descendants that take the program's environment find it there */
    for (char **e = environ; e && *e; e++) {
        if (pm_startswith(*e, REC_ENV_FD))
            *e = rec_fd_var;
    }
}

/* ------------------------------------------------------------------------ */
/* the working directory */

EXPORT int fchdir(int fd)
{
    ENSURE();
    long r = nbs_fchdir(fd);
    cwd_changed();
    if (r < 0) {
        errno = (int)-r;
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* connect */

static size_t put_str(char *out, size_t pos, size_t cap, const char *s)
{
    while (*s && pos + 1 < cap)
        out[pos++] = *s++;
    out[pos] = '\0';
    return pos;
}

static size_t put_port(char *out, size_t pos, size_t cap, unsigned port)
{
    char d[8];
    size_t n = 0;
    do {
        d[n++] = (char)('0' + port % 10);
        port /= 10;
    } while (port);
    while (n && pos + 1 < cap)
        out[pos++] = d[--n];
    out[pos] = '\0';
    return pos;
}

static __attribute__((noinline, cold)) void rec_connect(int fd, const struct sockaddr *sa,
                                                        socklen_t len, int result)
{
    if (!sa || len < (socklen_t)sizeof(sa_family_t))
        return;
    int saved = errno;
    char text[PM_PATH_MAX + 64];
    size_t pos = 0;
    const char *prefix = NULL;
    int type = 0;
    socklen_t tl = sizeof type;
    if (sa->sa_family == AF_INET || sa->sa_family == AF_INET6) {
        if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) < 0)
            type = 0;
    }
    if (sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        char ip[INET_ADDRSTRLEN];
        if (inet_ntop(AF_INET, &in->sin_addr, ip, sizeof ip)) {
            prefix = type == SOCK_DGRAM ? "udp:" : "tcp:";
            pos = put_str(text, 0, sizeof text, ip);
            pos = put_str(text, pos, sizeof text, ":");
            put_port(text, pos, sizeof text, ntohs(in->sin_port));
        }
    } else if (sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        char ip[INET6_ADDRSTRLEN];
        if (inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof ip)) {
            prefix = type == SOCK_DGRAM ? "udp6:" : "tcp6:";
            pos = put_str(text, 0, sizeof text, "[");
            pos = put_str(text, pos, sizeof text, ip);
            pos = put_str(text, pos, sizeof text, "]:");
            put_port(text, pos, sizeof text, ntohs(in6->sin6_port));
        }
    } else if (sa->sa_family == AF_UNIX) {
        const struct sockaddr_un *un = (const struct sockaddr_un *)sa;
        size_t n = (size_t)len - offsetof(struct sockaddr_un, sun_path);
        if (n > sizeof un->sun_path)
            n = sizeof un->sun_path;
        if (n > 0 && un->sun_path[0] == '\0') {
            /* abstract: "@name", a NUL inside the name shown as '@' too */
            text[pos++] = '@';
            for (size_t i = 1; i < n; i++)
                text[pos++] = un->sun_path[i] ? un->sun_path[i] : '@';
            text[pos] = '\0';
            prefix = "unix:";
        } else if (n > 0) {
            char name[sizeof un->sun_path + 1];
            size_t k = 0;
            while (k < n && un->sun_path[k])
                k++;
            memcpy(name, un->sun_path, k);
            name[k] = '\0';
            if (k > 0 && wanted(AT_FDCWD, name, text, 1) == 0)
                prefix = "unix:";
        }
    }
    if (prefix)
        rec_emit(&R, REC_CONNECT, result, prefix, text, pm_strlen(text));
    errno = saved;
}

/* The result of a non-blocking connect that is under way (EINPROGRESS):
 * 0 when the socket is already writable without an error (a local peer
 * usually answers at once), else unknown.  A poll with no timeout changes
 * nothing; SO_ERROR would (reading it clears the error the program waits
 * for). */
static int in_progress(int fd, int err)
{
    if (err != EINPROGRESS || !RECORDING())
        return err;
    int saved = errno;
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    int r = poll(&p, 1, 0) == 1 && (p.revents & POLLOUT) && !(p.revents & (POLLERR | POLLHUP))
                ? 0
                : REC_UNKNOWN;
    errno = saved;
    return r;
}

/* glibc declares the address a transparent union for C with _GNU_SOURCE */
EXPORT int connect(int fd, __CONST_SOCKADDR_ARG addr, socklen_t len)
{
    ENSURE();
    int r = CALLI(connect, (fd, addr, len));
    if (RECORDING())
        rec_connect(fd, addr.__sockaddr__, len, r < 0 ? in_progress(fd, errno) : 0);
    return r;
}
