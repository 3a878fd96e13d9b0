/* A seccomp filter for programs run under PRoot: the system calls that take a
 * path but that PRoot 5.1 passes to the kernel untranslated fail with ENOSYS,
 * as on a kernel that predates them.  C libraries and language runtimes then
 * fall back to the older calls, which PRoot does translate (glibc's
 * faccessat -> faccessat(2 args), statx -> fstatat, fexecve -> execve of
 * /proc/self/fd/N, fchmodat -> its O_PATH emulation).
 *
 * The list was found by calling each path-taking system call on a path that
 * exists only through a PRoot binding (tools/proot_syscalls.py, results in
 * docs/engines.md).  System calls numbered above the newest one known here
 * fail with ENOSYS too: one that takes a path would escape otherwise.
 * io_uring is refused as well, since its operations (open, stat, rename...)
 * are not system calls and no tracer sees them.
 *
 * The filter stacks on PRoot's own (which traces the calls it translates):
 * the kernel takes the most restrictive verdict, and these calls are not
 * among PRoot's.
 */
#include "nbs.h"

#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

/* Numbers from 424 on are the same on every architecture. */
#define NR_IO_URING_SETUP 425
#define NR_OPEN_TREE 428
#define NR_MOVE_MOUNT 429
#define NR_FSPICK 433
#define NR_OPENAT2 437
#define NR_FACCESSAT2 439
#define NR_MOUNT_SETATTR 442
#define NR_FCHMODAT2 452
#define NR_SETXATTRAT 463
#define NR_GETXATTRAT 464
#define NR_LISTXATTRAT 465
#define NR_REMOVEXATTRAT 466
#define NR_OPEN_TREE_ATTR 467
#define NR_FILE_GETATTR 468
#define NR_FILE_SETATTR 469
#define NR_NEWEST NR_FILE_SETATTR

/* The same calls below 424, whose numbers depend on the architecture. */
struct arch_calls {
    unsigned arch;
    unsigned statx, execveat, fanotify_mark;
    unsigned nr_mask; /* numbers with these bits set are another ABI (x32) */
};

#if defined(__x86_64__)
static const struct arch_calls arches[] = {
    {AUDIT_ARCH_X86_64, 332, 322, 301, 0x40000000u},
    {AUDIT_ARCH_I386, 383, 358, 339, 0},
};
#elif defined(__aarch64__)
static const struct arch_calls arches[] = {
    {AUDIT_ARCH_AARCH64, 291, 281, 263, 0},
    {AUDIT_ARCH_ARM, 397, 387, 368, 0},
};
#elif defined(__i386__)
static const struct arch_calls arches[] = {
    {AUDIT_ARCH_I386, 383, 358, 339, 0},
};
#else
#error "list this architecture's statx, execveat and fanotify_mark numbers here"
#endif

static const unsigned common[] = {
    NR_IO_URING_SETUP, NR_OPEN_TREE,      NR_MOVE_MOUNT,     NR_FSPICK,
    NR_OPENAT2,        NR_FACCESSAT2,     NR_MOUNT_SETATTR,  NR_FCHMODAT2,
    NR_SETXATTRAT,     NR_GETXATTRAT,     NR_LISTXATTRAT,    NR_REMOVEXATTRAT,
    NR_OPEN_TREE_ATTR, NR_FILE_GETATTR,   NR_FILE_SETATTR,
};
#define NCOMMON (sizeof common / sizeof *common)
#define NARCHES (sizeof arches / sizeof *arches)

#define STMT(code, k) ((struct sock_filter)BPF_STMT((code), (k)))
#define JUMP(code, k, jt, jf) ((struct sock_filter)BPF_JUMP((code), (k), (jt), (jf)))

/* Per architecture: load nr; other ABI?; 3 arch calls; common calls;
 * newer than known?; allow; deny. */
#define PER_ARCH (1 + 1 + 3 + NCOMMON + 1 + 2)
#define MAX_INSNS (1 + 2 * NARCHES + 1 + NARCHES * PER_ARCH)

static size_t untranslated_program(struct sock_filter *out, size_t max)
{
    struct sock_filter p[MAX_INSNS];
    size_t n = 0;
    p[n++] = STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch));
    /* Dispatch: "jeq arch" for each, each jumping to its block; other
     * architectures are left alone. */
    size_t dispatch = n;
    n += NARCHES;
    p[n++] = STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    for (size_t a = 0; a < NARCHES; a++) {
        const struct arch_calls *c = &arches[a];
        size_t start = n;
        p[dispatch + a] = JUMP(BPF_JMP | BPF_JEQ | BPF_K, c->arch,
                               (unsigned char)(start - (dispatch + a) - 1), 0);
        /* Every jump below lands on "allow" (jf) or "deny" (jt), the last
         * two instructions of the block. */
        size_t allow = start + PER_ARCH - 2, deny = allow + 1;
        p[n++] = STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
        if (c->nr_mask)
            p[n] = JUMP(BPF_JMP | BPF_JSET | BPF_K, c->nr_mask, (unsigned char)(deny - n - 1), 0);
        else
            p[n] = JUMP(BPF_JMP | BPF_JA, 0, 0, 0);
        n++;
        unsigned own[3] = {c->statx, c->execveat, c->fanotify_mark};
        for (size_t k = 0; k < 3; k++, n++)
            p[n] = JUMP(BPF_JMP | BPF_JEQ | BPF_K, own[k], (unsigned char)(deny - n - 1), 0);
        for (size_t k = 0; k < NCOMMON; k++, n++)
            p[n] = JUMP(BPF_JMP | BPF_JEQ | BPF_K, common[k], (unsigned char)(deny - n - 1), 0);
        p[n] = JUMP(BPF_JMP | BPF_JGT | BPF_K, NR_NEWEST, (unsigned char)(deny - n - 1), 0);
        n++;
        p[n++] = STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
        p[n++] = STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (ENOSYS & SECCOMP_RET_DATA));
    }
    if (n > max)
        return 0;
    for (size_t k = 0; k < n; k++)
        out[k] = p[k];
    return n;
}

int seccomp_deny_untranslated(void)
{
    struct sock_filter insns[MAX_INSNS];
    size_t n = untranslated_program(insns, MAX_INSNS);
    if (n == 0) {
        errno = E2BIG;
        return -1;
    }
    struct sock_fprog prog = {.len = (unsigned short)n, .filter = insns};
    /* Required of an unprivileged process; PRoot's own filter sets it too. */
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        return -1;
    return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0);
}
