/* Pack wrappers: choose an engine and start a pack's program through it.
 *
 * The engines, their order in the meta-engines and their diagnoses are
 * those of nbsandbox's Python package (nbsandbox/engines/); the userns and
 * proot engines run the very code of `nbs-launch userns` and `nbs-launch
 * supervise`.  What a wrapper probes, per engine:
 *
 *   host        every item of the store is at the prefix on this host
 *   userns      in a child: unshare, uid/gid maps, a mount (as a launch does)
 *   fakechroot  the pack's loader, audit module and preload library are
 *               there, the program is dynamically linked, paths suit ld.so
 *   proot       a PRoot binary is on PATH (or NBSANDBOX_PROOT)
 *
 * Nothing is cached: every start probes again (a probe result can go stale
 * when a host's policy changes).
 */
#include "wrap.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define ENGINE_VAR "NBSANDBOX_ENGINE"
#define VERBOSE_VAR "NBSANDBOX_VERBOSE"
#define DEFAULT_PATH "/usr/local/bin:/usr/bin:/bin"

/* As nbsandbox.engines.userns.MOUNT_DENIED_HINT. */
static const char mount_denied_hint[] =
    "the host lets user namespaces be created but forbids mounts in them, e.g. by a seccomp "
    "filter or an AppArmor/SELinux policy; use the fakechroot or proot engine: "
    "--engine performance or auto picks one";

enum engine { E_HOST, E_USERNS, E_FAKECHROOT, E_BWRAP, E_PROOT, E_NONE };
static const char *const engine_names[] = {"host", "userns", "fakechroot", "bwrap", "proot"};

struct meta {
    const char *name;
    enum engine chain[5];
};
/* nbsandbox.engines.META; auto: every engine by rank. */
static const struct meta metas[] = {
    {"default", {E_USERNS, E_PROOT, E_NONE, E_NONE, E_NONE}},
    {"performance", {E_USERNS, E_FAKECHROOT, E_NONE, E_NONE, E_NONE}},
    {"auto", {E_HOST, E_USERNS, E_FAKECHROOT, E_BWRAP, E_PROOT}},
};

struct ctx {
    struct wrap_conf conf;
    const struct wrap_program *prog;
    char name[256];
    char profile_path[PATH_MAX]; /* <profile>/bin/NAME, the path the program runs by */
    char self[PATH_MAX];         /* <root>/.nbsandbox/nbs-launch */
    char reason[2048];           /* why the last probe failed */
    bool verbose;
    bool store_visible;          /* the store is at its prefix already */
};

void xsetenv(const char *name, const char *value)
{
    if (setenv(name, value, 1) != 0)
        die_err(errno, NULL, "setting %s", name);
}

static void say(const struct ctx *c, const char *fmt, const char *a, const char *b)
{
    if (!c->verbose)
        return;
    char line[1536];
    int n = snprintf(line, sizeof line, "%s: ", nbs_progname);
    if (n < 0 || (size_t)n >= sizeof line)
        return;
    snprintf(line + n, sizeof line - (size_t)n, fmt, a, b);
    size_t len = strnlen(line, sizeof line - 2);
    line[len++] = '\n';
    (void)write_all(STDERR_FILENO, line, len);
}

/* -- probes ------------------------------------------------------------------------ */

static bool probe_host(struct ctx *c)
{
    struct stat a, b;
    if (stat(c->conf.prefix, &a) == 0 && stat(c->conf.store, &b) == 0 && a.st_dev == b.st_dev &&
        a.st_ino == b.st_ino)
        return true;
    DIR *d = opendir(c->conf.store);
    bool all = d != NULL, any = false;
    for (struct dirent *e; d && (e = readdir(d));) {
        if (e->d_name[0] == '.')
            continue;
        char p[PATH_MAX];
        if (snprintf(p, sizeof p, "%s/%s", c->conf.prefix, e->d_name) >= (int)sizeof p ||
            lstat(p, &a) != 0) {
            all = false;
            break;
        }
        any = true;
    }
    if (d)
        closedir(d);
    if (all && any)
        return true;
    snprintf(c->reason, sizeof c->reason,
             "the store is not present at %s on this host; use another engine (auto picks one "
             "that works here)", c->conf.prefix);
    return false;
}

/* Do in a child what a launch does first: the namespaces, the maps, a mount. */
static bool probe_userns(struct ctx *c)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0)
        die_err(errno, NULL, "pipe");
    pid_t pid = fork();
    if (pid < 0)
        die_err(errno, NULL, "fork");
    if (pid == 0) {
        if (dup2(fds[1], STDERR_FILENO) < 0)
            _exit(EXIT_SETUP_FAILED);
        enter_user_namespace();
        if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
            die_err(errno, NULL, "making the mounts private");
        _exit(0);
    }
    close(fds[1]);
    char buf[1024];
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fds[0], buf + n, sizeof buf - 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t)r;
        if (n == sizeof buf - 1)
            break;
    }
    close(fds[0]);
    buf[n] = '\0';
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            die_err(errno, NULL, "waitpid");
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return true;
    /* The last line, as the Python probe takes it. */
    while (n > 0 && buf[n - 1] == '\n')
        buf[--n] = '\0';
    char *last = strrchr(buf, '\n');
    last = last ? last + 1 : buf;
    size_t plen = strlen(nbs_progname);
    if (!strncmp(last, nbs_progname, plen) && !strncmp(last + plen, ": ", 2))
        last += plen + 2;
    if (!*last)
        snprintf(buf, sizeof buf, "nbs-launch exited with %d", WEXITSTATUS(status)), last = buf;
    bool denied = (strstr(last, "Operation not permitted") || strstr(last, "Permission denied")) &&
                  (strstr(last, "mount") || strstr(last, "pivot_root"));
    if (denied && !strchr(last, '('))
        snprintf(c->reason, sizeof c->reason, "%.700s (%s)", last, mount_denied_hint);
    else if (!strstr(last, "use another engine") && strstr(last, "unshare"))
        snprintf(c->reason, sizeof c->reason,
                 "%.700s; use the fakechroot or proot engine (--engine performance or auto picks "
                 "one), or ask the administrator to allow user namespaces", last);
    else
        snprintf(c->reason, sizeof c->reason, "%.1000s", last);
    return false;
}

static bool find_proot(char out[PATH_MAX], char *reason, size_t size)
{
    const char *set = getenv("NBSANDBOX_PROOT");
    if (set && *set) {
        struct stat st;
        if (stat(set, &st) == 0 && S_ISREG(st.st_mode) && access(set, X_OK) == 0) {
            path_fmt(out, "%s", set);
            return true;
        }
        snprintf(reason, size, "NBSANDBOX_PROOT=%s is not an executable file; point it at a "
                 "PRoot binary, or unset it to use proot from PATH", set);
        return false;
    }
    const char *path = getenv("PATH");
    for (const char *p = path ? path : ""; *p;) {
        const char *colon = strchrnul(p, ':');
        if (colon > p && *p == '/' &&
            snprintf(out, PATH_MAX, "%.*s/proot", (int)(colon - p), p) < PATH_MAX) {
            struct stat st;
            if (stat(out, &st) == 0 && S_ISREG(st.st_mode) && access(out, X_OK) == 0)
                return true;
        }
        p = *colon ? colon + 1 : colon;
    }
    snprintf(reason, size, "proot is not installed; install it (apt-get install proot) or put "
             "a static PRoot binary on PATH (or set NBSANDBOX_PROOT)");
    return false;
}

static bool probe(struct ctx *c, enum engine e)
{
    c->reason[0] = '\0';
    char tmp[PATH_MAX];
    switch (e) {
    case E_HOST:
        return probe_host(c);
    case E_USERNS:
        /* As UsernsEngine.command: a store already at its prefix (e.g. inside
         * another sandbox) needs no namespace at all. */
        if (probe_host(c))
            return c->store_visible = true;
        return probe_userns(c);
    case E_FAKECHROOT: {
        const char *why = wrap_fakechroot_refuses(&c->conf, c->prog, c->reason, sizeof c->reason);
        if (why && why != c->reason)
            snprintf(c->reason, sizeof c->reason, "%s", why);
        return why == NULL;
    }
    case E_PROOT:
        return find_proot(tmp, c->reason, sizeof c->reason);
    case E_BWRAP:
        snprintf(c->reason, sizeof c->reason,
                 "a pack's wrappers do not use bubblewrap; use userns (the same view), or "
                 "nbsandbox run --engine bwrap");
        return false;
    case E_NONE:
        break;
    }
    return false;
}

/* -- starting the program ----------------------------------------------------------- */

static int exec_host(struct ctx *c, int argc, char **argv)
{
    char **args = xcalloc((size_t)argc + 1, sizeof *args);
    args[0] = c->profile_path;
    for (int i = 1; i < argc; i++)
        args[i] = argv[i];
    return exec_program(c->profile_path, args);
}

static int exec_userns(struct ctx *c, int argc, char **argv)
{
    char store[2 * PATH_MAX + 2];
    snprintf(store, sizeof store, "%s:%s", c->conf.store, c->conf.prefix);
    char **args = xcalloc((size_t)argc + 8, sizeof *args);
    int n = 0;
    args[n++] = "userns";
    args[n++] = "--store";
    args[n++] = store;
    args[n++] = "--argv0";
    args[n++] = c->profile_path;
    args[n++] = "--";
    args[n++] = c->profile_path;
    for (int i = 1; i < argc; i++)
        args[n++] = argv[i];
    return cmd_userns(n, args);
}

static int exec_proot(struct ctx *c, int argc, char **argv)
{
    char proot[PATH_MAX];
    if (!find_proot(proot, c->reason, sizeof c->reason))
        die("%s", c->reason);
    const char *tmp = getenv("TMPDIR");
    if (!tmp || tmp[0] != '/')
        tmp = "/tmp";
    unsigned char rnd[6];
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd)
        die_err(errno, NULL, "getrandom");
    char scratch[PATH_MAX], ptmp[PATH_MAX + 32], store[2 * PATH_MAX + 2], cwd[PATH_MAX];
    path_fmt(scratch, "%s/nbsandbox-%lu-%02x%02x%02x%02x%02x%02x", tmp, (unsigned long)getuid(),
             rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5]);
    snprintf(ptmp, sizeof ptmp, "%s/tmp", scratch);
    snprintf(store, sizeof store, "%s:%s", c->conf.store, c->conf.prefix);
    if (!getcwd(cwd, sizeof cwd))
        strcpy(cwd, "/");
    xsetenv("PROOT_TMP_DIR", ptmp);
    char **args = xcalloc((size_t)argc + 24, sizeof *args);
    int n = 0;
    args[n++] = "supervise";
    args[n++] = "--tmpdir";
    args[n++] = scratch;
    /* As ProotEngine.command: what PRoot leaves in /tmp when killed. */
    args[n++] = "--leftovers";
    args[n++] = "/tmp/prooted-";
    args[n++] = "--leftovers";
    args[n++] = "/tmp/proot-";
    args[n++] = "--";
    args[n++] = proot;
    args[n++] = "-b";
    args[n++] = store;
    args[n++] = "-w";
    args[n++] = cwd;
    args[n++] = c->self;
    args[n++] = "report";
    args[n++] = "--fd";
    args[n++] = STATUS_FD_PLACEHOLDER;
    args[n++] = "--argv0";
    args[n++] = c->profile_path;
    args[n++] = "--unsetenv";
    args[n++] = "PROOT_TMP_DIR";
    args[n++] = "--deny-untranslated";
    args[n++] = "--";
    args[n++] = c->profile_path;
    for (int i = 1; i < argc; i++)
        args[n++] = argv[i];
    return cmd_supervise(n, args);
}

static int start(struct ctx *c, enum engine e, int argc, char **argv)
{
    switch (e) {
    case E_HOST:
        return exec_host(c, argc, argv);
    case E_USERNS:
        return c->store_visible ? exec_host(c, argc, argv) : exec_userns(c, argc, argv);
    case E_FAKECHROOT:
        return wrap_exec_fakechroot(&c->conf, c->prog, c->profile_path, argc, argv);
    case E_PROOT:
        return exec_proot(c, argc, argv);
    default:
        die("internal error: engine %d", (int)e);
    }
}

/* -- choosing ------------------------------------------------------------------------ */

static _Noreturn void unknown_engine(const char *name)
{
    /* As nbsandbox.engines.get_engine says it. */
    fprintf(stderr, "%s: unknown engine '%s'; valid engines: default, performance, auto, "
            "host, userns, fakechroot, bwrap, proot; set " ENGINE_VAR " to one of them\n", nbs_progname,
            name);
    exit(EXIT_SETUP_FAILED);
}

static int choose_and_start(struct ctx *c, int argc, char **argv)
{
    const char *requested = getenv(ENGINE_VAR);
    if (!requested || !*requested)
        requested = "default";
    for (size_t m = 0; m < sizeof metas / sizeof *metas; m++) {
        if (strcmp(requested, metas[m].name))
            continue;
        struct sbuf skipped = {0}, names = {0};
        for (size_t k = 0; k < 5 && metas[m].chain[k] != E_NONE; k++) {
            enum engine e = metas[m].chain[k];
            sbuf_addf(&names, "%s%s", k ? ", " : "", engine_names[e]);
            if (probe(c, e)) {
                say(c, "engine: %s (requested: %s)", engine_names[e], requested);
                return start(c, e, argc, argv);
            }
            say(c, "  skipped %s: %s", engine_names[e], c->reason);
            sbuf_addf(&skipped, "%s%s: %s", skipped.len ? "; " : "", engine_names[e], c->reason);
        }
        fprintf(stderr, "%s: no engine of '%s' (%s) works here: %s; set " ENGINE_VAR
                "=auto to try every engine\n", nbs_progname, requested, names.data, skipped.data);
        return EXIT_CANNOT_EXEC;
    }
    for (size_t e = 0; e < sizeof engine_names / sizeof *engine_names; e++) {
        if (strcmp(requested, engine_names[e]))
            continue;
        if (!probe(c, (enum engine)e)) {
            fprintf(stderr, "%s: engine %s cannot be used: %s\n", nbs_progname, requested,
                    c->reason);
            return EXIT_CANNOT_EXEC;
        }
        say(c, "engine: %s (requested: %s)", requested, requested);
        return start(c, (enum engine)e, argc, argv);
    }
    unknown_engine(requested);
}

/* The environment every engine gives the program: the profile's bin/ first
 * on PATH (as nbsandbox.launch.make_plan), and the root for the magics. */
static void program_env(struct ctx *c)
{
    char bin[PATH_MAX];
    path_fmt(bin, "%s/bin", c->conf.profile);
    const char *old = getenv("PATH");
    size_t n = strlen(bin);
    if (!old || strncmp(old, bin, n) || (old[n] && old[n] != ':')) {
        struct sbuf p = {0};
        sbuf_addf(&p, "%s:%s", bin, old && *old ? old : DEFAULT_PATH);
        xsetenv("PATH", p.data);
    }
    xsetenv("NBSANDBOX_ROOT", c->conf.root);
}

bool wrap_invoked(const char *exe)
{
    const char *base = strrchr(exe, '/');
    base = base ? base + 1 : exe;
    return strcmp(base, "nbs-launch") != 0 && strncmp(base, "nbs-launch.", 11) != 0;
}

int cmd_wrap(const char *exe, int argc, char **argv)
{
    static struct ctx c;
    const char *base = strrchr(exe, '/');
    snprintf(c.name, sizeof c.name, "%s", base ? base + 1 : exe);
    static char progname[300];
    snprintf(progname, sizeof progname, "nbsandbox: %s", c.name);
    nbs_progname = progname;
    const char *v = getenv(VERBOSE_VAR);
    c.verbose = v && *v && strcmp(v, "0");
    wrap_conf_read(&c.conf, exe);
    path_fmt(c.self, "%s/" WRAP_LAUNCHER, c.conf.root);
    if (!strcmp(c.name, KERNEL_INSTALL_NAME))
        return cmd_kernel_install(&c.conf, argc, argv);
    c.prog = wrap_conf_program(&c.conf, c.name);
    if (!c.prog) {
        fprintf(stderr, "%s: the pack at %s has no program %s (its "
                WRAP_CONF " does not list it); run one of the programs in %s/bin, or re-create "
                "the pack\n", nbs_progname, c.conf.root, c.name, c.conf.root);
        return EXIT_NOT_FOUND;
    }
    path_fmt(c.profile_path, "%s/bin/%s", c.conf.profile, c.name);
    struct statvfs vfs;
    if (statvfs(c.conf.store, &vfs) != 0) {
        int e = errno;
        fprintf(stderr, "%s: the store %s of the pack is missing (%s); the pack is "
                "incomplete: unpack it again\n", nbs_progname, c.conf.store, strerror(e));
        return EXIT_NOT_FOUND;
    }
    if (vfs.f_flag & ST_NOEXEC) {
        fprintf(stderr, "%s: the pack at %s is on a file system mounted noexec, "
                "where no program can run; unpack it on another file system (e.g. under your "
                "home), or remount this one with exec\n", nbs_progname, c.conf.root);
        return EXIT_CANNOT_EXEC;
    }
    program_env(&c);
    return choose_and_start(&c, argc, argv);
}
