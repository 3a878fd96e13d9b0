/* record: the access recorder shared by the preload library and the audit
 * module (docs/access.md, issue #12).
 *
 * Both take NBSANDBOX_REPORT_FD (an inherited descriptor, opened
 * O_WRONLY|O_APPEND on the raw record file) and NBSANDBOX_REPORT_SKIP
 * (':'-separated absolute prefixes never recorded, the store's first) from
 * the environment, and write one line per event with one write(2):
 *
 *     <mech>\t<op>\t<result>\t<pid>\t<program>\t<path>\n
 *
 * Like pathmap.c this code links no libc: the audit module has none.  It
 * talks to the kernel with raw system calls (sys.h), uses fixed-size
 * buffers on the stack only, takes no lock and allocates nothing, so that
 * it is safe in a vfork() child and in a signal handler.
 */
#ifndef NBS_RECORD_H
#define NBS_RECORD_H

#include <stddef.h>

#define REC_ENV_FD "NBSANDBOX_REPORT_FD="
#define REC_ENV_SKIP "NBSANDBOX_REPORT_SKIP="
#define REC_MAX_SKIP 64        /* prefixes kept; later ones are ignored (recorded) */
#define REC_SKIP_MAX 16384     /* bytes of the skip list kept */
#define REC_LINE_MAX 4096      /* bytes of one line, with its newline */
#define REC_NAME_MAX 256       /* bytes of the program's short name */

/* operations (the second field) */
enum rec_op {
    REC_NONE = -1, /* not recorded */
    REC_OPEN,
    REC_WRITE,
    REC_LIST,
    REC_STAT,
    REC_READLINK,
    REC_EXEC,
    REC_DLOPEN,
    REC_CONNECT,
};

/* results (the third field): 0, an errno (> 0), or unknown */
#define REC_UNKNOWN (-1)

struct rec_conf {
    int fd; /* -1: recording is off */
    const char *mech;
    unsigned nskip;
    const char *skip[REC_MAX_SKIP]; /* normalised, without a trailing '/' ("" is "/") */
    size_t skip_len[REC_MAX_SKIP];
    char skipbuf[REC_SKIP_MAX];
    char program[REC_NAME_MAX];
};

/* Set C up from the values of the two variables (either may be NULL;
 * SKIP need not be NUL-terminated: SKIP_LEN bytes).  Recording is on
 * (C->fd >= 0) only when FD names an open descriptor that is writable and
 * in append mode.  Returns C->fd. */
int rec_setup(struct rec_conf *c, const char *mech, const char *fd, const char *skip,
              size_t skip_len);

/* Whether the descriptor is open, writable and in append mode. */
int rec_fd_usable(int fd);

/* The program's short name: the basename of NAME (N bytes), cut to fit. */
void rec_set_program(struct rec_conf *c, const char *name, size_t n);

/* Whether absolute PATH, as given (not normalised), lies under a skip
 * prefix and has no ".." component that could lead out of it: the cheap
 * check of the fast path. */
int rec_quick_skip(const struct rec_conf *c, const char *path);

/* Whether normalised absolute PATH lies under a skip prefix. */
int rec_skipped(const struct rec_conf *c, const char *path);

/* Normalise PATH into OUT (OUTSZ bytes): absolute, no "." or ".."
 * components, no repeated or trailing '/'.  A relative PATH is taken from
 * BASE (absolute; ignored for an absolute PATH).  No symbolic link is
 * followed.  0, or -ENAMETOOLONG. */
int rec_normalise(char *out, size_t outsz, const char *base, const char *path);

/* Format one line into LINE (REC_LINE_MAX bytes): PREFIX (e.g. "tcp:",
 * may be NULL) then PATH (N bytes), escaped, cut to fit.  Returns its
 * length. */
size_t rec_format(const struct rec_conf *c, char *line, int op, int result, long pid,
                  const char *prefix, const char *path, size_t n);

/* Format and write the event for normalised absolute PATH (N bytes) unless
 * it is under a skip prefix (PREFIX: NULL; with a PREFIX, e.g. "unix:",
 * the skip check is the caller's). */
void rec_emit(const struct rec_conf *c, int op, int result, const char *prefix, const char *path,
              size_t n);

#endif
