/* Raw Linux system calls for x86_64 and aarch64.
 *
 * The audit module has no libc at all, and the preload library uses these
 * where a libc wrapper would tie it to one glibc version (stat and friends
 * changed symbols in 2.33) or where errno must not be touched.  Each returns
 * the kernel's result: >= 0, or -errno.
 */
#ifndef NBS_SYS_H
#define NBS_SYS_H

#include <asm/unistd.h>
#include <fcntl.h>

#if defined(__x86_64__)
static inline long nbs_syscall6(long n, long a, long b, long c, long d, long e, long f)
{
    long ret;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}
#elif defined(__aarch64__)
static inline long nbs_syscall6(long n, long a, long b, long c, long d, long e, long f)
{
    register long x8 __asm__("x8") = n;
    register long x0 __asm__("x0") = a;
    register long x1 __asm__("x1") = b;
    register long x2 __asm__("x2") = c;
    register long x3 __asm__("x3") = d;
    register long x4 __asm__("x4") = e;
    register long x5 __asm__("x5") = f;
    __asm__ volatile("svc 0"
                     : "+r"(x0)
                     : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5)
                     : "memory");
    return x0;
}
#else
#error "nbsandbox's fakechroot engine supports x86_64 and aarch64 only"
#endif

#define NBS_SC(n, a, b, c, d, e, f)                                                            \
    nbs_syscall6((long)(n), (long)(a), (long)(b), (long)(c), (long)(d), (long)(e), (long)(f))

static inline long nbs_openat(int dirfd, const char *path, int flags, unsigned mode)
{
    return NBS_SC(__NR_openat, dirfd, path, flags, mode, 0, 0);
}
static inline long nbs_close(int fd)
{
    return NBS_SC(__NR_close, fd, 0, 0, 0, 0, 0);
}
static inline long nbs_read(int fd, void *buf, unsigned long n)
{
    return NBS_SC(__NR_read, fd, buf, n, 0, 0, 0);
}
static inline long nbs_pread(int fd, void *buf, unsigned long n, long off)
{
    return NBS_SC(__NR_pread64, fd, buf, n, off, 0, 0);
}
static inline long nbs_write(int fd, const void *buf, unsigned long n)
{
    return NBS_SC(__NR_write, fd, buf, n, 0, 0, 0);
}
static inline long nbs_readlinkat(int dirfd, const char *path, char *buf, unsigned long n)
{
    return NBS_SC(__NR_readlinkat, dirfd, path, buf, n, 0, 0);
}
static inline long nbs_fstatat(int dirfd, const char *path, void *st, int flags)
{
    return NBS_SC(__NR_newfstatat, dirfd, path, st, flags, 0, 0);
}
static inline long nbs_fstat(int fd, void *st)
{
    return NBS_SC(__NR_fstat, fd, st, 0, 0, 0, 0);
}
static inline long nbs_statx(int dirfd, const char *path, int flags, unsigned mask, void *buf)
{
    return NBS_SC(__NR_statx, dirfd, path, flags, mask, buf, 0);
}
static inline long nbs_faccessat(int dirfd, const char *path, int mode)
{
    return NBS_SC(__NR_faccessat, dirfd, path, mode, 0, 0, 0);
}
static inline long nbs_getcwd(char *buf, unsigned long n)
{
    return NBS_SC(__NR_getcwd, buf, n, 0, 0, 0, 0);
}
static inline long nbs_getpid(void)
{
    return NBS_SC(__NR_getpid, 0, 0, 0, 0, 0, 0);
}
static inline long nbs_gettid(void)
{
    return NBS_SC(__NR_gettid, 0, 0, 0, 0, 0, 0);
}
static inline long nbs_mknodat(int dirfd, const char *path, unsigned mode, unsigned long dev)
{
    return NBS_SC(__NR_mknodat, dirfd, path, mode, dev, 0, 0);
}
static inline void *nbs_mmap_anon(unsigned long len)
{
    /* PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS */
    return (void *)NBS_SC(__NR_mmap, 0, len, 0x3, 0x22, -1, 0);
}
static inline long nbs_munmap(void *addr, unsigned long len)
{
    return NBS_SC(__NR_munmap, addr, len, 0, 0, 0, 0);
}
static inline long nbs_fcntl(int fd, int cmd, long arg)
{
    return NBS_SC(__NR_fcntl, fd, cmd, arg, 0, 0, 0);
}
#ifndef __NR_close_range
#define __NR_close_range 436
#endif
static inline long nbs_close_range(unsigned first, unsigned last, unsigned flags)
{
    return NBS_SC(__NR_close_range, first, last, flags, 0, 0, 0);
}
static inline long nbs_fchdir(int fd)
{
    return NBS_SC(__NR_fchdir, fd, 0, 0, 0, 0, 0);
}
static inline long nbs_sched_yield(void)
{
    return NBS_SC(__NR_sched_yield, 0, 0, 0, 0, 0, 0);
}

#endif
