/* nbs-audit: the ld.so audit module of nbsandbox's fakechroot engine.
 *
 * Loaded with `ld.so --audit nbs-audit.so`, it makes the dynamic loader find
 * the store's libraries under the store root: every file name the loader is
 * about to try (DT_NEEDED and dlopen() names with a slash, candidates built
 * from RUNPATH/RPATH, LD_LIBRARY_PATH, the ld.so cache and the default
 * directories, NSS and gconv modules that glibc dlopen()s) is translated when
 * it lies under a mapped sandbox directory.  Loaded objects then get their
 * sandbox names back (link_map.l_name, seen by dladdr() and
 * dl_iterate_phdr()).
 *
 * In a store program, the loader may look for a library only in the sandbox's
 * directories (the store, binds): candidates in the host's directories --
 * from the host's ld.so.cache, a host LD_LIBRARY_PATH or RUNPATH entry, an
 * absolute host name -- are refused, and the default directories compiled
 * into the store's loader become the directory of that loader and its C
 * library.  A library that the store lacks is then not found, and the loader
 * says so in one line, instead of quietly taking the host's copy.  Host
 * programs that get the preload library (shells) are left alone.
 *
 * The module links no libc: it is loaded into its own link-map namespace
 * before anything else, by whichever glibc the store has, and must not depend
 * on any of them.  It talks to the kernel with raw system calls.  Its
 * configuration is read from the process's initial environment
 * (/proc/self/environ) because ld.so gives audit modules no other channel;
 * the preload library removes the variable from `environ` afterwards.
 *
 * It is also the recorder of mechanism `audit` of the access report (issue
 * #12, record.h): with NBSANDBOX_REPORT_FD set it records every object the
 * loader opens and every absolute candidate it is asked about, outside the
 * NBSANDBOX_REPORT_SKIP prefixes.  Without the engine's configuration
 * (LD_AUDIT under the other engines) it then only records.
 */
#include <errno.h>
#include <link.h>
#include <stdint.h>

#include "pathmap.h"
#include "record.h"
#include "sys.h"

#define HIDDEN __attribute__((visibility("hidden")))

/* The compiler may emit calls to these; there is no libc to provide them. */
HIDDEN void *memcpy(void *dst, const void *src, size_t n)
{
    unsigned char *d = dst;
    const unsigned char *s = src;
    while (n--)
        *d++ = *s++;
    return dst;
}

HIDDEN void *memmove(void *dst, const void *src, size_t n)
{
    unsigned char *d = dst;
    const unsigned char *s = src;
    if (d < s) {
        while (n--)
            *d++ = *s++;
    } else {
        while (n--)
            d[n] = s[n];
    }
    return dst;
}

HIDDEN void *memset(void *dst, int c, size_t n)
{
    unsigned char *d = dst;
    while (n--)
        *d++ = (unsigned char)c;
    return dst;
}

HIDDEN int memcmp(const void *a, const void *b, size_t n)
{
    const unsigned char *x = a, *y = b;
    for (size_t i = 0; i < n; i++) {
        if (x[i] != y[i])
            return x[i] - y[i];
    }
    return 0;
}

static struct pm_table table;
static char config[PM_CONFIG_MAX];
static int active;
/* la_objsearch results; the loader calls it under its lock and copies what
 * it keeps before asking again, so a small ring is enough. */
static char results[4][PM_PATH_MAX];
static unsigned next_result;

/* ------------------------------------------------------------------------ */
/* keeping the host's libraries out of store programs */

/* 1 when this process is a store program, whose libraries must come from the
 * sandbox's directories. */
static int confined;
/* host path of the directory of the store's loader (and its C library), with
 * a trailing '/' */
static char loader_dir[PM_PATH_MAX];
static size_t loader_dir_len;
/* la_objopen cookie of objects the engine loads from the host on purpose
 * (the preload list): their own dependencies are not confined */
#define HOST_OBJECT ((uintptr_t)1)
/* la_objopen sets every cookie to the object's link_map, with HOST_OBJECT
 * or'ed in for those */
#define COOKIE_MAP(c) ((const struct link_map *)((c) & ~HOST_OBJECT))

/* A store program is started as `<store loader> PROGRAM`, so the process's
 * executable is a loader in a mapping marked as a store. */
static void confine_init(void)
{
    char exe[PM_PATH_MAX], sbx[PM_PATH_MAX];
    long n = nbs_readlinkat(AT_FDCWD, "/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return;
    exe[n] = '\0';
    if (pm_to_sandbox(&table, exe, sbx, sizeof sbx) != 1)
        return;
    const struct pm_map *m = pm_match(&table, sbx, 0);
    if (!m || !(m->flags & PM_STORE))
        return;
    const char *base = pm_basename(exe);
    loader_dir_len = (size_t)(base - exe);
    for (size_t i = 0; i < loader_dir_len; i++)
        loader_dir[i] = exe[i];
    loader_dir[loader_dir_len] = '\0';
    confined = 1;
}

/* Whether A and B name files in the same directory. */
static int same_dir(const char *a, const char *b)
{
    size_t la = (size_t)(pm_basename(a) - a), lb = (size_t)(pm_basename(b) - b);
    return la == lb && memcmp(a, b, la) == 0;
}

/* Whether PATH is one of the preload list's entries (':' or ' ' separated). */
static int in_preload_list(const char *path)
{
    const char *p = table.preload;
    size_t len = pm_strlen(path);
    while (p && *p) {
        size_t n = 0;
        while (p[n] && p[n] != ':' && p[n] != ' ')
            n++;
        if (n == len && memcmp(p, path, n) == 0)
            return 1;
        p += n;
        while (*p == ':' || *p == ' ')
            p++;
    }
    return 0;
}

/* The candidate to try instead of NAME, a host path that no mapping covers,
 * or 0 to skip it.  Only default directories have a stand-in: the loader's
 * own directory. */
static char *confine(const char *name, uintptr_t requester, unsigned int flag, char *out)
{
    if (!confined || (requester & HOST_OBJECT) || in_preload_list(name))
        return (char *)name;
    if (pm_to_sandbox(&table, name, out, PM_PATH_MAX) == 1)
        return (char *)name; /* the host side of a mapping: e.g. GCONV_PATH's modules */
    if (flag != LA_SER_DEFAULT)
        return 0;
    const char *base = pm_basename(name);
    size_t blen = pm_strlen(base);
    if (loader_dir_len + blen >= PM_PATH_MAX)
        return 0;
    for (size_t i = 0; i < loader_dir_len; i++)
        out[i] = loader_dir[i];
    for (size_t i = 0; i <= blen; i++)
        out[loader_dir_len + i] = base[i];
    return nbs_faccessat(AT_FDCWD, out, 0) == 0 ? out : 0;
}

/* ------------------------------------------------------------------------ */

/* ------------------------------------------------------------------------ */
/* searching a whole RUNPATH for a library missing from one of its store dirs */

/* When a library is not in one directory of a search path, ld.so stat()s
 * that directory, untranslated, to decide whether to try it ever again; a
 * store directory does not exist at its sandbox path on the host, so it is
 * dropped from every later search of that path, and libraries in it would
 * be found only in the host's directories.  So, on a miss in a store
 * directory, the module looks for the library in the rest of the
 * requester's search path itself and hands the loader the file it finds. */

static const char *dyn_str(const struct link_map *map, ElfW(Sxword) tag)
{
    const char *strtab = 0;
    ElfW(Addr) off = 0;
    int found = 0;
    for (const ElfW(Dyn) *d = map->l_ld; d && d->d_tag != DT_NULL; d++) {
        if (d->d_tag == DT_STRTAB)
            strtab = (const char *)(d->d_un.d_ptr < map->l_addr ? d->d_un.d_ptr + map->l_addr
                                                                : d->d_un.d_ptr);
        else if (d->d_tag == tag) {
            off = d->d_un.d_val;
            found = 1;
        }
    }
    return found && strtab ? strtab + off : 0;
}

/* The first DIR/BASE in the ':'-separated LIST (of the object MAP) that
 * exists in the sandbox's directories, as a host path in OUT. */
static int search_list(const struct link_map *map, const char *list, const char *base, char *out)
{
    char cand[PM_PATH_MAX];
    while (list && *list) {
        size_t n = 0;
        while (list[n] && list[n] != ':')
            n++;
        size_t pos = 0, skip = 0;
        if (n >= 7 && memcmp(list, "$ORIGIN", 7) == 0)
            skip = 7;
        else if (n >= 9 && memcmp(list, "${ORIGIN}", 9) == 0)
            skip = 9;
        if (skip) {
            const char *origin = map->l_name ? map->l_name : "";
            pos = (size_t)(pm_basename(origin) - origin);
            if (pos == 0 || pos >= sizeof cand)
                goto next;
            memcpy(cand, origin, pos - 1);
            pos--;
        }
        if (pos + (n - skip) + 1 + pm_strlen(base) + 1 > sizeof cand)
            goto next;
        memcpy(cand + pos, list + skip, n - skip);
        pos += n - skip;
        cand[pos++] = '/';
        pm_copy(cand + pos, sizeof cand - pos, base);
        for (size_t i = 0; cand[i]; i++) {
            if (cand[i] == '$')
                goto next; /* $LIB, $PLATFORM: not needed by stores we know */
        }
        if (cand[0] == '/' && pm_to_host(&table, cand, out, PM_PATH_MAX, 0) == PM_MAPPED &&
            nbs_faccessat(AT_FDCWD, out, 0) == 0)
            return 1;
    next:
        list += n;
        if (*list == ':')
            list++;
    }
    return 0;
}

/* A host path for BASE from the search path of REQUESTER: its RUNPATH, else
 * its RPATH and the program's, as the loader would search them. */
static int search_elsewhere(const struct link_map *req, const char *base, char *out)
{
    if (!req)
        return 0;
    const char *runpath = dyn_str(req, DT_RUNPATH);
    if (runpath)
        return search_list(req, runpath, base, out);
    if (search_list(req, dyn_str(req, DT_RPATH), base, out))
        return 1;
    const struct link_map *main = req;
    while (main->l_prev)
        main = main->l_prev;
    return main != req && !dyn_str(main, DT_RUNPATH) &&
           search_list(main, dyn_str(main, DT_RPATH), base, out);
}

/* ------------------------------------------------------------------------ */

static void say(const char *msg)
{
    long r = nbs_write(2, msg, pm_strlen(msg));
    (void)r;
}

/* A variable of the initial environment to capture: its value goes to BUF
 * (CAP bytes); LEN gets its length, -1 when absent or too long. */
struct env_want {
    const char *key; /* "NAME=" */
    char *buf;
    size_t cap;
    long len;
};

/* Find the variables of WANT in the initial environment, streaming through
 * /proc/self/environ with a small buffer. */
static void read_environment(struct env_want *want, unsigned nwant)
{
    char buf[4096];
    size_t epos = 0, vlen = 0;
    int capturing = -1;
    unsigned alive = (1u << nwant) - 1; /* keys still matching this entry */
    for (unsigned k = 0; k < nwant; k++)
        want[k].len = -1;
    long fd = nbs_openat(AT_FDCWD, "/proc/self/environ", O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0)
        return;
    for (;;) {
        long n = nbs_read((int)fd, buf, sizeof buf);
        if (n == -EINTR)
            continue;
        if (n <= 0)
            break;
        for (long i = 0; i < n; i++) {
            char c = buf[i];
            if (c == '\0') {
                if (capturing >= 0 && want[capturing].len == -2)
                    want[capturing].len = (long)vlen;
                capturing = -1;
                epos = 0;
                vlen = 0;
                alive = (1u << nwant) - 1;
                continue;
            }
            if (capturing >= 0) {
                struct env_want *w = &want[capturing];
                if (w->len != -2)
                    continue; /* a second definition, or too long */
                if (vlen >= w->cap) {
                    w->len = -3;
                    continue;
                }
                w->buf[vlen++] = c;
                continue;
            }
            for (unsigned k = 0; k < nwant && alive; k++) {
                if (!(alive & (1u << k)))
                    continue;
                if (want[k].key[epos] != c) {
                    alive &= ~(1u << k);
                } else if (want[k].key[epos + 1] == '\0') {
                    if (want[k].len == -1) {
                        want[k].len = -2; /* capturing */
                        capturing = (int)k;
                    }
                    alive = 0;
                }
            }
            epos++;
        }
    }
    nbs_close((int)fd);
    if (capturing >= 0 && want[capturing].len == -2)
        want[capturing].len = (long)vlen;
    for (unsigned k = 0; k < nwant; k++) {
        if (want[k].len < 0)
            want[k].len = -1;
    }
}

/* ------------------------------------------------------------------------ */
/* the access report */

static struct rec_conf rec = {.fd = -1, .mech = "audit"};

/* The program's name: from NBS_FC_EXE (EXE, N bytes; the engine starts
 * programs through ld.so), else the first word of /proc/self/cmdline. */
static void report_program(const char *exe, long n)
{
    if (n > 0) {
        rec_set_program(&rec, exe, (size_t)n);
        return;
    }
    char cmd[PM_PATH_MAX];
    long fd = nbs_openat(AT_FDCWD, "/proc/self/cmdline", O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0)
        return;
    long r = nbs_read((int)fd, cmd, sizeof cmd - 1);
    nbs_close((int)fd);
    if (r > 0) {
        cmd[r] = '\0';
        rec_set_program(&rec, cmd, pm_strlen(cmd));
    }
}

/* Record OP for absolute PATH unless it lies under a skip prefix. */
static void report(int result, const char *path)
{
    if (rec.fd < 0 || !path || path[0] != '/' || rec_quick_skip(&rec, path))
        return;
    char abs[PM_PATH_MAX];
    if (rec_normalise(abs, sizeof abs, 0, path) == 0)
        rec_emit(&rec, REC_DLOPEN, result, 0, abs, pm_strlen(abs));
}

static long fs_readlink(void *ctx, const char *host, char *buf, size_t n)
{
    (void)ctx;
    return nbs_readlinkat(AT_FDCWD, host, buf, n);
}

__attribute__((visibility("default"))) unsigned int la_version(unsigned int version)
{
    (void)version;
    static char fd_value[16], skip_value[REC_SKIP_MAX], exe_value[PM_PATH_MAX];
    struct env_want want[] = {
        {PM_ENV_CONFIG, config, sizeof config, -1},
        {REC_ENV_FD, fd_value, sizeof fd_value - 1, -1},
        {REC_ENV_SKIP, skip_value, sizeof skip_value, -1},
        {PM_ENV_EXE, exe_value, sizeof exe_value - 1, -1},
    };
    read_environment(want, sizeof want / sizeof *want);
    if (want[1].len > 0) {
        fd_value[want[1].len] = '\0';
        report_program(exe_value, want[3].len);
        rec_setup(&rec, "audit", fd_value, skip_value, want[2].len > 0 ? (size_t)want[2].len : 0);
    }
    long len = want[0].len;
    if (len < 0) /* not launched by the engine: stay out of the way, or only record */
        return rec.fd >= 0 ? 1 : 0;
    if (pm_config_parse(&table, config, (size_t)len) < 0) {
        say("nbsandbox: fakechroot: invalid NBS_FC_CONFIG; libraries of the store will not be found\n");
        return rec.fd >= 0 ? 1 : 0;
    }
    active = 1;
    confine_init();
    return 1; /* LAV_CURRENT of every glibc since 2.4 accepts version 1 */
}

/* The host file for a library the program asks for by exactly one of the
 * names in the configuration's "lib" lines (a GPU driver's user-space half,
 * which must match the host's kernel module), or NULL.  Only the name as the
 * program or a DT_NEEDED entry gives it (LA_SER_ORIG) is looked up: every
 * other library, and every other candidate path, still comes from the store. */
static char *driver_library(const char *name, unsigned int flag)
{
    if (flag != LA_SER_ORIG)
        return 0;
    for (unsigned i = 0; i < table.nlib; i++) {
        if (pm_streq(table.lib[i].name, name))
            return (char *)table.lib[i].host;
    }
    return 0;
}

__attribute__((visibility("default"))) char *la_objsearch(const char *name, uintptr_t *cookie, unsigned int flag)
{
    report(REC_UNKNOWN, name);
    if (!active)
        return (char *)name;
    char *driver = driver_library(name, flag);
    if (driver)
        return driver;
    if (name[0] != '/')
        return (char *)name;
    char *out = results[next_result++ & 3];
    int r = pm_to_host(&table, name, out, PM_PATH_MAX, 0);
    if (r == PM_ASIS)
        return confine(name, *cookie, flag, out);
    if (r < 0)
        return 0; /* cannot be represented: skip this candidate */
    if (r == PM_MAPPED) {
        long a = nbs_faccessat(AT_FDCWD, out, 0);
        if (a != -ENOENT && a != -ENOTDIR && a != -EACCES)
            return out;
    }
    /* ".." or a missing file: symbolic links in the store may point to
     * absolute store paths; follow them in the sandbox's view. */
    struct pm_fs fs = {0, fs_readlink};
    if (pm_resolve(&table, &fs, name, PM_FOLLOW, out, PM_PATH_MAX, 0, 0) < 0) {
        if (r != PM_MAPPED)
            return 0;
    } else if (nbs_faccessat(AT_FDCWD, out, 0) == 0) {
        return out;
    }
    if (flag == LA_SER_RUNPATH && search_elsewhere(COOKIE_MAP(*cookie), pm_basename(name), out))
        return out;
    return out;
}

__attribute__((visibility("default"))) unsigned int la_objopen(struct link_map *map, Lmid_t lmid, uintptr_t *cookie)
{
    (void)lmid;
    if (!active || !map->l_name || map->l_name[0] != '/') {
        if (map->l_name)
            report(0, map->l_name);
        return 0;
    }
    *cookie = (uintptr_t)map;
    if (in_preload_list(map->l_name) && !(table.audit && same_dir(map->l_name, table.audit)))
        *cookie |= HOST_OBJECT; /* e.g. a sanitizer runtime the tests preload */
    /* Give the object its sandbox name, in place: the loader allocated
     * l_name for the host path, and the sandbox path is not longer. */
    char sbx[PM_PATH_MAX];
    if (pm_to_sandbox(&table, map->l_name, sbx, sizeof sbx) == 1 &&
        pm_strlen(sbx) <= pm_strlen(map->l_name))
        pm_copy(map->l_name, PM_PATH_MAX, sbx);
    report(0, map->l_name);
    return 0;
}
