/* Pack wrappers: reading <root>/.nbsandbox/launch.conf.
 *
 * The file is text, one record per line, tokens separated by one space and
 * percent-escaped (%XX) where they contain blanks, '%' or non-ASCII bytes:
 *
 *   nbs-launch-pack 1
 *   prefix /gnu/store
 *   profile /gnu/store/<hash>-profile
 *   program NAME ELF ARGV0|- LDSO|- FEATURES [PRE...]
 *   refuse NAME REASON
 *   kernel PYTHON-NAME LANGUAGE DISPLAY-NAME
 *   kernel-file SANDBOX-PATH
 *   glibc-default LDSO NAME SANDBOX-PATH
 */
#include "wrap.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CONF_MAX (1 << 20)

void sbuf_add(struct sbuf *b, const char *text)
{
    size_t n = strlen(text);
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *data = realloc(b->data, cap);
        if (!data)
            die_err(ENOMEM, NULL, "allocating memory");
        b->data = data;
        b->cap = cap;
    }
    memcpy(b->data + b->len, text, n + 1);
    b->len += n;
}

void sbuf_addf(struct sbuf *b, const char *fmt, ...)
{
    char small[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0)
        die_err(errno, NULL, "formatting text");
    if ((size_t)n < sizeof small) {
        sbuf_add(b, small);
        return;
    }
    char *big = xcalloc((size_t)n + 1, 1);
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    sbuf_add(b, big);
    free(big);
}

void sbuf_add_escaped(struct sbuf *b, const char *text)
{
    for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
        char one[4];
        if (*p <= 0x20 || *p == 0x25 || *p >= 0x7f)
            snprintf(one, sizeof one, "%%%02X", *p);
        else {
            one[0] = (char)*p;
            one[1] = '\0';
        }
        sbuf_add(b, one);
    }
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Decode a token in place; false if malformed or if it decodes to a NUL. */
static bool unescape(char *s)
{
    char *out = s;
    for (char *p = s; *p; p++) {
        if (*p != '%') {
            *out++ = *p;
            continue;
        }
        int hi = hexval(p[1]), lo = hi < 0 ? -1 : hexval(p[2]);
        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
            return false;
        *out++ = (char)(hi * 16 + lo);
        p += 2;
    }
    *out = '\0';
    return true;
}

static char *read_conf(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    char *buf = xcalloc(CONF_MAX + 1, 1);
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, buf + n, CONF_MAX - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            die_err(errno, NULL, "reading %s", path);
        if (r == 0)
            break;
        n += (size_t)r;
        if (n == CONF_MAX)
            die("%s is larger than %d bytes; re-create the pack", path, CONF_MAX);
    }
    close(fd);
    buf[n] = '\0';
    return buf;
}

#define MAX_TOKENS 64

static struct wrap_program *add_program(struct wrap_conf *conf)
{
    if (conf->nprograms == conf->cap) {
        size_t cap = conf->cap ? conf->cap * 2 : 32;
        struct wrap_program *p = reallocarray(conf->programs, cap, sizeof *p);
        if (!p)
            die_err(ENOMEM, NULL, "allocating memory");
        conf->programs = p;
        conf->cap = cap;
    }
    struct wrap_program *prog = &conf->programs[conf->nprograms++];
    memset(prog, 0, sizeof *prog);
    return prog;
}

static struct wrap_program *find_mut(struct wrap_conf *conf, const char *name)
{
    for (size_t i = 0; i < conf->nprograms; i++)
        if (!strcmp(conf->programs[i].name, name))
            return &conf->programs[i];
    return NULL;
}

const struct wrap_program *wrap_conf_program(const struct wrap_conf *conf, const char *name)
{
    return find_mut((struct wrap_conf *)conf, name);
}

const char *wrap_glibc_default(const struct wrap_conf *conf, const char *ldso, const char *name)
{
    size_t l = strlen(ldso), n = strlen(name);
    for (size_t i = 0; i < conf->glibc_defaults.len; i++) {
        const char *rec = conf->glibc_defaults.items[i];
        if (!strncmp(rec, ldso, l) && rec[l] == '\t' && !strncmp(rec + l + 1, name, n) &&
            rec[l + 1 + n] == '\t')
            return rec + l + n + 2;
    }
    return NULL;
}

void wrap_host_path(const struct wrap_conf *conf, const char *sandbox, char out[PATH_MAX])
{
    size_t n = strlen(conf->prefix);
    if (strncmp(sandbox, conf->prefix, n) || (sandbox[n] && sandbox[n] != '/'))
        die("%s is not under the store prefix %s; re-create the pack", sandbox, conf->prefix);
    path_fmt(out, "%s%s", conf->store, sandbox + n);
}

static _Noreturn void bad_conf(const char *path, int line, const char *what)
{
    die("%s, line %d: %s; the pack is damaged: unpack it again, or re-create it with "
        "nbsandbox pack", path, line, what);
}

/* A sandbox path: absolute, under the prefix (when known). */
static char *store_path(const struct wrap_conf *conf, const char *path, int line, char *tok)
{
    size_t n = conf->prefix ? strlen(conf->prefix) : 0;
    if (tok[0] != '/' || strstr(tok, "/../") || !conf->prefix || strncmp(tok, conf->prefix, n) ||
        tok[n] != '/')
        bad_conf(path, line, "a path outside the store");
    return xstrdup(tok);
}

void wrap_conf_read(struct wrap_conf *conf, const char *exe)
{
    memset(conf, 0, sizeof *conf);
    /* <root>/bin/NAME */
    char dir[PATH_MAX];
    path_fmt(dir, "%s", exe);
    for (int up = 0; up < 2; up++) {
        char *slash = strrchr(dir, '/');
        if (!slash)
            die("cannot tell where %s is; run it by its path", exe);
        *slash = '\0';
    }
    path_fmt(conf->root, "%s", dir);
    char path[PATH_MAX];
    path_fmt(path, "%s/" WRAP_CONF, conf->root[0] ? conf->root : "");
    char *text = read_conf(path);
    if (!text) {
        int e = errno;
        if (e == ENOENT || e == ENOTDIR) {
            fprintf(stderr, "%s: %s is a program wrapper of a pack, but it is not in a pack's "
                    "bin/ (there is no %s); run it from its pack, or link to it with a symbolic "
                    "link instead of copying it\n", nbs_progname, exe, path);
            exit(EXIT_NOT_FOUND);
        }
        die_err(e, NULL, "opening %s", path);
    }
    int line = 0;
    for (char *save = NULL, *ln = strtok_r(text, "\n", &save); ln;
         ln = strtok_r(NULL, "\n", &save)) {
        line++;
        char *tok[MAX_TOKENS];
        int n = 0;
        for (char *s2 = NULL, *t = strtok_r(ln, " ", &s2); t; t = strtok_r(NULL, " ", &s2)) {
            if (n == MAX_TOKENS)
                bad_conf(path, line, "too many words");
            if (!unescape(t))
                bad_conf(path, line, "a malformed %-escape");
            tok[n++] = t;
        }
        if (n == 0)
            continue;
        if (line == 1) {
            if (n != 2 || strcmp(tok[0], "nbs-launch-pack") || strcmp(tok[1], "1"))
                die("%s is not a launch configuration this wrapper understands (first line "
                    "should be \"nbs-launch-pack 1\"); re-create the pack", path);
            continue;
        }
        if (!strcmp(tok[0], "prefix") && n == 2) {
            if (tok[1][0] != '/' || !strcmp(tok[1], "/") || strstr(tok[1], ".."))
                bad_conf(path, line, "a bad prefix");
            conf->prefix = xstrdup(tok[1]);
            path_fmt(conf->store, "%s%s", conf->root, conf->prefix);
        } else if (!strcmp(tok[0], "profile") && n == 2) {
            conf->profile = store_path(conf, path, line, tok[1]);
        } else if (!strcmp(tok[0], "program") && n >= 6) {
            if (strchr(tok[1], '/') || find_mut(conf, tok[1]))
                bad_conf(path, line, "a bad or repeated program name");
            struct wrap_program *p = add_program(conf);
            p->name = xstrdup(tok[1]);
            p->elf = store_path(conf, path, line, tok[2]);
            p->argv0 = strcmp(tok[3], "-") ? xstrdup(tok[3]) : NULL;
            p->ldso = strcmp(tok[4], "-") ? store_path(conf, path, line, tok[4]) : NULL;
            if (!parse_int(tok[5], &p->features))
                bad_conf(path, line, "a bad loader feature number");
            for (int k = 6; k < n; k++)
                strvec_push(&p->pre, tok[k]);
        } else if (!strcmp(tok[0], "refuse") && n == 3) {
            struct wrap_program *p = find_mut(conf, tok[1]);
            if (!p)
                bad_conf(path, line, "refuse for an unknown program");
            p->refuse = xstrdup(tok[2]);
        } else if (!strcmp(tok[0], "kernel") && n == 4) {
            conf->kernel_python = xstrdup(tok[1]);
            conf->kernel_language = xstrdup(tok[2]);
            conf->kernel_display = xstrdup(tok[3]);
        } else if (!strcmp(tok[0], "glibc-default") && n == 4) {
            if (strchr(tok[1], '\t') || strchr(tok[2], '\t') || strchr(tok[3], '\t'))
                bad_conf(path, line, "a tab in a glibc-default record");
            struct sbuf rec = {0};
            sbuf_addf(&rec, "%s\t%s\t%s", store_path(conf, path, line, tok[1]), tok[2],
                      store_path(conf, path, line, tok[3]));
            strvec_push(&conf->glibc_defaults, rec.data);
        } else if (!strcmp(tok[0], "kernel-file") && n == 2) {
            strvec_push(&conf->kernel_files, store_path(conf, path, line, tok[1]));
        } else {
            /* Unknown records are for newer wrappers; a malformed known one is not. */
            static const char *const known[] = {"prefix", "profile", "program", "refuse",
                                                "kernel", "kernel-file", "glibc-default"};
            for (size_t k = 0; k < sizeof known / sizeof *known; k++)
                if (!strcmp(tok[0], known[k]))
                    bad_conf(path, line, "a record with the wrong number of words");
        }
    }
    if (!conf->prefix || !conf->profile)
        die("%s names no prefix or profile; the pack is damaged: unpack it again", path);
    for (size_t i = 0; i < conf->nprograms; i++) {
        struct wrap_program *p = &conf->programs[i];
        if (!p->ldso && !p->refuse)
            bad_conf(path, 0, "a program with neither a loader nor a reason");
    }
}
