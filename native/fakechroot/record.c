/* record: the access recorder shared by the preload library and the audit
 * module.  See record.h. */
#include "record.h"

#include <errno.h>
#include <fcntl.h>

#include "pathmap.h"
#include "sys.h"

static const char *const OP_NAMES[] = {
    "open", "write", "list", "stat", "readlink", "exec", "dlopen", "connect",
};

int rec_fd_usable(int fd)
{
    if (fd < 0)
        return 0;
    long fl = nbs_fcntl(fd, F_GETFL, 0);
    if (fl < 0)
        return 0;
    return (fl & O_ACCMODE) != O_RDONLY && (fl & O_APPEND);
}

static int parse_fd(const char *s)
{
    long v = 0;
    if (!s || !*s)
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || v > 0x7fffffffL / 10)
            return -1;
        v = v * 10 + (*s - '0');
    }
    return v <= 0x7fffffff ? (int)v : -1;
}

int rec_setup(struct rec_conf *c, const char *mech, const char *fd, const char *skip,
              size_t skip_len)
{
    c->fd = -1;
    c->mech = mech;
    c->nskip = 0;
    if (!c->program[0])
        rec_set_program(c, "?", 1);
    int n = parse_fd(fd);
    if (n < 0 || !rec_fd_usable(n))
        return -1;
    size_t used = 0;
    for (size_t i = 0; skip && i < skip_len && c->nskip < REC_MAX_SKIP;) {
        size_t j = i;
        while (j < skip_len && skip[j] && skip[j] != ':')
            j++;
        char entry[PM_PATH_MAX];
        size_t len = j - i;
        if (len > 0 && skip[i] == '/' && len < sizeof entry) {
            for (size_t k = 0; k < len; k++)
                entry[k] = skip[i + k];
            entry[len] = '\0';
            char *out = c->skipbuf + used;
            if (rec_normalise(out, sizeof c->skipbuf - used, 0, entry) == 0) {
                size_t ol = pm_strlen(out);
                if (ol == 1)
                    ol = 0, out[0] = '\0'; /* "/": every path */
                c->skip[c->nskip] = out;
                c->skip_len[c->nskip] = ol;
                c->nskip++;
                used += ol + 1;
            }
        }
        if (j >= skip_len || !skip[j])
            break;
        i = j + 1;
    }
    c->fd = n;
    return n;
}

void rec_set_program(struct rec_conf *c, const char *name, size_t n)
{
    size_t start = 0;
    for (size_t i = 0; i < n && name[i]; i++) {
        if (name[i] == '/' && i + 1 < n && name[i + 1])
            start = i + 1;
    }
    size_t k = 0;
    for (size_t i = start; i < n && name[i] && name[i] != '/' && k + 1 < REC_NAME_MAX; i++)
        c->program[k++] = name[i];
    if (k == 0)
        c->program[k++] = '?';
    c->program[k] = '\0';
}

/* Whether PATH starts with the LEN bytes of PREFIX followed by '/' or its end. */
static int under(const char *path, const char *prefix, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (path[i] != prefix[i])
            return 0;
    }
    return path[len] == '\0' || path[len] == '/';
}

static int has_dotdot(const char *p)
{
    for (; *p; p++) {
        if (p[0] == '/' && p[1] == '.' && p[2] == '.' && (p[3] == '/' || p[3] == '\0'))
            return 1;
    }
    return 0;
}

int rec_quick_skip(const struct rec_conf *c, const char *path)
{
    if (path[0] != '/')
        return 0;
    for (unsigned i = 0; i < c->nskip; i++) {
        if (under(path, c->skip[i], c->skip_len[i]))
            return !has_dotdot(path + c->skip_len[i]);
    }
    return 0;
}

int rec_skipped(const struct rec_conf *c, const char *path)
{
    for (unsigned i = 0; i < c->nskip; i++) {
        if (under(path, c->skip[i], c->skip_len[i]))
            return 1;
    }
    return 0;
}

/* Apply the components of P to OUT (holding *pos bytes, an absolute path
 * without a trailing '/', "" for the root). */
static int apply(char *out, size_t outsz, size_t *pos, const char *p)
{
    while (*p) {
        while (*p == '/')
            p++;
        if (!*p)
            break;
        size_t n = 0;
        while (p[n] && p[n] != '/')
            n++;
        if (n == 1 && p[0] == '.') {
            /* nothing */
        } else if (n == 2 && p[0] == '.' && p[1] == '.') {
            while (*pos > 0 && out[*pos - 1] != '/')
                (*pos)--;
            if (*pos > 0)
                (*pos)--;
        } else {
            if (*pos + 1 + n + 1 > outsz)
                return -ENAMETOOLONG;
            out[(*pos)++] = '/';
            for (size_t i = 0; i < n; i++)
                out[(*pos)++] = p[i];
        }
        p += n;
    }
    return 0;
}

int rec_normalise(char *out, size_t outsz, const char *base, const char *path)
{
    size_t pos = 0;
    if (outsz < 2)
        return -ENAMETOOLONG;
    if (path[0] != '/' && base && apply(out, outsz, &pos, base) < 0)
        return -ENAMETOOLONG;
    if (apply(out, outsz, &pos, path) < 0)
        return -ENAMETOOLONG;
    if (pos == 0)
        out[pos++] = '/';
    out[pos] = '\0';
    return 0;
}

/* Append S (N bytes, or up to its NUL when N is (size_t)-1), escaped. */
static size_t put_escaped(char *line, size_t pos, size_t cap, const char *s, size_t n, int *cut)
{
    for (size_t i = 0; i < n && (n != (size_t)-1 || s[i]); i++) {
        char c = s[i], e = 0;
        if (c == '\\')
            e = '\\';
        else if (c == '\t')
            e = 't';
        else if (c == '\n')
            e = 'n';
        size_t need = e ? 2 : 1;
        if (pos + need > cap) {
            *cut = 1;
            return pos;
        }
        if (e) {
            line[pos++] = '\\';
            line[pos++] = e;
        } else {
            line[pos++] = c;
        }
    }
    return pos;
}

static size_t put_raw(char *line, size_t pos, const char *s)
{
    while (*s)
        line[pos++] = *s++;
    return pos;
}

static size_t put_num(char *line, size_t pos, unsigned long v)
{
    char d[24];
    size_t n = 0;
    do {
        d[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        line[pos++] = d[--n];
    return pos;
}

size_t rec_format(const struct rec_conf *c, char *line, int op, int result, long pid,
                  const char *prefix, const char *path, size_t n)
{
    size_t pos = 0;
    int cut = 0;
    pos = put_raw(line, pos, c->mech);
    line[pos++] = '\t';
    pos = put_raw(line, pos, op >= 0 && op <= REC_CONNECT ? OP_NAMES[op] : "?");
    line[pos++] = '\t';
    if (result < 0)
        line[pos++] = '-';
    else
        pos = put_num(line, pos, (unsigned long)result);
    line[pos++] = '\t';
    pos = put_num(line, pos, (unsigned long)pid);
    line[pos++] = '\t';
    /* the name has at most REC_NAME_MAX bytes: it always fits, escaped */
    pos = put_escaped(line, pos, REC_LINE_MAX, c->program, (size_t)-1, &cut);
    line[pos++] = '\t';
    /* room for "\..." and the newline */
    size_t cap = REC_LINE_MAX - 5;
    if (prefix)
        pos = put_escaped(line, pos, cap, prefix, (size_t)-1, &cut);
    if (!cut)
        pos = put_escaped(line, pos, cap, path, n, &cut);
    if (cut) {
        line[pos++] = '\\';
        line[pos++] = '.';
        line[pos++] = '.';
        line[pos++] = '.';
    }
    line[pos++] = '\n';
    return pos;
}

void rec_emit(const struct rec_conf *c, int op, int result, const char *prefix, const char *path,
              size_t n)
{
    int fd = __atomic_load_n(&c->fd, __ATOMIC_RELAXED);
    if (fd < 0 || op < 0)
        return;
    if (!prefix && rec_skipped(c, path))
        return;
    char line[REC_LINE_MAX];
    size_t len = rec_format(c, line, op, result, nbs_getpid(), prefix, path, n);
    for (int tries = 0; tries < 8; tries++) {
        long w = nbs_write(fd, line, len);
        if (w != -EINTR)
            break;
    }
}
