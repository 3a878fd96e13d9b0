/* Checks of record.c, the recorders' pure core (tests/test_report_native.py
 * builds this with AddressSanitizer and UndefinedBehaviorSanitizer).
 * Prints "N checks, M failures". */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "pathmap.h"
#include "record.h"

static int checks, failures;

#define CHECK(cond)                                                                             \
    do {                                                                                        \
        checks++;                                                                               \
        if (!(cond)) {                                                                          \
            failures++;                                                                         \
            fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, #cond);                          \
        }                                                                                       \
    } while (0)

static const char *norm(const char *base, const char *path)
{
    static char out[PM_PATH_MAX];
    if (rec_normalise(out, sizeof out, base, path) < 0)
        return "ERR";
    return out;
}

static void test_normalise(void)
{
    CHECK(!strcmp(norm(NULL, "/"), "/"));
    CHECK(!strcmp(norm(NULL, "//a//b/"), "/a/b"));
    CHECK(!strcmp(norm(NULL, "/a/./b/../c"), "/a/c"));
    CHECK(!strcmp(norm(NULL, "/../.."), "/"));
    CHECK(!strcmp(norm(NULL, "/a/.."), "/"));
    CHECK(!strcmp(norm(NULL, "/a/..b/.c"), "/a/..b/.c"));
    CHECK(!strcmp(norm("/x/y", "z"), "/x/y/z"));
    CHECK(!strcmp(norm("/x/y", "../z"), "/x/z"));
    CHECK(!strcmp(norm("/x/y", "./"), "/x/y"));
    CHECK(!strcmp(norm("/", "a"), "/a"));
    CHECK(!strcmp(norm("/ignored", "/abs"), "/abs"));
    char big[PM_PATH_MAX + 10];
    memset(big, 'a', sizeof big);
    big[0] = '/';
    big[sizeof big - 1] = '\0';
    CHECK(!strcmp(norm(NULL, big), "ERR"));
    char small[4];
    CHECK(rec_normalise(small, sizeof small, NULL, "/abcd") < 0);
    CHECK(rec_normalise(small, sizeof small, NULL, "/ab") == 0 && !strcmp(small, "/ab"));
}

static void test_skip(void)
{
    static struct rec_conf c;
    int fd = open("/dev/null", O_WRONLY | O_APPEND);
    char fdv[16];
    snprintf(fdv, sizeof fdv, "%d", fd);
    const char *skip = "/gnu/store:relative::/opt/x//y/:/srv/";
    CHECK(rec_setup(&c, "preload", fdv, skip, strlen(skip)) == fd);
    CHECK(c.nskip == 3);
    CHECK(!strcmp(c.skip[0], "/gnu/store") && c.skip_len[0] == 10);
    CHECK(!strcmp(c.skip[1], "/opt/x/y"));
    CHECK(!strcmp(c.skip[2], "/srv"));
    CHECK(rec_quick_skip(&c, "/gnu/store"));
    CHECK(rec_quick_skip(&c, "/gnu/store/abc-x/lib/libc.so.6"));
    CHECK(rec_quick_skip(&c, "/gnu/store//abc/./x"));
    CHECK(!rec_quick_skip(&c, "/gnu/storex"));
    CHECK(!rec_quick_skip(&c, "/gnu/store/abc/../../../etc/passwd"));
    CHECK(!rec_quick_skip(&c, "/gnu/store/.."));
    CHECK(rec_quick_skip(&c, "/gnu/store/a/..b"));
    CHECK(!rec_quick_skip(&c, "relative"));
    CHECK(!rec_quick_skip(&c, "/gnu//store/x")); /* the slow path normalises it */
    CHECK(rec_skipped(&c, norm(NULL, "/gnu//store/x")));
    CHECK(rec_skipped(&c, "/opt/x/y/z"));
    CHECK(!rec_skipped(&c, "/opt/x/yz"));
    CHECK(!rec_skipped(&c, "/etc/passwd"));
    /* "/" covers every path */
    CHECK(rec_setup(&c, "audit", fdv, "/", 1) == fd);
    CHECK(c.nskip == 1 && rec_skipped(&c, "/etc") && rec_quick_skip(&c, "/x"));
    /* a length that ends inside the list: only whole entries up to it */
    CHECK(rec_setup(&c, "audit", fdv, "/a:/bcd", 5) == fd);
    CHECK(c.nskip == 2 && !strcmp(c.skip[1], "/b"));
    close(fd);
}

static void test_fd(void)
{
    static struct rec_conf c;
    int p[2];
    CHECK(pipe(p) == 0);
    char v[16];
    snprintf(v, sizeof v, "%d", p[1]);
    CHECK(rec_setup(&c, "preload", v, NULL, 0) == -1); /* no O_APPEND */
    CHECK(fcntl(p[1], F_SETFL, O_APPEND) == 0);
    CHECK(rec_setup(&c, "preload", v, NULL, 0) == p[1]);
    snprintf(v, sizeof v, "%d", p[0]);
    CHECK(rec_setup(&c, "preload", v, NULL, 0) == -1); /* read-only */
    CHECK(rec_setup(&c, "preload", "9999", NULL, 0) == -1);
    CHECK(rec_setup(&c, "preload", "3x", NULL, 0) == -1);
    CHECK(rec_setup(&c, "preload", "", NULL, 0) == -1);
    CHECK(rec_setup(&c, "preload", "99999999999999", NULL, 0) == -1);
    CHECK(rec_setup(&c, "preload", NULL, NULL, 0) == -1);
    /* an event goes down the pipe as one line */
    snprintf(v, sizeof v, "%d", p[1]);
    CHECK(rec_setup(&c, "preload", v, "/skip", 5) == p[1]);
    rec_set_program(&c, "/usr/bin/my\tprog", 16);
    rec_emit(&c, REC_OPEN, 0, NULL, "/skip/x", 7);
    rec_emit(&c, REC_STAT, 2, NULL, "/etc/x", 6);
    rec_emit(&c, REC_CONNECT, 111, "tcp:", "127.0.0.1:80", 12);
    char buf[512];
    ssize_t n = read(p[0], buf, sizeof buf - 1);
    CHECK(n > 0);
    buf[n > 0 ? n : 0] = '\0';
    char want[256];
    snprintf(want, sizeof want,
             "preload\tstat\t2\t%d\tmy\\tprog\t/etc/x\npreload\tconnect\t111\t%d\tmy\\tprog\t"
             "tcp:127.0.0.1:80\n", (int)getpid(), (int)getpid());
    CHECK(!strcmp(buf, want));
    close(p[0]);
    close(p[1]);
}

static void test_format(void)
{
    static struct rec_conf c = {.fd = -1, .mech = "audit"};
    char line[REC_LINE_MAX];
    rec_set_program(&c, "python3", 7);
    size_t n = rec_format(&c, line, REC_DLOPEN, REC_UNKNOWN, 42, NULL, "/a\\b\nc", 6);
    CHECK(n == strlen("audit\tdlopen\t-\t42\tpython3\t/a\\\\b\\nc\n"));
    CHECK(!memcmp(line, "audit\tdlopen\t-\t42\tpython3\t/a\\\\b\\nc\n", n));
    rec_set_program(&c, "", 0);
    CHECK(!strcmp(c.program, "?"));
    rec_set_program(&c, "/x/y/", 5);
    CHECK(!strcmp(c.program, "y"));
    /* a path that does not fit is cut, never inside an escape, and ends in "\..." */
    char path[3000];
    for (size_t len = 2050; len < 2150; len += 7) {
        memset(path, '\t', len);
        path[0] = '/';
        n = rec_format(&c, line, REC_STAT, 0, 1, NULL, path, len);
        CHECK(n <= REC_LINE_MAX);
        CHECK(n >= 5 && !memcmp(line + n - 5, "\\...\n", 5));
        size_t tabs = 0;
        for (size_t i = 0; i + 1 < n; i++) {
            if (line[i] == '\\' && line[i + 1] == 't')
                tabs++;
        }
        CHECK(tabs * 2 + 5 + strlen("audit\tstat\t0\t1\ty\t/") == n);
    }
    memset(path, 'a', sizeof path);
    n = rec_format(&c, line, REC_STAT, 0, 1, NULL, path, sizeof path);
    CHECK(n < REC_LINE_MAX);
    /* an unknown operation, a large pid and errno */
    n = rec_format(&c, line, 99, 1234567, 4194304, "unix:", "@name", 5);
    CHECK(!memcmp(line, "audit\t?\t1234567\t4194304\ty\tunix:@name\n", n));
}

int main(void)
{
    test_normalise();
    test_skip();
    test_fd();
    test_format();
    printf("%d checks, %d failures\n", checks, failures);
    return failures != 0;
}
