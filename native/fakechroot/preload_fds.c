/* nbs-preload: the engine's own descriptors.
 *
 * Two kinds: the access report's descriptor (R.fd, preload_report.c) and one
 * O_PATH descriptor per read-only mapping (the store's, hidden directories')
 * whose host directory (TO) is held open, so that a store path becomes (that
 * descriptor, the rest of the path) and the kernel never walks the
 * components of the unpack location again (preload.h: map_path_at).
 *
 * Held directories are opened lazily, on a mapping's first use, published
 * with a compare-and-exchange (a thread that loses closes its own), and
 * close-on-exec: a new program image opens its own.  They are opened at or
 * above ENGINE_FD_MIN, away from the numbers programs pick themselves.
 *
 * The program must not be able to close or replace any of them: close() of
 * one of our numbers pretends to succeed, close_range() and closefrom() skip
 * them, and a dup2()/dup3() onto one moves ours to another number first.
 * Only the process that owns the descriptor table they were published for
 * (the first one, and every fork() child: a pthread_atfork handler) opens or
 * moves them: a vfork() child shares our memory but not our descriptor
 * table, and what it published would be wrong in its parent.  There a dup2()
 * onto a held directory makes the mapping go back to full host paths.
 *
 * Everything here is a raw system call or an atomic operation on static
 * words: no lock, no allocation, safe in signal handlers and vfork children.
 */
#include "preload.h"

#include <pthread.h>
#include <sys/resource.h>

#define ENGINE_FD_MIN 100 /* where our descriptors go */

/* held[i]: 0 not opened yet, -1 not to be used (a writable mapping, TO is
 * not a directory or could not be opened, or a vfork child took its
 * number), else fd + 1 */
int held[PM_MAX_MAPS];
/* the process whose descriptor table the held numbers belong to */
static long owner_pid;

/* ------------------------------------------------------------------------ */
/* held directories */

static void forked(void)
{
    __atomic_store_n(&owner_pid, nbs_getpid(), __ATOMIC_RELAXED);
}

void engine_fds_init(void)
{
    __atomic_store_n(&owner_pid, nbs_getpid(), __ATOMIC_RELAXED);
}

void engine_fds_atfork(void)
{
    pthread_atfork(NULL, NULL, forked);
}

static int is_owner(void)
{
    return nbs_getpid() == __atomic_load_n(&owner_pid, __ATOMIC_RELAXED);
}

int held_open(unsigned i)
{
    if (!active || i >= T.n || !is_owner())
        return -1;
    const struct pm_map *m = &T.map[i];
    struct stat ref, st;
    long fd = -1;
    /* only read-only mappings: the program may remove and re-create a
     * writable directory (a mount point would be busy), which a held
     * descriptor would not follow */
    if ((m->flags & PM_RO) && nbs_fstatat(AT_FDCWD, m->to, &ref, 0) == 0 &&
        S_ISDIR(ref.st_mode))
        fd = nbs_openat(AT_FDCWD, m->to, O_PATH | O_DIRECTORY | O_CLOEXEC, 0);
    if (fd < 0) {
        int expected = 0;
        __atomic_compare_exchange_n(&held[i], &expected, -1, 0, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE);
        return -1;
    }
    long high = nbs_fcntl((int)fd, F_DUPFD_CLOEXEC, ENGINE_FD_MIN);
    if (high >= 0) {
        nbs_close((int)fd);
        fd = high;
    }
    /* the directory named TO when we looked (a thread of the program that
     * closed and reused the first number in between gives something else) */
    if (nbs_fstat((int)fd, &st) < 0 || st.st_dev != ref.st_dev || st.st_ino != ref.st_ino) {
        if (high >= 0)
            nbs_close((int)fd);
        return -1;
    }
    int expected = 0;
    if (__atomic_compare_exchange_n(&held[i], &expected, (int)fd + 1, 0, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE))
        return (int)fd;
    nbs_close((int)fd); /* another thread was first */
    return expected > 0 ? expected - 1 : -1;
}

/* A held descriptor the kernel says is gone (EBADF: closed behind our back,
 * by a raw system call): open the directory again on next use. */
void held_lost(int fd)
{
    for (unsigned i = 0; i < T.n; i++) {
        int expected = fd + 1;
        __atomic_compare_exchange_n(&held[i], &expected, 0, 0, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE);
    }
}

const struct pm_map *held_mapping(int fd)
{
    for (unsigned i = 0; i < T.n; i++) {
        if (__atomic_load_n(&held[i], __ATOMIC_ACQUIRE) == fd + 1)
            return &T.map[i];
    }
    return NULL;
}

void held_drop_all(void)
{
    for (unsigned i = 0; i < T.n; i++)
        __atomic_store_n(&held[i], -1, __ATOMIC_RELEASE);
}

/* ------------------------------------------------------------------------ */
/* keeping them open */

/* Whether FD is one of the engine's descriptors. */
static int is_engine_fd(int fd)
{
    if (fd < 0)
        return 0;
    if (fd == __atomic_load_n(&R.fd, __ATOMIC_ACQUIRE))
        return 1;
    for (unsigned i = 0; i < T.n; i++) {
        if (__atomic_load_n(&held[i], __ATOMIC_ACQUIRE) == fd + 1)
            return 1;
    }
    return 0;
}

/* The engine's descriptors, sorted, into OUT (PM_MAX_MAPS + 1 entries). */
static size_t engine_fds(int *out)
{
    size_t n = 0;
    int r = __atomic_load_n(&R.fd, __ATOMIC_ACQUIRE);
    if (r >= 0)
        out[n++] = r;
    for (unsigned i = 0; i < T.n; i++) {
        int v = __atomic_load_n(&held[i], __ATOMIC_ACQUIRE);
        if (v > 0)
            out[n++] = v - 1;
    }
    for (size_t i = 1; i < n; i++) {
        int v = out[i];
        size_t j = i;
        for (; j > 0 && out[j - 1] > v; j--)
            out[j] = out[j - 1];
        out[j] = v;
    }
    return n;
}

/* Move the record descriptor away from its number (dup2/dup3 onto it). */
static int move_record_fd(void)
{
    int old = R.fd;
    long n = nbs_fcntl(old, F_DUPFD, ENGINE_FD_MIN);
    if (n < 0) {
        errno = (int)-n;
        return -1;
    }
    report_fd_moved((int)n);
    return 0;
}

/* Make the number FD free for the program's dup2/dup3: move whatever of
 * ours has it.  -1 with errno set when that fails. */
static int vacate(int fd)
{
    if (fd == __atomic_load_n(&R.fd, __ATOMIC_ACQUIRE))
        return move_record_fd();
    for (unsigned i = 0; i < T.n; i++) {
        int v = fd + 1;
        if (__atomic_load_n(&held[i], __ATOMIC_ACQUIRE) != v)
            continue;
        if (!is_owner()) {
            /* a vfork child: the parent's table still has ours there */
            __atomic_store_n(&held[i], -1, __ATOMIC_RELEASE);
            continue;
        }
        long moved = nbs_fcntl(fd, F_DUPFD_CLOEXEC, ENGINE_FD_MIN);
        int want = moved >= 0 ? (int)moved + 1 : 0; /* 0: open it again when needed */
        if (!__atomic_compare_exchange_n(&held[i], &v, want, 0, __ATOMIC_ACQ_REL,
                                         __ATOMIC_ACQUIRE) && moved >= 0)
            nbs_close((int)moved);
    }
    return 0;
}

EXPORT int close(int fd)
{
    ENSURE();
    if (UNLIKELY(is_engine_fd(fd)))
        return 0; /* pretend: ours must survive the program's clean-ups */
    return CALLI(close, (fd));
}

static long close_range_keeping(unsigned first, unsigned last, int flags)
{
    int keep[PM_MAX_MAPS + 1];
    size_t n = engine_fds(keep);
    if (first > last)
        return nbs_close_range(first, last, (unsigned)flags); /* the kernel's EINVAL */
    unsigned lo = first;
    for (size_t i = 0; i < n; i++) {
        unsigned k = (unsigned)keep[i];
        if (k < lo)
            continue;
        if (k > last)
            break;
        if (k > lo) {
            long r = nbs_close_range(lo, k - 1, (unsigned)flags);
            if (r < 0)
                return r;
        }
        lo = k + 1;
    }
    if (lo > last)
        return 0; /* ours was the last number */
    return nbs_close_range(lo, last, (unsigned)flags);
}

EXPORT int close_range(unsigned int first, unsigned int last, int flags)
{
    ENSURE();
    long r = close_range_keeping(first, last, flags);
    if (r < 0) {
        errno = (int)-r;
        return -1;
    }
    return 0;
}

EXPORT void closefrom(int low)
{
    ENSURE();
    unsigned first = low < 0 ? 0u : (unsigned)low;
    if (close_range_keeping(first, ~0u, 0) == 0)
        return;
    /* a kernel without close_range (before 5.9) */
    struct rlimit rl;
    unsigned long max = 65536;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < max)
        max = (unsigned long)rl.rlim_cur;
    for (unsigned long fd = first; fd < max; fd++) {
        if (!is_engine_fd((int)fd))
            nbs_close((int)fd);
    }
}

EXPORT int dup2(int old, int new)
{
    ENSURE();
    if (UNLIKELY(new >= 0 && old != new && is_engine_fd(new)) && vacate(new) < 0)
        return -1;
    return CALLI(dup2, (old, new));
}

EXPORT int dup3(int old, int new, int flags)
{
    ENSURE();
    if (UNLIKELY(new >= 0 && old != new && is_engine_fd(new)) && vacate(new) < 0)
        return -1;
    return CALLI(dup3, (old, new, flags));
}
