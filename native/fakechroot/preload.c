/* nbs-preload: the preload library of nbsandbox's fakechroot engine.
 *
 * Loaded into every store program (`ld.so --audit nbs-audit.so --preload
 * nbs-preload.so PROGRAM`), it makes the program see the store at its
 * prefix: every libc entry point that takes a path translates sandbox paths
 * to host paths (pathmap.c), the few that return paths translate them back,
 * writes into read-only mappings fail with EROFS, and exec/spawn of another
 * store program goes through the store's ld.so again.
 *
 * The library is built from preload.c (state, init, path mapping),
 * preload_fs.c (file-system interposers) and preload_exec.c (exec and spawn
 * interposers), which share preload.h.
 *
 * Rules for these files:
 *  - the fast path (a path not under any mapping, or a plain store path) is
 *    a prefix comparison and a copy into a stack buffer: no system call, no
 *    lock, no allocation;
 *  - configuration is parsed once at load time and read-only afterwards;
 *  - the exec path runs inside vfork() children: stack buffers and raw
 *    system calls only, no malloc, no locks;
 *  - every buffer is fixed-size; paths that do not fit fail with
 *    ENAMETOOLONG.
 */
#include "preload.h"
#include "nextsym.h"

/* ------------------------------------------------------------------------ */
/* state: written once by init, read-only afterwards */

struct pm_table T;
int active;
char config_var[sizeof PM_ENV_CONFIG + PM_CONFIG_MAX];
char exe_sbx[PM_PATH_MAX];  /* what /proc/self/exe shows, "" if not ours */
char exe_host[PM_PATH_MAX]; /* where that file is */
static char argv0_buf[PM_PATH_MAX];
static int argv0_pending;
/* may_map[c]: some mapping's sandbox dir (or /proc, //, /.) starts with "/c";
 * all zeros until the configuration is loaded */
unsigned char may_map[256];
int init_state; /* 0: not yet, 1: running, 2: done */
static long init_tid;

/* ------------------------------------------------------------------------ */
/* the next definitions of the functions we interpose */

void *next_sym(const char *name)
{
    return nbs_next_symbol(name);
}

#define DECLARE_REAL(f) __typeof__(f) *real_##f;
REAL_FUNCTIONS(DECLARE_REAL)
#undef DECLARE_REAL

static void resolve_all(void)
{
#define RESOLVE_REAL(f) real_##f = (__typeof__(f) *)next_sym(#f);
    REAL_FUNCTIONS(RESOLVE_REAL)
#undef RESOLVE_REAL
}

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
const struct pm_fs FS = {0, fs_readlink};

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

/* The engine's configuration (none: no translation, e.g. when the library
 * is preloaded only to record accesses). */
static void engine_init(void)
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
    engine_fds_init();
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

static void do_init(void)
{
    engine_init();
    report_init();
}

void init_slow(void)
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

__attribute__((constructor)) static void nbs_preload_init(int argc, char **argv, char **envp)
{
    (void)envp;
    ENSURE();
    if (active)
        engine_fds_atfork();
    if (argv0_pending && argc > 0 && argv) {
        argv[0] = argv0_buf;
        argv0_pending = 0;
    }
    if (argc > 0 && argv)
        report_program(argv[0]);
}


/* ------------------------------------------------------------------------ */
/* path mapping */


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
int is_proc_exe(const char *path)
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
    /* under a held directory: only the components after it */
    for (unsigned i = 0; i < T.n; i++) {
        const struct pm_map *m = &T.map[i];
        if (!(m->flags & PM_RO) || strncmp(host, m->to, m->to_len) != 0 ||
            host[m->to_len] != '/')
            continue;
        const char *rel = host + m->to_len;
        while (*rel == '/')
            rel++;
        int fd;
        if (*rel && !pm_has_dotdot(rel) && (fd = held_fd(m)) >= 0)
            return nbs_readlinkat(fd, rel, buf, n);
        break;
    }
    return nbs_readlinkat(AT_FDCWD, host, buf, n);
}

/* The host path behind descriptor FD (via /proc/self/fd) into OUT (PM_PATH_MAX). */
int fd_host_path(int fd, char *out)
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
int base_dir(int dirfd, char *out, size_t outsz)
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
int map_path_slow(int dirfd, const char *path, char *buf, unsigned how, const char **out)
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

/* After a call on USED (from map_path) failed with ENOENT, ENOTDIR or EACCES
 * (an absolute symlink in the root leads the kernel to the host's prefix,
 * which may be missing or closed): resolve
 * PATH in the sandbox's view (symlinks to absolute store paths, ancestors of
 * the prefix, ".." out of the store...).  Returns 1 with *out set when the
 * call should be made again on the new path, else 0 with errno set. */
int retry_path(int dirfd, const char *path, const char *used, char *buf, unsigned how,
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

/* Whether host path HOST is M's TO joined with REL. */
static int is_to_joined(const char *host, const struct pm_map *m, const char *rel)
{
    return strncmp(host, m->to, m->to_len) == 0 && host[m->to_len] == '/' &&
           pm_streq(host + m->to_len + 1, rel);
}

/* retry_path after a call made on (USED_FD, USED) from map_path_at. */
int retry_path_at(int dirfd, const char *path, int used_fd, const char *used, char *buf,
                  unsigned how, int *fd, const char **out)
{
    *fd = dirfd;
    if (used_fd == dirfd || !path || path[0] != '/')
        return errno != EBADF && retry_path(dirfd, path, used, buf, how, out);
    /* USED is relative to a held directory */
    if (errno == EBADF) {
        /* closed behind our back (a raw system call): the full host path */
        held_lost(used_fd);
        const char *p = path;
        if (map_path_slow(dirfd, path, buf, how, &p) < 0 || p == path)
            return 0;
        *out = p;
        return 1;
    }
    int saved = errno;
    const struct pm_map *um = held_mapping(used_fd), *m;
    int r = resolve_into(path, how, buf, &m);
    if (r == 0)
        r = check_ro(m, buf, how);
    if (r < 0) {
        errno = -r;
        return 0;
    }
    if (um && is_to_joined(buf, um, used)) {
        errno = saved;
        return 0;
    }
    *out = buf;
    return 1;
}
