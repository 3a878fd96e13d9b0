/* nbs-launch userns: the sandbox's file-system view.
 *
 * Everything happens in the process's own mount namespace; nothing is created
 * on the host's file systems.  A tmpfs becomes the root at once (pivot_root);
 * while the view is built it holds:
 *
 *   /                  the new root, mirroring the host's /: each entry a
 *                      recursive bind mount of the host's (symlinks are
 *                      re-created)
 *   /.nbs-oldroot.PID  the host's root, with all its mounts
 *   /.nbs-empty.PID    an empty file bound over hidden files (made if needed)
 *
 * A destination that does not exist needs a mount point.  It can only be
 * created on one of our own tmpfs; if its parent directory is part of a host
 * bind, that parent is first turned into a tmpfs that mirrors it (and so on
 * down the path), so that e.g. the store shadows a host /gnu/store with other
 * content, or appears in a host /gnu that has no store.
 *
 * At the end the host's root is detached (umount2 MNT_DETACH), the helper
 * entries are removed, and the mirror tmpfs become read-only.  (One tmpfs and
 * one pivot_root per start, not two: each costs 10 to 20 us of kernel time,
 * and a tmpfs about as much again to tear down when the program exits.)
 */
#include "nbs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

/* While the view is built: where the host's root is ("/.nbs-oldroot.PID"),
 * and the empty file bound over hidden files, once made.  Sources of binds
 * are named through our fds, below the host root's /proc/self/fd: the kernel
 * resolves the magic link to the very mount and directory the fd was opened
 * on, even when that directory has since been covered by another mount. */
static char oldroot[64], empty_file[64];
#define MAX_SYMLINKS 40

/* Linux >= 5.10; older C libraries lack the names. */
#ifndef ST_NOSYMFOLLOW
#define ST_NOSYMFOLLOW 0x2000
#endif
#ifndef MS_NOSYMFOLLOW
#define MS_NOSYMFOLLOW 256
#endif

/* Devices of our own writable tmpfs: a directory on one of them can receive
 * new mount points. */
static dev_t *writable_devs;
static size_t n_writable, cap_writable;
/* Mirror tmpfs, made read-only when the view is complete. */
static struct strvec mirrors;

static int sys_pivot_root(const char *new_root, const char *put_old)
{
    return (int)syscall(SYS_pivot_root, new_root, put_old);
}

static void add_writable(const char *dir)
{
    struct stat st;
    if (stat(dir, &st) != 0)
        die_err(errno, NULL, "stat %s", dir);
    if (n_writable == cap_writable) {
        size_t cap = cap_writable ? cap_writable * 2 : 16;
        dev_t *devs = reallocarray(writable_devs, cap, sizeof *devs);
        if (!devs)
            die_err(ENOMEM, NULL, "allocating memory");
        writable_devs = devs;
        cap_writable = cap;
    }
    writable_devs[n_writable++] = st.st_dev;
}

static bool is_writable(const char *dir)
{
    struct stat st;
    if (stat(dir, &st) != 0)
        die_err(errno, NULL, "stat %s", dir);
    for (size_t i = 0; i < n_writable; i++)
        if (writable_devs[i] == st.st_dev)
            return true;
    return false;
}

/* The flags a read-only remount of the mount at PATH must repeat.  In a user
 * namespace the kernel locks nosuid, nodev, noexec and the atime mode of
 * mounts that came from a more privileged namespace; a remount that would
 * clear one of them fails with EPERM.  A remount without an atime flag means
 * relatime, so strictatime must be spelled out. */
static unsigned long locked_flags(const char *path)
{
    struct statvfs sv;
    if (statvfs(path, &sv) != 0)
        die_err(errno, NULL, "statvfs %s", path);
    unsigned long f = 0;
    if (sv.f_flag & ST_NOSUID)
        f |= MS_NOSUID;
    if (sv.f_flag & ST_NODEV)
        f |= MS_NODEV;
    if (sv.f_flag & ST_NOEXEC)
        f |= MS_NOEXEC;
    if (sv.f_flag & ST_NOSYMFOLLOW) /* not locked, but keep it */
        f |= MS_NOSYMFOLLOW;
    if (sv.f_flag & ST_NODIRATIME)
        f |= MS_NODIRATIME;
    if (sv.f_flag & ST_NOATIME)
        f |= MS_NOATIME;
    else if (sv.f_flag & ST_RELATIME)
        f |= MS_RELATIME;
    else
        f |= MS_STRICTATIME;
    return f;
}

static void remount_ro(const char *path)
{
    if (mount(NULL, path, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | locked_flags(path), NULL) != 0)
        die_err(errno, NULL, "remounting %s read-only", path);
}

/* Undo mountinfo's octal escapes (\040 for a space...); false if too long. */
static bool unescape_mount_point(const char *s, char out[PATH_MAX])
{
    size_t n = 0;
    while (*s) {
        char c = *s++;
        if (c == '\\' && s[0] >= '0' && s[0] <= '3' && s[1] >= '0' && s[1] <= '7' && s[2] >= '0' &&
            s[2] <= '7') {
            c = (char)((s[0] - '0') * 64 + (s[1] - '0') * 8 + (s[2] - '0'));
            s += 3;
        }
        if (n + 1 >= PATH_MAX)
            return false;
        out[n++] = c;
    }
    out[n] = '\0';
    return true;
}

/* mount_setattr(2), Linux >= 5.12: one call makes a whole tree read-only
 * and leaves every other flag (the locked ones too) as it is. */
struct nbs_mount_attr {
    uint64_t attr_set, attr_clr, propagation, userns_fd;
};
#define NBS_MOUNT_ATTR_RDONLY 0x1
#ifndef AT_RECURSIVE
#define AT_RECURSIVE 0x8000
#endif

static bool setattr_ro_tree(const char *top)
{
#ifdef SYS_mount_setattr
    struct nbs_mount_attr attr = {.attr_set = NBS_MOUNT_ATTR_RDONLY};
    return syscall(SYS_mount_setattr, AT_FDCWD, top, AT_RECURSIVE, &attr, sizeof attr) == 0;
#else
    (void)top;
    return false;
#endif
}

/* A recursive bind copies the source's submounts; MS_REMOUNT only changes
 * the top one, so without mount_setattr (an older kernel, or a seccomp
 * policy that refuses it) find the others in mountinfo and make them
 * read-only one by one. */
static void remount_ro_tree(const char *top)
{
    if (setattr_ro_tree(top))
        return;
    remount_ro(top);
    char mountinfo[PATH_MAX];
    path_fmt(mountinfo, "%s/proc/self/mountinfo", oldroot);
    FILE *f = fopen(mountinfo, "re");
    if (!f)
        die_err(errno, NULL, "opening /proc/self/mountinfo");
    /* Two escaped paths (up to 4 bytes per character) and some options. */
    static char line[9 * PATH_MAX];
    struct strvec subs = {0};
    size_t toplen = strlen(top);
    while (fgets(line, sizeof line, f)) {
        size_t len = strlen(line);
        if (len == sizeof line - 1 && line[len - 1] != '\n')
            die_err(E2BIG, NULL, "reading /proc/self/mountinfo: a line is too long");
        /* id parent major:minor root mount-point options ... */
        char *p = line;
        for (int field = 0; field < 4 && p; field++) {
            p = strchr(p, ' ');
            if (p)
                p++;
        }
        if (!p)
            continue;
        char *end = strchr(p, ' ');
        if (!end)
            continue;
        *end = '\0';
        char mp[PATH_MAX];
        if (!unescape_mount_point(p, mp))
            die_err(ENAMETOOLONG, NULL, "reading /proc/self/mountinfo");
        if (!strncmp(mp, top, toplen) && mp[toplen] == '/')
            strvec_push(&subs, mp);
    }
    if (ferror(f))
        die_err(errno, NULL, "reading /proc/self/mountinfo");
    fclose(f);
    for (size_t i = 0; i < subs.len; i++) {
        remount_ro(subs.items[i]);
        free(subs.items[i]);
    }
    free(subs.items);
}

static void bind_mount(const char *src, const char *dst, const char *what)
{
    if (mount(src, dst, NULL, MS_BIND | MS_REC, NULL) != 0)
        die_err(errno, NULL, "%s: bind mount on %s", what, dst);
}

/* Fill tmpfs TARGET with one entry per entry of directory SRCFD. */
static void fill_mirror(const char *target, int srcfd)
{
    int listfd = openat(srcfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (listfd < 0)
        die_err(errno, NULL, "mirroring %s: opening the host directory", target);
    DIR *d = fdopendir(listfd);
    if (!d)
        die_err(errno, NULL, "mirroring %s: opening the host directory", target);
    /* Bind sources are named relative to the host directory itself (our
     * working directory for the loop): cheaper for the kernel than a
     * /proc/self/fd path, and the same directory even when covered. */
    if (fchdir(srcfd) != 0)
        die_err(errno, NULL, "mirroring %s: entering the host directory", target);
    struct dirent *e;
    for (errno = 0; (e = readdir(d)) != NULL; errno = 0) {
        const char *name = e->d_name;
        if (!strcmp(name, ".") || !strcmp(name, ".."))
            continue;
        char dst[PATH_MAX], src[PATH_MAX];
        path_fmt(dst, "%s/%s", strcmp(target, "/") ? target : "", name);
        unsigned char type = e->d_type;
        if (type == DT_UNKNOWN) {
            struct stat st;
            if (fstatat(srcfd, name, &st, AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT) != 0) {
                if (errno == ENOENT || errno == EACCES)
                    continue; /* gone, or not reachable for us either */
                die_err(errno, NULL, "mirroring %s", dst);
            }
            type = S_ISLNK(st.st_mode) ? DT_LNK : S_ISDIR(st.st_mode) ? DT_DIR : DT_REG;
        }
        if (type == DT_LNK) {
            ssize_t n = readlinkat(srcfd, name, src, sizeof src);
            if (n < 0) {
                if (errno == ENOENT)
                    continue;
                die_err(errno, NULL, "mirroring %s: readlink", dst);
            }
            if ((size_t)n >= sizeof src)
                die_err(ENAMETOOLONG, NULL, "mirroring %s: readlink", dst);
            src[n] = '\0';
            if (symlink(src, dst) != 0)
                die_err(errno, NULL, "mirroring %s: symlink", dst);
            continue;
        }
        /* A bind mount needs a mount point of the same kind: a directory for a
         * directory, any non-directory for anything else. */
        int r = type == DT_DIR ? mkdir(dst, 0755) : mknod(dst, S_IFREG | 0644, 0);
        if (r != 0)
            die_err(errno, NULL, "mirroring %s: creating a mount point", dst);
        if (mount(name, dst, NULL, MS_BIND | MS_REC, NULL) != 0) {
            if (errno != ENOENT && errno != EACCES)
                die_err(errno, NULL, "mirroring %s: bind mount", dst);
            /* The entry vanished meanwhile, or we cannot reach it. */
            if ((type == DT_DIR ? rmdir(dst) : unlink(dst)) != 0)
                die_err(errno, NULL, "mirroring %s: removing a mount point", dst);
        }
    }
    if (errno)
        die_err(errno, NULL, "mirroring %s: reading the host directory", target);
    closedir(d);
    if (chdir("/") != 0) /* view_build works from the root */
        die_err(errno, NULL, "chdir /");
}

/* Cover directory TARGET with a tmpfs that mirrors directory SRCFD
 * (-1: an unreadable directory, mirrored empty), with mode MODE. */
static void mirror_onto(const char *target, int srcfd, mode_t mode)
{
    char opts[32];
    snprintf(opts, sizeof opts, "mode=%o", (unsigned)(mode & 07777));
    if (mount("nbsandbox", target, "tmpfs", MS_NOSUID | MS_NODEV, opts) != 0)
        die_err(errno, NULL, "mounting a tmpfs on %s", target);
    add_writable(target);
    strvec_push(&mirrors, target);
    if (srcfd >= 0)
        fill_mirror(target, srcfd);
}

/* Directory DIR is about to receive a new entry: make sure it is on one of our
 * tmpfs, turning it into a mirror of itself if it is a host directory. */
static void make_creatable(const char *dir)
{
    if (is_writable(dir))
        return;
    /* Opened before the tmpfs covers it; the fd still reaches the host's
     * entries afterwards.  A directory we may not list is mirrored empty:
     * its names are not ours to see. */
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 && errno != EACCES)
        die_err(errno, NULL, "mirroring %s", dir);
    struct stat st;
    if (stat(dir, &st) != 0)
        die_err(errno, NULL, "stat %s", dir);
    mirror_onto(dir, fd, st.st_mode);
    if (fd >= 0)
        close(fd);
}

enum walk_mode { WALK_LOOKUP, WALK_DIR, WALK_FILE };

/* Resolve PATH the way the program will see it: symlinks are followed within
 * the new root, ".." never climbs above it.  Every lstat() is on a path made
 * only of resolved directories, so the kernel never follows a symlink.  With
 * WALK_DIR or WALK_FILE, missing components are created: directories, and the
 * last one as a directory or an empty file.  FULL receives the resolved path.
 * Returns 0, or -1 with errno ENOENT (WALK_LOOKUP only); other failures die. */
static int walk(const struct view_op *op, enum walk_mode mode, char full[PATH_MAX])
{
    char rest[PATH_MAX], link[PATH_MAX];
    const size_t base = 0; /* full is "" for the root while resolving */
    size_t flen = base;
    int links = 0;
    full[0] = '\0';
    if (strlen(op->dst) >= sizeof rest)
        die_err(ENAMETOOLONG, NULL, "%s", op->what);
    strcpy(rest, op->dst);
    char *p = rest;
    for (;;) {
        while (*p == '/')
            p++;
        if (!*p)
            break;
        char *end = strchrnul(p, '/');
        size_t clen = (size_t)(end - p);
        bool last = end[strspn(end, "/")] == '\0';
        if (clen == 1 && p[0] == '.') {
            p = end;
            continue;
        }
        if (clen == 2 && p[0] == '.' && p[1] == '.') {
            while (flen > base && full[flen - 1] != '/')
                flen--;
            if (flen > base)
                flen--;
            full[flen] = '\0';
            p = end;
            continue;
        }
        if (clen > NAME_MAX || flen + 1 + clen >= PATH_MAX)
            die_err(ENAMETOOLONG, NULL, "%s", op->what);
        full[flen] = '/';
        memcpy(full + flen + 1, p, clen);
        full[flen + 1 + clen] = '\0';

        struct stat st;
        if (lstat(full, &st) == 0) {
            if (S_ISLNK(st.st_mode)) {
                if (++links > MAX_SYMLINKS)
                    die_err(ELOOP, NULL, "%s", op->what);
                ssize_t n = readlink(full, link, sizeof link);
                if (n < 0)
                    die_err(errno, NULL, "%s: readlink %s", op->what, full);
                size_t rlen = strlen(end);
                if ((size_t)n + rlen >= sizeof link)
                    die_err(ENAMETOOLONG, NULL, "%s", op->what);
                /* The rest of the path now starts with the link's target. */
                memcpy(link + n, end, rlen + 1);
                memcpy(rest, link, (size_t)n + rlen + 1);
                p = rest;
                if (rest[0] == '/')
                    flen = base;
                full[flen] = '\0';
                continue;
            }
            if (!S_ISDIR(st.st_mode) && !last)
                die_err(ENOTDIR, NULL, "%s: %s", op->what, full);
            flen += 1 + clen;
            p = end;
            continue;
        }
        if (errno != ENOENT)
            die_err(errno, NULL, "%s: lstat %s", op->what, full);
        if (mode == WALK_LOOKUP) {
            errno = ENOENT;
            return -1;
        }
        full[flen] = '\0';
        make_creatable(flen == base ? "/" : full);
        full[flen] = '/';
        int r = (!last || mode == WALK_DIR) ? mkdir(full, 0755) : mknod(full, S_IFREG | 0644, 0);
        if (r != 0)
            die_err(errno, NULL, "%s: creating %s", op->what, full);
        flen += 1 + clen;
        p = end;
    }
    full[flen] = '\0';
    if (flen == base)
        strcpy(full, "/");
    return 0;
}

static void check_kind(const struct view_op *op, const char *full, bool want_dir)
{
    struct stat st;
    if (stat(full, &st) != 0)
        die_err(errno, NULL, "%s: stat %s", op->what, full);
    if (want_dir && !S_ISDIR(st.st_mode) && op->kind == OP_TMPFS)
        die_err(ENOTDIR, NULL, "%s: %s", op->what, full);
    if (want_dir && !S_ISDIR(st.st_mode))
        die("%s: %s is not a directory, the source is", op->what, full);
    if (!want_dir && S_ISDIR(st.st_mode))
        die("%s: %s is a directory, the source is not", op->what, full);
}

static void apply(const struct view_op *op)
{
    char full[PATH_MAX], src[PATH_MAX];
    const char *what = op->what;
    switch (op->kind) {
    case OP_STORE:
    case OP_BIND:
    case OP_RO_BIND:
        walk(op, op->src_is_dir ? WALK_DIR : WALK_FILE, full);
        check_kind(op, full, op->src_is_dir);
        path_fmt(src, "%s/proc/self/fd/%d", oldroot, op->srcfd);
        bind_mount(src, full, what);
        if (op->kind != OP_BIND)
            remount_ro_tree(full);
        break;
    case OP_HIDE: {
        if (walk(op, WALK_LOOKUP, full) != 0)
            break; /* nothing there to hide */
        struct stat st;
        if (stat(full, &st) != 0)
            die_err(errno, NULL, "%s: stat %s", what, full);
        if (S_ISDIR(st.st_mode)) {
            if (mount("nbsandbox", full, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                      "mode=0755") != 0)
                die_err(errno, NULL, "%s: mounting an empty tmpfs", what);
        } else {
            if (!empty_file[0]) {
                snprintf(empty_file, sizeof empty_file, "/.nbs-empty.%ld", (long)getpid());
                if (mknod(empty_file, S_IFREG | 0444, 0) != 0)
                    die_err(errno, NULL, "creating %s", empty_file);
            }
            bind_mount(empty_file, full, what);
            remount_ro(full);
        }
        break;
    }
    case OP_TMPFS:
        walk(op, WALK_DIR, full);
        check_kind(op, full, true);
        if (mount("nbsandbox", full, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755") != 0)
            die_err(errno, NULL, "%s: mounting a tmpfs", what);
        add_writable(full);
        break;
    }
}

/* Where to mount the root tmpfs for a moment: any host directory will do,
 * pivot_root moves the tmpfs away from it again. */
static const char *scratch_mount_point(void)
{
    static const char *const candidates[] = {"/tmp", "/mnt", "/var/tmp", "/proc"};
    for (size_t i = 0; i < sizeof candidates / sizeof *candidates; i++) {
        struct stat st;
        if (lstat(candidates[i], &st) == 0 && S_ISDIR(st.st_mode))
            return candidates[i];
    }
    die_err(ENOENT, NULL, "no directory to mount a tmpfs on for a moment (tried /tmp, /mnt, /var/tmp, /proc)");
}

void view_build(struct view_op *ops, size_t nops)
{
    /* Our mounts must not propagate to the host's namespace (and theirs not
     * to ours): a copied namespace keeps the host's shared peer groups. */
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
        die_err(errno, NULL, "making the mounts private");

    struct stat st;
    if (stat("/", &st) != 0)
        die_err(errno, NULL, "stat of the host's root directory");
    const char *scratch = scratch_mount_point();
    char opts[32], path[PATH_MAX];
    snprintf(opts, sizeof opts, "mode=%o", (unsigned)(st.st_mode & 07777));
    if (mount("nbsandbox", scratch, "tmpfs", MS_NOSUID | MS_NODEV, opts) != 0)
        die_err(errno, NULL, "mounting a tmpfs on %s", scratch);
    snprintf(oldroot, sizeof oldroot, "/.nbs-oldroot.%ld", (long)getpid());
    path_fmt(path, "%s%s", scratch, oldroot);
    if (mkdir(path, 0700) != 0)
        die_err(errno, NULL, "mkdir %s", path);
    /* The tmpfs becomes the root, the host's root moves below it; pivot_root
     * takes the tmpfs off `scratch`, which shows the host's directory again.
     * EINVAL here usually means we run in a chroot. */
    if (sys_pivot_root(scratch, path) != 0) {
        int e = errno;
        die_err(e, e == EINVAL ? "the root is not a mount point: a chroot, or an initramfs root" : NULL,
                "pivot_root to a tmpfs");
    }
    if (chdir("/") != 0)
        die_err(errno, NULL, "chdir /");
    add_writable("/");
    strvec_push(&mirrors, "/");

    int hostroot = open(oldroot, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (hostroot < 0)
        die_err(errno, NULL, "opening the host's root directory");
    fill_mirror("/", hostroot);
    close(hostroot);

    for (size_t i = 0; i < nops; i++)
        apply(&ops[i]);
    for (size_t i = 0; i < nops; i++)
        if (ops[i].srcfd >= 0 && close(ops[i].srcfd) == 0)
            ops[i].srcfd = -1;

    /* The host's root, with every mount below it, leaves the namespace; its
     * mount point and the empty file go, then the mirrors become read-only. */
    if (umount2(oldroot, MNT_DETACH) != 0)
        die_err(errno, NULL, "detaching the host's root");
    if (rmdir(oldroot) != 0)
        die_err(errno, NULL, "removing %s", oldroot);
    if (empty_file[0] && unlink(empty_file) != 0)
        die_err(errno, NULL, "removing %s", empty_file);
    for (size_t i = 0; i < mirrors.len; i++)
        remount_ro(mirrors.items[i]);
}
