/* The program's descendants, for the reporter (see report.c).
 *
 * The run is the program: it ends when the program ends.  A wrapper such as
 * PRoot waits for every process it traces, so a descendant left running (a
 * daemon, a stuck worker) would keep the run from ending.  The reporter
 * therefore adopts every orphan in the program's tree (it is a "child
 * subreaper"), and when the program has ended it ends what is left, as a
 * system shutdown does: SIGTERM (and SIGCONT, so that stopped processes see
 * it) once to each, then SIGKILL to all after a grace period, until none is
 * left.
 *
 * Descendants are found through /proc: every process whose chain of parents
 * reaches the reporter (orphans are reparented to it, so the chain never
 * breaks inside the tree).
 */
#include "nbs.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct proc {
    pid_t pid, ppid;
    bool live; /* not a zombie */
    bool ours; /* descends from the reporter */
};

struct procs {
    struct proc *items;
    size_t len, cap;
};

/* Pids already sent SIGTERM (each gets it once). */
struct pidset {
    pid_t *items;
    size_t len, cap;
};

static bool pidset_has(const struct pidset *s, pid_t pid)
{
    for (size_t i = 0; i < s->len; i++)
        if (s->items[i] == pid)
            return true;
    return false;
}

static void pidset_add(struct pidset *s, pid_t pid)
{
    if (s->len == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 64;
        pid_t *items = realloc(s->items, cap * sizeof *items);
        if (!items)
            die_err(ENOMEM, NULL, "ending the program's descendants");
        s->items = items;
        s->cap = cap;
    }
    s->items[s->len++] = pid;
}

/* Our pid as /proc numbers processes (it may belong to another pid
 * namespace than ours). */
static pid_t proc_self(void)
{
    char buf[32];
    ssize_t n = readlink("/proc/self", buf, sizeof buf - 1);
    if (n <= 0)
        return getpid();
    buf[n] = '\0';
    int v;
    return parse_int(buf, &v) && v > 0 ? (pid_t)v : getpid();
}

static bool read_proc(pid_t pid, struct proc *out)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
    if (read_small_file(path, buf, sizeof buf) != 0)
        return false;
    /* "pid (comm) state ppid ...": comm may contain anything. */
    const char *p = strrchr(buf, ')');
    char state;
    long ppid;
    if (!p || sscanf(p + 1, " %c %ld", &state, &ppid) != 2)
        return false;
    out->pid = pid;
    out->ppid = (pid_t)ppid;
    out->live = state != 'Z' && state != 'X';
    out->ours = false;
    return true;
}

/* Every process /proc shows, with those descending from SELF marked. */
static void list_procs(struct procs *ps, pid_t self)
{
    ps->len = 0;
    DIR *d = opendir("/proc");
    if (!d)
        die_err(errno, NULL, "ending the program's descendants: /proc");
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        int v;
        if (!parse_int(e->d_name, &v) || v <= 0 || v == self)
            continue;
        if (ps->len == ps->cap) {
            size_t cap = ps->cap ? 2 * ps->cap : 256;
            struct proc *items = realloc(ps->items, cap * sizeof *items);
            if (!items)
                die_err(ENOMEM, NULL, "ending the program's descendants");
            ps->items = items;
            ps->cap = cap;
        }
        if (read_proc((pid_t)v, &ps->items[ps->len]))
            ps->len++;
    }
    closedir(d);
    /* Mark children of SELF, then children of marked ones, until stable. */
    for (bool changed = true; changed;) {
        changed = false;
        for (size_t i = 0; i < ps->len; i++) {
            struct proc *p = &ps->items[i];
            if (p->ours)
                continue;
            bool parent_ours = p->ppid == self;
            for (size_t j = 0; !parent_ours && j < ps->len; j++)
                parent_ours = ps->items[j].ours && ps->items[j].pid == p->ppid;
            if (parent_ours)
                p->ours = changed = true;
        }
    }
}

static volatile sig_atomic_t hurry;

void descendants_hurry(void)
{
    hurry = 1;
}

bool descendants_hurried(void)
{
    return hurry;
}

static void reap_children(void)
{
    while (waitpid(-1, NULL, WNOHANG) > 0)
        ;
}

static long elapsed_ms(const struct timespec *since)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - since->tv_sec) * 1000L + (now.tv_nsec - since->tv_nsec) / 1000000L;
}

void descendants_adopt(void)
{
    /* EINVAL: a kernel before 3.4; descendants then go to init, as without
     * a wrapper. */
    (void)prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
}

void descendants_end(int grace_ms)
{
    pid_t self = proc_self();
    struct procs ps = {0};
    struct pidset termed = {0};
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    long pause_ms = 5;
    for (;;) {
        reap_children();
        bool kill_now = hurry || elapsed_ms(&start) >= grace_ms;
        size_t live = 0;
        list_procs(&ps, self);
        for (size_t i = 0; i < ps.len; i++) {
            const struct proc *p = &ps.items[i];
            if (!p->ours || !p->live)
                continue;
            live++;
            if (kill_now) {
                (void)kill(p->pid, SIGKILL);
            } else if (!pidset_has(&termed, p->pid)) {
                pidset_add(&termed, p->pid);
                (void)kill(p->pid, SIGTERM);
                (void)kill(p->pid, SIGCONT);
            }
        }
        if (live == 0) {
            /* Nothing runs; done once no child (zombie or new) is left. */
            reap_children();
            if (waitpid(-1, NULL, WNOHANG) < 0 && errno == ECHILD)
                break;
        }
        struct timespec ts = {0, pause_ms * 1000000L};
        (void)nanosleep(&ts, NULL);
        if (pause_ms < 50)
            pause_ms *= 2;
    }
    free(ps.items);
    free(termed.items);
}
