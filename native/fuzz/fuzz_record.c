/* libFuzzer target for native/fakechroot/record.c (the access recorders' core).
 *
 * Build and run with native/fuzz/run.py.  One input is three sections
 * separated by NUL bytes: a skip list (NBSANDBOX_REPORT_SKIP), a base
 * directory, a path.  Besides the sanitizers' checks, invariants are
 * asserted: a normalised path is clean and absolute and normalising it
 * again changes nothing; the fast skip check never skips a path that the
 * full check records; a line has at most 4096 bytes, five field
 * separators and one newline, at its end.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "pathmap.h"
#include "record.h"

#define ASSERT(c)                                                                               \
    do {                                                                                        \
        if (!(c))                                                                               \
            __builtin_trap();                                                                   \
    } while (0)

static int clean(const char *p)
{
    if (p[0] != '/')
        return 0;
    if (p[1] == '\0')
        return 1;
    for (const char *s = p; *s; s++) {
        if (*s != '/')
            continue;
        const char *c = s + 1;
        if (*c == '/' || *c == '\0')
            return 0; /* "//" or a trailing '/' */
        if (c[0] == '.' && (c[1] == '/' || c[1] == '\0'))
            return 0;
        if (c[0] == '.' && c[1] == '.' && (c[2] == '/' || c[2] == '\0'))
            return 0;
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct rec_conf conf;
    static int fd = -2;
    static char fdv[16];
    if (fd == -2) {
        fd = open("/dev/null", O_WRONLY | O_APPEND);
        snprintf(fdv, sizeof fdv, "%d", fd);
    }
    char buf[3 * PM_PATH_MAX];
    if (size >= sizeof buf)
        return 0;
    memcpy(buf, data, size);
    buf[size] = '\0';
    const char *skip = buf, *base = "", *path = "";
    size_t skip_len = strlen(skip);
    if (skip_len < size) {
        base = skip + skip_len + 1;
        size_t bl = strlen(base);
        if ((size_t)(base - buf) + bl < size)
            path = base + bl + 1;
    }
    ASSERT(rec_setup(&conf, "preload", fdv, skip, skip_len) == fd);
    for (unsigned i = 0; i < conf.nskip; i++)
        ASSERT(conf.skip_len[i] == 0 || clean(conf.skip[i]));

    char out[PM_PATH_MAX], again[PM_PATH_MAX];
    const char *b = base[0] == '/' ? base : "/";
    int r = rec_normalise(out, sizeof out, b, path);
    if (r == 0) {
        ASSERT(clean(out));
        ASSERT(rec_normalise(again, sizeof again, NULL, out) == 0 && !strcmp(out, again));
        if (path[0] == '/' && rec_quick_skip(&conf, path))
            ASSERT(rec_skipped(&conf, out));
    }

    char line[REC_LINE_MAX];
    rec_set_program(&conf, base, strlen(base));
    size_t n = rec_format(&conf, line, REC_OPEN, 2, 12345, NULL, path, strlen(path));
    ASSERT(n > 0 && n <= REC_LINE_MAX && line[n - 1] == '\n');
    int tabs = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        ASSERT(line[i] != '\n');
        tabs += line[i] == '\t';
    }
    ASSERT(tabs == 5);
    return 0;
}
