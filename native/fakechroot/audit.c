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
 * The module links no libc: it is loaded into its own link-map namespace
 * before anything else, by whichever glibc the store has, and must not depend
 * on any of them.  It talks to the kernel with raw system calls.  Its
 * configuration is read from the process's initial environment
 * (/proc/self/environ) because ld.so gives audit modules no other channel;
 * the preload library removes the variable from `environ` afterwards.
 */
#include <errno.h>
#include <link.h>
#include <stdint.h>

#include "pathmap.h"
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

static void say(const char *msg)
{
    long r = nbs_write(2, msg, pm_strlen(msg));
    (void)r;
}

/* Find NBS_FC_CONFIG in the initial environment, streaming through
 * /proc/self/environ with a small buffer.  Returns its length or -1. */
static long read_config(void)
{
    static const char key[] = PM_ENV_CONFIG;
    const size_t keylen = sizeof key - 1;
    char buf[4096];
    size_t epos = 0, vlen = 0;
    int matching = 1, capturing = 0;
    long fd = nbs_openat(AT_FDCWD, "/proc/self/environ", O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    for (;;) {
        long n = nbs_read((int)fd, buf, sizeof buf);
        if (n == -EINTR)
            continue;
        if (n <= 0)
            break;
        for (long i = 0; i < n; i++) {
            char c = buf[i];
            if (c == '\0') {
                if (capturing) {
                    nbs_close((int)fd);
                    return (long)vlen;
                }
                epos = 0;
                matching = 1;
                continue;
            }
            if (capturing) {
                if (vlen >= sizeof config) {
                    nbs_close((int)fd);
                    return -1;
                }
                config[vlen++] = c;
                continue;
            }
            if (matching && epos < keylen) {
                if (c != key[epos])
                    matching = 0;
                epos++;
                if (matching && epos == keylen)
                    capturing = 1;
            }
        }
    }
    nbs_close((int)fd);
    return capturing ? (long)vlen : -1;
}

static long fs_readlink(void *ctx, const char *host, char *buf, size_t n)
{
    (void)ctx;
    return nbs_readlinkat(AT_FDCWD, host, buf, n);
}

__attribute__((visibility("default"))) unsigned int la_version(unsigned int version)
{
    (void)version;
    long len = read_config();
    if (len < 0)
        return 0; /* not launched by the engine: stay out of the way */
    if (pm_config_parse(&table, config, (size_t)len) < 0) {
        say("nbsandbox: fakechroot: invalid NBS_FC_CONFIG; libraries of the store will not be found\n");
        return 0;
    }
    active = 1;
    return 1; /* LAV_CURRENT of every glibc since 2.4 accepts version 1 */
}

__attribute__((visibility("default"))) char *la_objsearch(const char *name, uintptr_t *cookie, unsigned int flag)
{
    (void)cookie;
    (void)flag;
    if (!active || name[0] != '/')
        return (char *)name;
    char *out = results[next_result++ & 3];
    int r = pm_to_host(&table, name, out, PM_PATH_MAX, 0);
    if (r == PM_ASIS)
        return (char *)name;
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
    if (pm_resolve(&table, &fs, name, PM_FOLLOW, out, PM_PATH_MAX, 0, 0) < 0)
        return r == PM_MAPPED ? out : 0;
    return out;
}

__attribute__((visibility("default"))) unsigned int la_objopen(struct link_map *map, Lmid_t lmid, uintptr_t *cookie)
{
    (void)lmid;
    (void)cookie;
    if (!active || !map->l_name || map->l_name[0] != '/')
        return 0;
    /* Give the object its sandbox name, in place: the loader allocated
     * l_name for the host path, and the sandbox path is not longer. */
    char sbx[PM_PATH_MAX];
    if (pm_to_sandbox(&table, map->l_name, sbx, sizeof sbx) == 1 &&
        pm_strlen(sbx) <= pm_strlen(map->l_name))
        pm_copy(map->l_name, PM_PATH_MAX, sbx);
    return 0;
}
