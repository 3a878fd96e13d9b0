/* --report-seccomp: the record file, the skip list, paths and lines.
 *
 * The contract is docs/access.md ("The raw record"): one line per event,
 * written with one write(2) on $NBSANDBOX_REPORT_FD, never for a path under
 * a $NBSANDBOX_REPORT_SKIP prefix.
 */
#include "nbs.h"
#include "notify_record.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_SKIP 64

static int report_fd = -1;
static struct {
    char *path;
    size_t len;
} skip[MAX_SKIP];
static size_t nskip;

static const char *const op_names[] = {
    [OP_OPEN] = "open", [OP_WRITE] = "write",     [OP_LIST] = "list",    [OP_STAT] = "stat",
    [OP_READLINK] = "readlink", [OP_EXEC] = "exec", [OP_CONNECT] = "connect",
};

void report_seccomp_prepare(void)
{
    if (report_fd >= 0)
        return;
    const char *fdtext = getenv("NBSANDBOX_REPORT_FD");
    if (!fdtext || !parse_int(fdtext, &report_fd))
        die("%s: NBSANDBOX_REPORT_FD is %s; it must name the open record file", REPORT_SECCOMP_OPTION,
            fdtext ? "not a descriptor number" : "not set");
    int fl = fcntl(report_fd, F_GETFL);
    if (fl < 0 || (fl & O_ACCMODE) == O_RDONLY)
        die_err(fl < 0 ? errno : EBADF, NULL, "%s: NBSANDBOX_REPORT_FD=%d is not open for writing",
                REPORT_SECCOMP_OPTION, report_fd);
    const char *list = getenv("NBSANDBOX_REPORT_SKIP");
    char *copy = xstrdup(list ? list : "");
    for (char *save = NULL, *p = strtok_r(copy, ":", &save); p; p = strtok_r(NULL, ":", &save)) {
        if (p[0] != '/')
            continue; /* the contract's entries are absolute */
        if (nskip == MAX_SKIP)
            die("%s: NBSANDBOX_REPORT_SKIP has more than %d entries", REPORT_SECCOMP_OPTION,
                MAX_SKIP);
        size_t len = strlen(p);
        while (len > 1 && p[len - 1] == '/')
            p[--len] = '\0';
        skip[nskip].path = p;
        skip[nskip].len = len == 1 ? 0 : len; /* "/" covers everything */
        nskip++;
    }
}

static char loader_prefix[64];

void record_skip_loader(long wrapper_pid)
{
    snprintf(loader_prefix, sizeof loader_prefix, "prooted-%ld-", wrapper_pid);
}

bool record_is_loader(const char *path)
{
    const char *base = strrchr(path, '/');
    return loader_prefix[0] && base &&
           !strncmp(base + 1, loader_prefix, strlen(loader_prefix));
}

bool record_skipped(const char *path)
{
    for (size_t k = 0; k < nskip; k++) {
        size_t n = skip[k].len;
        if (strncmp(path, skip[k].path, n) == 0 && (path[n] == '\0' || path[n] == '/'))
            return true;
    }
    return false;
}

void path_normalize(char *path)
{
    /* Lexically, in place: "//" and "/./" collapse, "/x/.." goes; the
     * result is absolute, without a trailing slash (but "/"). */
    char *out = path;
    const char *in = path;
    while (*in) {
        while (*in == '/')
            in++;
        if (!*in)
            break;
        const char *end = strchrnul(in, '/');
        size_t len = (size_t)(end - in);
        if (len == 1 && in[0] == '.') {
            /* nothing */
        } else if (len == 2 && in[0] == '.' && in[1] == '.') {
            while (out > path && *--out != '/')
                ;
        } else {
            *out++ = '/';
            memmove(out, in, len);
            out += len;
        }
        in = end;
    }
    if (out == path)
        *out++ = '/';
    *out = '\0';
}

bool path_join(char *out, size_t size, const char *base, const char *rel)
{
    int n = rel[0] == '/' ? snprintf(out, size, "%s", rel) : snprintf(out, size, "%s/%s", base, rel);
    if (n < 0 || (size_t)n >= size)
        return false;
    path_normalize(out);
    return true;
}

/* Append S escaped to LINE at *N, keeping room for RESERVE bytes; false (and
 * nothing of what did not fit) if it was cut. */
static bool append_escaped(char *line, size_t *n, size_t cap, size_t reserve, const char *s)
{
    for (; *s; s++) {
        char esc = *s == '\\' ? '\\' : *s == '\t' ? 't' : *s == '\n' ? 'n' : 0;
        size_t need = esc ? 2 : 1;
        if (*n + need + reserve > cap)
            return false;
        if (esc) {
            line[(*n)++] = '\\';
            line[(*n)++] = esc;
        } else {
            line[(*n)++] = *s;
        }
    }
    return true;
}

void record_write(enum notify_op op, const char *result, long pid, const char *program,
                  const char *path)
{
    char line[RECORD_MAX];
    int r = snprintf(line, sizeof line, "seccomp\t%s\t%s\t%ld\t", op_names[op], result, pid);
    if (r < 0 || (size_t)r >= sizeof line)
        return;
    size_t n = (size_t)r;
    static const char cut[] = "\\...";
    /* The program's name is short; a path that does not fit ends in "\...". */
    if (!append_escaped(line, &n, sizeof line, 64, program))
        return;
    line[n++] = '\t';
    if (!append_escaped(line, &n, sizeof line, 1 + strlen(cut), path)) {
        memcpy(line + n, cut, strlen(cut));
        n += strlen(cut);
    }
    line[n++] = '\n';
    /* One write(2): concurrent writers (preload, audit) append whole lines. */
    (void)write(report_fd, line, n);
}
