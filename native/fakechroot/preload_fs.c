/* nbs-preload: the file-system interposers.
 *
 * Every libc entry point that takes a path maps it (preload.h: map_path,
 * PATH_CALL), the few that return paths translate them back, and writes
 * into read-only mappings fail with EROFS.  See preload.c for the rules.
 */
#include "preload.h"

/* ------------------------------------------------------------------------ */
/* open */

unsigned open_how(int flags)
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

/* The operation an open with FLAGS records. */
static int open_op(int flags)
{
    if ((flags & O_ACCMODE) != O_RDONLY || (flags & (O_CREAT | O_TRUNC)) ||
        (flags & O_TMPFILE) == O_TMPFILE)
        return REC_WRITE;
    return (flags & O_DIRECTORY) ? REC_LIST : REC_OPEN;
}

static int do_openat(int dirfd, const char *path, int flags, mode_t mode)
{
    PATH_AT_CALL(open_op(flags), int, -1, dirfd, path, open_how(flags),
                 CALLI(openat, (d, p, flags, mode)));
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

static int fopen_op(const char *mode)
{
    return (fopen_how(mode) & F_WRITE) ? REC_WRITE : REC_OPEN;
}

EXPORT FILE *fopen(const char *path, const char *mode)
{
    PATH_CALL(fopen_op(mode), FILE *, NULL, AT_FDCWD, path, fopen_how(mode),
              CALLP(fopen, (p, mode)));
}

EXPORT FILE *fopen64(const char *path, const char *mode)
{
    PATH_CALL(fopen_op(mode), FILE *, NULL, AT_FDCWD, path, fopen_how(mode),
              CALLP(fopen64, (p, mode)));
}

EXPORT FILE *freopen(const char *path, const char *mode, FILE *stream)
{
    PATH_CALL(fopen_op(mode), FILE *, NULL, AT_FDCWD, path, fopen_how(mode),
              CALLP(freopen, (p, mode, stream)));
}

EXPORT FILE *freopen64(const char *path, const char *mode, FILE *stream)
{
    PATH_CALL(fopen_op(mode), FILE *, NULL, AT_FDCWD, path, fopen_how(mode),
              CALLP(freopen64, (p, mode, stream)));
}

/* ------------------------------------------------------------------------ */
/* stat: raw system calls, the same on every glibc (stat became a real symbol
 * only in 2.33; before, programs call __xstat) */

static __attribute__((noinline)) int fstatat_mapped(int dirfd, const char *path,
                                                    struct stat *st, int flags)
{
    unsigned how = (flags & AT_SYMLINK_NOFOLLOW) ? 0 : F_FOLLOW;
    SYS_AT_CALL(REC_STAT, dirfd, path, how, nbs_fstatat(d, p, st, flags));
}

/* The stat family is the hottest: a host path is one table lookup away
 * from the system call, with no stack buffers and no retry code inline. */
static inline __attribute__((always_inline)) int do_fstatat(int dirfd, const char *path,
                                                             struct stat *st, int flags)
{
    if (LIKELY(__atomic_load_n(&init_state, __ATOMIC_ACQUIRE) == 2 && path && path[0] == '/' &&
               !may_map[(unsigned char)path[1]])) {
        long r = nbs_fstatat(dirfd, path, st, flags);
        if (LIKELY(r == 0)) {
            RECORD(REC_STAT, dirfd, path, 0);
            return 0;
        }
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
    SYS_AT_CALL(REC_STAT, dirfd, path, how, nbs_statx(d, p, flags, mask, buf));
}

EXPORT int statfs(const char *path, struct statfs *buf)
{
    PATH_CALL(REC_STAT, int, -1, AT_FDCWD, path, F_FOLLOW, CALLI(statfs, (p, buf)));
}

EXPORT int statfs64(const char *path, struct statfs64 *buf)
{
    PATH_CALL(REC_STAT, int, -1, AT_FDCWD, path, F_FOLLOW, CALLI(statfs64, (p, buf)));
}

EXPORT int statvfs(const char *path, struct statvfs *buf)
{
    PATH_CALL(REC_STAT, int, -1, AT_FDCWD, path, F_FOLLOW, CALLI(statvfs, (p, buf)));
}

EXPORT int statvfs64(const char *path, struct statvfs64 *buf)
{
    PATH_CALL(REC_STAT, int, -1, AT_FDCWD, path, F_FOLLOW, CALLI(statvfs64, (p, buf)));
}

EXPORT long pathconf(const char *path, int name)
{
    PATH_CALL(REC_STAT, long, -1, AT_FDCWD, path, F_FOLLOW, CALLI(pathconf, (p, name)));
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
    PATH_AT_CALL(REC_STAT, int, -1, AT_FDCWD, path, access_how(mode, 0),
                 CALLI(faccessat, (d, p, mode, 0)));
}

EXPORT int faccessat(int dirfd, const char *path, int mode, int flags)
{
    PATH_AT_CALL(REC_STAT, int, -1, dirfd, path, access_how(mode, flags),
                 CALLI(faccessat, (d, p, mode, flags)));
}

EXPORT int euidaccess(const char *path, int mode)
{
    PATH_CALL(REC_STAT, int, -1, AT_FDCWD, path, access_how(mode, 0), CALLI(euidaccess, (p, mode)));
}

EXPORT int eaccess(const char *path, int mode)
{
    PATH_CALL(REC_STAT, int, -1, AT_FDCWD, path, access_how(mode, 0), CALLI(eaccess, (p, mode)));
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

static ssize_t do_readlinkat(int dirfd, const char *path, char *buf, size_t bufsiz)
{
    char b1[PM_PATH_MAX], b2[PM_PATH_MAX], target[PM_PATH_MAX], sbx[PM_PATH_MAX];
    const char *p;
    int d;
    ENSURE();
    if (active && exe_sbx[0] && MAYBE_NULL(path) && path[0] == '/' && is_proc_exe(path))
        return copy_out(exe_sbx, buf, bufsiz);
    if (map_path_at(dirfd, path, b1, 0, &d, &p) < 0)
        return -1;
    long n = nbs_readlinkat(d, p, target, sizeof target - 1);
    if (n < 0) {
        errno = (int)-n;
        if (!active || !RETRY_AT_ERRNO(errno) || !retry_path_at(dirfd, path, d, p, b2, 0, &d, &p))
            return -1;
        n = nbs_readlinkat(d, p, target, sizeof target - 1);
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

EXPORT ssize_t readlinkat(int dirfd, const char *path, char *buf, size_t bufsiz)
{
    ssize_t r = do_readlinkat(dirfd, path, buf, bufsiz);
    RECORD(REC_READLINK, dirfd, path, r < 0);
    return r;
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

static char *do_realpath(const char *path, char *resolved)
{
    char abs[PM_PATH_MAX], host[PM_PATH_MAX], sbx[PM_PATH_MAX];
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

EXPORT char *realpath(const char *path, char *resolved)
{
    ENSURE();
    char *r = do_realpath(path, resolved);
    RECORD(REC_READLINK, AT_FDCWD, path, !r);
    return r;
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

static int do_chdir(const char *path)
{
    PATH_CALL(REC_NONE, int, -1, AT_FDCWD, path, F_FOLLOW, CALLI(chdir, (p)));
}

EXPORT int chdir(const char *path)
{
    int r = do_chdir(path);
    cwd_changed();
    return r;
}

static int do_chroot(const char *path)
{
    PATH_CALL(REC_NONE, int, -1, AT_FDCWD, path, F_FOLLOW, CALLI(chroot, (p)));
}

EXPORT int chroot(const char *path)
{
    int r = do_chroot(path);
    if (r == 0)
        held_drop_all(); /* they lead out of the new root: full host paths from now */
    return r;
}

/* ------------------------------------------------------------------------ */
/* directories */

/* opendir of P, relative to D (a held directory) or absolute/relative to
 * the working directory (AT_FDCWD): as glibc's opendir does it. */
static DIR *opendir_at(int d, const char *p)
{
    if (d == AT_FDCWD)
        return CALLP(opendir, (p));
    int fd = CALLI(openat, (d, p, O_RDONLY | O_NONBLOCK | O_DIRECTORY | O_CLOEXEC, 0));
    if (fd < 0)
        return NULL;
    DIR *dir = fdopendir(fd);
    if (!dir) {
        int e = errno;
        nbs_close(fd);
        errno = e;
    }
    return dir;
}

EXPORT DIR *opendir(const char *path)
{
    PATH_AT_CALL(REC_LIST, DIR *, NULL, AT_FDCWD, path, F_FOLLOW, opendir_at(d, p));
}

typedef int (*scan_filter)(const struct dirent *);
typedef int (*scan_compar)(const struct dirent **, const struct dirent **);
typedef int (*scan_filter64)(const struct dirent64 *);
typedef int (*scan_compar64)(const struct dirent64 **, const struct dirent64 **);

EXPORT int scandir(const char *path, struct dirent ***list, scan_filter filter, scan_compar cmp)
{
    PATH_AT_CALL(REC_LIST, int, -1, AT_FDCWD, path, F_FOLLOW,
                 CALLI(scandirat, (d, p, list, filter, cmp)));
}

EXPORT int scandir64(const char *path, struct dirent64 ***list, scan_filter64 filter,
                     scan_compar64 cmp)
{
    PATH_CALL(REC_LIST, int, -1, AT_FDCWD, path, F_FOLLOW,
              CALLI(scandir64, (p, list, filter, cmp)));
}

EXPORT int scandirat(int dirfd, const char *path, struct dirent ***list, scan_filter filter,
                     scan_compar cmp)
{
    PATH_AT_CALL(REC_LIST, int, -1, dirfd, path, F_FOLLOW,
                 CALLI(scandirat, (d, p, list, filter, cmp)));
}

EXPORT int mkdir(const char *path, mode_t mode)
{
    PATH_CALL(REC_WRITE, int, -1, AT_FDCWD, path, F_CREATE, CALLI(mkdirat, (AT_FDCWD, p, mode)));
}

EXPORT int mkdirat(int dirfd, const char *path, mode_t mode)
{
    PATH_CALL(REC_WRITE, int, -1, dirfd, path, F_CREATE, CALLI(mkdirat, (dirfd, p, mode)));
}

EXPORT int rmdir(const char *path)
{
    PATH_CALL(REC_WRITE, int, -1, AT_FDCWD, path, F_WRITE, CALLI(rmdir, (p)));
}

/* ------------------------------------------------------------------------ */
/* functions that change files */

EXPORT int unlink(const char *path)
{
    PATH_CALL(REC_WRITE, int, -1, AT_FDCWD, path, F_WRITE, CALLI(unlinkat, (AT_FDCWD, p, 0)));
}

EXPORT int unlinkat(int dirfd, const char *path, int flags)
{
    PATH_CALL(REC_WRITE, int, -1, dirfd, path, F_WRITE, CALLI(unlinkat, (dirfd, p, flags)));
}

EXPORT int remove(const char *path)
{
    PATH_CALL(REC_WRITE, int, -1, AT_FDCWD, path, F_WRITE, CALLI(remove, (p)));
}

/* Two-path calls: map both; a retry re-maps the one that failed to resolve. */
#define TWO_PATH_CALL(fd1, path1, how1, fd2, path2, how2, call)                                 \
    do {                                                                                        \
        char b1_[PM_PATH_MAX], b2_[PM_PATH_MAX], b3_[PM_PATH_MAX], b4_[PM_PATH_MAX];            \
        const char *p, *q;                                                                      \
        ENSURE();                                                                               \
        if (map_path((fd1), (path1), b1_, (how1), &p) < 0 ||                                    \
            map_path((fd2), (path2), b2_, (how2), &q) < 0) {                                    \
            RECORD(REC_WRITE, (fd1), (path1), 1);                                               \
            RECORD(REC_WRITE, (fd2), (path2), 1);                                               \
            return -1;                                                                          \
        }                                                                                       \
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
        RECORD(REC_WRITE, (fd1), (path1), r_ < 0);                                              \
        RECORD(REC_WRITE, (fd2), (path2), r_ < 0);                                              \
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
        RECORD(REC_WRITE, AT_FDCWD, new, 1);
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
        RECORD(REC_WRITE, newfd, new, 1);
        return -1;
    }
    TWO_PATH_CALL(oldfd, old, how, newfd, new, F_CREATE,
                  CALLI(linkat, (oldfd, p, newfd, q, flags)));
}

/* The target of a symbolic link is stored as given: it is resolved in the
 * sandbox's view when followed. */
EXPORT int symlink(const char *target, const char *linkpath)
{
    PATH_CALL(REC_WRITE, int, -1, AT_FDCWD, linkpath, F_CREATE,
              CALLI(symlinkat, (target, AT_FDCWD, p)));
}

EXPORT int symlinkat(const char *target, int dirfd, const char *linkpath)
{
    PATH_CALL(REC_WRITE, int, -1, dirfd, linkpath, F_CREATE, CALLI(symlinkat, (target, dirfd, p)));
}

EXPORT int chmod(const char *path, mode_t mode)
{
    PATH_CALL(REC_WRITE, int, -1, AT_FDCWD, path, F_FOLLOW | F_WRITE, CALLI(chmod, (p, mode)));
}

EXPORT int lchmod(const char *path, mode_t mode)
{
    PATH_CALL(REC_WRITE, int, -1, AT_FDCWD, path, F_WRITE, CALLI(lchmod, (p, mode)));
}

EXPORT int fchmodat(int dirfd, const char *path, mode_t mode, int flags)
{
    unsigned how = ((flags & AT_SYMLINK_NOFOLLOW) ? 0 : F_FOLLOW) | F_WRITE;
    PATH_CALL(REC_WRITE, int, -1, dirfd, path, how, CALLI(fchmodat, (dirfd, p, mode, flags)));
}

EXPORT int chown(const char *path, uid_t uid, gid_t gid)
{
    PATH_CALL(REC_WRITE, int, -1, AT_FDCWD, path, F_FOLLOW | F_WRITE, CALLI(chown, (p, uid, gid)));
}

EXPORT int lchown(const char *path, uid_t uid, gid_t gid)
{
    PATH_CALL(REC_WRITE, int, -1, AT_FDCWD, path, F_WRITE, CALLI(lchown, (p, uid, gid)));
}

EXPORT int fchownat(int dirfd, const char *path, uid_t uid, gid_t gid, int flags)
{
    unsigned how = ((flags & AT_SYMLINK_NOFOLLOW) ? 0 : F_FOLLOW) | F_WRITE;
    PATH_CALL(REC_WRITE, int, -1, dirfd, path, how, CALLI(fchownat, (dirfd, p, uid, gid, flags)));
}

EXPORT int utime(const char *path, const struct utimbuf *times)
{
    PATH_CALL(REC_WRITE, int, -1, AT_FDCWD, path, F_FOLLOW | F_WRITE, CALLI(utime, (p, times)));
}

EXPORT int utimes(const char *path, const struct timeval tv[2])
{
    PATH_CALL(REC_WRITE, int, -1, AT_FDCWD, path, F_FOLLOW | F_WRITE, CALLI(utimes, (p, tv)));
}

EXPORT int lutimes(const char *path, const struct timeval tv[2])
{
    PATH_CALL(REC_WRITE, int, -1, AT_FDCWD, path, F_WRITE, CALLI(lutimes, (p, tv)));
}

EXPORT int futimesat(int dirfd, const char *path, const struct timeval tv[2])
{
    PATH_CALL(REC_WRITE, int, -1, dirfd, path, F_FOLLOW | F_WRITE,
              CALLI(futimesat, (dirfd, p, tv)));
}

EXPORT int utimensat(int dirfd, const char *path, const struct timespec ts[2], int flags)
{
    unsigned how = ((flags & AT_SYMLINK_NOFOLLOW) ? 0 : F_FOLLOW) | F_WRITE;
    PATH_CALL(REC_WRITE, int, -1, dirfd, path, how, CALLI(utimensat, (dirfd, p, ts, flags)));
}

EXPORT int truncate(const char *path, off_t len)
{
    PATH_CALL(REC_WRITE, int, -1, AT_FDCWD, path, F_FOLLOW | F_WRITE, CALLI(truncate, (p, len)));
}

EXPORT int truncate64(const char *path, off64_t len)
{
    PATH_CALL(REC_WRITE, int, -1, AT_FDCWD, path, F_FOLLOW | F_WRITE, CALLI(truncate64, (p, len)));
}

static int do_mknodat(int dirfd, const char *path, mode_t mode, dev_t dev)
{
    SYS_CALL(REC_WRITE, dirfd, path, F_CREATE, nbs_mknodat(dirfd, p, mode, dev));
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
    PATH_CALL(REC_WRITE, int, -1, AT_FDCWD, path, F_FOLLOW | F_WRITE,
              CALLI(setxattr, (p, name, value, size, flags)));
}

EXPORT int lsetxattr(const char *path, const char *name, const void *value, size_t size,
                     int flags)
{
    PATH_CALL(REC_WRITE, int, -1, AT_FDCWD, path, F_WRITE,
              CALLI(lsetxattr, (p, name, value, size, flags)));
}

EXPORT ssize_t getxattr(const char *path, const char *name, void *value, size_t size)
{
    PATH_CALL(REC_STAT, ssize_t, -1, AT_FDCWD, path, F_FOLLOW,
              CALLI(getxattr, (p, name, value, size)));
}

EXPORT ssize_t lgetxattr(const char *path, const char *name, void *value, size_t size)
{
    PATH_CALL(REC_STAT, ssize_t, -1, AT_FDCWD, path, 0, CALLI(lgetxattr, (p, name, value, size)));
}

EXPORT ssize_t listxattr(const char *path, char *list, size_t size)
{
    PATH_CALL(REC_STAT, ssize_t, -1, AT_FDCWD, path, F_FOLLOW, CALLI(listxattr, (p, list, size)));
}

EXPORT ssize_t llistxattr(const char *path, char *list, size_t size)
{
    PATH_CALL(REC_STAT, ssize_t, -1, AT_FDCWD, path, 0, CALLI(llistxattr, (p, list, size)));
}

EXPORT int removexattr(const char *path, const char *name)
{
    PATH_CALL(REC_WRITE, int, -1, AT_FDCWD, path, F_FOLLOW | F_WRITE,
              CALLI(removexattr, (p, name)));
}

EXPORT int lremovexattr(const char *path, const char *name)
{
    PATH_CALL(REC_WRITE, int, -1, AT_FDCWD, path, F_WRITE, CALLI(lremovexattr, (p, name)));
}

EXPORT int inotify_add_watch(int fd, const char *path, uint32_t mask)
{
    unsigned how = (mask & IN_DONT_FOLLOW) ? 0 : F_FOLLOW;
    PATH_CALL(REC_STAT, int, -1, AT_FDCWD, path, how, CALLI(inotify_add_watch, (fd, p, mask)));
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
        RECORD(REC_WRITE, AT_FDCWD, (tmpl), r_ == (failv));                                     \
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
    char *r;
    if (p == tmpl) {
        r = CALLP(mkdtemp, (tmpl));
    } else {
        r = CALLP(mkdtemp, (b));
        size_t tl = pm_strlen(tmpl), bl = pm_strlen(b), n = tl < bl ? tl : bl;
        memcpy(tmpl + tl - n, b + bl - n, n);
        if (r)
            r = tmpl;
    }
    RECORD(REC_WRITE, AT_FDCWD, tmpl, !r);
    return r;
}

