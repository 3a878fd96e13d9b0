/* nbs-preload: the exec and spawn interposers.
 *
 * A store program started by another (execve and friends, posix_spawn,
 * system, popen) goes through the store's ld.so again, with the audit
 * module and this library; the PATH search is execvp's, shared with the
 * launcher (common/execpath.c).  This code runs inside vfork() children:
 * stack buffers and raw system calls only, no malloc, no locks.  See
 * preload.c for the rules.
 */
#include "preload.h"
#include "../common/execpath.h"

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
        .report_fd_var = RECORDING() ? rec_fd_var : NULL,
        .report_skip_var = rec_skip_var,
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

/* Before an exec of PATH (relative to DIRFD) when recording: recorded as
 * done when the file it runs may be executed (an exec that works does not
 * return to say so); a failure is recorded after the call. */
static __attribute__((noinline)) void exec_before(int dirfd, const char *path)
{
    char b[PM_PATH_MAX];
    const char *p = path;
    if (!MAYBE_NULL(path) || (active && map_path(dirfd, path, b, F_FOLLOW, &p) < 0))
        return;
    rec_exec_before(dirfd, path, p);
}

EXPORT int execve(const char *path, char *const argv[], char *const envp[])
{
    ENSURE();
    if (RECORDING())
        exec_before(AT_FDCWD, path);
    if (!active) {
        CALLI(execve, (path, argv, envp));
    } else {
        int r = run_exec(path, argv, envp, NULL);
        errno = -r;
    }
    RECORD(REC_EXEC, AT_FDCWD, path, 1);
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

struct exec_try {
    char *const *argv;
    char *const *envp;
};

/* One candidate of execvpe's search: a file that is no executable format
 * runs as a shell script, as execvp does; its failure ends the search. */
static int try_exec(const char *cand, void *ctx)
{
    const struct exec_try *t = ctx;
    execve(cand, t->argv, t->envp);
    if (errno != ENOEXEC)
        return errno;
    exec_as_sh(cand, t->argv, t->envp);
    return -errno;
}

EXPORT int execvpe(const char *file, char *const argv[], char *const envp[])
{
    ENSURE();
    /* the search is ours when recording: each candidate is recorded */
    if (!active && !RECORDING())
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
    struct exec_try t = {argv, envp};
    errno = nbs_search_path(file, getenv("PATH"), try_exec, &t, NULL, 0);
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
    if (active && fd_host_path(fd, host) == 0)
        return execve(host, argv, envp);
    int recorded = RECORDING() && fd_host_path(fd, host) == 0;
    if (recorded)
        rec_exec_before(AT_FDCWD, host, host);
    CALLI(fexecve, (fd, argv, envp));
    if (recorded)
        rec_path(REC_EXEC, AT_FDCWD, host, errno);
    return -1;
}

EXPORT int execveat(int dirfd, const char *path, char *const argv[], char *const envp[],
                    int flags)
{
    char base[PM_PATH_MAX], joined[PM_PATH_MAX];
    ENSURE();
    if (!active || !MAYBE_NULL(path)) {
        if (RECORDING())
            exec_before(dirfd, path);
        CALLI(execveat, (dirfd, path, argv, envp, flags));
        RECORD(REC_EXEC, dirfd, path, 1);
        return -1;
    }
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
    int r;
    if (!active) {
        r = REAL(posix_spawn) ? real_posix_spawn(pid, path, fa, attr, argv, envp) : ENOSYS;
    } else {
        struct spawn_req sp = {pid, fa, attr};
        r = -run_exec(path, argv, envp, &sp);
    }
    if (RECORDING())
        rec_path(REC_EXEC, AT_FDCWD, path, r);
    return r;
}

struct spawn_try {
    char *const *argv;
    char *const *envp;
    struct spawn_req *sp;
};

/* One candidate of posix_spawnp's search: only a regular, executable file
 * is spawned (glibc's posix_spawn cannot report a failed exec as a search
 * would need). */
static int try_spawn(const char *cand, void *ctx)
{
    const struct spawn_try *t = ctx;
    char host[PM_PATH_MAX], sbx[PM_PATH_MAX];
    int r = resolve_program(cand, host, sbx);
    if (r == 0) {
        struct stat st;
        r = (int)nbs_fstatat(AT_FDCWD, host, &st, 0);
        if (r == 0 && !S_ISREG(st.st_mode))
            r = -EACCES;
        if (r == 0)
            r = (int)nbs_faccessat(AT_FDCWD, host, X_OK);
    }
    if (r == 0) {
        r = run_exec(cand, t->argv, t->envp, t->sp); /* spawned, or the search ends */
        if (RECORDING())
            rec_path(REC_EXEC, AT_FDCWD, cand, -r);
        return r;
    }
    if (RECORDING())
        rec_path(REC_EXEC, AT_FDCWD, cand, -r);
    return -r;
}

/* The same without the engine (recording only): glibc's posix_spawn runs
 * the candidate. */
static int try_spawn_plain(const char *cand, void *ctx)
{
    const struct spawn_try *t = ctx;
    struct stat st;
    int r = (int)nbs_fstatat(AT_FDCWD, cand, &st, 0);
    if (r == 0 && !S_ISREG(st.st_mode))
        r = -EACCES;
    if (r == 0)
        r = (int)nbs_faccessat(AT_FDCWD, cand, X_OK);
    if (r == 0)
        return -posix_spawn(t->sp->pid, cand, t->sp->fa, t->sp->attr, t->argv, t->envp);
    rec_path(REC_EXEC, AT_FDCWD, cand, -r);
    return -r;
}

EXPORT int posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *fa,
                        const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
    ENSURE();
    if (!active && !RECORDING())
        return REAL(posix_spawnp) ? real_posix_spawnp(pid, file, fa, attr, argv, envp) : ENOSYS;
    if (!MAYBE_NULL(file) || !*file)
        return ENOENT;
    struct spawn_req sp = {pid, fa, attr};
    if (strchr(file, '/')) {
        if (!active)
            return posix_spawn(pid, file, fa, attr, argv, envp);
        int r = -run_exec(file, argv, envp, &sp);
        if (RECORDING())
            rec_path(REC_EXEC, AT_FDCWD, file, r);
        return r;
    }
    struct spawn_try t = {argv, envp, &sp};
    return nbs_search_path(file, getenv("PATH"), active ? try_spawn : try_spawn_plain, &t, NULL,
                           0);
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
    if (!active) {
        int r = CALLI(system, (cmd));
        if (cmd && RECORDING())
            rec_path(REC_EXEC, AT_FDCWD, "/bin/sh", r == -1 ? errno : 0);
        return r;
    }
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
    if (!active) {
        FILE *f = CALLP(popen, (cmd, mode));
        if (RECORDING())
            rec_path(REC_EXEC, AT_FDCWD, "/bin/sh", f ? 0 : errno);
        return f;
    }
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

