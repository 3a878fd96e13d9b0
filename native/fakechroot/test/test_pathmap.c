/* Standalone tests of pathmap.c, meant to run under AddressSanitizer and
 * UndefinedBehaviorSanitizer (tests/test_fakechroot_native.py builds and
 * runs it):
 *
 *   cc -fsanitize=address,undefined -I native/fakechroot \
 *      native/fakechroot/test/test_pathmap.c native/fakechroot/pathmap.c
 *
 * A fake file system stands in for readlink(2), so that resolution, exec
 * argument building and the parsers are checked without touching the disk.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pathmap.h"

static int failures, checks;

#define CHECK(cond)                                                                             \
    do {                                                                                        \
        checks++;                                                                               \
        if (!(cond)) {                                                                          \
            failures++;                                                                         \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);            \
        }                                                                                       \
    } while (0)

#define CHECK_STR(a, b)                                                                         \
    do {                                                                                        \
        checks++;                                                                               \
        if (strcmp((a), (b)) != 0) {                                                            \
            failures++;                                                                         \
            fprintf(stderr, "%s:%d: \"%s\" != \"%s\"\n", __FILE__, __LINE__, (a), (b));         \
        }                                                                                       \
    } while (0)

/* ---- a fake file system: host paths that are symlinks or exist ---- */

struct entry {
    const char *path;
    const char *link; /* NULL: exists, not a link */
};

static const struct entry *fs_entries;

static long fake_readlink(void *ctx, const char *host, char *buf, size_t n)
{
    (void)ctx;
    for (const struct entry *e = fs_entries; e && e->path; e++) {
        if (strcmp(e->path, host) != 0)
            continue;
        if (!e->link)
            return -EINVAL;
        size_t len = strlen(e->link);
        if (len > n)
            len = n;
        memcpy(buf, e->link, len);
        return (long)len;
    }
    /* directories implied by deeper entries exist */
    size_t hl = strlen(host);
    for (const struct entry *e = fs_entries; e && e->path; e++) {
        if (strncmp(e->path, host, hl) == 0 && e->path[hl] == '/')
            return -EINVAL;
    }
    if (strcmp(host, "/") == 0)
        return -EINVAL;
    return -ENOENT;
}

static const struct pm_fs FS = {0, fake_readlink};

static struct pm_table T;

static const char CONFIG[] =
    "nbs-fc 1\n"
    "map rsa /gnu/store /r/gnu/store\n"
    "map r /home/u /e/dir\n"
    "map - /home/u/work /home/u/work\n"
    "map - /data%20dir /srv/d%25x\n"
    "audit /lib/a.so\n"
    "preload /lib/p.so\n"
    "shell sh\n"
    "shell env\n"
    "env GCONV_PATH=/r/gnu/store/g/lib/gconv\n"
    "ldso 3 /r/gnu/store/g/lib/ld.so\n";

static void test_config(void)
{
    CHECK(pm_config_parse(&T, CONFIG, strlen(CONFIG)) == 0);
    CHECK(T.n == 4);
    CHECK_STR(T.map[3].from, "/data dir");
    CHECK_STR(T.map[3].to, "/srv/d%x");
    CHECK(T.map[0].flags == (PM_RO | PM_STORE | PM_ANCESTORS));
    CHECK(T.map[0].anc_len == 2);
    CHECK(T.nshell == 2 && T.nenv == 1 && T.nldso == 1);
    CHECK(T.ldso[0].features == (3 | PM_LDSO_KNOWN));

    struct pm_table t;
    static const char *bad[] = {
        "",
        "nbs-fc 2\naudit /a\npreload /p\n",
        "nbs-fc 1\npreload /p\n",                          /* no audit */
        "nbs-fc 1\naudit /a\npreload /p\nmap r / /x\n",    /* "/" */
        "nbs-fc 1\naudit /a\npreload /p\nmap r /a/ /x\n",  /* trailing slash */
        "nbs-fc 1\naudit /a\npreload /p\nmap r /a/../b /x\n",
        "nbs-fc 1\naudit /a\npreload /p\nmap r /a //x\n",
        "nbs-fc 1\naudit /a\npreload /p\nmap q /a /x\n",   /* flag */
        "nbs-fc 1\naudit /a\npreload /p\nmap a /a /x/b\n", /* ancestors: TO must end with FROM */
        "nbs-fc 1\naudit /a\npreload /p\nmap r /a%2 /x\n", /* truncated escape */
        "nbs-fc 1\naudit /a\npreload /p\nmap r /a%00 /x\n",
        "nbs-fc 1\naudit /a\npreload /p\nenv NOEQUALS\n",
        "nbs-fc 1\naudit /a\npreload /p\nenv NBS_FC_X=1\n",
        "nbs-fc 1\naudit /a\npreload /p\nbogus\n",
        "nbs-fc 1\naudit /a x\npreload /p\n",             /* trailing token */
        "nbs-fc 1\naudit relative\npreload /p\n",
        "nbs-fc 1\naudit /a\npreload /p\nldso 9 /x\n",
        NULL,
    };
    for (int i = 0; bad[i]; i++) {
        int r = pm_config_parse(&t, bad[i], strlen(bad[i]));
        if (r >= 0)
            fprintf(stderr, "accepted bad config %d\n", i);
        CHECK(r < 0);
    }
    /* too many mappings */
    static char many[8192];
    size_t pos = (size_t)snprintf(many, sizeof many, "nbs-fc 1\naudit /a\npreload /p\n");
    for (int i = 0; i <= PM_MAX_MAPS; i++)
        pos += (size_t)snprintf(many + pos, sizeof many - pos, "map - /m%d /h%d\n", i, i);
    CHECK(pm_config_parse(&t, many, pos) == -E2BIG);
    /* not NUL-terminated input: the length is honoured */
    char raw[64];
    memcpy(raw, "nbs-fc 1\naudit /a\npreload /p\nXXXX", 34);
    CHECK(pm_config_parse(&t, raw, 29) == 0);
    CHECK(pm_config_parse(&t, raw, 30) < 0);
}

static void test_translate(void)
{
    char out[PM_PATH_MAX];
    const struct pm_map *m;
    CHECK(pm_to_host(&T, "/usr/bin/env", out, sizeof out, &m) == PM_ASIS && !m);
    CHECK(pm_to_host(&T, "/gnu/storex", out, sizeof out, &m) == PM_ASIS);
    CHECK(pm_to_host(&T, "/gnu", out, sizeof out, &m) == PM_ASIS);
    CHECK(pm_to_host(&T, "/gnu/store", out, sizeof out, &m) == PM_MAPPED);
    CHECK_STR(out, "/r/gnu/store");
    CHECK(pm_to_host(&T, "/gnu/store/abc-x/bin/x", out, sizeof out, &m) == PM_MAPPED);
    CHECK_STR(out, "/r/gnu/store/abc-x/bin/x");
    CHECK(pm_to_host(&T, "//gnu/./store//abc", out, sizeof out, &m) == PM_MAPPED);
    CHECK_STR(out, "/r/gnu/store//abc");
    CHECK(pm_to_host(&T, "/gnu/store/a/../b", out, sizeof out, &m) == PM_RESOLVE);
    CHECK(pm_to_host(&T, "/gnu/store/a/..b/c", out, sizeof out, &m) == PM_MAPPED);
    CHECK(pm_to_host(&T, "/gnu/store/..", out, sizeof out, &m) == PM_RESOLVE);
    /* longest match wins */
    CHECK(pm_to_host(&T, "/home/u/work/f", out, sizeof out, &m) == PM_MAPPED);
    CHECK_STR(out, "/home/u/work/f");
    CHECK(pm_to_host(&T, "/home/u//work/f", out, sizeof out, &m) == PM_MAPPED);
    CHECK_STR(out, "/home/u/work/f"); /* the nested mapping, however spelled */
    CHECK(T.map[1].nested && !T.map[2].nested && !T.map[0].nested);
    CHECK(pm_to_host(&T, "/home/u/other", out, sizeof out, &m) == PM_MAPPED);
    CHECK_STR(out, "/e/dir/other");
    CHECK(m && (m->flags & PM_RO));
    CHECK(pm_to_host(&T, "/data dir/f", out, sizeof out, &m) == PM_MAPPED);
    CHECK_STR(out, "/srv/d%x/f");
    /* relative paths are never mapped here */
    CHECK(pm_to_host(&T, "gnu/store/x", out, sizeof out, &m) == PM_ASIS);
    /* too long */
    char small[16];
    CHECK(pm_to_host(&T, "/gnu/store/abcdefghijk", small, sizeof small, &m) == -ENAMETOOLONG);

    CHECK(pm_to_sandbox(&T, "/r/gnu/store/abc/x", out, sizeof out) == 1);
    CHECK_STR(out, "/gnu/store/abc/x");
    CHECK(pm_to_sandbox(&T, "/r/gnu/store", out, sizeof out) == 1);
    CHECK_STR(out, "/gnu/store");
    CHECK(pm_to_sandbox(&T, "/r/gnu", out, sizeof out) == 1); /* an ancestor from the root */
    CHECK_STR(out, "/gnu");
    CHECK(pm_to_sandbox(&T, "/r", out, sizeof out) == 0);
    CHECK(pm_to_sandbox(&T, "/r/other", out, sizeof out) == 0);
    CHECK(pm_to_sandbox(&T, "/r/gnu/storex", out, sizeof out) == 0);
    CHECK(pm_to_sandbox(&T, "/srv/d%x/f", out, sizeof out) == 1);
    CHECK_STR(out, "/data dir/f");
    CHECK(pm_to_sandbox(&T, "/etc", out, sizeof out) == 0);

    CHECK(pm_has_dotdot(".."));
    CHECK(pm_has_dotdot("a/../b"));
    CHECK(pm_has_dotdot("/a/.."));
    CHECK(!pm_has_dotdot("/a/..b/c"));
    CHECK(!pm_has_dotdot("/a/b../c"));
    CHECK(!pm_has_dotdot("..."));

    CHECK(pm_ancestor_of(&T, "/gnu", 4) != NULL);
    CHECK(pm_ancestor_of(&T, "/gn", 3) == NULL);
    CHECK(pm_ancestor_of(&T, "/gnu/store", 10) == NULL);

    CHECK(pm_join(out, sizeof out, "/", "a") == 0);
    CHECK_STR(out, "/a");
    CHECK(pm_join(out, sizeof out, "/x/", "a") == 0);
    CHECK_STR(out, "/x/a");
    CHECK(pm_join(small, sizeof small, "/xxxxxxxxxx", "yyyyyy") == -ENAMETOOLONG);
    CHECK_STR(pm_basename("/a/b/c"), "c");
    CHECK_STR(pm_basename("/a/b/"), "b/");
    CHECK_STR(pm_basename("sh"), "sh");
}

static const struct entry STORE_FS[] = {
    {"/r/gnu/store/p-profile/bin/python3", "/gnu/store/p-python/bin/python3.11"},
    {"/r/gnu/store/p-python/bin/python3.11", NULL},
    {"/r/gnu/store/p-profile/lib", "../p-python/lib"},
    {"/r/gnu/store/p-python/lib/libx.so", NULL},
    {"/r/gnu/store/p-loop/a", "/gnu/store/p-loop/b"},
    {"/r/gnu/store/p-loop/b", "a"},
    {"/r/gnu/store/p-out/etc", "/etc"},
    {"/r/gnu/store/p-host", "/r/gnu/store/p-python"},
    {"/r/gnu/store/p-empty", ""},
    {"/etc/hostname", NULL},
    {"/proc/self", "4242"},
    {"/proc/4242/exe", "/r/gnu/store/g/lib/ld.so"},
    {"/r/gnu/store/g/lib/ld.so", NULL},
    {"/home/u/work/f", NULL},
    {NULL, NULL},
};

/* pm_to_rel: the same mapping as pm_to_host, and the rest of the path
 * relative to its TO */
static void test_relative(void)
{
    const struct pm_map *m;
    const char *rel = NULL;
    char out[PM_PATH_MAX];
    CHECK(pm_to_rel(&T, "/usr/bin/env", &m, &rel) == PM_ASIS && !m);
    CHECK(pm_to_rel(&T, "/gnu/storex", &m, &rel) == PM_ASIS && !m);
    CHECK(pm_to_rel(&T, "/gnu/store/abc-x/bin/x", &m, &rel) == PM_MAPPED);
    CHECK(m == &T.map[0]);
    CHECK_STR(rel, "abc-x/bin/x");
    CHECK(pm_to_rel(&T, "/gnu/store", &m, &rel) == PM_MAPPED);
    CHECK_STR(rel, "");
    CHECK(pm_to_rel(&T, "/gnu/store///", &m, &rel) == PM_MAPPED);
    CHECK_STR(rel, "");
    CHECK(pm_to_rel(&T, "//gnu/./store//abc/", &m, &rel) == PM_MAPPED);
    CHECK_STR(rel, "abc/");
    CHECK(pm_to_rel(&T, "/gnu/store/./abc", &m, &rel) == PM_MAPPED);
    CHECK_STR(rel, "./abc");
    CHECK(pm_to_rel(&T, "/gnu/store/a/../b", &m, &rel) == PM_RESOLVE);
    CHECK(pm_to_rel(&T, "/gnu/store/..", &m, &rel) == PM_RESOLVE);
    CHECK(pm_to_rel(&T, "/gnu/store/a/..b/c", &m, &rel) == PM_MAPPED);
    CHECK_STR(rel, "a/..b/c");
    /* the nested mapping, however spelled */
    CHECK(pm_to_rel(&T, "/home/u//work/f", &m, &rel) == PM_MAPPED);
    CHECK(m == &T.map[2]);
    CHECK_STR(rel, "f");
    CHECK(pm_to_rel(&T, "/home/u/other", &m, &rel) == PM_MAPPED);
    CHECK(m && (m->flags & PM_RO));
    CHECK_STR(rel, "other");
    CHECK(pm_to_rel(&T, "gnu/store/x", &m, &rel) == PM_ASIS);
    /* TO joined with REL names what pm_to_host gives, for every spelling */
    static const char *const paths[] = {
        "/gnu/store/abc-x/bin/x", "//gnu/./store//abc", "/home/u/work/f", "/home/u//work//f",
        "/home/u/other", "/data dir/f", "/gnu/store/", "/gnu/store", NULL,
    };
    for (int i = 0; paths[i]; i++) {
        const struct pm_map *h;
        CHECK(pm_to_host(&T, paths[i], out, sizeof out, &h) == PM_MAPPED);
        CHECK(pm_to_rel(&T, paths[i], &m, &rel) == PM_MAPPED && m == h);
        const char *tail = out + m->to_len;
        while (*tail == '/')
            tail++;
        CHECK(strncmp(out, m->to, m->to_len) == 0);
        CHECK_STR(tail, rel);
    }
}

static void test_resolve(void)
{
    char host[PM_PATH_MAX], sbx[PM_PATH_MAX];
    fs_entries = STORE_FS;
    /* absolute symlink inside the store resolves inside it */
    CHECK(pm_resolve(&T, &FS, "/gnu/store/p-profile/bin/python3", PM_FOLLOW, host, sizeof host,
                     sbx, sizeof sbx) == 0);
    CHECK_STR(host, "/r/gnu/store/p-python/bin/python3.11");
    CHECK_STR(sbx, "/gnu/store/p-python/bin/python3.11");
    /* not following the last component */
    CHECK(pm_resolve(&T, &FS, "/gnu/store/p-profile/bin/python3", 0, host, sizeof host, sbx,
                     sizeof sbx) == 0);
    CHECK_STR(sbx, "/gnu/store/p-profile/bin/python3");
    /* ... unless there is a trailing slash */
    CHECK(pm_resolve(&T, &FS, "/gnu/store/p-profile/lib/", 0, host, sizeof host, sbx,
                     sizeof sbx) == 0);
    CHECK_STR(host, "/r/gnu/store/p-python/lib/");
    /* relative link, then ".." applied after links */
    CHECK(pm_resolve(&T, &FS, "/gnu/store/p-profile/lib/../bin/python3.11", PM_FOLLOW, host,
                     sizeof host, sbx, sizeof sbx) == 0);
    CHECK_STR(sbx, "/gnu/store/p-python/bin/python3.11");
    /* ".." out of the store reaches the host */
    CHECK(pm_resolve(&T, &FS, "/gnu/store/p-python/../../../etc/hostname", PM_FOLLOW, host,
                     sizeof host, sbx, sizeof sbx) == 0);
    CHECK_STR(host, "/etc/hostname");
    /* a link from the store to the host */
    CHECK(pm_resolve(&T, &FS, "/gnu/store/p-out/etc/hostname", PM_FOLLOW, host, sizeof host,
                     sbx, sizeof sbx) == 0);
    CHECK_STR(host, "/etc/hostname");
    /* a link whose text is a host path into the root: same file, sandbox name */
    CHECK(pm_resolve(&T, &FS, "/gnu/store/p-host/bin/python3.11", PM_FOLLOW, host, sizeof host,
                     sbx, sizeof sbx) == 0);
    CHECK_STR(sbx, "/gnu/store/p-python/bin/python3.11");
    /* loops */
    CHECK(pm_resolve(&T, &FS, "/gnu/store/p-loop/a", PM_FOLLOW, host, sizeof host, sbx,
                     sizeof sbx) == -ELOOP);
    /* an empty link */
    CHECK(pm_resolve(&T, &FS, "/gnu/store/p-empty/x", PM_FOLLOW, host, sizeof host, sbx,
                     sizeof sbx) == -ENOENT);
    /* a missing directory is an error, a missing last component is not */
    CHECK(pm_resolve(&T, &FS, "/gnu/store/missing/x", PM_FOLLOW, host, sizeof host, sbx,
                     sizeof sbx) == -ENOENT);
    CHECK(pm_resolve(&T, &FS, "/gnu/store/p-python/new", PM_FOLLOW, host, sizeof host, sbx,
                     sizeof sbx) == 0);
    CHECK_STR(host, "/r/gnu/store/p-python/new");
    /* an ancestor of the prefix missing on the host comes from the root */
    CHECK(pm_resolve(&T, &FS, "/gnu", PM_FOLLOW, host, sizeof host, sbx, sizeof sbx) == 0);
    CHECK_STR(host, "/r/gnu");
    CHECK(pm_resolve(&T, &FS, "/gnu/../etc/hostname", PM_FOLLOW, host, sizeof host, sbx,
                     sizeof sbx) == 0);
    CHECK_STR(host, "/etc/hostname");
    /* /proc/self/exe as the fake kernel says (the preload library special-cases it) */
    CHECK(pm_resolve(&T, &FS, "/proc/self/exe", PM_FOLLOW, host, sizeof host, sbx,
                     sizeof sbx) == 0);
    CHECK_STR(sbx, "/gnu/store/g/lib/ld.so");
    CHECK(pm_resolve(&T, &FS, "/", PM_FOLLOW, host, sizeof host, sbx, sizeof sbx) == 0);
    CHECK_STR(host, "/");
    CHECK(pm_resolve(&T, &FS, "relative", PM_FOLLOW, host, sizeof host, sbx, sizeof sbx) ==
          -EINVAL);
    /* longer than PATH_MAX */
    char *longp = malloc(PM_PATH_MAX + 10);
    memset(longp, 'a', PM_PATH_MAX + 9);
    longp[0] = '/';
    longp[PM_PATH_MAX + 9] = '\0';
    CHECK(pm_resolve(&T, &FS, longp, PM_FOLLOW, host, sizeof host, sbx, sizeof sbx) ==
          -ENAMETOOLONG);
    free(longp);
    /* output buffers that are too small */
    char tiny[8];
    CHECK(pm_resolve(&T, &FS, "/gnu/store/p-python/lib/libx.so", PM_FOLLOW, tiny, sizeof tiny,
                     NULL, 0) == -ENAMETOOLONG);
}

static void test_shebang(void)
{
    char interp[PM_SHEBANG_MAX], arg[PM_SHEBANG_MAX];
    int has_arg;
#define SB(text) pm_shebang(text, sizeof(text) - 1, interp, sizeof interp, arg, sizeof arg, &has_arg)
    CHECK(SB("\x7f" "ELF") == 0);
    CHECK(SB("#") == 0);
    CHECK(SB("#!/bin/sh\n") == 1 && !has_arg);
    CHECK_STR(interp, "/bin/sh");
    CHECK(SB("#! \t/bin/sh  -e  -x \t\nrest") == 1 && has_arg);
    CHECK_STR(interp, "/bin/sh");
    CHECK_STR(arg, "-e  -x");
    CHECK(SB("#!/usr/bin/env python3") == 1 && has_arg); /* no newline, short file */
    CHECK_STR(arg, "python3");
    CHECK(SB("#!\n") == -ENOEXEC);
    CHECK(SB("#!   \n") == -ENOEXEC);
    /* an empty interpreter name: what Linux answers (checked on 6.x) */
    CHECK(SB("#!") == -EACCES);
    CHECK(SB("#!  \0/bin/sh\n") == -EACCES);
    CHECK(SB("#!/bin/sh\0-x\n") == 1 && !has_arg); /* a NUL ends the line's strings */
    CHECK_STR(interp, "/bin/sh");
    /* a line longer than the kernel's buffer */
    char buf[400];
    memset(buf, 'a', sizeof buf);
    memcpy(buf, "#!/bin/sh ", 10);
    CHECK(pm_shebang(buf, sizeof buf, interp, sizeof interp, arg, sizeof arg, &has_arg) == 1);
    CHECK(has_arg && strlen(arg) == PM_SHEBANG_MAX - 1 - 10);
    memset(buf, 'a', sizeof buf);
    memcpy(buf, "#!/", 3); /* the interpreter itself is cut: ENOEXEC, as Linux */
    CHECK(pm_shebang(buf, sizeof buf, interp, sizeof interp, arg, sizeof arg, &has_arg) ==
          -ENOEXEC);
    char small[4];
    CHECK(pm_shebang("#!/bin/sh\n", 10, small, sizeof small, arg, sizeof arg, &has_arg) ==
          -ENAMETOOLONG);
#undef SB
}

static void put64(unsigned char *p, unsigned long v, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void test_elf(void)
{
    unsigned char h[512];
    unsigned long off, len;
    memset(h, 0, sizeof h);
    memcpy(h, "\x7f" "ELF", 4);
    h[4] = 2;
    h[5] = 1;
    put64(h + 16, 3, 2);  /* ET_DYN */
    put64(h + 32, 64, 8); /* e_phoff */
    put64(h + 54, 56, 2); /* e_phentsize */
    put64(h + 56, 2, 2);  /* e_phnum */
    put64(h + 64, 6, 4);  /* PT_PHDR */
    put64(h + 120, 3, 4); /* PT_INTERP */
    put64(h + 120 + 8, 400, 8);
    put64(h + 120 + 32, 28, 8);
    CHECK(pm_elf_interp(h, sizeof h, &off, &len) == 1 && off == 400 && len == 28);
    put64(h + 120, 1, 4);
    CHECK(pm_elf_interp(h, sizeof h, &off, &len) == 0);
    CHECK(pm_elf_interp(h, 100, &off, &len) == -E2BIG);
    put64(h + 32, ~0ul, 8); /* overflowing e_phoff */
    CHECK(pm_elf_interp(h, sizeof h, &off, &len) == -E2BIG);
    put64(h + 32, 64, 8);
    put64(h + 56, 0x7fff, 2); /* e_phnum * e_phentsize beyond the buffer */
    CHECK(pm_elf_interp(h, sizeof h, &off, &len) == -E2BIG);
    h[4] = 1; /* 32-bit */
    CHECK(pm_elf_interp(h, sizeof h, &off, &len) == -ENOEXEC);
    CHECK(pm_elf_interp((const unsigned char *)"#!/bin/sh", 9, &off, &len) == -ENOEXEC);

    CHECK(pm_ldso_scan("x --argv0 y --preload", 21) == (PM_LDSO_ARGV0 | PM_LDSO_PRELOAD));
    CHECK(pm_ldso_scan("--argv", 6) == 0);
}

static int has(const char **v, const char *s)
{
    for (; *v; v++) {
        if (strcmp(*v, s) == 0)
            return 1;
    }
    return 0;
}

static int has_prefix(const char **v, const char *s)
{
    for (; *v; v++) {
        if (strncmp(*v, s, strlen(s)) == 0)
            return 1;
    }
    return 0;
}

static void test_exec(void)
{
    const char *argv[] = {"prog", "a1", "a2", NULL};
    const char *envp[] = {"PATH=/bin", "NBS_FC_CONFIG=old", "LD_PRELOAD=/lib/p.so:/x.so",
                          "GCONV_PATH=/r/gnu/store/g/lib/gconv", "HOME=/h", NULL};
    const char *pre[] = {"-e", "/gnu/store/s/script"};
    const char *outv[32], *oute[32];
    char str[PM_PATH_MAX];
    struct pm_exec_in in = {
        .t = &T,
        .kind = PM_EXEC_STORE,
        .path = "/r/gnu/store/g/lib/ld.so",
        .program = "/r/gnu/store/sh/bin/sh",
        .argv0 = "/gnu/store/sh/bin/sh",
        .features = PM_LDSO_ARGV0 | PM_LDSO_PRELOAD,
        .pre = pre,
        .npre = 2,
        .argv = argv,
        .envp = envp,
        .config_var = "NBS_FC_CONFIG=new",
        .exe_var = "NBS_FC_EXE=/gnu/store/sh/bin/sh",
    };
    CHECK(pm_build_exec(&in, outv, 32, oute, 32, str, sizeof str) == 0);
    const char *want[] = {"/r/gnu/store/g/lib/ld.so", "--argv0", "/gnu/store/sh/bin/sh",
                          "--audit", "/lib/a.so", "--preload", "/lib/p.so",
                          "/r/gnu/store/sh/bin/sh", "-e", "/gnu/store/s/script", "a1", "a2",
                          NULL};
    for (int i = 0; want[i] || outv[i]; i++) {
        CHECK(want[i] && outv[i]);
        if (!want[i] || !outv[i])
            break;
        CHECK_STR(outv[i], want[i]);
    }
    CHECK(has(oute, "NBS_FC_CONFIG=new") && !has(oute, "NBS_FC_CONFIG=old"));
    CHECK(has(oute, "NBS_FC_EXE=/gnu/store/sh/bin/sh"));
    CHECK(has(oute, "LD_PRELOAD=/x.so")); /* ours removed, the user's kept */
    CHECK(has(oute, "GCONV_PATH=/r/gnu/store/g/lib/gconv"));
    CHECK(!has_prefix(oute, "NBS_FC_ARGV0="));

    /* an old ld.so: argv[0] and the preload travel in the environment */
    in.features = 0;
    CHECK(pm_build_exec(&in, outv, 32, oute, 32, str, sizeof str) == 0);
    CHECK_STR(outv[1], "--audit");
    CHECK(!has(outv, "--argv0") && !has(outv, "--preload"));
    CHECK(has(oute, "LD_PRELOAD=/lib/p.so:/x.so"));
    CHECK(has(oute, "NBS_FC_ARGV0=/gnu/store/sh/bin/sh"));

    /* a host program: none of the engine's variables, not even the engine's GCONV_PATH;
     * NBS_FC_* that the program set itself (a nested launch's loader) pass as they are */
    in.kind = PM_EXEC_HOST;
    in.path = "/usr/bin/env";
    in.argv0 = "env";
    in.npre = 0;
    CHECK(pm_build_exec(&in, outv, 32, oute, 32, str, sizeof str) == 0);
    CHECK_STR(outv[0], "env");
    CHECK_STR(outv[1], "a1");
    CHECK(has(oute, "NBS_FC_CONFIG=old") && !has(oute, "NBS_FC_CONFIG=new"));
    CHECK(!has_prefix(oute, "NBS_FC_EXE=") && !has_prefix(oute, "GCONV_PATH="));
    CHECK(has(oute, "LD_PRELOAD=/x.so") && has(oute, "HOME=/h") && has(oute, "PATH=/bin"));

    /* a host shell: the preload and the configuration, nothing else */
    in.kind = PM_EXEC_HOST_PRELOAD;
    CHECK(pm_build_exec(&in, outv, 32, oute, 32, str, sizeof str) == 0);
    CHECK(has(oute, "LD_PRELOAD=/lib/p.so:/x.so") && has(oute, "NBS_FC_CONFIG=new"));
    CHECK(!has_prefix(oute, "NBS_FC_EXE=") && !has_prefix(oute, "GCONV_PATH="));

    /* no room */
    CHECK(pm_build_exec(&in, outv, 4, oute, 32, str, sizeof str) == -E2BIG);
    CHECK(pm_build_exec(&in, outv, 32, oute, 32, str, 8) == -E2BIG);
    /* NULL argv and envp (Linux accepts them) */
    in.argv = NULL;
    in.envp = NULL;
    in.argv0 = NULL;
    CHECK(pm_build_exec(&in, outv, 32, oute, 32, str, sizeof str) == 0);
    CHECK_STR(outv[0], "");
    CHECK(outv[1] == NULL);

    CHECK(pm_preload_strip("/lib/p.so", "/lib/p.so") != NULL);
    CHECK(pm_preload_strip("/lib/p.so2", "/lib/p.so") == NULL);
    CHECK_STR(pm_preload_strip("/lib/p.so /y", "/lib/p.so"), "/y");
}

int main(void)
{
    test_config();
    test_translate();
    test_relative();
    test_resolve();
    test_shebang();
    test_elf();
    test_exec();
    printf("%d checks, %d failures\n", checks, failures);
    return failures != 0;
}
