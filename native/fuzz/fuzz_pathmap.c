/* libFuzzer target for native/fakechroot/pathmap.c.
 *
 * Build and run with native/fuzz/run.py (clang -fsanitize=fuzzer,address,undefined).
 *
 * One input is four sections separated by NUL bytes:
 *   1. configuration text (NBS_FC_CONFIG); a fixed table is used when it
 *      does not parse, so that the translation code always runs;
 *   2. a path, translated both ways and resolved;
 *   3. a fake file system: lines "HOST\tLINK" (a symlink) or "HOST" (exists);
 *   4. file bytes, given to the "#!" and ELF parsers.
 * Besides the sanitizers' checks, invariants of the results are asserted.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pathmap.h"

#define ASSERT(c)                                                                               \
    do {                                                                                        \
        if (!(c))                                                                               \
            __builtin_trap();                                                                   \
    } while (0)

static const char FALLBACK[] = "nbs-fc 1\n"
                               "map rsa /gnu/store /root/gnu/store\n"
                               "map r /home/u /tmp/e\n"
                               "map - /home/u/w /srv/w\n"
                               "audit /a.so\n"
                               "preload /p.so\n"
                               "env GCONV_PATH=/g\n";

#define MAX_ENTRIES 64
struct fake_fs {
    int n;
    const char *host[MAX_ENTRIES];
    size_t hlen[MAX_ENTRIES];
    const char *link[MAX_ENTRIES]; /* NULL: not a link */
    size_t llen[MAX_ENTRIES];
    unsigned calls;
};

static long fake_readlink(void *ctx, const char *host, char *buf, size_t n)
{
    struct fake_fs *fs = ctx;
    size_t hl = strlen(host);
    ASSERT(host[0] == '/' && hl < PM_PATH_MAX);
    fs->calls++;
    for (int i = 0; i < fs->n; i++) {
        if (fs->hlen[i] == hl && memcmp(fs->host[i], host, hl) == 0) {
            if (!fs->link[i])
                return -EINVAL;
            size_t len = fs->llen[i] < n ? fs->llen[i] : n;
            memcpy(buf, fs->link[i], len);
            return (long)len;
        }
    }
    for (int i = 0; i < fs->n; i++) {
        if (fs->hlen[i] > hl && memcmp(fs->host[i], host, hl) == 0 && fs->host[i][hl] == '/')
            return -EINVAL;
    }
    return hl == 1 ? -EINVAL : -ENOENT;
}

/* Copy section [p, p+n) to a fresh NUL-terminated heap buffer (exact size,
 * so that ASan sees any overread). */
static char *dup_section(const uint8_t *p, size_t n)
{
    char *s = malloc(n + 1);
    if (!s)
        abort();
    memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

static int clean_sandbox(const char *s)
{
    if (s[0] != '/')
        return 0;
    if (s[1] == '\0')
        return 1;
    for (size_t i = 0; s[i]; i++) {
        if (s[i] != '/')
            continue;
        const char *c = s + i + 1;
        size_t l = strcspn(c, "/");
        if (l == 0 || (l == 1 && c[0] == '.') || (l == 2 && c[0] == '.' && c[1] == '.'))
            return 0;
    }
    return 1;
}

static void check_exec(const struct pm_table *t, const char *path, char *fs_text)
{
    /* argv and envp from the words of the fake file system section */
    const char *words[16];
    size_t nw = 0;
    for (char *w = strtok(fs_text, "\n\t "); w && nw < 15; w = strtok(NULL, "\n\t "))
        words[nw++] = w;
    words[nw] = NULL;
    const char *env[16];
    size_t ne = 0;
    for (size_t i = 0; i < nw; i++) {
        if (strchr(words[i], '='))
            env[ne++] = words[i];
    }
    env[ne] = NULL;
    const char *pre[2] = {path, "-x"};
    for (int kind = PM_EXEC_HOST; kind <= PM_EXEC_STORE; kind++) {
        struct pm_exec_in in = {
            .t = t,
            .kind = kind,
            .path = "/ld.so",
            .program = path,
            .argv0 = nw ? words[0] : NULL,
            .features = (unsigned)strlen(path) & 3,
            .pre = pre,
            .npre = strlen(path) % 3,
            .argv = words,
            .envp = env,
            .config_var = "NBS_FC_CONFIG=x",
            .exe_var = kind == PM_EXEC_STORE ? "NBS_FC_EXE=/x" : NULL,
        };
        size_t na = pm_exec_argv_room(&in), nenv = pm_exec_envp_room(&in);
        const char **av = malloc(na * sizeof *av), **ev = malloc(nenv * sizeof *ev);
        char *str = malloc(256);
        if (!av || !ev || !str)
            abort();
        if (pm_build_exec(&in, av, na, ev, nenv, str, 256) == 0) {
            size_t k = 0;
            while (av[k])
                k++;
            ASSERT(k < na);
            /* [argv0] or [ld.so, --argv0 A?, --audit A, --preload P?, program], then
             * the "#!" arguments and argv[1...] */
            size_t expect = (nw > 1 ? nw - 1 : 0) + in.npre + 1;
            if (kind == PM_EXEC_STORE) {
                int compat = (t->flags & PM_CFG_COMPAT) != 0;
                expect += 3 + (!compat && (in.features & PM_LDSO_ARGV0) ? 2 : 0) +
                          (!compat && (in.features & PM_LDSO_PRELOAD) ? 2 : 0);
            }
            ASSERT(k == expect);
            ASSERT(strcmp(av[0], kind == PM_EXEC_STORE ? "/ld.so" : (nw ? words[0] : "")) == 0);
            /* a host program gets no variable of the engine's own, only those the
             * caller put in its environment (a nested launch's), unchanged */
            size_t j = 0, configs = 0, given = 0;
            for (size_t i = 0; i < ne; i++)
                given += strncmp(env[i], "NBS_FC_CONFIG=", 14) == 0;
            for (; ev[j]; j++) {
                if (strncmp(ev[j], "NBS_FC_CONFIG=", 14) == 0)
                    configs++;
                if (kind == PM_EXEC_HOST && strncmp(ev[j], "NBS_FC_", 7) == 0) {
                    int from_caller = 0;
                    for (size_t i = 0; i < ne; i++)
                        from_caller |= ev[j] == env[i];
                    ASSERT(from_caller);
                }
            }
            ASSERT(j < nenv);
            ASSERT(configs == (kind == PM_EXEC_HOST ? given : 1u));
        }
        free(av);
        free(ev);
        free(str);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct pm_table table;
    const uint8_t *sec[4];
    size_t len[4];
    size_t pos = 0;
    for (int i = 0; i < 4; i++) {
        const uint8_t *end = pos < size ? memchr(data + pos, 0, size - pos) : NULL;
        size_t n = end ? (size_t)(end - (data + pos)) : (pos < size ? size - pos : 0);
        sec[i] = data + (pos < size ? pos : size);
        len[i] = n;
        pos += n + (end ? 1 : 0);
        if (!end && i < 3) {
            for (int j = i + 1; j < 4; j++) {
                sec[j] = data + size;
                len[j] = 0;
            }
            break;
        }
    }

    /* 1. configuration */
    char *cfg = dup_section(sec[0], len[0]);
    if (pm_config_parse(&table, cfg, len[0]) < 0)
        ASSERT(pm_config_parse(&table, FALLBACK, sizeof FALLBACK - 1) == 0);
    ASSERT(table.n <= PM_MAX_MAPS && table.used <= PM_ARENA && table.audit && table.preload);
    free(cfg);

    /* 2. the path, and 3. the file system */
    char *path = dup_section(sec[1], len[1]);
    char *fs_text = dup_section(sec[2], len[2]);
    struct fake_fs fs = {0};
    for (char *line = fs_text; line && *line && fs.n < MAX_ENTRIES;) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        char *tab = strchr(line, '\t');
        fs.host[fs.n] = line;
        fs.hlen[fs.n] = tab ? (size_t)(tab - line) : strlen(line);
        fs.link[fs.n] = tab ? tab + 1 : NULL;
        fs.llen[fs.n] = tab ? strlen(tab + 1) : 0;
        fs.n++;
        line = nl ? nl + 1 : NULL;
    }
    struct pm_fs ops = {&fs, fake_readlink};

    char *host = malloc(PM_PATH_MAX), *sbx = malloc(PM_PATH_MAX), *back = malloc(PM_PATH_MAX);
    if (!host || !sbx || !back)
        abort();
    const struct pm_map *m = NULL;
    int r = pm_to_host(&table, path, host, PM_PATH_MAX, &m);
    ASSERT(r == PM_ASIS || r == PM_MAPPED || r == PM_RESOLVE || r == -ENAMETOOLONG);
    ASSERT((r == PM_ASIS) == (m == NULL) || r < 0);
    if (r == PM_MAPPED) {
        ASSERT(host[0] == '/' && strlen(host) < PM_PATH_MAX);
        ASSERT(!pm_has_dotdot(path) || path[0] != '/');
        /* one mapping: the way back gives the path again (when it is clean) */
        if (table.n == 1 && clean_sandbox(path) && pm_to_sandbox(&table, host, back, PM_PATH_MAX) == 1)
            ASSERT(strcmp(back, path) == 0);
    }
    if (r == PM_RESOLVE)
        ASSERT(pm_has_dotdot(path));
    /* the fast spelling check picks what the component-wise match picks */
    if (r >= 0) {
        const char *rest = NULL;
        ASSERT(pm_match(&table, path, &rest) == m);
        if (r == PM_MAPPED || r == PM_RESOLVE) {
            ASSERT(strcmp(host + m->to_len, rest) == 0);
            ASSERT(strncmp(host, m->to, m->to_len) == 0);
        }
    }
    /* the relative form: the same mapping, and the same rest as the host
     * path after TO (without leading slashes) */
    const struct pm_map *rm = NULL;
    const char *rel = NULL;
    int rr = pm_to_rel(&table, path, &rm, &rel);
    ASSERT(rr == PM_ASIS || rr == PM_MAPPED || rr == PM_RESOLVE);
    ASSERT((rr == PM_ASIS) == (rm == NULL));
    if (r >= 0) {
        ASSERT(rr == r && rm == m);
        if (r == PM_MAPPED) {
            const char *tail = host + m->to_len;
            while (*tail == '/')
                tail++;
            ASSERT(rel && rel[0] != '/' && strcmp(tail, rel) == 0);
        }
    } else {
        ASSERT(rr != PM_ASIS); /* only a mapped path can be too long */
    }
    r = pm_to_sandbox(&table, path, back, PM_PATH_MAX);
    ASSERT(r == 0 || r == 1 || r == -ENAMETOOLONG);
    if (r == 1)
        ASSERT(back[0] == '/' && strlen(back) < PM_PATH_MAX);
    (void)pm_ancestor_of(&table, path, strlen(path));

    for (unsigned flags = 0; flags <= PM_FOLLOW; flags++) {
        fs.calls = 0;
        r = pm_resolve(&table, &ops, path, flags, host, PM_PATH_MAX, sbx, PM_PATH_MAX);
        if (r == 0) {
            ASSERT(host[0] == '/' && strlen(host) < PM_PATH_MAX);
            ASSERT(clean_sandbox(sbx));
        } else {
            ASSERT(r == -EINVAL || r == -ENOENT || r == -ENOTDIR || r == -ELOOP ||
                   r == -ENAMETOOLONG || r == -EACCES);
            if (r == -EINVAL)
                ASSERT(path[0] != '/');
        }
        /* bounded work: each component or link costs one readlink */
        ASSERT(fs.calls <= (PM_MAX_SYMLINKS + 2) * PM_PATH_MAX);
    }
    /* small output buffers never overflow */
    char small[24];
    (void)pm_resolve(&table, &ops, path, PM_FOLLOW, small, sizeof small, small, sizeof small);
    (void)pm_to_host(&table, path, small, sizeof small, NULL);
    (void)pm_to_sandbox(&table, path, small, sizeof small);
    (void)pm_join(small, sizeof small, "/some/dir", path);

    check_exec(&table, path, fs_text);
    free(host);
    free(sbx);
    free(back);

    /* 4. file bytes */
    char interp[PM_SHEBANG_MAX], arg[PM_SHEBANG_MAX];
    int has_arg = 0;
    r = pm_shebang((const char *)sec[3], len[3], interp, sizeof interp, arg, sizeof arg, &has_arg);
    ASSERT(r == 0 || r == 1 || r == -ENOEXEC || r == -EACCES || r == -ENAMETOOLONG);
    if (r == 1) {
        ASSERT(interp[0] && !strpbrk(interp, " \t\n"));
        if (has_arg)
            ASSERT(arg[0] && arg[0] != ' ' && arg[0] != '\t' && !strchr(arg, '\n'));
    }
    unsigned long off = 0, elen = 0;
    r = pm_elf_interp(sec[3], len[3], &off, &elen);
    ASSERT(r == 0 || r == 1 || r == -ENOEXEC || r == -E2BIG);
    (void)pm_ldso_scan((const char *)sec[3], len[3]);
    free(path);
    free(fs_text);
    return 0;
}
