/* --report-seccomp: which system calls are reported, and the filter that
 * hands them to the supervisor (SECCOMP_RET_USER_NOTIF).
 *
 * Only the calls of this architecture's native ABI are reported: a call made
 * through another ABI (i386 or x32 on x86_64, arm32 on aarch64) is allowed
 * without a record (see docs/access.md).
 */
#include "nbs.h"
#include "notify.h"

#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef __NR_openat2
#define __NR_openat2 437
#endif
#ifndef __NR_faccessat2
#define __NR_faccessat2 439
#endif
#ifndef __NR_fchmodat2
#define __NR_fchmodat2 452
#endif

#if defined(__x86_64__)
#define NATIVE_ARCH AUDIT_ARCH_X86_64
#define OTHER_ABI_BITS 0x40000000u /* x32 */
#elif defined(__aarch64__)
#define NATIVE_ARCH AUDIT_ARCH_AARCH64
#define OTHER_ABI_BITS 0u
#elif defined(__i386__)
#define NATIVE_ARCH AUDIT_ARCH_I386
#define OTHER_ABI_BITS 0u
#else
#error "give this architecture's AUDIT_ARCH here"
#endif

/* {nr, kind, op, dirfd, path, flags, dirfd2, path2}; -1: no such argument
 * (a missing dirfd means the working directory). */
#define CALL(name, kind, op, d, p, f, d2, p2) {__NR_##name, kind, op, d, p, f, d2, p2}

const struct notify_call notify_calls[] = {
#ifdef __NR_open
    CALL(open, K_OPEN, OP_OPEN, -1, 0, 1, -1, -1),
#endif
    CALL(openat, K_OPEN, OP_OPEN, 0, 1, 2, -1, -1),
    CALL(openat2, K_OPENAT2, OP_OPEN, 0, 1, 2, -1, -1),
#ifdef __NR_creat
    CALL(creat, K_PATH, OP_WRITE, -1, 0, -1, -1, -1),
#endif
#ifdef __NR_stat
    CALL(stat, K_PATH, OP_STAT, -1, 0, -1, -1, -1),
    CALL(lstat, K_NOFOLLOW, OP_STAT, -1, 0, -1, -1, -1),
#endif
#ifdef __NR_access
    CALL(access, K_PATH, OP_STAT, -1, 0, -1, -1, -1),
#endif
#ifdef __NR_newfstatat
    CALL(newfstatat, K_AT, OP_STAT, 0, 1, 3, -1, -1),
#endif
#ifdef __NR_fstatat64
    CALL(fstatat64, K_AT, OP_STAT, 0, 1, 3, -1, -1),
#endif
    CALL(statx, K_AT, OP_STAT, 0, 1, 2, -1, -1),
    CALL(statfs, K_PATH, OP_STAT, -1, 0, -1, -1, -1),
    CALL(faccessat, K_PATH, OP_STAT, 0, 1, -1, -1, -1),
    CALL(faccessat2, K_AT, OP_STAT, 0, 1, 3, -1, -1),
#ifdef __NR_readlink
    CALL(readlink, K_NOFOLLOW, OP_READLINK, -1, 0, -1, -1, -1),
#endif
    CALL(readlinkat, K_NOFOLLOW, OP_READLINK, 0, 1, -1, -1, -1),
    CALL(execve, K_PATH, OP_EXEC, -1, 0, -1, -1, -1),
    CALL(execveat, K_AT, OP_EXEC, 0, 1, 4, -1, -1),
#ifdef __NR_mkdir
    CALL(mkdir, K_PATH, OP_WRITE, -1, 0, -1, -1, -1),
    CALL(rmdir, K_PATH, OP_WRITE, -1, 0, -1, -1, -1),
    CALL(unlink, K_PATH, OP_WRITE, -1, 0, -1, -1, -1),
    CALL(rename, K_PATH, OP_WRITE, -1, 0, -1, -1, 1),
    CALL(link, K_PATH, OP_WRITE, -1, 0, -1, -1, 1),
    CALL(symlink, K_PATH, OP_WRITE, -1, 1, -1, -1, -1), /* arg 0 is the target text */
    CALL(mknod, K_PATH, OP_WRITE, -1, 0, -1, -1, -1),
    CALL(chmod, K_PATH, OP_WRITE, -1, 0, -1, -1, -1),
    CALL(chown, K_PATH, OP_WRITE, -1, 0, -1, -1, -1),
    CALL(lchown, K_PATH, OP_WRITE, -1, 0, -1, -1, -1),
    CALL(utime, K_PATH, OP_WRITE, -1, 0, -1, -1, -1),
    CALL(utimes, K_PATH, OP_WRITE, -1, 0, -1, -1, -1),
    CALL(futimesat, K_PATH, OP_WRITE, 0, 1, -1, -1, -1),
#endif
#ifdef __NR_stat64 /* 32-bit ABIs */
    CALL(stat64, K_PATH, OP_STAT, -1, 0, -1, -1, -1),
    CALL(lstat64, K_NOFOLLOW, OP_STAT, -1, 0, -1, -1, -1),
    CALL(statfs64, K_PATH, OP_STAT, -1, 0, -1, -1, -1),
    CALL(truncate64, K_PATH, OP_WRITE, -1, 0, -1, -1, -1),
    CALL(chown32, K_PATH, OP_WRITE, -1, 0, -1, -1, -1),
    CALL(lchown32, K_PATH, OP_WRITE, -1, 0, -1, -1, -1),
#endif
#ifdef __NR_renameat
    CALL(renameat, K_PATH, OP_WRITE, 0, 1, -1, 2, 3),
#endif
    CALL(mkdirat, K_PATH, OP_WRITE, 0, 1, -1, -1, -1),
    CALL(mknodat, K_PATH, OP_WRITE, 0, 1, -1, -1, -1),
    CALL(unlinkat, K_PATH, OP_WRITE, 0, 1, -1, -1, -1),
    CALL(renameat2, K_PATH, OP_WRITE, 0, 1, -1, 2, 3),
    CALL(symlinkat, K_PATH, OP_WRITE, 1, 2, -1, -1, -1),
    CALL(linkat, K_AT, OP_WRITE, 0, 1, 4, 2, 3),
    CALL(truncate, K_PATH, OP_WRITE, -1, 0, -1, -1, -1),
    CALL(fchmodat, K_PATH, OP_WRITE, 0, 1, -1, -1, -1),
    CALL(fchmodat2, K_AT, OP_WRITE, 0, 1, 3, -1, -1),
    CALL(fchownat, K_AT, OP_WRITE, 0, 1, 4, -1, -1),
    CALL(utimensat, K_AT, OP_WRITE, 0, 1, 3, -1, -1),
    CALL(connect, K_CONNECT, OP_CONNECT, -1, 1, 2, -1, -1),
};
const size_t notify_ncalls = sizeof notify_calls / sizeof *notify_calls;

const struct notify_call *notify_call_of(int nr)
{
    for (size_t k = 0; k < notify_ncalls; k++)
        if (notify_calls[k].nr == nr)
            return &notify_calls[k];
    return NULL;
}

#define STMT(code, k) ((struct sock_filter)BPF_STMT((code), (k)))
#define JUMP(code, k, jt, jf) ((struct sock_filter)BPF_JUMP((code), (k), (jt), (jf)))
#define MAX_INSNS (4 + sizeof notify_calls / sizeof *notify_calls + 2)

/* load arch; other arch? allow; load nr; other ABI? allow; one "jeq" per
 * call to "notify"; allow; notify. */
int notify_install_filter(void)
{
    struct sock_filter p[MAX_INSNS];
    size_t n = 0;
    size_t allow = 4 + notify_ncalls, notify = allow + 1;
    p[n++] = STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch));
    p[n] = JUMP(BPF_JMP | BPF_JEQ | BPF_K, NATIVE_ARCH, 0, (unsigned char)(allow - n - 1));
    n++;
    p[n++] = STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
    if (OTHER_ABI_BITS)
        p[n] = JUMP(BPF_JMP | BPF_JSET | BPF_K, OTHER_ABI_BITS, (unsigned char)(allow - n - 1), 0);
    else
        p[n] = JUMP(BPF_JMP | BPF_JA, 0, 0, 0);
    n++;
    for (size_t k = 0; k < notify_ncalls; k++, n++)
        p[n] = JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)notify_calls[k].nr,
                    (unsigned char)(notify - n - 1), 0);
    p[n++] = STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    p[n++] = STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF);
    struct sock_fprog prog = {.len = (unsigned short)n, .filter = p};
    return (int)syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER,
                        &prog);
}
