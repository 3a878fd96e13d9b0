/* nbs-preload: the preload library of nbsandbox's fakechroot engine.
 *
 * Loaded into every store program (`ld.so --audit nbs-audit.so --preload
 * nbs-preload.so PROGRAM`), it makes the program see the store at its
 * prefix: every libc entry point that takes a path translates sandbox paths
 * to host paths (pathmap.c), the few that return paths translate them back,
 * writes into read-only mappings fail with EROFS, and exec/spawn of another
 * store program goes through the store's ld.so again.
 *
 * Rules for this file:
 *  - the fast path (a path not under any mapping, or a plain store path) is
 *    a prefix comparison and a copy into a stack buffer: no system call, no
 *    lock, no allocation;
 *  - configuration is parsed once at load time and read-only afterwards;
 *  - the exec path runs inside vfork() children: stack buffers and raw
 *    system calls only, no malloc, no locks;
 *  - every buffer is fixed-size; paths that do not fit fail with
 *    ENAMETOOLONG.
 */
#include "compat.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <utime.h>

#include "pathmap.h"
#include "sys.h"

#define EXPORT __attribute__((visibility("default")))

/* glibc declares most path arguments nonnull, but programs do pass NULL (the
 * kernel answers EFAULT): hide the pointer from that assumption. */
static inline const void *opaque(const void *p)
{
    __asm__("" : "+r"(p));
    return p;
}
#define MAYBE_NULL(p) ((__typeof__(p))opaque(p))
#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)

extern char **environ;
extern void __chk_fail(void) __attribute__((noreturn));

/* Old stat entry points (every glibc exports them for programs built before 2.33). */
struct stat64;
int __xstat(int ver, const char *path, struct stat *st);
int __lxstat(int ver, const char *path, struct stat *st);
int __fxstatat(int ver, int dirfd, const char *path, struct stat *st, int flags);
int __xstat64(int ver, const char *path, struct stat64 *st);
int __lxstat64(int ver, const char *path, struct stat64 *st);
int __fxstatat64(int ver, int dirfd, const char *path, struct stat64 *st, int flags);
int __xmknod(int ver, const char *path, mode_t mode, dev_t *dev);
int __xmknodat(int ver, int dirfd, const char *path, mode_t mode, dev_t *dev);
int __open_2(const char *path, int flags);
int __open64_2(const char *path, int flags);
int __openat_2(int dirfd, const char *path, int flags);
int __openat64_2(int dirfd, const char *path, int flags);
char *__getcwd_chk(char *buf, size_t size, size_t buflen);
ssize_t __readlink_chk(const char *path, char *buf, size_t len, size_t buflen);
ssize_t __readlinkat_chk(int dirfd, const char *path, char *buf, size_t len, size_t buflen);
char *__realpath_chk(const char *path, char *resolved, size_t resolvedlen);
int lchmod(const char *path, mode_t mode);
int execveat(int dirfd, const char *path, char *const argv[], char *const envp[], int flags);
int posix_spawn_file_actions_addchdir_np(posix_spawn_file_actions_t *fa, const char *path);

/* ------------------------------------------------------------------------ */
/* state: written once by init, read-only afterwards */

static struct pm_table T;
static int active;
static char config_var[sizeof PM_ENV_CONFIG + PM_CONFIG_MAX];
static char exe_sbx[PM_PATH_MAX];  /* what /proc/self/exe shows, "" if not ours */
static char exe_host[PM_PATH_MAX]; /* where that file is */
static char argv0_buf[PM_PATH_MAX];
static int argv0_pending;
/* may_map[c]: some mapping's sandbox dir (or /proc, //, /.) starts with "/c";
 * all zeros until the configuration is loaded */
static unsigned char may_map[256];
static int init_state; /* 0: not yet, 1: running, 2: done */
static long init_tid;

/* ------------------------------------------------------------------------ */
/* the next definitions of the functions we interpose */

static void *next_sym(const char *name)
{
    return dlsym(RTLD_NEXT, name);
}

#define REAL_FUNCTIONS(X)                                                                       \
    X(openat) X(fopen) X(fopen64) X(freopen) X(freopen64) X(opendir) X(scandir) X(scandir64)     \
    X(scandirat) X(faccessat) X(euidaccess) X(eaccess) X(chdir) X(mkdirat) X(rmdir)             \
    X(unlinkat) X(renameat) X(renameat2) X(linkat) X(symlinkat) X(fchmodat) X(chmod)            \
    X(lchmod) X(fchownat) X(chown) X(lchown) X(utime) X(utimes) X(lutimes) X(futimesat)         \
    X(utimensat) X(truncate) X(truncate64) X(remove) X(statfs) X(statfs64) X(statvfs)            \
    X(statvfs64) X(pathconf) X(setxattr) X(lsetxattr) X(getxattr) X(lgetxattr) X(listxattr)     \
    X(llistxattr) X(removexattr) X(lremovexattr) X(inotify_add_watch) X(mkstemp) X(mkostemp)     \
    X(mkstemps) X(mkostemps) X(mkdtemp) X(chroot) X(getcwd) X(realpath) X(execve) X(fexecve)     \
    X(execveat) X(posix_spawn) X(posix_spawnp) X(posix_spawn_file_actions_addopen)              \
    X(posix_spawn_file_actions_addchdir_np) X(system) X(popen) X(pclose) X(execvpe)

#define DECLARE_REAL(f) static __typeof__(f) *real_##f;
REAL_FUNCTIONS(DECLARE_REAL)
#undef DECLARE_REAL

static void resolve_all(void)
{
#define RESOLVE_REAL(f) real_##f = (__typeof__(f) *)next_sym(#f);
    REAL_FUNCTIONS(RESOLVE_REAL)
#undef RESOLVE_REAL
}

/* The next definition of F; looked up on first use if init has not done it. */
#define REAL(f) (real_##f ? real_##f : (real_##f = (__typeof__(f) *)next_sym(#f)))
/* Call the next F, or fail with ENOSYS where this glibc has none. */
#define CALLI(f, args) (REAL(f) ? real_##f args : (errno = ENOSYS, -1))
#define CALLP(f, args) (REAL(f) ? real_##f args : (errno = ENOSYS, NULL))

/* ------------------------------------------------------------------------ */
/* init */

static void say(const char *a, const char *b, const char *c, const char *d)
{
    const char *parts[5] = {"nbsandbox: fakechroot: ", a, b, c, d};
    for (int i = 0; i < 5; i++) {
        if (parts[i])
            (void)!nbs_write(2, parts[i], pm_strlen(parts[i]));
    }
    (void)!nbs_write(2, "\n", 1);
}

static long fs_readlink(void *ctx, const char *host, char *buf, size_t n);
static const struct pm_fs FS = {0, fs_readlink};

/* Remove the engine's variables from the environment, in place: the program
 * must not see them (and a later setenv() must not resurrect them). */
static void strip_environment(void)
{
    char **e = environ;
    if (!e)
        return;
    size_t w = 0;
    for (size_t r = 0; e[r]; r++) {
        char *v = e[r];
        if (pm_env_is_ours(v))
            continue;
        if (T.preload && pm_startswith(v, "LD_PRELOAD=")) {
            const char *rest = pm_preload_strip(v + 11, T.preload);
            if (rest) {
                if (!*rest)
                    continue;
                memmove(v + 11, rest, pm_strlen(rest) + 1);
            }
        }
        e[w++] = v;
    }
    e[w] = NULL;
}

static void do_init(void)
{
    const char *cfg = NULL, *exe = NULL, *argv0 = NULL, *cwd = NULL;
    for (char **e = environ; e && *e; e++) {
        if (!pm_env_is_ours(*e))
            continue;
        if (pm_startswith(*e, PM_ENV_CONFIG))
            cfg = *e;
        else if (pm_startswith(*e, PM_ENV_EXE))
            exe = *e + sizeof PM_ENV_EXE - 1;
        else if (pm_startswith(*e, PM_ENV_ARGV0))
            argv0 = *e + sizeof PM_ENV_ARGV0 - 1;
        else if (pm_startswith(*e, PM_ENV_CWD))
            cwd = *e + sizeof PM_ENV_CWD - 1;
    }
    resolve_all();
    if (!cfg)
        return;
    if (pm_copy(config_var, sizeof config_var, cfg) < 0) {
        say("configuration too long; paths will not be translated", 0, 0, 0);
        return;
    }
    const char *text = config_var + sizeof PM_ENV_CONFIG - 1;
    if (pm_config_parse(&T, text, pm_strlen(text)) < 0) {
        say("invalid configuration; paths will not be translated", 0, 0, 0);
        return;
    }
    if (exe && *exe == '/' && pm_copy(exe_sbx, sizeof exe_sbx, exe) == 0) {
        if (pm_resolve(&T, &FS, exe_sbx, PM_FOLLOW, exe_host, sizeof exe_host, 0, 0) < 0)
            exe_sbx[0] = '\0';
    }
    if (argv0 && pm_copy(argv0_buf, sizeof argv0_buf, argv0) == 0)
        argv0_pending = 1;
    for (unsigned i = 0; i < T.n; i++)
        may_map[(unsigned char)T.map[i].from[1]] = 1;
    may_map['/'] = may_map['.'] = 1;
    if (exe_sbx[0])
        may_map['p'] = 1;
    active = 1;
    if (cwd) {
        char host[PM_PATH_MAX];
        int r = cwd[0] == '/' ? pm_resolve(&T, &FS, cwd, PM_FOLLOW, host, sizeof host, 0, 0)
                              : -EINVAL;
        if (r == 0 && (!REAL(chdir) || real_chdir(host) < 0))
            r = -errno;
        if (r < 0) {
            say("cannot change to directory ", cwd, ": ", strerror(-r));
            _exit(125);
        }
    }
    strip_environment();
}

static void init_slow(void)
{
    int expected = 0;
    if (__atomic_compare_exchange_n(&init_state, &expected, 1, 0, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE)) {
        init_tid = nbs_gettid();
        do_init();
        __atomic_store_n(&init_state, 2, __ATOMIC_RELEASE);
        return;
    }
    if (init_tid == nbs_gettid())
        return; /* called from inside init (e.g. by a malloc that opens files) */
    while (__atomic_load_n(&init_state, __ATOMIC_ACQUIRE) != 2)
        nbs_sched_yield();
}

#define ENSURE()                                                                                \
    do {                                                                                        \
        if (UNLIKELY(__atomic_load_n(&init_state, __ATOMIC_ACQUIRE) != 2))                      \
            init_slow();                                                                        \
    } while (0)

__attribute__((constructor)) static void nbs_preload_init(int argc, char **argv, char **envp)
{
    (void)envp;
    ENSURE();
    if (argv0_pending && argc > 0 && argv) {
        argv[0] = argv0_buf;
        argv0_pending = 0;
    }
}

/* ------------------------------------------------------------------------ */
/* path mapping */

#define F_FOLLOW 1u  /* follow a symlink in the last component */
#define F_WRITE 2u   /* modifies the file: EROFS in read-only mappings */
#define F_CREATE 4u  /* creates it: EEXIST if it exists, else EROFS */
#define F_OCREAT 8u  /* open(O_CREAT): fine if it exists, else EROFS */
#define F_WACCESS 16u /* access(W_OK): EROFS if it exists */

static int is_digits(const char *s, size_t n)
{
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
    }
    return 1;
}

/* Whether PATH names this process's /proc/.../exe link. */
static int is_proc_exe(const char *path)
{
    if (!pm_startswith(path, "/proc/"))
        return 0;
    const char *p = path + 6;
    if (pm_startswith(p, "self/"))
        return pm_streq(p + 5, "exe");
    if (pm_startswith(p, "thread-self/"))
        return pm_streq(p + 12, "exe");
    size_t n = 0;
    while (p[n] && p[n] != '/')
        n++;
    if (!is_digits(p, n) || !pm_streq(p + n, "/exe"))
        return 0;
    long pid = 0;
    for (size_t i = 0; i < n && i < 12; i++)
        pid = pid * 10 + (p[i] - '0');
    return pid == nbs_getpid();
}

static long fs_readlink(void *ctx, const char *host, char *buf, size_t n)
{
    (void)ctx;
    if (exe_sbx[0] && host[1] == 'p' && is_proc_exe(host)) {
        size_t len = pm_strlen(exe_sbx);
        if (len > n)
            len = n;
        memcpy(buf, exe_sbx, len);
        return (long)len;
    }
    return nbs_readlinkat(AT_FDCWD, host, buf, n);
}

/* The host path behind descriptor FD (via /proc/self/fd) into OUT (PM_PATH_MAX). */
static int fd_host_path(int fd, char *out)
{
    char proc[32] = "/proc/self/fd/";
    char digits[16];
    size_t pos = 14, nd = 0;
    unsigned v = (unsigned)fd;
    if (fd < 0)
        return -EBADF;
    do {
        digits[nd++] = (char)('0' + v % 10);
        v /= 10;
    } while (v && nd < sizeof digits);
    while (nd)
        proc[pos++] = digits[--nd];
    proc[pos] = '\0';
    long n = nbs_readlinkat(AT_FDCWD, proc, out, PM_PATH_MAX - 1);
    if (n < 0)
        return (int)n;
    out[n] = '\0';
    return out[0] == '/' ? 0 : -ENOENT;
}

/* Sandbox path of the directory relative paths of DIRFD start from. */
static int base_dir(int dirfd, char *out, size_t outsz)
{
    char host[PM_PATH_MAX];
    long n;
    if (dirfd == AT_FDCWD) {
        n = nbs_getcwd(host, sizeof host);
        if (n < 0)
            return (int)n;
        if (host[0] != '/')
            return -ENOENT; /* "(unreachable)" */
    } else {
        int r = fd_host_path(dirfd, host);
        if (r < 0)
            return r == -ENOENT ? -ENOTDIR : r;
    }
    int r = pm_to_sandbox(&T, host, out, outsz);
    if (r < 0)
        return r;
    if (r == 0 && pm_copy(out, outsz, host) < 0)
        return -ENAMETOOLONG;
    return 0;
}

/* Errors a write into a read-only mapping gives, checked on host path HOST. */
static int ro_error(const char *host, unsigned how)
{
    struct stat st;
    int flags = (how & F_FOLLOW) ? 0 : AT_SYMLINK_NOFOLLOW;
    long exists = nbs_fstatat(AT_FDCWD, host, &st, flags) == 0;
    if (how & F_OCREAT)
        return exists ? 0 : -EROFS;
    if (how & F_CREATE)
        return exists ? -EEXIST : -EROFS;
    if (how & F_WACCESS)
        return exists ? -EROFS : -ENOENT;
    return -EROFS;
}

static int check_ro(const struct pm_map *m, const char *host, unsigned how)
{
    if (!m || !(m->flags & PM_RO) || !(how & (F_WRITE | F_CREATE | F_OCREAT | F_WACCESS)))
        return 0;
    return ro_error(host, how);
}

/* Resolve sandbox path SBX (absolute) fully into BUF; *m gets the mapping of the result. */
static int resolve_into(const char *sbx, unsigned how, char *buf, const struct pm_map **m)
{
    char res[PM_PATH_MAX];
    int r = pm_resolve(&T, &FS, sbx, (how & F_FOLLOW) ? PM_FOLLOW : 0, buf, PM_PATH_MAX, res,
                       sizeof res);
    if (r < 0)
        return r;
    *m = pm_match(&T, res, 0);
    return 0;
}

/* The path a call should use for PATH (relative to DIRFD): PATH itself or
 * BUF.  -1 with errno set when the call must fail without being made. */
static int map_path_slow(int dirfd, const char *path, char *buf, unsigned how, const char **out)
{
    if (!active || !path)
        return 0;
    if (path[0] == '/') {
        const struct pm_map *m;
        int r = pm_to_host(&T, path, buf, PM_PATH_MAX, &m);
        if (LIKELY(r == PM_ASIS)) {
            /* the program's own file, not ld.so (the link itself when not following) */
            if (UNLIKELY(path[1] == 'p') && (how & F_FOLLOW) && exe_sbx[0] && is_proc_exe(path))
                *out = exe_host;
            return 0;
        }
        if (r == PM_RESOLVE)
            r = resolve_into(path, how, buf, &m);
        if (r < 0 || (r = check_ro(m, buf, how)) < 0) {
            errno = -r;
            return -1;
        }
        *out = buf;
        return 0;
    }
    /* A relative path is right as it is (the working directory really is the
     * host directory) unless it has a ".." that may leave a mapping, or it
     * is written to from inside a read-only mapping.  Only then does it cost
     * a system call (getcwd or readlink of /proc/self/fd/N). */
    int writes = (how & (F_WRITE | F_CREATE | F_OCREAT | F_WACCESS)) != 0;
    int dotdot = pm_has_dotdot(path);
    if (LIKELY(!writes && !dotdot))
        return 0;
    char base[PM_PATH_MAX], joined[PM_PATH_MAX];
    const struct pm_map *m;
    if (base_dir(dirfd, base, sizeof base) < 0)
        return 0;
    const struct pm_map *bm = pm_match(&T, base, 0);
    if (!bm && !pm_ancestor_of(&T, base, pm_strlen(base)))
        return 0;
    if (!dotdot && !(bm && (bm->flags & PM_RO)))
        return 0;
    int r = pm_join(joined, sizeof joined, base, path);
    if (r == 0)
        r = resolve_into(joined, how, buf, &m);
    if (r == 0)
        r = check_ro(m, buf, how);
    if (r < 0) {
        errno = -r;
        return -1;
    }
    *out = buf;
    return 0;
}

/* The fast path, inlined into every wrapper: an absolute path whose second
 * byte cannot begin any mapping (nor "/proc/self/exe", "//", "/./") is used
 * as it is. */
static inline __attribute__((always_inline)) int map_path(int dirfd, const char *path, char *buf,
                                                          unsigned how, const char **out)
{
    *out = path;
    if (LIKELY(path && path[0] == '/')) {
        if (LIKELY(!may_map[(unsigned char)path[1]]))
            return 0;
        /* a plain path under a mapping that this call does not write to */
        const struct pm_map *m;
        if (LIKELY(pm_to_host(&T, path, buf, PM_PATH_MAX, &m) == PM_MAPPED) &&
            (!(m->flags & PM_RO) || !(how & (F_WRITE | F_CREATE | F_OCREAT | F_WACCESS)))) {
            *out = buf;
            return 0;
        }
    }
    return map_path_slow(dirfd, path, buf, how, out);
}

#define RETRY_ERRNO(e) ((e) == ENOENT || (e) == ENOTDIR || (e) == EACCES)

/* After a call on USED (from map_path) failed with ENOENT, ENOTDIR or EACCES
 * (an absolute symlink in the root leads the kernel to the host's prefix,
 * which may be missing or closed): resolve
 * PATH in the sandbox's view (symlinks to absolute store paths, ancestors of
 * the prefix, ".." out of the store...).  Returns 1 with *out set when the
 * call should be made again on the new path, else 0 with errno set. */
static int retry_path(int dirfd, const char *path, const char *used, char *buf, unsigned how,
                      const char **out)
{
    int saved = errno;
    char sbx[PM_PATH_MAX];
    const char *start = path;
    if (!active || !path || !*path)
        return 0;
    if (path[0] == '/') {
        if (used == path && !pm_has_dotdot(path)) {
            size_t len = pm_strlen(path);
            while (len > 1 && path[len - 1] == '/')
                len--;
            if (!pm_ancestor_of(&T, path, len))
                return 0; /* a host path: the kernel's answer is the sandbox's */
        }
    } else {
        char base[PM_PATH_MAX];
        if (base_dir(dirfd, base, sizeof base) < 0)
            return 0;
        if (pm_join(sbx, sizeof sbx, base, path) < 0)
            return 0;
        if (!pm_match(&T, base, 0) && !pm_match(&T, sbx, 0) && !pm_has_dotdot(path))
            return 0;
        start = sbx;
    }
    const struct pm_map *m;
    int r = resolve_into(start, how, buf, &m);
    if (r == 0)
        r = check_ro(m, buf, how);
    if (r < 0) {
        errno = -r;
        return 0;
    }
    if (pm_streq(buf, used)) {
        errno = saved;
        return 0;
    }
    *out = buf;
    return 1;
}

/* The body of a path function: map, call, retry on ENOENT/ENOTDIR. */
#define PATH_CALL(type, failv, dirfd, path, how, call)                                          \
    do {                                                                                        \
        char b1_[PM_PATH_MAX], b2_[PM_PATH_MAX];                                                \
        const char *p;                                                                          \
        ENSURE();                                                                               \
        if (map_path((dirfd), (path), b1_, (how), &p) < 0)                                      \
            return failv;                                                                       \
        type r_ = (call);                                                                       \
        if (r_ == (failv) && active && RETRY_ERRNO(errno) &&                                    \
            retry_path((dirfd), (path), p, b2_, (how), &p) > 0)                                 \
            r_ = (call);                                                                        \
        return r_;                                                                              \
    } while (0)

/* The same for raw system calls (results are -errno). */
#define SYS_CALL(dirfd, path, how, call)                                                        \
    do {                                                                                        \
        char b1_[PM_PATH_MAX], b2_[PM_PATH_MAX];                                                \
        const char *p;                                                                          \
        ENSURE();                                                                               \
        if (map_path((dirfd), (path), b1_, (how), &p) < 0)                                      \
            return -1;                                                                          \
        long r_ = (call);                                                                       \
        if (UNLIKELY(r_ < 0)) {                                                                 \
            errno = (int)-r_;                                                                   \
            if (!active || !RETRY_ERRNO(errno) ||                                               \
                !retry_path((dirfd), (path), p, b2_, (how), &p))                                \
                return -1;                                                                      \
            r_ = (call);                                                                        \
            if (r_ < 0) {                                                                       \
                errno = (int)-r_;                                                               \
                return -1;                                                                      \
            }                                                                                   \
        }                                                                                       \
        return (int)r_;                                                                         \
    } while (0)

/* ------------------------------------------------------------------------ */
/* open */

static unsigned open_how(int flags)
{
    unsigned how = 0;
    if (!(flags & O_NOFOLLOW) && (flags & (O_CREAT | O_EXCL)) != (O_CREAT | O_EXCL))
        how |= F_FOLLOW;
    if ((flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC) || (flags & O_TMPFILE) == O_TMPFILE)
        how |= F_WRITE;
    else if (flags & O_CREAT)
        how |= F_OCREAT;
    return how;
}

static int do_openat(int dirfd, const char *path, int flags, mode_t mode)
{
    PATH_CALL(int, -1, dirfd, path, open_how(flags), CALLI(openat, (dirfd, p, flags, mode)));
}

static mode_t open_mode(int flags, va_list ap)
{
    if ((flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE)
        return (mode_t)va_arg(ap, int);
    return 0;
}

EXPORT int open(const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t mode = open_mode(flags, ap);
    va_end(ap);
    return do_openat(AT_FDCWD, path, flags, mode);
}

EXPORT int open64(const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t mode = open_mode(flags, ap);
    va_end(ap);
    return do_openat(AT_FDCWD, path, flags, mode);
}

EXPORT int openat(int dirfd, const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t mode = open_mode(flags, ap);
    va_end(ap);
    return do_openat(dirfd, path, flags, mode);
}

EXPORT int openat64(int dirfd, const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t mode = open_mode(flags, ap);
    va_end(ap);
    return do_openat(dirfd, path, flags, mode);
}

static void check_open_2(int flags)
{
    if ((flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE)
        __chk_fail(); /* "open with O_CREAT needs a mode", as glibc's fortified open */
}

EXPORT int __open_2(const char *path, int flags)
{
    check_open_2(flags);
    return do_openat(AT_FDCWD, path, flags, 0);
}

EXPORT int __open64_2(const char *path, int flags)
{
    check_open_2(flags);
    return do_openat(AT_FDCWD, path, flags, 0);
}

EXPORT int __openat_2(int dirfd, const char *path, int flags)
{
    check_open_2(flags);
    return do_openat(dirfd, path, flags, 0);
}

EXPORT int __openat64_2(int dirfd, const char *path, int flags)
{
    check_open_2(flags);
    return do_openat(dirfd, path, flags, 0);
}

EXPORT int creat(const char *path, mode_t mode)
{
    return do_openat(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode);
}

EXPORT int creat64(const char *path, mode_t mode)
{
    return do_openat(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode);
}

static unsigned fopen_how(const char *mode)
{
    unsigned how = F_FOLLOW;
    if (!mode)
        return how;
    if (mode[0] == 'w' || mode[0] == 'a')
        how |= F_WRITE;
    for (const char *m = mode; *m && *m != ','; m++) {
        if (*m == '+')
            how |= F_WRITE;
    }
    return how;
}

EXPORT FILE *fopen(const char *path, const char *mode)
{
    PATH_CALL(FILE *, NULL, AT_FDCWD, path, fopen_how(mode), CALLP(fopen, (p, mode)));
}

EXPORT FILE *fopen64(const char *path, const char *mode)
{
    PATH_CALL(FILE *, NULL, AT_FDCWD, path, fopen_how(mode), CALLP(fopen64, (p, mode)));
}

EXPORT FILE *freopen(const char *path, const char *mode, FILE *stream)
{
    PATH_CALL(FILE *, NULL, AT_FDCWD, path, fopen_how(mode), CALLP(freopen, (p, mode, stream)));
}

EXPORT FILE *freopen64(const char *path, const char *mode, FILE *stream)
{
    PATH_CALL(FILE *, NULL, AT_FDCWD, path, fopen_how(mode),
              CALLP(freopen64, (p, mode, stream)));
}

/* ------------------------------------------------------------------------ */
/* stat: raw system calls, the same on every glibc (stat became a real symbol
 * only in 2.33; before, programs call __xstat) */

static __attribute__((noinline)) int fstatat_mapped(int dirfd, const char *path,
                                                    struct stat *st, int flags)
{
    unsigned how = (flags & AT_SYMLINK_NOFOLLOW) ? 0 : F_FOLLOW;
    SYS_CALL(dirfd, path, how, nbs_fstatat(dirfd, p, st, flags));
}

/* The stat family is the hottest: a host path is one table lookup away
 * from the system call, with no stack buffers and no retry code inline. */
static inline __attribute__((always_inline)) int do_fstatat(int dirfd, const char *path,
                                                             struct stat *st, int flags)
{
    if (LIKELY(__atomic_load_n(&init_state, __ATOMIC_ACQUIRE) == 2 && path && path[0] == '/' &&
               !may_map[(unsigned char)path[1]])) {
        long r = nbs_fstatat(dirfd, path, st, flags);
        if (LIKELY(r == 0))
            return 0;
    }
    return fstatat_mapped(dirfd, path, st, flags);
}

static int stat_ver_ok(int ver)
{
#if defined(__x86_64__)
    return ver == 0 || ver == 1; /* _STAT_VER_KERNEL, _STAT_VER_LINUX */
#else
    return ver == 0;
#endif
}

EXPORT int stat(const char *path, struct stat *st)
{
    return do_fstatat(AT_FDCWD, path, st, 0);
}

EXPORT int lstat(const char *path, struct stat *st)
{
    return do_fstatat(AT_FDCWD, path, st, AT_SYMLINK_NOFOLLOW);
}

EXPORT int fstatat(int dirfd, const char *path, struct stat *st, int flags)
{
    return do_fstatat(dirfd, path, st, flags);
}

EXPORT int stat64(const char *path, struct stat64 *st)
{
    return do_fstatat(AT_FDCWD, path, (struct stat *)st, 0);
}

EXPORT int lstat64(const char *path, struct stat64 *st)
{
    return do_fstatat(AT_FDCWD, path, (struct stat *)st, AT_SYMLINK_NOFOLLOW);
}

EXPORT int fstatat64(int dirfd, const char *path, struct stat64 *st, int flags)
{
    return do_fstatat(dirfd, path, (struct stat *)st, flags);
}

EXPORT int __xstat(int ver, const char *path, struct stat *st)
{
    if (!stat_ver_ok(ver)) {
        errno = EINVAL;
        return -1;
    }
    return do_fstatat(AT_FDCWD, path, st, 0);
}

EXPORT int __lxstat(int ver, const char *path, struct stat *st)
{
    if (!stat_ver_ok(ver)) {
        errno = EINVAL;
        return -1;
    }
    return do_fstatat(AT_FDCWD, path, st, AT_SYMLINK_NOFOLLOW);
}

EXPORT int __fxstatat(int ver, int dirfd, const char *path, struct stat *st, int flags)
{
    if (!stat_ver_ok(ver)) {
        errno = EINVAL;
        return -1;
    }
    return do_fstatat(dirfd, path, st, flags);
}

EXPORT int __xstat64(int ver, const char *path, struct stat64 *st)
{
    return __xstat(ver, path, (struct stat *)st);
}

EXPORT int __lxstat64(int ver, const char *path, struct stat64 *st)
{
    return __lxstat(ver, path, (struct stat *)st);
}

EXPORT int __fxstatat64(int ver, int dirfd, const char *path, struct stat64 *st, int flags)
{
    return __fxstatat(ver, dirfd, path, (struct stat *)st, flags);
}

EXPORT int statx(int dirfd, const char *path, int flags, unsigned int mask, struct statx *buf)
{
    unsigned how = (flags & AT_SYMLINK_NOFOLLOW) ? 0 : F_FOLLOW;
    SYS_CALL(dirfd, path, how, nbs_statx(dirfd, p, flags, mask, buf));
}

EXPORT int statfs(const char *path, struct statfs *buf)
{
    PATH_CALL(int, -1, AT_FDCWD, path, F_FOLLOW, CALLI(statfs, (p, buf)));
}

EXPORT int statfs64(const char *path, struct statfs64 *buf)
{
    PATH_CALL(int, -1, AT_FDCWD, path, F_FOLLOW, CALLI(statfs64, (p, buf)));
}

EXPORT int statvfs(const char *path, struct statvfs *buf)
{
    PATH_CALL(int, -1, AT_FDCWD, path, F_FOLLOW, CALLI(statvfs, (p, buf)));
}

EXPORT int statvfs64(const char *path, struct statvfs64 *buf)
{
    PATH_CALL(int, -1, AT_FDCWD, path, F_FOLLOW, CALLI(statvfs64, (p, buf)));
}

EXPORT long pathconf(const char *path, int name)
{
    PATH_CALL(long, -1, AT_FDCWD, path, F_FOLLOW, CALLI(pathconf, (p, name)));
}

/* ------------------------------------------------------------------------ */
/* access */

static unsigned access_how(int mode, int flags)
{
    unsigned how = (flags & AT_SYMLINK_NOFOLLOW) ? 0 : F_FOLLOW;
    if (mode & W_OK)
        how |= F_WACCESS;
    return how;
}

EXPORT int access(const char *path, int mode)
{
    PATH_CALL(int, -1, AT_FDCWD, path, access_how(mode, 0),
              CALLI(faccessat, (AT_FDCWD, p, mode, 0)));
}

EXPORT int faccessat(int dirfd, const char *path, int mode, int flags)
{
    PATH_CALL(int, -1, dirfd, path, access_how(mode, flags),
              CALLI(faccessat, (dirfd, p, mode, flags)));
}

EXPORT int euidaccess(const char *path, int mode)
{
    PATH_CALL(int, -1, AT_FDCWD, path, access_how(mode, 0), CALLI(euidaccess, (p, mode)));
}

EXPORT int eaccess(const char *path, int mode)
{
    PATH_CALL(int, -1, AT_FDCWD, path, access_how(mode, 0), CALLI(eaccess, (p, mode)));
}

/* ------------------------------------------------------------------------ */
/* symbolic links, the working directory, realpath: results are translated back */

static ssize_t copy_out(const char *s, char *buf, size_t bufsiz)
{
    size_t len = pm_strlen(s);
    if (len > bufsiz)
        len = bufsiz;
    memcpy(buf, s, len);
    return (ssize_t)len;
}

EXPORT ssize_t readlinkat(int dirfd, const char *path, char *buf, size_t bufsiz)
{
    char b1[PM_PATH_MAX], b2[PM_PATH_MAX], target[PM_PATH_MAX], sbx[PM_PATH_MAX];
    const char *p;
    ENSURE();
    if (active && exe_sbx[0] && MAYBE_NULL(path) && path[0] == '/' && is_proc_exe(path))
        return copy_out(exe_sbx, buf, bufsiz);
    if (map_path(dirfd, path, b1, 0, &p) < 0)
        return -1;
    long n = nbs_readlinkat(dirfd, p, target, sizeof target - 1);
    if (n < 0) {
        errno = (int)-n;
        if (!active || !RETRY_ERRNO(errno) || !retry_path(dirfd, path, p, b2, 0, &p))
            return -1;
        n = nbs_readlinkat(dirfd, p, target, sizeof target - 1);
        if (n < 0) {
            errno = (int)-n;
            return -1;
        }
    }
    target[n] = '\0';
    if (active && target[0] == '/' && pm_to_sandbox(&T, target, sbx, sizeof sbx) == 1)
        return copy_out(sbx, buf, bufsiz);
    return copy_out(target, buf, bufsiz);
}

EXPORT ssize_t readlink(const char *path, char *buf, size_t bufsiz)
{
    return readlinkat(AT_FDCWD, path, buf, bufsiz);
}

EXPORT ssize_t __readlink_chk(const char *path, char *buf, size_t len, size_t buflen)
{
    if (len > buflen)
        __chk_fail();
    return readlinkat(AT_FDCWD, path, buf, len);
}

EXPORT ssize_t __readlinkat_chk(int dirfd, const char *path, char *buf, size_t len,
                                size_t buflen)
{
    if (len > buflen)
        __chk_fail();
    return readlinkat(dirfd, path, buf, len);
}

/* Our getcwd, for BUF of SIZE (SIZE 0 with BUF NULL: allocate). */
static char *cwd_into(char *buf, size_t size)
{
    char host[PM_PATH_MAX], sbx[PM_PATH_MAX];
    long n = nbs_getcwd(host, sizeof host);
    if (n < 0) {
        errno = n == -ERANGE ? ENAMETOOLONG : (int)-n;
        return NULL;
    }
    const char *res = host;
    if (pm_to_sandbox(&T, host, sbx, sizeof sbx) == 1)
        res = sbx;
    size_t len = pm_strlen(res);
    if (!buf) {
        size_t want = size ? size : len + 1;
        if (len + 1 > want) {
            errno = ERANGE;
            return NULL;
        }
        buf = malloc(want);
        if (!buf)
            return NULL;
    } else if (size == 0) {
        errno = EINVAL;
        return NULL;
    } else if (len + 1 > size) {
        errno = ERANGE;
        return NULL;
    }
    memcpy(buf, res, len + 1);
    return buf;
}

EXPORT char *getcwd(char *buf, size_t size)
{
    ENSURE();
    if (!active)
        return CALLP(getcwd, (buf, size));
    return cwd_into(buf, size);
}

EXPORT char *__getcwd_chk(char *buf, size_t size, size_t buflen)
{
    if (size > buflen)
        __chk_fail();
    return getcwd(buf, size);
}

EXPORT char *getwd(char *buf)
{
    ENSURE();
    if (!active)
        return CALLP(getcwd, (buf, PATH_MAX));
    char *r = cwd_into(buf, PATH_MAX);
    if (!r && MAYBE_NULL(buf)) {
        const char *msg = strerror(errno);
        size_t n = pm_strnlen(msg, PATH_MAX - 1);
        memcpy(buf, msg, n);
        buf[n] = '\0';
    }
    return r;
}

EXPORT char *get_current_dir_name(void)
{
    ENSURE();
    const char *pwd = getenv("PWD");
    struct stat a, b;
    /* glibc's rule: $PWD if it names the working directory */
    if (pwd && pwd[0] == '/' && stat(pwd, &a) == 0 && nbs_fstatat(AT_FDCWD, ".", &b, 0) == 0 &&
        a.st_dev == b.st_dev && a.st_ino == b.st_ino) {
        size_t n = pm_strlen(pwd);
        char *r = malloc(n + 1);
        if (r)
            memcpy(r, pwd, n + 1);
        return r;
    }
    if (!active)
        return CALLP(getcwd, (NULL, 0));
    return cwd_into(NULL, 0);
}

EXPORT char *realpath(const char *path, char *resolved)
{
    char abs[PM_PATH_MAX], host[PM_PATH_MAX], sbx[PM_PATH_MAX];
    ENSURE();
    if (!active)
        return CALLP(realpath, (path, resolved));
    if (!path) {
        errno = EINVAL;
        return NULL;
    }
    if (!*path) {
        errno = ENOENT;
        return NULL;
    }
    const char *start = path;
    if (path[0] != '/') {
        char base[PM_PATH_MAX];
        int r = base_dir(AT_FDCWD, base, sizeof base);
        if (r == 0)
            r = pm_join(abs, sizeof abs, base, path);
        if (r < 0) {
            errno = -r;
            return NULL;
        }
        start = abs;
    }
    int r = pm_resolve(&T, &FS, start, PM_FOLLOW, host, sizeof host, sbx, sizeof sbx);
    if (r < 0) {
        errno = -r;
        return NULL;
    }
    struct stat st;
    long s = nbs_fstatat(AT_FDCWD, host, &st, 0);
    if (s < 0) {
        errno = (int)-s;
        return NULL;
    }
    size_t len = pm_strlen(sbx);
    if (len >= PATH_MAX) {
        errno = ENAMETOOLONG;
        return NULL;
    }
    if (!resolved) {
        resolved = malloc(len + 1);
        if (!resolved)
            return NULL;
    }
    memcpy(resolved, sbx, len + 1);
    return resolved;
}

EXPORT char *canonicalize_file_name(const char *path)
{
    return realpath(path, NULL);
}

EXPORT char *__realpath_chk(const char *path, char *resolved, size_t resolvedlen)
{
    if (resolvedlen < PATH_MAX)
        __chk_fail();
    return realpath(path, resolved);
}

EXPORT int chdir(const char *path)
{
    PATH_CALL(int, -1, AT_FDCWD, path, F_FOLLOW, CALLI(chdir, (p)));
}

EXPORT int chroot(const char *path)
{
    PATH_CALL(int, -1, AT_FDCWD, path, F_FOLLOW, CALLI(chroot, (p)));
}

/* ------------------------------------------------------------------------ */
/* directories */

EXPORT DIR *opendir(const char *path)
{
    PATH_CALL(DIR *, NULL, AT_FDCWD, path, F_FOLLOW, CALLP(opendir, (p)));
}

typedef int (*scan_filter)(const struct dirent *);
typedef int (*scan_compar)(const struct dirent **, const struct dirent **);
typedef int (*scan_filter64)(const struct dirent64 *);
typedef int (*scan_compar64)(const struct dirent64 **, const struct dirent64 **);

EXPORT int scandir(const char *path, struct dirent ***list, scan_filter filter, scan_compar cmp)
{
    PATH_CALL(int, -1, AT_FDCWD, path, F_FOLLOW, CALLI(scandir, (p, list, filter, cmp)));
}

EXPORT int scandir64(const char *path, struct dirent64 ***list, scan_filter64 filter,
                     scan_compar64 cmp)
{
    PATH_CALL(int, -1, AT_FDCWD, path, F_FOLLOW, CALLI(scandir64, (p, list, filter, cmp)));
}

EXPORT int scandirat(int dirfd, const char *path, struct dirent ***list, scan_filter filter,
                     scan_compar cmp)
{
    PATH_CALL(int, -1, dirfd, path, F_FOLLOW, CALLI(scandirat, (dirfd, p, list, filter, cmp)));
}

EXPORT int mkdir(const char *path, mode_t mode)
{
    PATH_CALL(int, -1, AT_FDCWD, path, F_CREATE, CALLI(mkdirat, (AT_FDCWD, p, mode)));
}

EXPORT int mkdirat(int dirfd, const char *path, mode_t mode)
{
    PATH_CALL(int, -1, dirfd, path, F_CREATE, CALLI(mkdirat, (dirfd, p, mode)));
}

EXPORT int rmdir(const char *path)
{
    PATH_CALL(int, -1, AT_FDCWD, path, F_WRITE, CALLI(rmdir, (p)));
}

/* ------------------------------------------------------------------------ */
/* functions that change files */

EXPORT int unlink(const char *path)
{
    PATH_CALL(int, -1, AT_FDCWD, path, F_WRITE, CALLI(unlinkat, (AT_FDCWD, p, 0)));
}

EXPORT int unlinkat(int dirfd, const char *path, int flags)
{
    PATH_CALL(int, -1, dirfd, path, F_WRITE, CALLI(unlinkat, (dirfd, p, flags)));
}

EXPORT int remove(const char *path)
{
    PATH_CALL(int, -1, AT_FDCWD, path, F_WRITE, CALLI(remove, (p)));
}

/* Two-path calls: map both; a retry re-maps the one that failed to resolve. */
#define TWO_PATH_CALL(fd1, path1, how1, fd2, path2, how2, call)                                 \
    do {                                                                                        \
        char b1_[PM_PATH_MAX], b2_[PM_PATH_MAX], b3_[PM_PATH_MAX], b4_[PM_PATH_MAX];            \
        const char *p, *q;                                                                      \
        ENSURE();                                                                               \
        if (map_path((fd1), (path1), b1_, (how1), &p) < 0 ||                                    \
            map_path((fd2), (path2), b2_, (how2), &q) < 0)                                      \
            return -1;                                                                          \
        int r_ = (call);                                                                        \
        if (r_ < 0 && active && RETRY_ERRNO(errno)) {                                           \
            int e_ = errno;                                                                     \
            int a_ = retry_path((fd1), (path1), p, b3_, (how1), &p);                            \
            if (!a_)                                                                            \
                errno = e_;                                                                     \
            int b_ = retry_path((fd2), (path2), q, b4_, (how2), &q);                            \
            if (a_ || b_)                                                                       \
                r_ = (call);                                                                    \
        }                                                                                       \
        return r_;                                                                              \
    } while (0)

EXPORT int rename(const char *old, const char *new)
{
    TWO_PATH_CALL(AT_FDCWD, old, F_WRITE, AT_FDCWD, new, F_WRITE,
                  CALLI(renameat, (AT_FDCWD, p, AT_FDCWD, q)));
}

EXPORT int renameat(int oldfd, const char *old, int newfd, const char *new)
{
    TWO_PATH_CALL(oldfd, old, F_WRITE, newfd, new, F_WRITE, CALLI(renameat, (oldfd, p, newfd, q)));
}

EXPORT int renameat2(int oldfd, const char *old, int newfd, const char *new, unsigned flags)
{
    TWO_PATH_CALL(oldfd, old, F_WRITE, newfd, new, F_WRITE,
                  CALLI(renameat2, (oldfd, p, newfd, q, flags)));
}

/* A hard link from a read-only mapping elsewhere would make its file
 * writable: refuse as a real read-only mount does (EXDEV). */
static int link_from_ro(int dirfd, const char *old, int follow)
{
    char b[PM_PATH_MAX];
    const char *p;
    if (!active || !old || map_path(dirfd, old, b, follow ? F_FOLLOW : 0, &p) < 0 || p == old)
        return 0;
    char sbx[PM_PATH_MAX];
    if (pm_to_sandbox(&T, p, sbx, sizeof sbx) != 1)
        return 0;
    const struct pm_map *m = pm_match(&T, sbx, 0);
    return m && (m->flags & PM_RO);
}

EXPORT int link(const char *old, const char *new)
{
    ENSURE();
    if (link_from_ro(AT_FDCWD, old, 0)) {
        errno = EXDEV;
        return -1;
    }
    TWO_PATH_CALL(AT_FDCWD, old, 0, AT_FDCWD, new, F_CREATE,
                  CALLI(linkat, (AT_FDCWD, p, AT_FDCWD, q, 0)));
}

EXPORT int linkat(int oldfd, const char *old, int newfd, const char *new, int flags)
{
    unsigned how = (flags & AT_SYMLINK_FOLLOW) ? F_FOLLOW : 0;
    ENSURE();
    if (link_from_ro(oldfd, old, how != 0)) {
        errno = EXDEV;
        return -1;
    }
    TWO_PATH_CALL(oldfd, old, how, newfd, new, F_CREATE,
                  CALLI(linkat, (oldfd, p, newfd, q, flags)));
}

/* The target of a symbolic link is stored as given: it is resolved in the
 * sandbox's view when followed. */
EXPORT int symlink(const char *target, const char *linkpath)
{
    PATH_CALL(int, -1, AT_FDCWD, linkpath, F_CREATE, CALLI(symlinkat, (target, AT_FDCWD, p)));
}

EXPORT int symlinkat(const char *target, int dirfd, const char *linkpath)
{
    PATH_CALL(int, -1, dirfd, linkpath, F_CREATE, CALLI(symlinkat, (target, dirfd, p)));
}

EXPORT int chmod(const char *path, mode_t mode)
{
    PATH_CALL(int, -1, AT_FDCWD, path, F_FOLLOW | F_WRITE, CALLI(chmod, (p, mode)));
}

EXPORT int lchmod(const char *path, mode_t mode)
{
    PATH_CALL(int, -1, AT_FDCWD, path, F_WRITE, CALLI(lchmod, (p, mode)));
}

EXPORT int fchmodat(int dirfd, const char *path, mode_t mode, int flags)
{
    unsigned how = ((flags & AT_SYMLINK_NOFOLLOW) ? 0 : F_FOLLOW) | F_WRITE;
    PATH_CALL(int, -1, dirfd, path, how, CALLI(fchmodat, (dirfd, p, mode, flags)));
}

EXPORT int chown(const char *path, uid_t uid, gid_t gid)
{
    PATH_CALL(int, -1, AT_FDCWD, path, F_FOLLOW | F_WRITE, CALLI(chown, (p, uid, gid)));
}

EXPORT int lchown(const char *path, uid_t uid, gid_t gid)
{
    PATH_CALL(int, -1, AT_FDCWD, path, F_WRITE, CALLI(lchown, (p, uid, gid)));
}

EXPORT int fchownat(int dirfd, const char *path, uid_t uid, gid_t gid, int flags)
{
    unsigned how = ((flags & AT_SYMLINK_NOFOLLOW) ? 0 : F_FOLLOW) | F_WRITE;
    PATH_CALL(int, -1, dirfd, path, how, CALLI(fchownat, (dirfd, p, uid, gid, flags)));
}

EXPORT int utime(const char *path, const struct utimbuf *times)
{
    PATH_CALL(int, -1, AT_FDCWD, path, F_FOLLOW | F_WRITE, CALLI(utime, (p, times)));
}

EXPORT int utimes(const char *path, const struct timeval tv[2])
{
    PATH_CALL(int, -1, AT_FDCWD, path, F_FOLLOW | F_WRITE, CALLI(utimes, (p, tv)));
}

EXPORT int lutimes(const char *path, const struct timeval tv[2])
{
    PATH_CALL(int, -1, AT_FDCWD, path, F_WRITE, CALLI(lutimes, (p, tv)));
}

EXPORT int futimesat(int dirfd, const char *path, const struct timeval tv[2])
{
    PATH_CALL(int, -1, dirfd, path, F_FOLLOW | F_WRITE, CALLI(futimesat, (dirfd, p, tv)));
}

EXPORT int utimensat(int dirfd, const char *path, const struct timespec ts[2], int flags)
{
    unsigned how = ((flags & AT_SYMLINK_NOFOLLOW) ? 0 : F_FOLLOW) | F_WRITE;
    PATH_CALL(int, -1, dirfd, path, how, CALLI(utimensat, (dirfd, p, ts, flags)));
}

EXPORT int truncate(const char *path, off_t len)
{
    PATH_CALL(int, -1, AT_FDCWD, path, F_FOLLOW | F_WRITE, CALLI(truncate, (p, len)));
}

EXPORT int truncate64(const char *path, off64_t len)
{
    PATH_CALL(int, -1, AT_FDCWD, path, F_FOLLOW | F_WRITE, CALLI(truncate64, (p, len)));
}

static int do_mknodat(int dirfd, const char *path, mode_t mode, dev_t dev)
{
    SYS_CALL(dirfd, path, F_CREATE, nbs_mknodat(dirfd, p, mode, dev));
}

EXPORT int mknod(const char *path, mode_t mode, dev_t dev)
{
    return do_mknodat(AT_FDCWD, path, mode, dev);
}

EXPORT int mknodat(int dirfd, const char *path, mode_t mode, dev_t dev)
{
    return do_mknodat(dirfd, path, mode, dev);
}

EXPORT int __xmknod(int ver, const char *path, mode_t mode, dev_t *dev)
{
    (void)ver;
    return do_mknodat(AT_FDCWD, path, mode, dev ? *dev : 0);
}

EXPORT int __xmknodat(int ver, int dirfd, const char *path, mode_t mode, dev_t *dev)
{
    (void)ver;
    return do_mknodat(dirfd, path, mode, dev ? *dev : 0);
}

EXPORT int mkfifo(const char *path, mode_t mode)
{
    return do_mknodat(AT_FDCWD, path, (mode & ~S_IFMT) | S_IFIFO, 0);
}

EXPORT int mkfifoat(int dirfd, const char *path, mode_t mode)
{
    return do_mknodat(dirfd, path, (mode & ~S_IFMT) | S_IFIFO, 0);
}

/* extended attributes */

EXPORT int setxattr(const char *path, const char *name, const void *value, size_t size,
                    int flags)
{
    PATH_CALL(int, -1, AT_FDCWD, path, F_FOLLOW | F_WRITE,
              CALLI(setxattr, (p, name, value, size, flags)));
}

EXPORT int lsetxattr(const char *path, const char *name, const void *value, size_t size,
                     int flags)
{
    PATH_CALL(int, -1, AT_FDCWD, path, F_WRITE, CALLI(lsetxattr, (p, name, value, size, flags)));
}

EXPORT ssize_t getxattr(const char *path, const char *name, void *value, size_t size)
{
    PATH_CALL(ssize_t, -1, AT_FDCWD, path, F_FOLLOW, CALLI(getxattr, (p, name, value, size)));
}

EXPORT ssize_t lgetxattr(const char *path, const char *name, void *value, size_t size)
{
    PATH_CALL(ssize_t, -1, AT_FDCWD, path, 0, CALLI(lgetxattr, (p, name, value, size)));
}

EXPORT ssize_t listxattr(const char *path, char *list, size_t size)
{
    PATH_CALL(ssize_t, -1, AT_FDCWD, path, F_FOLLOW, CALLI(listxattr, (p, list, size)));
}

EXPORT ssize_t llistxattr(const char *path, char *list, size_t size)
{
    PATH_CALL(ssize_t, -1, AT_FDCWD, path, 0, CALLI(llistxattr, (p, list, size)));
}

EXPORT int removexattr(const char *path, const char *name)
{
    PATH_CALL(int, -1, AT_FDCWD, path, F_FOLLOW | F_WRITE, CALLI(removexattr, (p, name)));
}

EXPORT int lremovexattr(const char *path, const char *name)
{
    PATH_CALL(int, -1, AT_FDCWD, path, F_WRITE, CALLI(lremovexattr, (p, name)));
}

EXPORT int inotify_add_watch(int fd, const char *path, uint32_t mask)
{
    unsigned how = (mask & IN_DONT_FOLLOW) ? 0 : F_FOLLOW;
    PATH_CALL(int, -1, AT_FDCWD, path, how, CALLI(inotify_add_watch, (fd, p, mask)));
}

/* Temporary files: the template is translated, filled in by glibc, and the
 * random part copied back into the caller's template. */
#define TEMPLATE_CALL(type, failv, tmpl, call)                                                  \
    do {                                                                                        \
        char b_[PM_PATH_MAX];                                                                   \
        const char *p;                                                                          \
        ENSURE();                                                                               \
        if (map_path(AT_FDCWD, (tmpl), b_, F_CREATE, &p) < 0)                                   \
            return failv;                                                                       \
        char *t_ = (char *)p;                                                                   \
        type r_ = (call);                                                                       \
        if (p != (tmpl)) {                                                                      \
            size_t tl_ = pm_strlen(tmpl), bl_ = pm_strlen(b_), n_ = tl_ < bl_ ? tl_ : bl_;      \
            memcpy((tmpl) + tl_ - n_, b_ + bl_ - n_, n_);                                       \
        }                                                                                       \
        return r_;                                                                              \
    } while (0)

EXPORT int mkstemp(char *tmpl)
{
    TEMPLATE_CALL(int, -1, tmpl, CALLI(mkstemp, (t_)));
}

EXPORT int mkostemp(char *tmpl, int flags)
{
    TEMPLATE_CALL(int, -1, tmpl, CALLI(mkostemp, (t_, flags)));
}

EXPORT int mkstemps(char *tmpl, int suffixlen)
{
    TEMPLATE_CALL(int, -1, tmpl, CALLI(mkstemps, (t_, suffixlen)));
}

EXPORT int mkostemps(char *tmpl, int suffixlen, int flags)
{
    TEMPLATE_CALL(int, -1, tmpl, CALLI(mkostemps, (t_, suffixlen, flags)));
}

EXPORT char *mkdtemp(char *tmpl)
{
    ENSURE();
    char b[PM_PATH_MAX];
    const char *p;
    if (map_path(AT_FDCWD, tmpl, b, F_CREATE, &p) < 0)
        return NULL;
    if (p == tmpl)
        return CALLP(mkdtemp, (tmpl));
    char *r = CALLP(mkdtemp, (b));
    size_t tl = pm_strlen(tmpl), bl = pm_strlen(b), n = tl < bl ? tl : bl;
    memcpy(tmpl + tl - n, b + bl - n, n);
    return r ? tmpl : NULL;
}

/* ------------------------------------------------------------------------ */
/* exec */

struct level {
    char name[PM_SHEBANG_MAX]; /* interpreter named by this level's "#!" line */
    char arg[PM_SHEBANG_MAX];
    int has_arg;
    int mapped; /* the file of this level is in a mapping */
};

/* Everything plan_exec works out; kept small, as it lives on the stack of
 * whoever calls execve (a vfork child runs on its parent thread's stack). */
struct exec_plan {
    int kind;
    unsigned features;
    int nlevels;                               /* scripts before the ELF file */
    struct level lv[PM_MAX_INTERP_DEPTH + 1];  /* the last one is the ELF file */
    char program[PM_PATH_MAX];                 /* host path of the ELF file */
    char ldso[PM_PATH_MAX];
    char exe_var[sizeof PM_ENV_EXE + PM_PATH_MAX];
    const char *pre[2 * PM_MAX_INTERP_DEPTH + 2];
    size_t npre;
    const char *argv0;
    const char *exec_path;
    char str[PM_PATH_MAX + 64]; /* generated environment entries */
};

/* ld.so options by (device, inode): a small cache shared by threads (and
 * with the parent of a vfork child: benign, every entry is one word). */
#define LDSO_CACHE 8
static unsigned long ldso_cache[LDSO_CACHE];

static __attribute__((noinline)) unsigned ldso_features(const char *host)
{
    for (unsigned i = 0; i < T.nldso; i++) {
        if (pm_streq(T.ldso[i].host, host))
            return T.ldso[i].features & ~PM_LDSO_KNOWN;
    }
    long fd = nbs_openat(AT_FDCWD, host, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    struct stat st;
    unsigned long key = 0;
    if (nbs_fstat((int)fd, &st) == 0)
        key = ((unsigned long)st.st_ino * 31u + (unsigned long)st.st_dev) << 8;
    for (unsigned i = 0; key && i < LDSO_CACHE; i++) {
        unsigned long v = __atomic_load_n(&ldso_cache[i], __ATOMIC_RELAXED);
        if ((v & ~0xfful) == key) {
            nbs_close((int)fd);
            return (unsigned)(v & 0x7f);
        }
    }
    char buf[4096 + 16];
    size_t keep = 0;
    unsigned f = 0;
    for (;;) {
        long n = nbs_read((int)fd, buf + keep, sizeof buf - keep);
        if (n == -EINTR)
            continue;
        if (n <= 0)
            break;
        size_t have = keep + (size_t)n;
        f |= pm_ldso_scan(buf, have);
        if (f == (PM_LDSO_ARGV0 | PM_LDSO_PRELOAD))
            break;
        keep = have < 16 ? have : 16;
        memmove(buf, buf + have - keep, keep);
    }
    nbs_close((int)fd);
    if (key) {
        static unsigned next;
        unsigned slot = __atomic_fetch_add(&next, 1, __ATOMIC_RELAXED) % LDSO_CACHE;
        __atomic_store_n(&ldso_cache[slot], key | f | 0x80, __ATOMIC_RELAXED);
    }
    return f;
}

/* Resolve a program path as execve would (relative to the working directory). */
static int resolve_program(const char *path, char *host, char *sbx)
{
    char abs[PM_PATH_MAX];
    const char *start = path;
    if (path[0] != '/') {
        char base[PM_PATH_MAX];
        int r = base_dir(AT_FDCWD, base, sizeof base);
        if (r == 0)
            r = pm_join(abs, sizeof abs, base, path);
        if (r < 0)
            return r;
        start = abs;
    }
    int r = pm_resolve(&T, &FS, start, PM_FOLLOW, host, PM_PATH_MAX, sbx, PM_PATH_MAX);
    if (r < 0)
        return r;
    /* a host path into the root (fexecve, /proc/self/fd): give its sandbox name */
    if (!pm_match(&T, sbx, 0) && pm_to_sandbox(&T, host, abs, sizeof abs) == 1)
        pm_copy(sbx, PM_PATH_MAX, abs);
    return 0;
}

static int is_shell(const char *given, const char *sbx)
{
    const char *a = pm_basename(given), *b = pm_basename(sbx);
    for (unsigned i = 0; i < T.nshell; i++) {
        if (pm_streq(a, T.shell[i]) || pm_streq(b, T.shell[i]))
            return 1;
    }
    return 0;
}

static const char *env_get(char *const envp[], const char *name)
{
    size_t n = pm_strlen(name);
    for (size_t i = 0; envp && envp[i]; i++) {
        if (pm_startswith(envp[i], name) && envp[i][n] == '=')
            return envp[i] + n + 1;
    }
    return NULL;
}

/* "#!/usr/bin/env prog" with a host env: find prog on the PATH of ENVP as
 * env would.  1 and OUT set when the first match is a store program. */
static __attribute__((noinline)) int env_lookup(const char *prog, char *const envp[], char *out)
{
    const char *path = env_get(envp, "PATH");
    size_t pl = pm_strlen(prog);
    if (!path)
        path = "/bin:/usr/bin";
    for (const char *p = path;;) {
        const char *end = p;
        while (*end && *end != ':')
            end++;
        char cand[PM_PATH_MAX], host[PM_PATH_MAX], sbx[PM_PATH_MAX];
        size_t dl = (size_t)(end - p);
        if (dl + 2 + pl < sizeof cand) {
            if (dl == 0)
                cand[dl++] = '.'; /* an empty entry is the working directory */
            else
                memcpy(cand, p, dl);
            cand[dl] = '/';
            memcpy(cand + dl + 1, prog, pl + 1);
            struct stat st;
            if (resolve_program(cand, host, sbx) == 0 && nbs_faccessat(AT_FDCWD, host, X_OK) == 0 &&
                nbs_fstatat(AT_FDCWD, host, &st, 0) == 0 && S_ISREG(st.st_mode)) {
                if (!pm_match(&T, sbx, 0))
                    return 0;
                return pm_copy(out, PM_PATH_MAX, cand) == 0;
            }
        }
        if (!*end)
            return 0;
        p = end + 1;
    }
}

static int simple_word(const char *s)
{
    if (!*s || *s == '-')
        return 0;
    for (; *s; s++) {
        if (*s == ' ' || *s == '\t' || *s == '=' || *s == '/')
            return 0;
    }
    return 1;
}

/* Read the ELF program headers of FD into BUF (BUFSZ bytes), laid out as
 * pm_elf_interp wants them: the header, then the table.  Patchelf may move
 * the table past the first page. */
static long read_elf_headers(int fd, unsigned char *buf, size_t bufsz, long n)
{
    if (n < 64 || bufsz < 128)
        return n;
    unsigned long phoff = 0, tsize;
    for (int i = 7; i >= 0; i--)
        phoff = (phoff << 8) | buf[32 + i];
    tsize = (unsigned long)(buf[54] | buf[55] << 8) * (unsigned long)(buf[56] | buf[57] << 8);
    if (phoff + tsize <= (unsigned long)n || tsize > bufsz - 64)
        return n;
    long r = nbs_pread(fd, buf + 64, tsize, (long)phoff);
    if (r != (long)tsize)
        return n;
    for (int i = 0; i < 8; i++) /* e_phoff = 64 in the copy */
        buf[32 + i] = i == 0 ? 64 : 0;
    return 64 + r;
}

/* The host path of a script file in the store, for a host interpreter:
 * resolved again, into PL->ldso (unused for host programs).  GIVEN itself
 * when that fails or does not fit. */
static __attribute__((noinline)) const char *script_host(struct exec_plan *pl, const char *given,
                                                         size_t *used)
{
    char host[PM_PATH_MAX], sbx[PM_PATH_MAX];
    if (resolve_program(given, host, sbx) < 0)
        return given;
    size_t n = pm_strlen(host);
    if (*used + n + 1 > sizeof pl->ldso)
        return given;
    char *out = pl->ldso + *used;
    memcpy(out, host, n + 1);
    *used += n + 1;
    return out;
}

/* Work out how to execute PATH: which file, which ld.so, which arguments
 * come from "#!" lines.  Stack and raw system calls only. */
static __attribute__((noinline)) int plan_exec(const char *path, char *const argv[],
                                               char *const envp[], struct exec_plan *pl)
{
    const char *cur = path;
    char sbx[PM_PATH_MAX];
    unsigned char hdr[4096];
    const char *given[PM_MAX_INTERP_DEPTH + 1]; /* the file name of each level */
    int depth = 0;

    if (!path)
        return -EFAULT;
    if (!*path)
        return -ENOENT;
    pl->kind = PM_EXEC_HOST;
    pl->features = 0;
    pl->npre = 0;
    pl->exe_var[0] = '\0';
    pl->argv0 = argv && argv[0] ? argv[0] : "";
    if (exe_sbx[0] && is_proc_exe(path))
        cur = exe_sbx;
    for (;;) {
        struct level *lv = &pl->lv[depth];
        given[depth] = depth ? cur : path;
        int r = resolve_program(cur, pl->program, sbx);
        if (r < 0)
            return r;
        lv->mapped = !pm_streq(pl->program, sbx) || pm_match(&T, sbx, 0) != NULL;
        long fd = nbs_openat(AT_FDCWD, pl->program, O_RDONLY | O_CLOEXEC, 0);
        if (fd < 0)
            break; /* e.g. execute-only: let the kernel decide */
        long n = nbs_pread((int)fd, hdr, sizeof hdr, 0);
        if (n < 0)
            n = 0;
        if (n >= 2 && hdr[0] == '#' && hdr[1] == '!') {
            nbs_close((int)fd);
            if (depth == PM_MAX_INTERP_DEPTH)
                return -ELOOP;
            r = pm_shebang((const char *)hdr, (size_t)n, lv->name, sizeof lv->name, lv->arg,
                           sizeof lv->arg, &lv->has_arg);
            if (r < 0)
                return r;
            if (r == 0)
                return -ENOEXEC;
            cur = lv->name;
            if (!pm_match(&T, lv->name, 0) && pm_streq(pm_basename(lv->name), "env") &&
                lv->has_arg && simple_word(lv->arg) && env_lookup(lv->arg, envp, pl->ldso)) {
                /* as env would: argv[0] is the name, the file is found on PATH
                 * (pl->ldso holds it until the ELF file is reached) */
                pm_copy(lv->name, sizeof lv->name, lv->arg);
                lv->has_arg = 0;
                pm_copy(sbx, sizeof sbx, pl->ldso);
                cur = sbx;
            }
            depth++;
            continue;
        }
        unsigned long off = 0, len = 0;
        n = read_elf_headers((int)fd, hdr, sizeof hdr, n);
        r = pm_elf_interp(hdr, (size_t)n, &off, &len);
        char *interp = (char *)hdr; /* the headers are not needed any more */
        if (r == 1 && len > 1 && len < sizeof hdr &&
            nbs_pread((int)fd, interp, len, (long)off) == (long)len) {
            interp[len] = '\0';
            const struct pm_map *m = pm_match(&T, interp, 0);
            if (m && (m->flags & PM_STORE)) {
                pm_copy(pl->exe_var, sizeof pl->exe_var, PM_ENV_EXE);
                size_t pos = pm_strlen(pl->exe_var);
                if (pm_copy(pl->exe_var + pos, sizeof pl->exe_var - pos, sbx) < 0)
                    pl->exe_var[0] = '\0';
                r = resolve_program(interp, pl->ldso, sbx);
                if (r < 0) {
                    nbs_close((int)fd);
                    return r;
                }
                pl->kind = PM_EXEC_STORE;
                pl->features = ldso_features(pl->ldso);
            } else if (T.nshell && is_shell(cur, sbx)) {
                pl->kind = PM_EXEC_HOST_PRELOAD;
            }
        }
        nbs_close((int)fd);
        break;
    }
    pl->nlevels = depth;
    pl->exec_path = pl->kind == PM_EXEC_STORE ? pl->ldso : pl->program;
    /* Arguments from "#!" lines, as the kernel builds them: for scripts
     * s0 -> i1 -> i2 -> ELF, argv is [i2-name, i2-arg, i1-name, i1-arg, s0, argv[1]...].
     * A host interpreter gets the host paths of script files in the store. */
    int host = pl->kind == PM_EXEC_HOST;
    size_t used = 0;
    if (depth > 0) {
        pl->argv0 = pl->lv[depth - 1].name;
        for (int j = depth - 1; j >= 0; j--) {
            struct level *lv = &pl->lv[j];
            if (j != depth - 1) {
                /* the file of level j+1 is an interpreter named by level j */
                pl->pre[pl->npre++] =
                    host && pl->lv[j + 1].mapped ? script_host(pl, given[j + 1], &used) : lv->name;
            }
            if (lv->has_arg)
                pl->pre[pl->npre++] = lv->arg;
        }
        pl->pre[pl->npre++] = host && pl->lv[0].mapped ? script_host(pl, path, &used) : path;
    }
    return 0;
}

/* Plan, build and either execve (SP NULL) or posix_spawn.  Returns -errno
 * (execve does not return on success; posix_spawn gives 0). */
struct spawn_req {
    pid_t *pid;
    const posix_spawn_file_actions_t *fa;
    const posix_spawnattr_t *attr;
};

#define VEC_ON_STACK 1024

static int run_exec(const char *path, char *const argv[], char *const envp[],
                    const struct spawn_req *sp)
{
    struct exec_plan pl;
    int r = plan_exec(path, argv, envp, &pl);
    if (r < 0)
        return r;
    struct pm_exec_in in = {
        .t = &T,
        .kind = pl.kind,
        .path = pl.exec_path,
        .program = pl.program,
        .argv0 = pl.argv0,
        .features = pl.features,
        .pre = pl.pre,
        .npre = pl.npre,
        .argv = (const char *const *)argv,
        .envp = (const char *const *)envp,
        .config_var = config_var,
        .exe_var = pl.exe_var[0] ? pl.exe_var : NULL,
    };
    size_t na = pm_exec_argv_room(&in), ne = pm_exec_envp_room(&in), total = na + ne;
    const char *stackvec[total <= VEC_ON_STACK ? total : 1];
    const char **vec = stackvec;
    void *map = NULL;
    if (total > VEC_ON_STACK) {
        map = nbs_mmap_anon(total * sizeof *vec);
        if ((unsigned long)map > -4096ul)
            return -ENOMEM;
        vec = map;
    }
    r = pm_build_exec(&in, vec, na, vec + na, ne, pl.str, sizeof pl.str);
    if (r == 0) {
        char *const *xa = (char *const *)vec, *const *xe = (char *const *)(vec + na);
        if (sp) {
            r = REAL(posix_spawn) ? -real_posix_spawn(sp->pid, pl.exec_path, sp->fa, sp->attr, xa, xe)
                                  : -ENOSYS;
        } else {
            CALLI(execve, (pl.exec_path, xa, xe));
            r = -errno;
        }
    }
    if (map)
        nbs_munmap(map, total * sizeof *vec);
    return r;
}

EXPORT int execve(const char *path, char *const argv[], char *const envp[])
{
    ENSURE();
    if (!active)
        return CALLI(execve, (path, argv, envp));
    int r = run_exec(path, argv, envp, NULL);
    errno = -r;
    return -1;
}

EXPORT int execv(const char *path, char *const argv[])
{
    return execve(path, argv, environ);
}

/* execvp's fallback for a file without "#!" that the kernel refuses. */
static void exec_as_sh(const char *file, char *const argv[], char *const envp[])
{
    size_t argc = pm_vlen((const char *const *)argv);
    if (argc + 2 > VEC_ON_STACK) {
        errno = E2BIG;
        return;
    }
    char *nargv[argc + 3];
    nargv[0] = (char *)"/bin/sh";
    nargv[1] = (char *)file;
    for (size_t i = 1; i < argc; i++)
        nargv[i + 1] = argv[i];
    nargv[argc < 1 ? 2 : argc + 1] = NULL;
    execve("/bin/sh", nargv, envp);
}

EXPORT int execvpe(const char *file, char *const argv[], char *const envp[])
{
    ENSURE();
    if (!active)
        return CALLI(execvpe, (file, argv, envp));
    if (!MAYBE_NULL(file) || !*file) {
        errno = ENOENT;
        return -1;
    }
    if (strchr(file, '/')) {
        execve(file, argv, envp);
        if (errno == ENOEXEC)
            exec_as_sh(file, argv, envp);
        return -1;
    }
    const char *path = getenv("PATH");
    if (!path)
        path = "/bin:/usr/bin";
    int eacces = 0;
    for (const char *p = path;;) {
        const char *end = p;
        while (*end && *end != ':')
            end++;
        char cand[PM_PATH_MAX];
        size_t dl = (size_t)(end - p), fl = pm_strlen(file);
        if (dl + 1 + fl < sizeof cand) {
            memcpy(cand, p, dl);
            size_t pos = dl;
            if (dl)
                cand[pos++] = '/';
            memcpy(cand + pos, file, fl + 1);
            execve(cand, argv, envp);
            switch (errno) {
            case ENOEXEC:
                exec_as_sh(cand, argv, envp);
                return -1;
            case EACCES:
                eacces = 1;
                break;
            case ENOENT:
            case ENOTDIR:
            case ESTALE:
            case ENODEV:
            case ETIMEDOUT:
                break;
            default:
                return -1;
            }
        }
        if (!*end)
            break;
        p = end + 1;
    }
    errno = eacces ? EACCES : ENOENT;
    return -1;
}

EXPORT int execvp(const char *file, char *const argv[])
{
    return execvpe(file, argv, environ);
}

/* execl, execle, execlp: collect the variadic arguments on the stack */
#define COLLECT_ARGS(first, ap, argv)                                                           \
    size_t n_ = 0;                                                                              \
    if (MAYBE_NULL(first)) {                                                                    \
        va_list c_;                                                                             \
        va_copy(c_, ap);                                                                        \
        n_ = 1;                                                                                 \
        while (n_ < VEC_ON_STACK && va_arg(c_, char *))                                         \
            n_++;                                                                               \
        va_end(c_);                                                                             \
    }                                                                                           \
    if (n_ >= VEC_ON_STACK) {                                                                   \
        va_end(ap);                                                                             \
        errno = E2BIG;                                                                          \
        return -1;                                                                              \
    }                                                                                           \
    char *argv[n_ + 1];                                                                         \
    argv[0] = (char *)(first);                                                                  \
    for (size_t i_ = 1; i_ < n_; i_++)                                                          \
        argv[i_] = va_arg(ap, char *);                                                          \
    if (n_ > 0)                                                                                 \
        (void)va_arg(ap, char *); /* the terminating NULL */                                    \
    argv[n_] = NULL

EXPORT int execl(const char *path, const char *arg, ...)
{
    va_list ap;
    va_start(ap, arg);
    COLLECT_ARGS(arg, ap, argv);
    va_end(ap);
    return execve(path, argv, environ);
}

EXPORT int execlp(const char *file, const char *arg, ...)
{
    va_list ap;
    va_start(ap, arg);
    COLLECT_ARGS(arg, ap, argv);
    va_end(ap);
    return execvpe(file, argv, environ);
}

EXPORT int execle(const char *path, const char *arg, ...)
{
    va_list ap;
    va_start(ap, arg);
    COLLECT_ARGS(arg, ap, argv);
    char *const *envp = va_arg(ap, char *const *);
    va_end(ap);
    return execve(path, argv, envp);
}

EXPORT int fexecve(int fd, char *const argv[], char *const envp[])
{
    char host[PM_PATH_MAX];
    ENSURE();
    if (!active || fd_host_path(fd, host) < 0)
        return CALLI(fexecve, (fd, argv, envp));
    return execve(host, argv, envp);
}

EXPORT int execveat(int dirfd, const char *path, char *const argv[], char *const envp[],
                    int flags)
{
    char base[PM_PATH_MAX], joined[PM_PATH_MAX];
    ENSURE();
    if (!active || !MAYBE_NULL(path))
        return CALLI(execveat, (dirfd, path, argv, envp, flags));
    if (path[0] == '/' || dirfd == AT_FDCWD)
        return execve(path, argv, envp);
    if (!*path && (flags & AT_EMPTY_PATH))
        return fexecve(dirfd, argv, envp);
    int r = base_dir(dirfd, base, sizeof base);
    if (r == 0)
        r = pm_join(joined, sizeof joined, base, path);
    if (r < 0) {
        errno = -r;
        return -1;
    }
    return execve(joined, argv, envp);
}

/* ------------------------------------------------------------------------ */
/* posix_spawn: glibc's execs internally, where no preload sees it; so the
 * final command is worked out here and glibc's posix_spawn runs that. */

EXPORT int posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
                       const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
    ENSURE();
    if (!active)
        return REAL(posix_spawn) ? real_posix_spawn(pid, path, fa, attr, argv, envp) : ENOSYS;
    struct spawn_req sp = {pid, fa, attr};
    return -run_exec(path, argv, envp, &sp);
}

EXPORT int posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *fa,
                        const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
    ENSURE();
    if (!active)
        return REAL(posix_spawnp) ? real_posix_spawnp(pid, file, fa, attr, argv, envp) : ENOSYS;
    if (!MAYBE_NULL(file) || !*file)
        return ENOENT;
    struct spawn_req sp = {pid, fa, attr};
    if (strchr(file, '/'))
        return -run_exec(file, argv, envp, &sp);
    const char *path = getenv("PATH");
    if (!path)
        path = "/bin:/usr/bin";
    int err = ENOENT;
    for (const char *p = path;;) {
        const char *end = p;
        while (*end && *end != ':')
            end++;
        char cand[PM_PATH_MAX], host[PM_PATH_MAX], sbx[PM_PATH_MAX];
        size_t dl = (size_t)(end - p), fl = pm_strlen(file);
        if (dl + 1 + fl < sizeof cand) {
            memcpy(cand, p, dl);
            size_t pos = dl;
            if (dl)
                cand[pos++] = '/';
            memcpy(cand + pos, file, fl + 1);
            int r = resolve_program(cand, host, sbx);
            if (r == 0) {
                struct stat st;
                r = (int)nbs_fstatat(AT_FDCWD, host, &st, 0);
                if (r == 0 && !S_ISREG(st.st_mode))
                    r = -EACCES;
                if (r == 0)
                    r = (int)nbs_faccessat(AT_FDCWD, host, X_OK);
            }
            if (r == 0)
                return -run_exec(cand, argv, envp, &sp);
            if (r == -EACCES)
                err = EACCES;
            else if (r != -ENOENT && r != -ENOTDIR)
                return -r;
        }
        if (!*end)
            break;
        p = end + 1;
    }
    return err;
}

EXPORT int posix_spawn_file_actions_addopen(posix_spawn_file_actions_t *fa, int fd,
                                            const char *path, int flags, mode_t mode)
{
    char b[PM_PATH_MAX];
    const char *p;
    ENSURE();
    if (!REAL(posix_spawn_file_actions_addopen))
        return ENOSYS;
    if (map_path(AT_FDCWD, path, b, open_how(flags), &p) < 0)
        return errno;
    return real_posix_spawn_file_actions_addopen(fa, fd, p, flags, mode);
}

EXPORT int posix_spawn_file_actions_addchdir_np(posix_spawn_file_actions_t *fa, const char *path)
{
    char b[PM_PATH_MAX];
    const char *p;
    ENSURE();
    if (!REAL(posix_spawn_file_actions_addchdir_np))
        return ENOSYS;
    if (map_path(AT_FDCWD, path, b, F_FOLLOW, &p) < 0)
        return errno;
    return real_posix_spawn_file_actions_addchdir_np(fa, p);
}

/* ------------------------------------------------------------------------ */
/* system, popen: glibc's spawn /bin/sh internally; ours spawn it through
 * posix_spawn above, so that the shell (a host shell gets the preload) runs
 * store programs named on the command line. */

static volatile int sig_lock;
static int sig_users;
static struct sigaction saved_int, saved_quit;

static void spin_lock(volatile int *l)
{
    while (__atomic_test_and_set((void *)l, __ATOMIC_ACQUIRE))
        nbs_sched_yield();
}

static void spin_unlock(volatile int *l)
{
    __atomic_clear((void *)l, __ATOMIC_RELEASE);
}

EXPORT int system(const char *cmd)
{
    ENSURE();
    if (!active)
        return CALLI(system, (cmd));
    if (!cmd)
        return system("exit 0") == 0;

    struct sigaction ign;
    sigset_t block, omask;
    memset(&ign, 0, sizeof ign);
    ign.sa_handler = SIG_IGN;
    sigemptyset(&ign.sa_mask);
    sigemptyset(&block);
    sigaddset(&block, SIGCHLD);

    spin_lock(&sig_lock);
    if (sig_users++ == 0) {
        sigaction(SIGINT, &ign, &saved_int);
        sigaction(SIGQUIT, &ign, &saved_quit);
    }
    spin_unlock(&sig_lock);
    sigprocmask(SIG_BLOCK, &block, &omask);

    posix_spawnattr_t attr;
    sigset_t defsig;
    int status = -1;
    pid_t pid;
    int r = posix_spawnattr_init(&attr);
    if (r == 0) {
        sigemptyset(&defsig);
        if (saved_int.sa_handler != SIG_IGN)
            sigaddset(&defsig, SIGINT);
        if (saved_quit.sa_handler != SIG_IGN)
            sigaddset(&defsig, SIGQUIT);
        posix_spawnattr_setsigdefault(&attr, &defsig);
        posix_spawnattr_setsigmask(&attr, &omask);
        posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
        char *argv[] = {(char *)"sh", (char *)"-c", (char *)"--", (char *)cmd, NULL};
        r = posix_spawn(&pid, "/bin/sh", NULL, &attr, argv, environ);
        posix_spawnattr_destroy(&attr);
    }
    if (r == 0) {
        while (waitpid(pid, &status, 0) < 0) {
            if (errno != EINTR) {
                status = -1;
                break;
            }
        }
    } else {
        status = W_EXITCODE(127, 0);
    }

    int saved = errno;
    spin_lock(&sig_lock);
    if (--sig_users == 0) {
        sigaction(SIGINT, &saved_int, NULL);
        sigaction(SIGQUIT, &saved_quit, NULL);
    }
    spin_unlock(&sig_lock);
    sigprocmask(SIG_SETMASK, &omask, NULL);
    errno = saved;
    return status;
}

struct popen_entry {
    FILE *f;
    pid_t pid;
    int fd;
    struct popen_entry *next;
};
static struct popen_entry *popen_list;
static volatile int popen_lock;

EXPORT FILE *popen(const char *cmd, const char *mode)
{
    ENSURE();
    if (!active)
        return CALLP(popen, (cmd, mode));
    int reading, cloexec = 0;
    if (!cmd || !mode || (mode[0] != 'r' && mode[0] != 'w')) {
        errno = EINVAL;
        return NULL;
    }
    reading = mode[0] == 'r';
    for (const char *m = mode + 1; *m; m++) {
        if (*m == 'e')
            cloexec = 1;
        else {
            errno = EINVAL;
            return NULL;
        }
    }
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0)
        return NULL;
    int parent_end = reading ? fds[0] : fds[1];
    int child_end = reading ? fds[1] : fds[0];
    int target = reading ? 1 : 0;
    struct popen_entry *e = malloc(sizeof *e);
    posix_spawn_file_actions_t fa;
    int fa_ok = 0, r = ENOMEM;
    pid_t pid = -1;
    if (!e)
        goto fail;
    r = posix_spawn_file_actions_init(&fa);
    if (r)
        goto fail;
    fa_ok = 1;
    if (child_end == target) {
        /* dup2 onto itself would keep O_CLOEXEC: move it first */
        int moved = fcntl(child_end, F_DUPFD_CLOEXEC, 3);
        if (moved < 0) {
            r = errno;
            goto fail;
        }
        close(child_end);
        child_end = moved;
        if (reading)
            fds[1] = moved;
        else
            fds[0] = moved;
    }
    r = posix_spawn_file_actions_adddup2(&fa, child_end, target);
    /* POSIX: streams of earlier popen() calls are closed in the child */
    spin_lock(&popen_lock);
    for (struct popen_entry *p = popen_list; p && r == 0; p = p->next) {
        if (p->fd != target)
            r = posix_spawn_file_actions_addclose(&fa, p->fd);
    }
    spin_unlock(&popen_lock);
    if (r)
        goto fail;
    char *argv[] = {(char *)"sh", (char *)"-c", (char *)"--", (char *)cmd, NULL};
    r = posix_spawn(&pid, "/bin/sh", &fa, NULL, argv, environ);
    if (r)
        goto fail;
    posix_spawn_file_actions_destroy(&fa);
    close(child_end);
    if (!cloexec) {
        int fl = fcntl(parent_end, F_GETFD);
        if (fl >= 0)
            fcntl(parent_end, F_SETFD, fl & ~FD_CLOEXEC);
    }
    FILE *f = fdopen(parent_end, reading ? "r" : "w");
    if (!f) {
        int saved = errno;
        close(parent_end);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
        free(e);
        errno = saved;
        return NULL;
    }
    e->f = f;
    e->pid = pid;
    e->fd = parent_end;
    spin_lock(&popen_lock);
    e->next = popen_list;
    popen_list = e;
    spin_unlock(&popen_lock);
    return f;

fail:
    if (fa_ok)
        posix_spawn_file_actions_destroy(&fa);
    close(fds[0]);
    close(fds[1]);
    free(e);
    errno = r;
    return NULL;
}

EXPORT int pclose(FILE *f)
{
    ENSURE();
    struct popen_entry *e = NULL, **pp;
    spin_lock(&popen_lock);
    for (pp = &popen_list; *pp; pp = &(*pp)->next) {
        if ((*pp)->f == f) {
            e = *pp;
            *pp = e->next;
            break;
        }
    }
    spin_unlock(&popen_lock);
    if (!e)
        return CALLI(pclose, (f));
    pid_t pid = e->pid;
    free(e);
    fclose(f);
    int status;
    for (;;) {
        if (waitpid(pid, &status, 0) >= 0)
            return status;
        if (errno != EINTR)
            return -1;
    }
}
