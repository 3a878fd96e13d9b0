/* --report-seccomp: the access report of static programs (see notify.c). */
#ifndef NBS_NOTIFY_H
#define NBS_NOTIFY_H

#include <stdbool.h>
#include <stddef.h>

/* What a call does to its path(s), in the report's words. */
enum notify_op { OP_OPEN, OP_WRITE, OP_LIST, OP_STAT, OP_READLINK, OP_EXEC, OP_CONNECT };

/* How to read a call's arguments. */
enum notify_kind {
    K_PATH,     /* the path(s) only */
    K_NOFOLLOW, /* the path only; the call does not follow a last symlink */
    K_OPEN,     /* FLAGS is the open flags: they decide the op */
    K_OPENAT2,  /* FLAGS points to a struct open_how */
    K_AT,       /* FLAGS holds AT_EMPTY_PATH / AT_SYMLINK_NOFOLLOW */
    K_CONNECT,  /* PATH is the sockaddr, FLAGS its length, arg 0 the socket */
};

struct notify_call {
    int nr;
    unsigned char kind, op;
    /* Argument indexes, -1 for none (no dirfd: the working directory). */
    signed char dirfd, path, flags, dirfd2, path2;
};

extern const struct notify_call notify_calls[];
extern const size_t notify_ncalls;
const struct notify_call *notify_call_of(int nr);

/* Install the filter in this process (no_new_privs must be set); the
 * listener's fd, or -1 with errno. */
int notify_install_filter(void);

#endif
