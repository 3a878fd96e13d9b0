/* What the parts of nbs-preload share: the state init writes once, the
 * next definitions of the interposed functions, and path mapping (the fast
 * path inlined into every wrapper).
 *
 * The library is built from these sources, along its seams:
 *  - preload.c: state, init and path mapping;
 *  - preload_fs.c: the file-system interposers (open, stat, access, links,
 *    the working directory, directories, functions that change files);
 *  - preload_exec.c: the exec and spawn interposers (execve and friends,
 *    posix_spawn, system, popen);
 *  - preload_report.c: recording host accesses;
 *  - preload_fds.c: the engine's own descriptors (held mapping directories,
 *    the report's) and what keeps the program from closing them.
 * Everything not marked EXPORT is hidden (-fvisibility=hidden).
 */
#ifndef NBS_PRELOAD_H
#define NBS_PRELOAD_H

#include "compat.h"

#include <dirent.h>
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
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <utime.h>

#include "pathmap.h"
#include "record.h"
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
int close_range(unsigned int first, unsigned int last, int flags);
void closefrom(int low);

/* ------------------------------------------------------------------------ */
/* state: written once by init (preload.c), read-only afterwards */

extern struct pm_table T;
extern int active;
extern char config_var[sizeof PM_ENV_CONFIG + PM_CONFIG_MAX];
extern char exe_sbx[PM_PATH_MAX];  /* what /proc/self/exe shows, "" if not ours */
extern char exe_host[PM_PATH_MAX]; /* where that file is */
/* may_map[c]: some mapping's sandbox dir (or /proc, //, /.) starts with "/c";
 * all zeros until the configuration is loaded */
extern unsigned char may_map[256];
extern int init_state; /* 0: not yet, 1: running, 2: done */
extern const struct pm_fs FS;

/* ------------------------------------------------------------------------ */
/* the next definitions of the functions we interpose (defined in preload.c) */

void *next_sym(const char *name);

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
    X(posix_spawn_file_actions_addchdir_np) X(system) X(popen) X(pclose) X(execvpe)              \
    X(close) X(dup2) X(dup3) X(connect)

#define DECLARE_REAL(f) extern __typeof__(f) *real_##f;
REAL_FUNCTIONS(DECLARE_REAL)
#undef DECLARE_REAL

/* The next definition of F; looked up on first use if init has not done it. */
#define REAL(f) (real_##f ? real_##f : (real_##f = (__typeof__(f) *)next_sym(#f)))
/* Call the next F, or fail with ENOSYS where this glibc has none. */
#define CALLI(f, args) (REAL(f) ? real_##f args : (errno = ENOSYS, -1))
#define CALLP(f, args) (REAL(f) ? real_##f args : (errno = ENOSYS, NULL))

/* ------------------------------------------------------------------------ */
/* init */

void init_slow(void);

#define ENSURE()                                                                                \
    do {                                                                                        \
        if (UNLIKELY(__atomic_load_n(&init_state, __ATOMIC_ACQUIRE) != 2))                      \
            init_slow();                                                                        \
    } while (0)

/* ------------------------------------------------------------------------ */
/* recording (preload_report.c) */

extern struct rec_conf R;     /* R.fd < 0: recording is off */
extern char rec_fd_var[];     /* "NBSANDBOX_REPORT_FD=N", for descendants */
extern char rec_skip_var[];   /* "NBSANDBOX_REPORT_SKIP=..." */

/* The record descriptor is now FD (preload_fds.c moved it). */
void report_fd_moved(int fd);
/* Read the two variables (init, after the engine's own). */
void report_init(void);
/* The program's short name, from argv[0] (the constructor). */
void report_program(const char *argv0);
/* Record OP on PATH (relative to DIRFD) with RESULT (0, an errno, or
 * REC_UNKNOWN) unless it lies under a skip prefix; errno is kept. */
void rec_path(int op, int dirfd, const char *path, int result);
/* The same with the result of a call that FAILED (errno) or succeeded. */
void rec_result(int op, int dirfd, const char *path, int failed);
/* Before an exec of PATH: record it as done when CHECK (the path the call
 * uses) passes access(X_OK); 1 when recorded. */
int rec_exec_before(int dirfd, const char *path, const char *check);
/* The working directory changed (chdir, fchdir). */
void cwd_changed(void);

#define RECORDING() UNLIKELY(__atomic_load_n(&R.fd, __ATOMIC_RELAXED) >= 0)
/* After a call on PATH: record OP (only evaluated when recording). */
#define RECORD(op, dirfd, path, failed)                                                         \
    do {                                                                                        \
        if (RECORDING())                                                                        \
            rec_result((op), (dirfd), (path), (failed));                                        \
    } while (0)

/* ------------------------------------------------------------------------ */
/* path mapping (preload.c) */

#define F_FOLLOW 1u  /* follow a symlink in the last component */
#define F_WRITE 2u   /* modifies the file: EROFS in read-only mappings */
#define F_CREATE 4u  /* creates it: EEXIST if it exists, else EROFS */
#define F_OCREAT 8u  /* open(O_CREAT): fine if it exists, else EROFS */
#define F_WACCESS 16u /* access(W_OK): EROFS if it exists */

/* Whether PATH names this process's /proc/.../exe link. */
int is_proc_exe(const char *path);
/* The host path behind descriptor FD (via /proc/self/fd) into OUT (PM_PATH_MAX). */
int fd_host_path(int fd, char *out);
/* Sandbox path of the directory relative paths of DIRFD start from. */
int base_dir(int dirfd, char *out, size_t outsz);
/* The path a call should use for PATH (relative to DIRFD): PATH itself or
 * BUF.  -1 with errno set when the call must fail without being made. */
int map_path_slow(int dirfd, const char *path, char *buf, unsigned how, const char **out);
/* After a call on USED failed with ENOENT, ENOTDIR or EACCES: 1 with *out
 * set when the call should be made again on the new path (see preload.c). */
int retry_path(int dirfd, const char *path, const char *used, char *buf, unsigned how,
               const char **out);
/* The F_* flags open(FLAGS) maps its path with (preload_fs.c). */
unsigned open_how(int flags);

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

/* ------------------------------------------------------------------------ */
/* held directories (preload_fds.c) */

/* held[i]: 0 not opened yet, -1 not used, else 1 + a descriptor of T.map[i].to */
extern int held[PM_MAX_MAPS];
/* Open T.map[i].to (first use): the descriptor, or -1 (use full host paths). */
int held_open(unsigned i);
/* FD (a held descriptor) is gone: open its directory again on next use. */
void held_lost(int fd);
/* The mapping whose directory FD holds, or NULL. */
const struct pm_map *held_mapping(int fd);
/* Never use held descriptors again (chroot). */
void held_drop_all(void);
/* At init (the process owning the descriptors), and in the constructor. */
void engine_fds_init(void);
void engine_fds_atfork(void);

/* A descriptor of mapping M's host directory, or -1. */
static inline __attribute__((always_inline)) int held_fd(const struct pm_map *m)
{
    unsigned i = (unsigned)(m - T.map);
    int v = __atomic_load_n(&held[i], __ATOMIC_ACQUIRE);
    if (LIKELY(v > 0))
        return v - 1;
    return v == 0 ? held_open(i) : -1;
}

#define F_WRITES (F_WRITE | F_CREATE | F_OCREAT | F_WACCESS)

/* For calls that take a directory descriptor: like map_path, but a plain
 * path under a mapping whose directory is held becomes that descriptor
 * (*fd) and the rest of the path (*out, relative), with no copy and no walk
 * of the host directory's components by the kernel.  Otherwise *fd is DIRFD
 * and *out what map_path gives. */
static inline __attribute__((always_inline)) int map_path_at(int dirfd, const char *path,
                                                             char *buf, unsigned how, int *fd,
                                                             const char **out)
{
    *fd = dirfd;
    *out = path;
    if (LIKELY(path && path[0] == '/')) {
        if (LIKELY(!may_map[(unsigned char)path[1]]))
            return 0;
        const struct pm_map *m;
        const char *rel;
        if (LIKELY(pm_to_rel(&T, path, &m, &rel) == PM_MAPPED) && LIKELY(*rel) &&
            (!(m->flags & PM_RO) || !(how & F_WRITES))) {
            int h = held_fd(m);
            if (LIKELY(h >= 0)) {
                *fd = h;
                *out = rel;
                return 0;
            }
            /* not held: TO joined with REL, what map_path gives */
            size_t rl = strlen(rel);
            if (LIKELY(m->to_len + 1 + rl < PM_PATH_MAX)) {
                memcpy(buf, m->to, m->to_len);
                buf[m->to_len] = '/';
                memcpy(buf + m->to_len + 1, rel, rl + 1);
                *out = buf;
                return 0;
            }
        }
    }
    return map_path_slow(dirfd, path, buf, how, out);
}

/* retry_path after a call made on (USED_FD, USED) from map_path_at; EBADF
 * too when USED_FD is a held descriptor.  *fd gets the descriptor to use
 * with *out. */
int retry_path_at(int dirfd, const char *path, int used_fd, const char *used, char *buf,
                  unsigned how, int *fd, const char **out);

#define RETRY_ERRNO(e) ((e) == ENOENT || (e) == ENOTDIR || (e) == EACCES)
#define RETRY_AT_ERRNO(e) (RETRY_ERRNO(e) || (e) == EBADF)

/* The body of a path function: map PATH (MAP sets p, and d where the call takes a
 * directory descriptor), make CALL, make it again on the path RETRY finds when it
 * failed with an error RETRY_OK takes, record OP.  The four macros below differ
 * only in MAP/RETRY (full host path, or held directory and rest) and in how a
 * failure reads (FAILV and errno, or -errno from a raw system call). */
#define PATH_BODY_(op, type, failv, dirfd, path, how, call, MAP, RETRY_OK, RETRY)               \
    do {                                                                                        \
        char b1_[PM_PATH_MAX], b2_[PM_PATH_MAX];                                                \
        const char *p;                                                                          \
        int d = (dirfd);                                                                        \
        (void)d;                                                                                \
        ENSURE();                                                                               \
        if ((MAP) < 0) {                                                                        \
            RECORD((op), (dirfd), (path), 1);                                                   \
            return failv;                                                                       \
        }                                                                                       \
        type r_ = (call);                                                                       \
        if (r_ == (failv) && active && RETRY_OK(errno) && (RETRY) > 0)                          \
            r_ = (call);                                                                        \
        RECORD((op), (dirfd), (path), r_ == (failv));                                           \
        return r_;                                                                              \
    } while (0)

/* The same for raw system calls (results are -errno). */
#define SYS_BODY_(op, dirfd, path, how, call, MAP, RETRY_OK, RETRY)                             \
    do {                                                                                        \
        char b1_[PM_PATH_MAX], b2_[PM_PATH_MAX];                                                \
        const char *p;                                                                          \
        int d = (dirfd);                                                                        \
        (void)d;                                                                                \
        ENSURE();                                                                               \
        if ((MAP) < 0) {                                                                        \
            RECORD((op), (dirfd), (path), 1);                                                   \
            return -1;                                                                          \
        }                                                                                       \
        long r_ = (call);                                                                       \
        if (UNLIKELY(r_ < 0)) {                                                                 \
            errno = (int)-r_;                                                                   \
            if (active && RETRY_OK(errno) && (RETRY) > 0) {                                     \
                r_ = (call);                                                                    \
                if (r_ < 0)                                                                     \
                    errno = (int)-r_;                                                           \
            } else {                                                                            \
                r_ = -1;                                                                        \
            }                                                                                   \
        }                                                                                       \
        RECORD((op), (dirfd), (path), r_ < 0);                                                  \
        return r_ < 0 ? -1 : (int)r_;                                                           \
    } while (0)

/* A path function whose CALL uses p (a full host path where mapped). */
#define PATH_CALL(op, type, failv, dirfd, path, how, call)                                      \
    PATH_BODY_(op, type, failv, dirfd, path, how, call,                                         \
               map_path((dirfd), (path), b1_, (how), &p), RETRY_ERRNO,                          \
               retry_path((dirfd), (path), p, b2_, (how), &p))
#define SYS_CALL(op, dirfd, path, how, call)                                                    \
    SYS_BODY_(op, dirfd, path, how, call, map_path((dirfd), (path), b1_, (how), &p),            \
              RETRY_ERRNO, retry_path((dirfd), (path), p, b2_, (how), &p))

/* PATH_CALL for a call that takes a directory descriptor: CALL uses d and p. */
#define PATH_AT_CALL(op, type, failv, dirfd, path, how, call)                                   \
    PATH_BODY_(op, type, failv, dirfd, path, how, call,                                         \
               map_path_at((dirfd), (path), b1_, (how), &d, &p), RETRY_AT_ERRNO,                \
               retry_path_at((dirfd), (path), d, p, b2_, (how), &d, &p))

/* SYS_CALL for a system call that takes a directory descriptor: CALL uses d and p. */
#define SYS_AT_CALL(op, dirfd, path, how, call)                                                 \
    SYS_BODY_(op, dirfd, path, how, call, map_path_at((dirfd), (path), b1_, (how), &d, &p),     \
              RETRY_AT_ERRNO, retry_path_at((dirfd), (path), d, p, b2_, (how), &d, &p))

#endif
