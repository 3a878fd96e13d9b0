/* --report-seccomp: the supervisor that records the program's path-taking
 * and connect system calls (the access report's "seccomp" mechanism, for
 * static programs that no preload library sees; contract in docs/access.md).
 *
 *   launcher (parent)  ── supervisor thread: reads the listener
 *   └── program, under the filter of notify_calls.c, and all it starts
 *
 * The child installs the filter (SECCOMP_FILTER_FLAG_NEW_LISTENER) just
 * before exec and passes the listener to the parent over a socket pair.  The
 * supervisor is the program's ANCESTOR on purpose: reading another process's
 * memory (process_vm_readv, /proc/PID/mem) needs ptrace access, which Yama's
 * ptrace_scope 1 (the default of many distributions) grants only to
 * ancestors.  Orphans in the program's tree are reparented to the launcher
 * (a child subreaper), so they stay its descendants.
 *
 * For each notification the supervisor reads the path argument(s), makes
 * them absolute (the working directory or the dirfd's directory, from
 * /proc/PID), drops those under a skip prefix, checks that the notification
 * is still valid, writes the record and lets the call continue
 * (SECCOMP_USER_NOTIF_FLAG_CONTINUE): the kernel then runs it as if no filter
 * had been there.  Every notification gets its answer, whatever happened
 * while looking at it; otherwise the program would wait forever.
 *
 * This is a REPORT, not a security boundary: between the supervisor's read
 * and the kernel's own, another thread of the program can change the path in
 * memory (a time-of-check/time-of-use race), so a record may name another
 * path than the one the call used.  The ID_VALID check only makes sure that
 * the pid the record names is still the caller.
 *
 * The result field is the supervisor's own check, just before the call runs:
 * for open, list, stat, readlink and exec, 0 if the path exists as the
 * supervisor sees it (stat, or lstat for calls that do not follow a last
 * symlink), else that errno (2 for a missing file); for write and connect,
 * "-" (unknown).  It is not the call's outcome: a permission the program
 * lacks still gives 0.
 */
#include "nbs.h"
#include "notify.h"
#include "notify_record.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#ifndef __NR_pidfd_open
#define __NR_pidfd_open 434
#endif
#ifndef __NR_pidfd_getfd
#define __NR_pidfd_getfd 438
#endif
#ifndef AT_EMPTY_PATH
#define AT_EMPTY_PATH 0x1000
#endif

void report_seccomp_channel(int sv[2])
{
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
        die_err(errno, NULL, "%s: socketpair", REPORT_SECCOMP_OPTION);
}

void report_seccomp_install(int sock)
{
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        die_err(errno, NULL, "prctl(PR_SET_NO_NEW_PRIVS)");
    int listener = notify_install_filter();
    if (listener < 0) {
        int e = errno;
        die_err(e,
                e == EBUSY ? "another supervisor already watches this process (a nested "
                             "report?)"
                           : "the kernel needs seccomp user notification, Linux 5.5",
                "%s: installing the seccomp filter", REPORT_SECCOMP_OPTION);
    }
    /* A line of its own: on the status socket (PRoot, report.c) the
     * supervisor reads lines. */
    char data[] = "L\n";
    struct iovec iov = {.iov_base = data, .iov_len = 2};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    memset(&u, 0, sizeof u);
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                         .msg_controllen = sizeof u.buf};
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &listener, sizeof listener);
    ssize_t n;
    while ((n = sendmsg(sock, &msg, MSG_NOSIGNAL)) < 0 && errno == EINTR)
        ;
    if (n != 2)
        die_err(n < 0 ? errno : EIO, NULL, "%s: handing the listener to the supervisor",
                REPORT_SECCOMP_OPTION);
    /* The program must not hold it. */
    close(listener);
    close(sock);
}

/* ---- reading the caller ------------------------------------------------ */

/* LEN bytes at ADDR in PID; 0 or -1.  Page by page, so that a string that
 * ends just before an unmapped page is still read. */
static int read_mem(pid_t pid, uint64_t addr, void *buf, size_t len)
{
    struct iovec local = {.iov_base = buf, .iov_len = len};
    struct iovec remote = {.iov_base = (void *)(uintptr_t)addr, .iov_len = len};
    ssize_t n = process_vm_readv(pid, &local, 1, &remote, 1, 0);
    if (n == (ssize_t)len)
        return 0;
    if (n >= 0 || (errno != ENOSYS && errno != EPERM))
        return -1;
    /* Without process_vm_readv (some seccomp profiles deny it). */
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/mem", (long)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    n = pread(fd, buf, len, (off_t)addr);
    close(fd);
    return n == (ssize_t)len ? 0 : -1;
}

/* The NUL-terminated string at ADDR, at most SIZE - 1 bytes; its length, or
 * -1 (unreadable, or too long). */
static ssize_t read_string(pid_t pid, uint64_t addr, char *out, size_t size)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE), got = 0;
    while (got < size - 1) {
        size_t chunk = page - (size_t)((addr + got) % page);
        if (chunk > size - 1 - got)
            chunk = size - 1 - got;
        if (read_mem(pid, addr + got, out + got, chunk) != 0)
            return -1;
        char *nul = memchr(out + got, '\0', chunk);
        if (nul)
            return nul - out;
        got += chunk;
    }
    return -1;
}

/* The directory a relative path starts from: the caller's working directory
 * or DIRFD's; false if it is not a directory path (e.g. a deleted one). */
static bool base_dir(pid_t pid, int dirfd, char out[PATH_MAX])
{
    char link[64];
    if (dirfd == AT_FDCWD)
        snprintf(link, sizeof link, "/proc/%ld/cwd", (long)pid);
    else
        snprintf(link, sizeof link, "/proc/%ld/fd/%d", (long)pid, dirfd);
    ssize_t n = readlink(link, out, PATH_MAX - 1);
    if (n <= 0)
        return false;
    out[n] = '\0';
    return out[0] == '/';
}

struct caller {
    pid_t tid;
    long tgid;
    char name[NAME_MAX + 1];
};

/* The process (not the thread) and its program's short name: the basename
 * of its executable, or its "comm" (cut at 15 bytes) when that is unknown. */
static void identify_from_proc(struct caller *c)
{
    char path[64], buf[1024];
    c->tgid = c->tid;
    snprintf(c->name, sizeof c->name, "?");
    snprintf(path, sizeof path, "/proc/%ld/status", (long)c->tid);
    if (read_small_file(path, buf, sizeof buf) == 0) {
        if (!strncmp(buf, "Name:\t", 6)) {
            size_t len = strcspn(buf + 6, "\n");
            if (len >= sizeof c->name)
                len = sizeof c->name - 1;
            memcpy(c->name, buf + 6, len);
            c->name[len] = '\0';
        }
        const char *t = strstr(buf, "\nTgid:");
        if (t)
            c->tgid = strtol(t + 6, NULL, 10);
    }
    if (strlen(c->name) < 15)
        return; /* comm is whole */
    char exe[PATH_MAX];
    snprintf(path, sizeof path, "/proc/%ld/exe", (long)c->tid);
    ssize_t n = readlink(path, exe, sizeof exe - 1);
    if (n <= 0)
        return;
    exe[n] = '\0';
    const char *base = strrchr(exe, '/');
    base = base ? base + 1 : exe;
    size_t len = strlen(base);
    static const char deleted[] = " (deleted)";
    if (len > strlen(deleted) && !strcmp(base + len - strlen(deleted), deleted))
        len -= strlen(deleted);
    if (len > 0 && len < sizeof c->name) {
        memcpy(c->name, base, len);
        c->name[len] = '\0';
    }
}

/* What identify_from_proc() found, per thread id, while the process lives:
 * reading /proc/PID/status costs more than the rest of a notification (and
 * under PRoot every system call of the supervisor is traced).  A pidfd of the
 * process tells, with one poll, whether it has ended, after which its pid may
 * name another process; an exec makes its name stale (forget_process()).  A
 * thread id reused by another process while the cached one still lives could
 * show the old name: rare, and only the name. */
#define NCACHE 64
static struct {
    struct caller who;
    int pidfd; /* -1: empty slot */
} cache[NCACHE] = {[0 ... NCACHE - 1] = {.pidfd = -1}};

static void identify(struct caller *c)
{
    unsigned slot = (unsigned)c->tid % NCACHE;
    if (cache[slot].pidfd >= 0 && cache[slot].who.tid == c->tid) {
        struct pollfd p = {.fd = cache[slot].pidfd, .events = POLLIN};
        if (poll(&p, 1, 0) == 0) {
            *c = cache[slot].who;
            return;
        }
    }
    identify_from_proc(c);
    if (cache[slot].pidfd >= 0)
        close(cache[slot].pidfd);
    cache[slot].who = *c;
    cache[slot].pidfd = (int)syscall(__NR_pidfd_open, (pid_t)c->tgid, 0);
    if (cache[slot].pidfd >= 0)
        (void)fcntl(cache[slot].pidfd, F_SETFD, FD_CLOEXEC);
}

/* PROCESS is executing a new program: its name is to be read again. */
static void forget_process(long tgid)
{
    for (size_t k = 0; k < NCACHE; k++)
        if (cache[k].pidfd >= 0 && cache[k].who.tgid == tgid) {
            close(cache[k].pidfd);
            cache[k].pidfd = -1;
        }
}

/* ---- one notification ---------------------------------------------------- */

struct event {
    enum notify_op op;
    bool nofollow;
    char path[PATH_MAX * 2];
};

/* The absolute path of argument PATH_ARG (relative to DIRFD_ARG); false if
 * nothing is to be recorded for it. */
static bool read_path(const struct seccomp_notif *req, int dirfd_arg, int path_arg,
                      struct event *ev)
{
    uint64_t addr = req->data.args[path_arg];
    if (addr == 0)
        return false; /* utimensat(fd, NULL, ...): on a descriptor */
    char raw[PATH_MAX];
    ssize_t len = read_string((pid_t)req->pid, addr, raw, sizeof raw);
    if (len <= 0)
        return false; /* unreadable (the call fails with EFAULT), or "" */
    char base[PATH_MAX] = "/";
    if (raw[0] != '/') {
        int dirfd = dirfd_arg < 0 ? AT_FDCWD : (int)req->data.args[dirfd_arg];
        if (!base_dir((pid_t)req->pid, dirfd, base))
            return false;
    }
    return path_join(ev->path, sizeof ev->path, base, raw) && !record_skipped(ev->path);
}

static const char *sock_family_name(int type, bool v6)
{
    if (type == SOCK_DGRAM)
        return v6 ? "udp6" : "udp";
    return v6 ? "tcp6" : "tcp";
}

/* The socket type of the caller's descriptor FD (SOCK_STREAM if unknown). */
static int socket_type(long tgid, int fd)
{
    int type = SOCK_STREAM;
    int pidfd = (int)syscall(__NR_pidfd_open, (pid_t)tgid, 0);
    if (pidfd < 0)
        return type;
    int copy = (int)syscall(__NR_pidfd_getfd, pidfd, fd, 0);
    if (copy >= 0) {
        socklen_t len = sizeof type;
        if (getsockopt(copy, SOL_SOCKET, SO_TYPE, &type, &len) != 0)
            type = SOCK_STREAM;
        close(copy);
    }
    close(pidfd);
    return type;
}

/* connect(fd, addr, len): "tcp:1.2.3.4:80", "unix:/path", "unix:@name"... */
static bool read_connect(const struct seccomp_notif *req, struct caller *who, struct event *ev)
{
    struct sockaddr_storage sa;
    uint64_t len = req->data.args[2];
    if (req->data.args[1] == 0 || len < sizeof(sa_family_t))
        return false;
    if (len > sizeof sa)
        len = sizeof sa;
    memset(&sa, 0, sizeof sa);
    if (read_mem((pid_t)req->pid, req->data.args[1], &sa, (size_t)len) != 0)
        return false;
    char addr[INET6_ADDRSTRLEN];
    int fd = (int)req->data.args[0];
    if (who->tgid == 0)
        identify(who); /* socket_type() needs the process */
    if (sa.ss_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)&sa;
        inet_ntop(AF_INET, &in->sin_addr, addr, sizeof addr);
        snprintf(ev->path, sizeof ev->path, "%s:%s:%u",
                 sock_family_name(socket_type(who->tgid, fd), false), addr, ntohs(in->sin_port));
        return true;
    }
    if (sa.ss_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, addr, sizeof addr);
        snprintf(ev->path, sizeof ev->path, "%s:[%s]:%u",
                 sock_family_name(socket_type(who->tgid, fd), true), addr, ntohs(in6->sin6_port));
        return true;
    }
    if (sa.ss_family != AF_UNIX)
        return false; /* AF_UNSPEC (disconnect), netlink...: nothing named */
    const struct sockaddr_un *un = (const struct sockaddr_un *)&sa;
    size_t plen = (size_t)len - offsetof(struct sockaddr_un, sun_path);
    char name[sizeof un->sun_path + 1];
    if (plen == 0)
        return false;
    if (un->sun_path[0] == '\0') {
        /* Abstract: the name is every byte after the NUL, NULs included;
         * shown up to the first NUL of the rest. */
        memcpy(name, un->sun_path + 1, plen - 1);
        name[plen - 1] = '\0';
        snprintf(ev->path, sizeof ev->path, "unix:@%s", name);
        return true;
    }
    memcpy(name, un->sun_path, plen);
    name[plen] = '\0';
    char base[PATH_MAX] = "/", joined[PATH_MAX];
    if (name[0] != '/' && !base_dir((pid_t)req->pid, AT_FDCWD, base))
        return false;
    if (!path_join(joined, sizeof joined, base, name) || record_skipped(joined))
        return false;
    snprintf(ev->path, sizeof ev->path, "unix:%s", joined);
    return true;
}

/* The op of an open by its flags. */
static enum notify_op open_op(uint64_t flags, bool *nofollow)
{
    *nofollow = flags & O_NOFOLLOW;
    if (flags & O_PATH)
        return OP_STAT;
    if ((flags & O_ACCMODE) != O_RDONLY || (flags & (O_CREAT | O_TRUNC)))
        return OP_WRITE;
    if (flags & O_DIRECTORY)
        return OP_LIST;
    return OP_OPEN;
}

/* Up to two events for REQ; how many. */
static int decode(const struct seccomp_notif *req, struct caller *who, struct event ev[2])
{
    const struct notify_call *c = notify_call_of(req->data.nr);
    if (!c)
        return 0;
    ev[0].op = (enum notify_op)c->op;
    ev[0].nofollow = c->kind == K_NOFOLLOW;
    uint64_t atflags = 0;
    switch (c->kind) {
    case K_CONNECT:
        return read_connect(req, who, &ev[0]) ? 1 : 0;
    case K_OPEN:
        ev[0].op = open_op(req->data.args[c->flags], &ev[0].nofollow);
        break;
    case K_OPENAT2: {
        uint64_t flags;
        if (read_mem((pid_t)req->pid, req->data.args[c->flags], &flags, sizeof flags) != 0)
            return 0;
        ev[0].op = open_op(flags, &ev[0].nofollow);
        break;
    }
    case K_AT:
        atflags = req->data.args[c->flags];
        ev[0].nofollow = atflags & AT_SYMLINK_NOFOLLOW;
        break;
    default:
        break;
    }
    int n = 0;
    /* AT_EMPTY_PATH with "": the call is on the descriptor, no path; read_path
     * skips "" (without the flag such a call fails with ENOENT). */
    (void)atflags;
    if (read_path(req, c->dirfd, c->path, &ev[n]))
        n++;
    if (c->path2 >= 0) {
        ev[n].op = ev[0].op;
        ev[n].nofollow = true;
        if (read_path(req, c->dirfd2, c->path2, &ev[n]))
            n++;
    }
    return n;
}

static void result_of(const struct event *ev, char out[16])
{
    if (ev->op == OP_WRITE || ev->op == OP_CONNECT) {
        strcpy(out, "-");
        return;
    }
    struct stat st;
    int r = ev->nofollow ? lstat(ev->path, &st) : stat(ev->path, &st);
    snprintf(out, 16, "%d", r == 0 ? 0 : errno);
}

static void handle(int listener, const struct seccomp_notif *req)
{
    struct caller who = {.tid = (pid_t)req->pid};
    struct event ev[2];
    const struct notify_call *c = notify_call_of(req->data.nr);
    bool exec = c && c->op == OP_EXEC;
    int n = decode(req, &who, ev);
    /* An exec (rare) reads /proc afresh: the cache may not know this thread,
     * and every entry of its process is to be forgotten. */
    if (exec)
        identify_from_proc(&who);
    else if (n > 0 && who.tgid == 0)
        identify(&who);
    /* Still the same call of the same process?  (Else the pid may already
     * name another process, and the memory read was someone else's.) */
    uint64_t id = req->id;
    if (n > 0 && ioctl(listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &id) == 0) {
        for (int k = 0; k < n; k++) {
            if (ev[k].op == OP_EXEC && record_is_loader(ev[k].path))
                continue;
            char result[16];
            result_of(&ev[k], result);
            record_write(ev[k].op, result, who.tgid, who.name, ev[k].path);
        }
    }
    if (exec)
        forget_process(who.tgid);
    struct seccomp_notif_resp resp = {.id = req->id, .flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE};
    /* ENOENT: the caller is gone or was interrupted; nothing to answer. */
    (void)ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, &resp);
}

static int listener = -1;
static size_t notif_size;

static void *serve(void *arg)
{
    (void)arg;
    size_t size = notif_size;
    struct seccomp_notif *req = xcalloc(1, size);
    for (;;) {
        struct pollfd p = {.fd = listener, .events = POLLIN};
        if (poll(&p, 1, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (p.revents & POLLIN) {
            memset(req, 0, size);
            if (ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, req) != 0) {
                if (errno == EINTR || errno == ENOENT)
                    continue; /* the caller went away meanwhile */
                break;
            }
            handle(listener, req);
        } else if (p.revents & (POLLHUP | POLLERR | POLLNVAL)) {
            break; /* no process under the filter is left */
        }
    }
    free(req);
    close(listener);
    return NULL;
}

int report_seccomp_take_listener(struct msghdr *msg)
{
    for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR(msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS ||
            c->cmsg_len != CMSG_LEN(sizeof(int)))
            continue;
        int fd;
        memcpy(&fd, CMSG_DATA(c), sizeof fd);
        return fd;
    }
    return -1;
}

void report_seccomp_serve(int sock)
{
    char data[2];
    struct iovec iov = {.iov_base = data, .iov_len = sizeof data};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                         .msg_controllen = sizeof u.buf};
    ssize_t n;
    while ((n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR)
        ;
    close(sock);
    int fd = n > 0 ? report_seccomp_take_listener(&msg) : -1;
    if (fd >= 0) /* else the child died before: its status tells why */
        report_seccomp_start(fd);
}

void report_seccomp_start(int fd)
{
    if (listener >= 0) {
        close(fd); /* one listener per run */
        return;
    }
    listener = fd;
    struct seccomp_notif_sizes sizes;
    if (syscall(__NR_seccomp, SECCOMP_GET_NOTIF_SIZES, 0, &sizes) != 0)
        die_err(errno, NULL, "%s: SECCOMP_GET_NOTIF_SIZES", REPORT_SECCOMP_OPTION);
    /* The kernel's structure may be larger than ours (newer fields). */
    notif_size = sizes.seccomp_notif > sizeof(struct seccomp_notif) ? sizes.seccomp_notif
                                                                     : sizeof(struct seccomp_notif);
    /* The thread takes no signal: they are the main thread's (its waitpid
     * must see EINTR, its signalfd must get them). */
    sigset_t all, saved;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &saved);
    pthread_t thread;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int e = pthread_create(&thread, &attr, serve, NULL);
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &saved, NULL);
    if (e != 0)
        die_err(e, NULL, "%s: starting the supervisor thread", REPORT_SECCOMP_OPTION);
}
