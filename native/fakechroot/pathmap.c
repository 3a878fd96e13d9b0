/* pathmap: pure path translation, resolution and exec-argument building.
 * See pathmap.h.  No libc calls here: the audit module links this file
 * without any libc. */
#include "pathmap.h"

#include <errno.h>

/* The preload library builds this file with -DPM_USE_LIBC to use libc's
 * vectorized string functions on its fast path; the audit module has no
 * libc and uses the plain loops. */
#ifdef PM_USE_LIBC
#include <string.h>
#define PM_FAST_STRLEN(s) strlen(s)
#define PM_FAST_MEMCPY(d, s, n) memcpy((d), (s), (n))
#define PM_FAST_MEMEQ(a, b, n) (memcmp((a), (b), (n)) == 0)
#else
#define PM_FAST_MEMEQ(a, b, n) pm_memeq((a), (b), (n))
#define PM_FAST_STRLEN(s) pm_strlen(s)
#define PM_FAST_MEMCPY(d, s, n) pm_move((d), (s), (n))
#endif

/* ------------------------------------------------------------------------ */
/* string helpers */

size_t pm_strlen(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

size_t pm_strnlen(const char *s, size_t max)
{
    size_t n = 0;
    while (n < max && s[n])
        n++;
    return n;
}

#ifndef PM_USE_LIBC
/* Whether the first N bytes of A and B are equal. */
static int pm_memeq(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (a[i] != b[i])
            return 0;
    }
    return 1;
}
#endif

int pm_streq(const char *a, const char *b)
{
    while (*a && *a == *b) {
        a++;
        b++;
    }
    return *a == *b;
}

int pm_startswith(const char *s, const char *prefix)
{
    while (*prefix) {
        if (*s++ != *prefix++)
            return 0;
    }
    return 1;
}

static void pm_move(char *dst, const char *src, size_t n)
{
    if (dst == src || n == 0)
        return;
    if (dst < src) {
        for (size_t i = 0; i < n; i++)
            dst[i] = src[i];
    } else {
        for (size_t i = n; i > 0; i--)
            dst[i - 1] = src[i - 1];
    }
}

int pm_copy(char *dst, size_t n, const char *src)
{
    size_t len = pm_strnlen(src, n);
    if (len >= n) {
        if (n)
            dst[0] = '\0';
        return -1;
    }
    pm_move(dst, src, len);
    dst[len] = '\0';
    return 0;
}

const char *pm_basename(const char *path)
{
    const char *b = path;
    for (const char *p = path; *p; p++) {
        if (*p == '/' && p[1] != '\0' && p[1] != '/')
            b = p + 1;
    }
    return b;
}

/* Append N bytes of S at *pos in OUT (size SZ); -1 when it does not fit
 * (keeping room for a NUL). */
static int put(char *out, size_t sz, size_t *pos, const char *s, size_t n)
{
    if (*pos > sz || n >= sz - *pos)
        return -1;
    pm_move(out + *pos, s, n);
    *pos += n;
    out[*pos] = '\0';
    return 0;
}

/* ------------------------------------------------------------------------ */
/* configuration */

static const char *match_dir(const char *dir, size_t dlen, const char *path);

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decode the token TEXT[0..len) (percent-escaped) into the arena. */
static int decode(struct pm_table *t, const char *text, size_t len, const char **out, size_t *outlen)
{
    size_t start = t->used;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (c == '%') {
            int hi, lo;
            if (len - i < 3)
                return -EINVAL;
            hi = hexval(text[i + 1]);
            lo = hexval(text[i + 2]);
            if (hi < 0 || lo < 0)
                return -EINVAL;
            c = (char)(hi * 16 + lo);
            i += 2;
        }
        if (c == '\0')
            return -EINVAL;
        if (t->used + 1 >= PM_ARENA)
            return -E2BIG;
        t->arena[t->used++] = c;
    }
    if (t->used >= PM_ARENA)
        return -E2BIG;
    t->arena[t->used++] = '\0';
    *out = t->arena + start;
    if (outlen)
        *outlen = t->used - start - 1;
    return 0;
}

/* A clean absolute directory: starts with '/', is not "/", has no "//",
 * "." or ".." components and no trailing slash. */
static int clean_abs_dir(const char *p, size_t len)
{
    if (len < 2 || p[0] != '/' || p[len - 1] == '/' || len >= PM_PATH_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        if (p[i] != '/')
            continue;
        size_t j = i + 1;
        size_t clen = 0;
        while (j + clen < len && p[j + clen] != '/')
            clen++;
        if (clen == 0)
            return 0;
        if (clen == 1 && p[j] == '.')
            return 0;
        if (clen == 2 && p[j] == '.' && p[j + 1] == '.')
            return 0;
    }
    return 1;
}

static int next_token(const char *text, size_t len, size_t *pos, const char **tok, size_t *toklen)
{
    size_t i = *pos;
    if (i >= len || text[i] == '\n')
        return 0;
    size_t start = i;
    while (i < len && text[i] != ' ' && text[i] != '\n')
        i++;
    *tok = text + start;
    *toklen = i - start;
    if (i < len && text[i] == ' ')
        i++;
    *pos = i;
    return *toklen > 0;
}

static int tokeq(const char *tok, size_t len, const char *word)
{
    size_t wl = pm_strlen(word);
    if (wl != len)
        return 0;
    for (size_t i = 0; i < len; i++) {
        if (tok[i] != word[i])
            return 0;
    }
    return 1;
}

int pm_config_parse(struct pm_table *t, const char *text, size_t len)
{
    t->n = 0;
    t->flags = 0;
    t->audit = t->preload = 0;
    t->nshell = t->nenv = t->nldso = t->nlib = 0;
    t->used = 0;
    if (len > PM_CONFIG_MAX)
        return -E2BIG;
    size_t pos = 0;
    int seen_header = 0;
    while (pos < len) {
        const char *kw, *a, *b, *c;
        size_t kwl, al, bl, cl;
        size_t line_end = pos;
        while (line_end < len && text[line_end] != '\n')
            line_end++;
        if (line_end == pos) { /* empty line */
            pos++;
            continue;
        }
        if (!next_token(text, line_end, &pos, &kw, &kwl))
            return -EINVAL;
        int r;
        if (!seen_header) {
            if (!tokeq(kw, kwl, "nbs-fc") || !next_token(text, line_end, &pos, &a, &al) ||
                !tokeq(a, al, "1"))
                return -EINVAL;
            seen_header = 1;
        } else if (tokeq(kw, kwl, "map")) {
            const char *from, *to;
            size_t fl, tl;
            unsigned flags = 0;
            if (!next_token(text, line_end, &pos, &a, &al) ||
                !next_token(text, line_end, &pos, &b, &bl) ||
                !next_token(text, line_end, &pos, &c, &cl))
                return -EINVAL;
            for (size_t i = 0; i < al; i++) {
                switch (a[i]) {
                case 'r': flags |= PM_RO; break;
                case 's': flags |= PM_STORE; break;
                case 'a': flags |= PM_ANCESTORS; break;
                case '-': break;
                default: return -EINVAL;
                }
            }
            if (t->n >= PM_MAX_MAPS)
                return -E2BIG;
            if ((r = decode(t, b, bl, &from, &fl)) < 0 || (r = decode(t, c, cl, &to, &tl)) < 0)
                return r;
            if (!clean_abs_dir(from, fl) || !clean_abs_dir(to, tl))
                return -EINVAL;
            struct pm_map *m = &t->map[t->n];
            m->from = from;
            m->from_len = fl;
            m->to = to;
            m->to_len = tl;
            m->flags = flags;
            m->anc_len = 0;
            if (flags & PM_ANCESTORS) {
                if (tl <= fl)
                    return -EINVAL;
                for (size_t i = 0; i < fl; i++) {
                    if (to[tl - fl + i] != from[i])
                        return -EINVAL;
                }
                m->anc_len = tl - fl;
            }
            t->n++;
        } else if (tokeq(kw, kwl, "audit") || tokeq(kw, kwl, "preload")) {
            const char *v;
            size_t vl;
            if (!next_token(text, line_end, &pos, &a, &al))
                return -EINVAL;
            if ((r = decode(t, a, al, &v, &vl)) < 0)
                return r;
            if (v[0] != '/' || vl >= PM_PATH_MAX)
                return -EINVAL;
            if (kw[0] == 'a')
                t->audit = v;
            else
                t->preload = v;
        } else if (tokeq(kw, kwl, "shell")) {
            const char *v;
            if (!next_token(text, line_end, &pos, &a, &al))
                return -EINVAL;
            if (t->nshell >= PM_MAX_SHELLS)
                return -E2BIG;
            if ((r = decode(t, a, al, &v, 0)) < 0)
                return r;
            t->shell[t->nshell++] = v;
        } else if (tokeq(kw, kwl, "env")) {
            const char *v;
            size_t vl;
            if (!next_token(text, line_end, &pos, &a, &al))
                return -EINVAL;
            if (t->nenv >= PM_MAX_ENV)
                return -E2BIG;
            if ((r = decode(t, a, al, &v, &vl)) < 0)
                return r;
            size_t eq = 0;
            while (eq < vl && v[eq] != '=')
                eq++;
            if (eq == 0 || eq == vl || pm_env_is_ours(v))
                return -EINVAL;
            t->env[t->nenv++] = v;
        } else if (tokeq(kw, kwl, "ldso")) {
            const char *v;
            size_t vl;
            unsigned feat = 0;
            if (!next_token(text, line_end, &pos, &a, &al) ||
                !next_token(text, line_end, &pos, &b, &bl))
                return -EINVAL;
            if (al != 1 || a[0] < '0' || a[0] > '3')
                return -EINVAL;
            feat = (unsigned)(a[0] - '0') | PM_LDSO_KNOWN;
            if (t->nldso >= PM_MAX_LDSO)
                return -E2BIG;
            if ((r = decode(t, b, bl, &v, &vl)) < 0)
                return r;
            if (v[0] != '/' || vl >= PM_PATH_MAX)
                return -EINVAL;
            t->ldso[t->nldso].host = v;
            t->ldso[t->nldso].features = feat;
            t->nldso++;
        } else if (tokeq(kw, kwl, "lib")) {
            const char *name, *host;
            size_t nl, hl;
            if (!next_token(text, line_end, &pos, &a, &al) ||
                !next_token(text, line_end, &pos, &b, &bl))
                return -EINVAL;
            if (t->nlib >= PM_MAX_LIBS)
                return -E2BIG;
            if ((r = decode(t, a, al, &name, &nl)) < 0 || (r = decode(t, b, bl, &host, &hl)) < 0)
                return r;
            for (size_t i = 0; i < nl; i++) {
                if (name[i] == '/')
                    return -EINVAL;
            }
            if (host[0] != '/' || hl >= PM_PATH_MAX)
                return -EINVAL;
            t->lib[t->nlib].name = name;
            t->lib[t->nlib].host = host;
            t->nlib++;
        } else if (tokeq(kw, kwl, "compat")) {
            t->flags |= PM_CFG_COMPAT;
        } else {
            return -EINVAL;
        }
        if (pos != line_end) /* trailing tokens */
            return -EINVAL;
        pos = line_end + 1;
    }
    if (!seen_header || !t->audit || !t->preload)
        return -EINVAL;
    for (unsigned i = 0; i < t->n; i++) {
        struct pm_map *a = &t->map[i];
        a->nested = 0;
        for (unsigned j = 0; j < t->n; j++) {
            const struct pm_map *b = &t->map[j];
            if (j != i && b->from_len > a->from_len && b->from[a->from_len] == '/' &&
                match_dir(a->from, a->from_len, b->from))
                a->nested = 1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* translation */

/* Where DIR (a clean absolute directory) ends in PATH (absolute), comparing
 * whole components and skipping repeated slashes and "." components in
 * PATH; NULL when PATH is not DIR or under it. */
static const char *match_dir(const char *dir, size_t dlen, const char *path)
{
    size_t i = 0;
    const char *p = path;
    while (i < dlen) {
        if (dir[i] == '/') {
            if (*p != '/')
                return 0;
            for (;;) {
                while (*p == '/')
                    p++;
                if (p[0] == '.' && p[1] == '/') {
                    p++;
                    continue;
                }
                break;
            }
            i++;
            continue;
        }
        if (*p != dir[i])
            return 0;
        p++;
        i++;
    }
    if (*p == '/' || *p == '\0')
        return p;
    return 0;
}

const struct pm_map *pm_match(const struct pm_table *t, const char *path, const char **rest)
{
    const struct pm_map *best = 0;
    const char *best_rest = 0;
    if (path[0] != '/')
        return 0;
    for (unsigned i = 0; i < t->n; i++) {
        const struct pm_map *m = &t->map[i];
        if (path[1] != m->from[1] && path[1] != '/' && path[1] != '.')
            continue; /* cheap reject of most host paths */
        const char *r = match_dir(m->from, m->from_len, path);
        if (r && (!best || m->from_len > best->from_len)) {
            best = m;
            best_rest = r;
        }
    }
    if (best && rest)
        *rest = best_rest;
    return best;
}

/* Whether S (LEN bytes before its NUL) has a ".." component after its
 * first byte: a "/.." followed by '/' or the end. */
#if defined(PM_USE_LIBC) && defined(__SSE2__)
#include <emmintrin.h>
static int dotdot_in(const char *s, size_t len)
{
    /* look at each '.', 16 bytes at a time (paths have few dots); every
     * load is within the LEN bytes */
    const __m128i dot = _mm_set1_epi8('.');
    size_t i = 0;
    if (len >= 16) {
        for (size_t base = 0;; base += 16) {
            unsigned mask;
            if (base + 16 > len) {
                /* the last, overlapping block: only bytes not seen yet */
                size_t last = len - 16;
                mask = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(
                           _mm_loadu_si128((const __m128i *)(const void *)(s + last)), dot)) &
                       (0xffffu << (base - last));
                base = last;
            } else {
                mask = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(
                    _mm_loadu_si128((const __m128i *)(const void *)(s + base)), dot));
            }
            for (; mask; mask &= mask - 1) {
                size_t j = base + (size_t)__builtin_ctz(mask);
                if (j > 0 && s[j - 1] == '/' && s[j + 1] == '.' &&
                    (s[j + 2] == '/' || !s[j + 2]))
                    return 1;
            }
            if (base + 16 >= len)
                return 0;
        }
    }
    for (; i < len; i++) {
        if (s[i] == '.' && i > 0 && s[i - 1] == '/' && s[i + 1] == '.' &&
            (s[i + 2] == '/' || !s[i + 2]))
            return 1;
    }
    return 0;
}
#else
static int dotdot_after_slash(const char *s);
static int dotdot_in(const char *s, size_t len)
{
    (void)len;
    return dotdot_after_slash(s);
}
#endif

/* Whether S has a ".." component after its first byte: a "/.." followed by
 * '/' or the end. */
static int dotdot_after_slash(const char *s)
{
#ifdef PM_USE_LIBC
    for (const char *p = s; (p = strstr(p, "/..")) != 0; p += 3) {
        if (p[3] == '/' || p[3] == '\0')
            return 1;
    }
    return 0;
#else
    for (size_t i = 0; s[i]; i++) {
        if (s[i] == '/' && s[i + 1] == '.' && s[i + 2] == '.' &&
            (s[i + 3] == '/' || s[i + 3] == '\0'))
            return 1;
    }
    return 0;
#endif
}

int pm_has_dotdot(const char *s)
{
    if (s[0] == '.' && s[1] == '.' && (s[2] == '/' || s[2] == '\0'))
        return 1;
    return dotdot_after_slash(s);
}

/* The mapping of absolute sandbox PATH (LEN bytes) with *rest and *rest_len
 * set to what follows its FROM, or NULL. */
static const struct pm_map *find_mapping(const struct pm_table *t, const char *path, size_t len,
                                         const char **rest, size_t *rest_len)
{
    /* The usual spelling first: the mapping's directory, byte for byte. */
    const struct pm_map *m = 0;
    if (path[0] == '/') {
        for (unsigned i = 0; i < t->n; i++) {
            const struct pm_map *c = &t->map[i];
            size_t fl = c->from_len;
            if (len >= fl && path[1] == c->from[1] && (path[fl] == '/' || path[fl] == '\0') &&
                PM_FAST_MEMEQ(path, c->from, fl) && (!m || fl > m->from_len))
                m = c;
        }
    }
    if (m && !m->nested) {
        *rest = path + m->from_len;
        *rest_len = len - m->from_len;
        return m;
    }
    /* "//gnu/./store", or a mapping inside the one found: compare
     * component by component */
    m = pm_match(t, path, rest);
    if (m)
        *rest_len = PM_FAST_STRLEN(*rest);
    return m;
}

int pm_to_rel(const struct pm_table *t, const char *path, const struct pm_map **mapping,
              const char **rel)
{
    const char *rest;
    size_t rl;
    const struct pm_map *m = find_mapping(t, path, PM_FAST_STRLEN(path), &rest, &rl);
    *mapping = m;
    if (!m)
        return PM_ASIS;
    /* REST is "" or starts with '/': any ".." in it follows a slash */
    int resolve = dotdot_in(rest, rl);
    while (*rest == '/')
        rest++;
    *rel = rest;
    return resolve ? PM_RESOLVE : PM_MAPPED;
}

int pm_to_host(const struct pm_table *t, const char *path, char *out, size_t outsz,
               const struct pm_map **mapping)
{
    const char *rest;
    size_t rl;
    const struct pm_map *m = find_mapping(t, path, PM_FAST_STRLEN(path), &rest, &rl);
    if (mapping)
        *mapping = m;
    if (!m)
        return PM_ASIS;
    /* REST is "" or starts with '/': any ".." in it follows a slash */
    if (m->to_len + rl >= outsz)
        return -ENAMETOOLONG;
    PM_FAST_MEMCPY(out, m->to, m->to_len);
    PM_FAST_MEMCPY(out + m->to_len, rest, rl + 1);
    return dotdot_in(rest, rl) ? PM_RESOLVE : PM_MAPPED;
}

const struct pm_map *pm_ancestor_of(const struct pm_table *t, const char *path, size_t len)
{
    if (len == 0)
        return 0;
    for (unsigned i = 0; i < t->n; i++) {
        const struct pm_map *m = &t->map[i];
        if (m->from_len <= len || m->from[len] != '/')
            continue;
        size_t j = 0;
        while (j < len && m->from[j] == path[j])
            j++;
        if (j == len)
            return m;
    }
    return 0;
}

int pm_to_sandbox(const struct pm_table *t, const char *host, char *out, size_t outsz)
{
    const struct pm_map *best = 0;
    const char *best_rest = 0;
    if (host[0] != '/')
        return 0;
    for (unsigned i = 0; i < t->n; i++) {
        const struct pm_map *m = &t->map[i];
        const char *r = match_dir(m->to, m->to_len, host);
        if (r && (!best || m->to_len > best->to_len)) {
            best = m;
            best_rest = r;
        }
    }
    if (best) {
        size_t pos = 0;
        size_t rl = pm_strlen(best_rest);
        if (put(out, outsz, &pos, best->from, best->from_len) < 0 ||
            put(out, outsz, &pos, best_rest, rl) < 0)
            return -ENAMETOOLONG;
        return 1;
    }
    /* ancestors of FROM taken from the root: ROOT/gnu -> /gnu */
    for (unsigned i = 0; i < t->n; i++) {
        const struct pm_map *m = &t->map[i];
        if (!m->anc_len)
            continue;
        const char *r = match_dir(m->to, m->anc_len, host);
        if (!r || *r != '/')
            continue;
        size_t rl = pm_strlen(r);
        while (rl > 1 && r[rl - 1] == '/')
            rl--;
        if (rl >= m->from_len || m->from[rl] != '/')
            continue;
        size_t j = 0;
        while (j < rl && r[j] == m->from[j])
            j++;
        if (j != rl)
            continue;
        size_t pos = 0;
        if (put(out, outsz, &pos, r, rl) < 0)
            return -ENAMETOOLONG;
        return 1;
    }
    return 0;
}

int pm_join(char *out, size_t outsz, const char *dir, const char *path)
{
    size_t pos = 0;
    size_t dl = pm_strlen(dir);
    while (dl > 1 && dir[dl - 1] == '/')
        dl--;
    if (put(out, outsz, &pos, dir, dl) < 0)
        return -ENAMETOOLONG;
    if (!(dl == 1 && dir[0] == '/') && put(out, outsz, &pos, "/", 1) < 0)
        return -ENAMETOOLONG;
    if (put(out, outsz, &pos, path, pm_strlen(path)) < 0)
        return -ENAMETOOLONG;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* resolution */

static size_t parent_len(const char *cur, size_t clen)
{
    while (clen > 0 && cur[clen - 1] != '/')
        clen--;
    if (clen > 0)
        clen--; /* the slash */
    return clen;
}

int pm_resolve(const struct pm_table *t, const struct pm_fs *fs, const char *path, unsigned flags,
               char *out_host, size_t host_sz, char *out_sbx, size_t sbx_sz)
{
    char cur[PM_PATH_MAX];  /* resolved sandbox path, "" for "/" */
    char rest[PM_PATH_MAX]; /* what is left to resolve */
    char link[PM_PATH_MAX];
    char host[PM_PATH_MAX]; /* also the untranslated link target */
    size_t clen = 0, rlen, rpos = 0;
    unsigned links = 0;

    if (path[0] != '/')
        return -EINVAL;
    rlen = pm_strnlen(path, PM_PATH_MAX);
    if (rlen >= PM_PATH_MAX)
        return -ENAMETOOLONG;
    pm_move(rest, path, rlen);
    rest[rlen] = '\0';
    int trailing = rlen > 1 && path[rlen - 1] == '/';
    cur[0] = '\0';

    for (;;) {
        while (rpos < rlen && rest[rpos] == '/')
            rpos++;
        if (rpos >= rlen)
            break;
        size_t cstart = rpos;
        while (rpos < rlen && rest[rpos] != '/')
            rpos++;
        size_t c_len = rpos - cstart;
        size_t q = rpos;
        while (q < rlen && rest[q] == '/')
            q++;
        int is_last = q >= rlen;
        int slash_after = rpos < rlen;
        if (c_len == 1 && rest[cstart] == '.')
            continue;
        if (c_len == 2 && rest[cstart] == '.' && rest[cstart + 1] == '.') {
            clen = parent_len(cur, clen);
            cur[clen] = '\0';
            continue;
        }
        if (clen + 1 + c_len >= PM_PATH_MAX)
            return -ENAMETOOLONG;
        cur[clen] = '/';
        pm_move(cur + clen + 1, rest + cstart, c_len);
        clen += 1 + c_len;
        cur[clen] = '\0';
        if (is_last && !slash_after && !(flags & PM_FOLLOW))
            break;
        int r = pm_to_host(t, cur, host, sizeof host, 0);
        if (r < 0)
            return r;
        const char *hp = r == PM_ASIS ? cur : host;
        long n = fs->readlink(fs->ctx, hp, link, sizeof link - 1);
        if (n >= 0) {
            if (++links > PM_MAX_SYMLINKS)
                return -ELOOP;
            if (n == 0)
                return -ENOENT;
            if ((size_t)n >= sizeof link)
                return -ENAMETOOLONG;
            link[n] = '\0';
            const char *target = link;
            size_t tlen = (size_t)n;
            if (link[0] == '/') {
                int s = pm_to_sandbox(t, link, host, sizeof host);
                if (s < 0)
                    return s;
                if (s == 1) {
                    target = host;
                    tlen = pm_strlen(host);
                }
            }
            size_t remain = rlen - rpos;
            if (tlen + remain >= PM_PATH_MAX)
                return -ENAMETOOLONG;
            pm_move(rest + tlen, rest + rpos, remain);
            pm_move(rest, target, tlen);
            rlen = tlen + remain;
            rest[rlen] = '\0';
            rpos = 0;
            if (target[0] == '/')
                clen = 0;
            else
                clen = parent_len(cur, clen);
            cur[clen] = '\0';
            continue;
        }
        if (n == -EINVAL)
            continue;
        if (is_last && !slash_after)
            break; /* a missing last component is for the caller's call to report */
        if (n == -ENOENT && pm_ancestor_of(t, cur, clen))
            continue; /* /gnu on a host without /gnu: a directory in the sandbox */
        return (int)n;
    }

    const char *sbx = clen ? cur : "/";
    int r = pm_to_host(t, sbx, out_host, host_sz, 0);
    if (r < 0)
        return r;
    if (r == PM_ASIS && pm_copy(out_host, host_sz, sbx) < 0)
        return -ENAMETOOLONG;
    const struct pm_map *anc = pm_ancestor_of(t, cur, clen);
    if (anc && anc->anc_len) {
        long n = fs->readlink(fs->ctx, out_host, link, sizeof link - 1);
        if (n == -ENOENT) {
            size_t pos = 0;
            if (put(out_host, host_sz, &pos, anc->to, anc->anc_len) < 0 ||
                put(out_host, host_sz, &pos, cur, clen) < 0)
                return -ENAMETOOLONG;
        }
    }
    if (trailing && clen) {
        size_t pos = pm_strlen(out_host);
        if (put(out_host, host_sz, &pos, "/", 1) < 0)
            return -ENAMETOOLONG;
    }
    if (out_sbx && pm_copy(out_sbx, sbx_sz, sbx) < 0)
        return -ENAMETOOLONG;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* program files */

static int spacetab(char c)
{
    return c == ' ' || c == '\t';
}

int pm_shebang(const char *buf, size_t n, char *interp, size_t isz, char *arg, size_t asz,
               int *has_arg)
{
    char b[PM_SHEBANG_MAX + 1];
    *has_arg = 0;
    if (n < 2 || buf[0] != '#' || buf[1] != '!')
        return 0;
    if (n > PM_SHEBANG_MAX)
        n = PM_SHEBANG_MAX;
    for (size_t i = 0; i < PM_SHEBANG_MAX + 1; i++)
        b[i] = i < n ? buf[i] : '\0';
    /* The kernel's view: B[0..255], the last byte kept for a NUL. */
    const size_t last = PM_SHEBANG_MAX - 1; /* buf_end */
    size_t end = PM_SHEBANG_MAX;            /* i_end */
    for (size_t i = 0; i < PM_SHEBANG_MAX; i++) {
        if (b[i] == '\n') {
            end = i;
            break;
        }
    }
    if (end == PM_SHEBANG_MAX) {
        size_t i = 2;
        while (i <= last && spacetab(b[i]))
            i++;
        if (i > last)
            return -ENOEXEC;
        while (i <= last && !spacetab(b[i]) && b[i] != '\0')
            i++;
        if (i > last)
            return -ENOEXEC; /* interpreter truncated */
        end = last;
    }
    while (end > 2 && spacetab(b[end - 1]))
        end--;
    size_t name = 2;
    while (name <= end && spacetab(b[name]))
        name++;
    if (name >= end)
        return -ENOEXEC;
    if (b[name] == '\0')
        return -EACCES; /* "#!" then NUL: Linux opens "" and fails so */
    size_t sep = name;
    while (sep <= end && !spacetab(b[sep]) && b[sep] != '\0')
        sep++;
    size_t argpos = 0;
    int found_sep = sep <= end;
    if (found_sep && b[sep] != '\0') {
        size_t a = sep;
        while (a <= end && spacetab(b[a]))
            a++;
        if (a <= end)
            argpos = a;
    }
    b[end] = '\0';
    if (found_sep)
        b[sep] = '\0';
    if (pm_copy(interp, isz, b + name) < 0)
        return -ENAMETOOLONG;
    if (argpos && b[argpos] != '\0') {
        if (pm_copy(arg, asz, b + argpos) < 0)
            return -ENAMETOOLONG;
        *has_arg = 1;
    }
    return 1;
}

static unsigned long rd(const unsigned char *p, int bytes)
{
    unsigned long v = 0;
    for (int i = bytes - 1; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

int pm_elf_interp(const unsigned char *hdr, size_t n, unsigned long *off, unsigned long *len)
{
    if (n < 64 || hdr[0] != 0x7f || hdr[1] != 'E' || hdr[2] != 'L' || hdr[3] != 'F')
        return -ENOEXEC;
    if (hdr[4] != 2 || hdr[5] != 1) /* ELFCLASS64, ELFDATA2LSB */
        return -ENOEXEC;
    unsigned long type = rd(hdr + 16, 2);
    if (type != 2 && type != 3) /* ET_EXEC, ET_DYN */
        return -ENOEXEC;
    unsigned long phoff = rd(hdr + 32, 8);
    unsigned long phentsize = rd(hdr + 54, 2);
    unsigned long phnum = rd(hdr + 56, 2);
    if (phentsize < 56 || phnum == 0xffff)
        return -ENOEXEC;
    if (phoff > n || phnum * phentsize > n - phoff)
        return -E2BIG;
    for (unsigned long i = 0; i < phnum; i++) {
        const unsigned char *ph = hdr + phoff + i * phentsize;
        if (rd(ph, 4) == 3) { /* PT_INTERP */
            *off = rd(ph + 8, 8);
            *len = rd(ph + 32, 8);
            return 1;
        }
    }
    return 0;
}

static int contains(const char *buf, size_t n, const char *word)
{
    size_t wl = pm_strlen(word);
    if (n < wl)
        return 0;
    for (size_t i = 0; i + wl <= n; i++) {
        if (buf[i] != word[0])
            continue;
        size_t j = 1;
        while (j < wl && buf[i + j] == word[j])
            j++;
        if (j == wl)
            return 1;
    }
    return 0;
}

unsigned pm_ldso_scan(const char *buf, size_t n)
{
    unsigned f = 0;
    if (contains(buf, n, "--argv0"))
        f |= PM_LDSO_ARGV0;
    if (contains(buf, n, "--preload"))
        f |= PM_LDSO_PRELOAD;
    return f;
}

/* ------------------------------------------------------------------------ */
/* exec building */

size_t pm_vlen(const char *const *v)
{
    size_t n = 0;
    if (v)
        while (v[n])
            n++;
    return n;
}

int pm_env_is_ours(const char *e)
{
    return pm_startswith(e, PM_ENV_PREFIX);
}

const char *pm_preload_strip(const char *value, const char *preload)
{
    if (!preload || !*preload || !pm_startswith(value, preload))
        return 0;
    const char *p = value + pm_strlen(preload);
    if (*p != '\0' && *p != ':' && *p != ' ')
        return 0;
    while (*p == ':' || *p == ' ')
        p++;
    return p;
}

size_t pm_exec_argv_room(const struct pm_exec_in *in)
{
    return 8 + in->npre + pm_vlen(in->argv) + 1;
}

size_t pm_exec_envp_room(const struct pm_exec_in *in)
{
    return pm_vlen(in->envp) + PM_MAX_ENV + 8;
}

/* Length of the name of environment entry E (up to '='), or the whole length. */
static size_t env_name_len(const char *e)
{
    size_t n = 0;
    while (e[n] && e[n] != '=')
        n++;
    return n;
}

static int env_has_name(const char *const *envp, const char *entry)
{
    size_t nl = env_name_len(entry);
    for (size_t i = 0; envp && envp[i]; i++) {
        size_t j = 0;
        while (j < nl && envp[i][j] == entry[j])
            j++;
        if (j == nl && envp[i][nl] == '=')
            return 1;
    }
    return 0;
}

/* Put the concatenation of A, B, C (any may be NULL) into STR at *pos, NUL-terminated;
 * returns its start, or NULL when STR is full. */
static const char *cat3(char *str, size_t sz, size_t *pos, const char *a, const char *b,
                        const char *c)
{
    size_t start = *pos;
    const char *parts[3] = {a, b, c};
    for (int i = 0; i < 3; i++) {
        if (parts[i] && put(str, sz, pos, parts[i], pm_strlen(parts[i])) < 0)
            return 0;
    }
    if (*pos >= sz)
        return 0;
    str[*pos] = '\0';
    (*pos)++;
    return str + start;
}

int pm_build_exec(const struct pm_exec_in *in, const char **argv, size_t argv_cap,
                  const char **envp, size_t envp_cap, char *str, size_t strsz)
{
    const struct pm_table *t = in->t;
    size_t k = 0, e = 0, spos = 0;
    int compat = (t->flags & PM_CFG_COMPAT) != 0;
    int store = in->kind == PM_EXEC_STORE;
    int use_argv0 = store && (in->features & PM_LDSO_ARGV0) && !compat;
    int use_preload_opt = store && (in->features & PM_LDSO_PRELOAD) && !compat;
    const char *argv0 = in->argv0 ? in->argv0 : "";

    if (argv_cap < pm_exec_argv_room(in) || envp_cap < pm_exec_envp_room(in))
        return -E2BIG;
    if (store) {
        argv[k++] = in->path;
        if (use_argv0) {
            argv[k++] = "--argv0";
            argv[k++] = argv0;
        }
        argv[k++] = "--audit";
        argv[k++] = t->audit;
        if (use_preload_opt) {
            argv[k++] = "--preload";
            argv[k++] = t->preload;
        }
        argv[k++] = in->program;
    } else {
        argv[k++] = argv0;
    }
    for (size_t i = 0; i < in->npre; i++)
        argv[k++] = in->pre[i];
    size_t argc = pm_vlen(in->argv);
    for (size_t i = 1; i < argc; i++)
        argv[k++] = in->argv[i];
    argv[k] = 0;

    /* environment */
    const char *ldp_rest = 0; /* LD_PRELOAD without our library */
    int ldp_seen = 0;
    for (size_t i = 0; in->envp && in->envp[i]; i++) {
        const char *v = in->envp[i];
        if (pm_env_is_ours(v)) {
            /* Ours were removed from the program's environment at start: these are a
             * nested launch's own (nbsandbox run inside the sandbox), which a plain
             * host program -- that launch's loader -- must receive. */
            if (in->kind == PM_EXEC_HOST)
                envp[e++] = v;
            continue;
        }
        if (!ldp_seen && pm_startswith(v, "LD_PRELOAD=")) {
            ldp_seen = 1;
            const char *rest = pm_preload_strip(v + 11, t->preload);
            ldp_rest = rest ? rest : v + 11;
            continue;
        }
        if (!store) {
            int engine_value = 0;
            for (unsigned j = 0; j < t->nenv; j++) {
                if (pm_streq(v, t->env[j]))
                    engine_value = 1;
            }
            if (engine_value)
                continue;
        }
        envp[e++] = v;
    }
    int want_preload_env = in->kind == PM_EXEC_HOST_PRELOAD || (store && !use_preload_opt) ||
                           (in->kind == PM_EXEC_HOST && in->report_fd_var);
    if (want_preload_env) {
        const char *v;
        if (ldp_rest && *ldp_rest) {
            size_t start = spos;
            v = cat3(str, strsz, &spos, "LD_PRELOAD=", t->preload, ":");
            if (v) {
                spos--; /* continue over the NUL */
                v = cat3(str, strsz, &spos, ldp_rest, 0, 0) ? str + start : 0;
            }
        } else {
            v = cat3(str, strsz, &spos, "LD_PRELOAD=", t->preload, 0);
        }
        if (!v)
            return -E2BIG;
        envp[e++] = v;
    } else if (ldp_rest && *ldp_rest) {
        const char *v = cat3(str, strsz, &spos, "LD_PRELOAD=", ldp_rest, 0);
        if (!v)
            return -E2BIG;
        envp[e++] = v;
    }
    if (store || in->kind == PM_EXEC_HOST_PRELOAD)
        envp[e++] = in->config_var;
    if (store) {
        for (unsigned j = 0; j < t->nenv; j++) {
            if (!env_has_name(in->envp, t->env[j]))
                envp[e++] = t->env[j];
        }
        if (in->exe_var)
            envp[e++] = in->exe_var;
        if (!use_argv0) {
            const char *v = cat3(str, strsz, &spos, PM_ENV_ARGV0, argv0, 0);
            if (!v)
                return -E2BIG;
            envp[e++] = v;
        }
    }
    if (in->report_fd_var) {
        if (!env_has_name(in->envp, in->report_fd_var))
            envp[e++] = in->report_fd_var;
        if (in->report_skip_var && !env_has_name(in->envp, in->report_skip_var))
            envp[e++] = in->report_skip_var;
    }
    envp[e] = 0;
    return 0;
}
