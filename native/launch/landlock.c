/* Landlock restrictions, applied by the launcher just before it executes the
 * program: the program and everything it starts may then only read (and
 * execute) beneath the --allow-read paths, read and write beneath the
 * --allow-write paths, and, with --no-network, neither bind nor connect TCP
 * sockets.  Nothing the program does can lift them (Landlock domains only
 * ever grow stricter, across exec and fork).
 *
 * Rules are tied to the files a path names when it is opened here, so each
 * path must be given as this process sees it: inside the sandbox's mount tree
 * for the namespace engines, as on the host for the others.
 *
 * The system calls are made directly: the C library has no wrappers for
 * them.  A kernel without Landlock, or whose Landlock is too old for what was
 * asked (network rules need ABI 4), is an error: nothing runs unrestricted
 * when restrictions were requested.
 */
#include "nbs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef __NR_landlock_create_ruleset
#define __NR_landlock_create_ruleset 444
#define __NR_landlock_add_rule 445
#define __NR_landlock_restrict_self 446
#endif

/* The kernel's structures and constants (include/uapi/linux/landlock.h),
 * spelled out so that older headers build this too. */
struct ll_ruleset_attr {
    uint64_t handled_access_fs;
    uint64_t handled_access_net;
};
struct ll_path_beneath {
    uint64_t allowed_access;
    int32_t parent_fd;
} __attribute__((packed));

#define LL_CREATE_RULESET_VERSION (1U << 0)
#define LL_RULE_PATH_BENEATH 1

#define FS_EXECUTE (1ULL << 0)
#define FS_WRITE_FILE (1ULL << 1)
#define FS_READ_FILE (1ULL << 2)
#define FS_READ_DIR (1ULL << 3)
#define FS_ABI1_ALL ((1ULL << 13) - 1) /* EXECUTE .. MAKE_SYM */
#define FS_REFER (1ULL << 13)          /* ABI 2 */
#define FS_TRUNCATE (1ULL << 14)       /* ABI 3 */
#define FS_IOCTL_DEV (1ULL << 15)      /* ABI 5 */
#define NET_BIND_TCP (1ULL << 0)       /* ABI 4 */
#define NET_CONNECT_TCP (1ULL << 1)

/* What a rule on a file (not a directory) may allow. */
#define FS_FILE_RIGHTS (FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV)
#define FS_READ_RIGHTS (FS_EXECUTE | FS_READ_FILE | FS_READ_DIR)

int landlock_abi(void)
{
    long v = syscall(__NR_landlock_create_ruleset, NULL, 0, LL_CREATE_RULESET_VERSION);
    return v < 0 ? 0 : (int)v;
}

/* PRoot executes its loader, DIR/NAME<pid of PRoot>-*, in place of each program:
 * allow reading and executing exactly those files, not all of DIR. */
static void add_loader(struct landlock_req *req)
{
    /* Called while parsing: our parent is still PRoot (not yet the reporter). */
    char dir[PATH_MAX], name[NAME_MAX + 1];
    const char *slash = strrchr(req->loader_prefix, '/');
    if (!slash || slash == req->loader_prefix || (size_t)(slash - req->loader_prefix) >= sizeof dir)
        die("--allow-loader %s: expected /DIR/NAME-PREFIX", req->loader_prefix);
    memcpy(dir, req->loader_prefix, (size_t)(slash - req->loader_prefix));
    dir[slash - req->loader_prefix] = '\0';
    int n = snprintf(name, sizeof name, "%s%ld-", slash + 1, (long)getppid());
    if (n < 0 || (size_t)n >= sizeof name)
        die("--allow-loader %s: name too long", req->loader_prefix);
    DIR *d = opendir(dir);
    if (!d)
        return; /* the loader is elsewhere (PROOT_TMP_DIR honoured) */
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, name, (size_t)n) != 0)
            continue;
        char path[PATH_MAX];
        path_fmt(path, "%s/%s", dir, e->d_name);
        strvec_push(&req->read, path);
    }
    closedir(d);
}

bool landlock_option(struct landlock_req *req, int argc, char **argv, int *i)
{
    const char *a = argv[*i];
    if (!strcmp(a, "--no-network")) {
        req->no_network = true;
        req->active = true;
        return true;
    }
    if (!strcmp(a, "--allow-loader")) {
        if (*i + 1 >= argc)
            die("option %s needs a path prefix", a);
        req->loader_prefix = argv[++*i];
        add_loader(req);
        return true;
    }
    bool read = !strcmp(a, "--allow-read"), write = !strcmp(a, "--allow-write");
    if (!read && !write)
        return false;
    if (*i + 1 >= argc)
        die("option %s needs a path", a);
    const char *path = argv[++*i];
    if (path[0] != '/')
        die("%s %s: the path must be absolute", a, path);
    strvec_push(write ? &req->write : &req->read, path);
    req->active = true;
    return true;
}

static void add_rules(int ruleset, const struct strvec *paths, uint64_t rights, uint64_t handled,
                      const char *option)
{
    for (size_t k = 0; k < paths->len; k++) {
        const char *path = paths->items[k];
        int fd = open(path, O_PATH | O_CLOEXEC);
        if (fd < 0)
            die_err(errno, NULL, "%s %s", option, path);
        struct stat st;
        if (fstat(fd, &st) != 0)
            die_err(errno, NULL, "%s %s: stat", option, path);
        struct ll_path_beneath rule = {
            .allowed_access = rights & handled & (S_ISDIR(st.st_mode) ? ~0ULL : FS_FILE_RIGHTS),
            .parent_fd = fd,
        };
        if (syscall(__NR_landlock_add_rule, ruleset, LL_RULE_PATH_BENEATH, &rule, 0) != 0)
            die_err(errno, NULL, "%s %s: adding the Landlock rule", option, path);
        close(fd);
    }
}

void landlock_apply(const struct landlock_req *req)
{
    if (!req->active)
        return;
    int abi = landlock_abi();
    if (abi < 1)
        die("Landlock is not available in this kernel (Linux 5.13 or later, with "
            "lsm=landlock); run without --allow-read/--allow-write/--no-network");
    if (req->no_network && abi < 4)
        die("this kernel's Landlock (ABI %d) cannot restrict the network (ABI 4, Linux 6.7, "
            "can); run without --no-network", abi);
    struct ll_ruleset_attr attr = {.handled_access_fs = FS_ABI1_ALL};
    if (abi >= 2)
        attr.handled_access_fs |= FS_REFER;
    if (abi >= 3)
        attr.handled_access_fs |= FS_TRUNCATE;
    if (abi >= 5)
        attr.handled_access_fs |= FS_IOCTL_DEV;
    if (req->no_network)
        attr.handled_access_net = NET_BIND_TCP | NET_CONNECT_TCP;
    /* Before ABI 4 the structure had no network field. */
    size_t size = abi >= 4 ? sizeof attr : sizeof attr.handled_access_fs;
    int ruleset = (int)syscall(__NR_landlock_create_ruleset, &attr, size, 0);
    if (ruleset < 0)
        die_err(errno, NULL, "creating the Landlock ruleset");
    add_rules(ruleset, &req->read, FS_READ_RIGHTS, attr.handled_access_fs, "--allow-read");
    add_rules(ruleset, &req->write, ~0ULL, attr.handled_access_fs, "--allow-write");
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        die_err(errno, NULL, "prctl(PR_SET_NO_NEW_PRIVS)");
    if (syscall(__NR_landlock_restrict_self, ruleset, 0) != 0)
        die_err(errno, NULL, "applying the Landlock ruleset");
    close(ruleset);
}

/* nbs-launch restrict [--allow-read P]... [--allow-write P]... [--no-network]
 *                     [--report-seccomp] [--argv0 NAME] -- PROGRAM [ARG...]
 * For engines that otherwise start the program directly: restrict, then exec
 * (with --report-seccomp: fork it and stay as its supervisor, notify_run.c). */
int cmd_restrict(int argc, char **argv)
{
    struct landlock_req req = {0};
    const char *argv0 = NULL;
    bool report_seccomp = false;
    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--")) {
            i++;
            break;
        }
        if (landlock_option(&req, argc, argv, &i))
            continue;
        if (!strcmp(a, "--argv0") && i + 1 < argc) {
            argv0 = argv[++i];
            continue;
        }
        if (!strcmp(a, REPORT_SECCOMP_OPTION)) {
            report_seccomp_prepare();
            report_seccomp = true;
            continue;
        }
        die("restrict: unknown option %s", a);
    }
    if (i >= argc)
        die("restrict: no program given (usage: nbs-launch restrict [OPTIONS] -- PROGRAM [ARG...])");
    char **pargv = argv + i;
    const char *program = argv[i];
    if (argv0)
        pargv[0] = (char *)argv0;
    if (report_seccomp)
        report_seccomp_run(program, pargv, &req);
    landlock_apply(&req);
    return exec_program(program, pargv);
}

/* nbs-launch landlock-abi: print the kernel's Landlock ABI (0: none). */
int cmd_landlock_abi(void)
{
    printf("%d\n", landlock_abi());
    return 0;
}
