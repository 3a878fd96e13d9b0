/* nbs-launch userns: an unprivileged user + mount namespace, exec in place.
 *
 * 1. unshare(CLONE_NEWUSER | CLONE_NEWNS) in this very process (no fork: the
 *    program keeps our PID), "deny" to setgroups, map our uid/gid to
 *    themselves.  Nothing else runs before the maps are written.
 * 2. userns_view.c builds the new root and pivots into it.
 * 3. chdir, then execve the program: its capabilities in the namespace are
 *    dropped by the kernel at exec because its uid is not 0 there (unless
 *    the caller is root, who keeps what root had).
 */
#include "nbs.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Why unshare(CLONE_NEWUSER) failed, as far as the host tells. */
static const char *unshare_hint(int err, char *buf, size_t size)
{
    char val[64];
    switch (err) {
    case ENOSPC:
        /* Also the errno for "nested too deep" (32 levels) since Linux 4.9. */
        if (read_small_file("/proc/sys/user/max_user_namespaces", val, sizeof val) == 0 &&
            !strcmp(val, "0"))
            return "user namespaces are disabled on this host: max_user_namespaces is 0";
        snprintf(buf, size,
                 "the limit of user namespaces is reached: user.max_user_namespaces is %s, "
                 "or they are nested too deep",
                 val);
        return buf;
    case EPERM:
        /* Debian and older Ubuntu kernels have this switch. */
        if (read_small_file("/proc/sys/kernel/unprivileged_userns_clone", val, sizeof val) == 0 &&
            !strcmp(val, "0"))
            return "unprivileged user namespaces are disabled on this host: "
                   "kernel.unprivileged_userns_clone is 0";
        if (read_small_file("/proc/sys/kernel/apparmor_restrict_unprivileged_userns", val,
                            sizeof val) == 0 &&
            !strcmp(val, "1"))
            return "the host's AppArmor policy forbids unprivileged user namespaces: "
                   "kernel.apparmor_restrict_unprivileged_userns is 1";
        return "user namespaces are not permitted here: a container's seccomp policy forbids "
               "them, or nbs-launch runs inside a chroot";
    case EINVAL:
        return "this kernel does not support user namespaces";
    case EUSERS:
        return "user namespaces are nested too deep";
    default:
        return NULL;
    }
}

static void write_proc_file(const char *path, const char *data, bool missing_ok)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        if (missing_ok && errno == ENOENT)
            return; /* setgroups: kernels before 3.19 do not have it */
        die_err(errno, NULL, "opening %s", path);
    }
    if (write_all(fd, data, strlen(data)) != 0) {
        int e = errno;
        const char *hint = NULL;
        if (e == EPERM || e == EACCES)
            /* Ubuntu >= 23.10: unshare succeeds, then AppArmor denies this. */
            hint = "the host's security policy (e.g. AppArmor) forbids user namespaces; "
                   "use another engine or ask the administrator to allow them";
        die_err(e, hint, "writing %s", path);
    }
    if (close(fd) != 0)
        die_err(errno, NULL, "writing %s", path);
}

void enter_user_namespace(void)
{
    uid_t uid = getuid();
    gid_t gid = getgid();
    if (unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0) {
        int e = errno;
        char buf[256];
        die_err(e, unshare_hint(e, buf, sizeof buf), "unshare(CLONE_NEWUSER)");
    }
    /* An unprivileged process may write gid_map only after giving up
     * setgroups(2) (else it could drop groups that deny it access). */
    write_proc_file("/proc/self/setgroups", "deny", true);
    char map[64];
    snprintf(map, sizeof map, "%lu %lu 1\n", (unsigned long)uid, (unsigned long)uid);
    write_proc_file("/proc/self/uid_map", map, false);
    snprintf(map, sizeof map, "%lu %lu 1\n", (unsigned long)gid, (unsigned long)gid);
    write_proc_file("/proc/self/gid_map", map, false);
}

/* "SRC:DST", split at the last colon (a store directory on the host may
 * contain colons; a sandbox path rarely does). */
static void split_pair(struct view_op *op, const char *arg)
{
    const char *colon = strrchr(arg, ':');
    if (!colon || colon == arg || !colon[1])
        die("%s %s: expected SRC:DST", op->option, arg);
    char *src = xstrdup(arg);
    src[colon - arg] = '\0';
    op->src = src;
    op->dst = colon + 1;
}

static void check_absolute(const struct view_op *op)
{
    if (op->dst[0] != '/')
        die("%s: the path in the sandbox must be absolute", op->what);
    if (strlen(op->dst) >= PATH_MAX)
        die_err(ENAMETOOLONG, NULL, "%s", op->what);
}

/* File scope: the operations live until exec (or exit). */
static struct view_op *ops;

int cmd_userns(int argc, char **argv)
{
    ops = xcalloc((size_t)argc, sizeof *ops);
    size_t nops = 0;
    const char *chdir_to = NULL, *argv0 = NULL;
    bool probe = false, report_seccomp = false;
    struct landlock_req restrictions = {0};
    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--")) {
            i++;
            break;
        }
        if (landlock_option(&restrictions, argc, argv, &i))
            continue;
        if (!strcmp(a, "--probe")) {
            probe = true;
            continue;
        }
        if (!strcmp(a, REPORT_SECCOMP_OPTION)) {
            report_seccomp_prepare();
            report_seccomp = true;
            continue;
        }
        if (a[0] != '-' || a[1] != '-')
            die("userns: unexpected argument %s (the program comes after --)", a);
        if (i + 1 >= argc)
            die("userns: option %s needs a value", a);
        const char *val = argv[++i];
        struct view_op *op = &ops[nops];
        op->option = a;
        op->srcfd = -1;
        if (!strcmp(a, "--store"))
            op->kind = OP_STORE;
        else if (!strcmp(a, "--bind"))
            op->kind = OP_BIND;
        else if (!strcmp(a, "--ro-bind"))
            op->kind = OP_RO_BIND;
        else if (!strcmp(a, "--hide"))
            op->kind = OP_HIDE;
        else if (!strcmp(a, "--tmpfs"))
            op->kind = OP_TMPFS;
        else if (!strcmp(a, "--chdir")) {
            chdir_to = val;
            continue;
        } else if (!strcmp(a, "--argv0")) {
            argv0 = val;
            continue;
        } else
            die("userns: unknown option %s", a);
        snprintf(op->what, sizeof op->what, "%s %s", a, val);
        if (op->kind == OP_HIDE || op->kind == OP_TMPFS)
            op->dst = val;
        else
            split_pair(op, val);
        check_absolute(op);
        nops++;
    }
    if (i >= argc && !probe)
        die("userns: no program given (usage: nbs-launch userns [OPTIONS] -- PROGRAM [ARG...])");

    /* The caller's working directory, to find it again inside. */
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof cwd))
        strcpy(cwd, "/");

    enter_user_namespace();

    /* Sources are looked up as the host sees them, now, before any mount
     * changes the view; the O_PATH fds pin them.  (Opened after unshare: a
     * bind mount's source must belong to the caller's mount namespace.) */
    for (size_t k = 0; k < nops; k++) {
        struct view_op *op = &ops[k];
        if (!op->src)
            continue;
        op->srcfd = open(op->src, O_PATH | O_CLOEXEC);
        if (op->srcfd < 0)
            die_err(errno, NULL, "%s: opening %s", op->what, op->src);
        struct stat st;
        if (fstat(op->srcfd, &st) != 0)
            die_err(errno, NULL, "%s: stat %s", op->what, op->src);
        op->src_is_dir = S_ISDIR(st.st_mode);
    }

    view_build(ops, nops);

    if (chdir_to) {
        if (chdir(chdir_to) != 0)
            die_err(errno, NULL, "chdir %s (inside the sandbox)", chdir_to);
    } else if (chdir(cwd) != 0 && chdir("/") != 0) {
        die_err(errno, NULL, "chdir /");
    }

    const char *program = probe ? NULL : argv[i];
    char **prog_argv = argv + i;
    if (argv0 && !probe)
        prog_argv[0] = (char *)argv0;
    /* The launcher stays as the supervisor; Landlock binds the program only. */
    if (report_seccomp && !probe)
        report_seccomp_run(program, prog_argv, &restrictions);

    /* Paths as the sandbox sees them, now that its tree is in place. */
    landlock_apply(&restrictions);

    if (probe)
        return 0;
    return exec_program(program, prog_argv);
}
