/* probe: a small store program for the fakechroot engine's tests.
 *
 *   probe CMD [ARG...] [, CMD [ARG...]]...
 *
 * Each command prints one line "CMD: RESULT" (errors as "CMD: error ENAME").
 * Commands:
 *   cwd | exe | argv0 | env VAR | environ | maps NEEDLE
 *   chdir DIR | realpath P | readlink P | stat P | lstat P | statx P | xstat P
 *   access P | opendir P | scandir P | open P | write P | mkdir P | unlink P | rename A B
 *   cat P | iconv | dlopen P | fopen P
 *   exec P ARG... | execvp NAME ARG... | spawn P ARG... | spawnp NAME ARG...
 *   system CMD | popen CMD
 *   closefds range|from|loop   close every descriptor from 3 up
 *   dup2dirs                   dup2 /dev/null onto every descriptor of a directory
 *   dirfds                     how many descriptors of directories are open
 *   threads N P                N threads stat() P at once, from their first call
 *   fork P | vfork-dup2 P      stat and open P in a child; in the parent after a
 *                              vfork child dup2'ed onto every directory descriptor
 *   sigstat P                  stat P in a loop and in a frequent SIGALRM handler
 * exec* commands take the rest of the command line.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <iconv.h>
#include <limits.h>
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

int close_range(unsigned int first, unsigned int last, int flags);
void closefrom(int low);

#define FD_SCAN 1024

static int is_dir_fd(int fd)
{
    struct stat st;
    return fstat(fd, &st) == 0 && S_ISDIR(st.st_mode);
}

/* stat and open P: 0 when both work */
static int stat_open(const char *p)
{
    struct stat st;
    if (stat(p, &st) < 0)
        return -1;
    int fd = open(p, O_RDONLY);
    if (fd < 0)
        return -1;
    close(fd);
    return 0;
}

static const char *sig_path;
static volatile sig_atomic_t sig_failed, sig_ran;

static void on_alarm(int sig)
{
    (void)sig;
    int e = errno;
    struct stat st;
    if (stat(sig_path, &st) < 0 || !S_ISREG(st.st_mode))
        sig_failed++;
    sig_ran = 1;
    errno = e;
}

struct stat_thread {
    pthread_barrier_t *start;
    const char *path;
    int failed;
};

static void *stat_loop(void *arg)
{
    struct stat_thread *t = arg;
    struct stat st;
    pthread_barrier_wait(t->start);
    for (int i = 0; i < 200; i++) {
        if (stat(t->path, &st) < 0 || !S_ISREG(st.st_mode))
            t->failed++;
    }
    return NULL;
}

static const char *ename(int e)
{
    switch (e) {
    case ENOENT: return "ENOENT";
    case ENOTDIR: return "ENOTDIR";
    case EROFS: return "EROFS";
    case EEXIST: return "EEXIST";
    case EACCES: return "EACCES";
    case ELOOP: return "ELOOP";
    case ENAMETOOLONG: return "ENAMETOOLONG";
    case EXDEV: return "EXDEV";
    case EINVAL: return "EINVAL";
    case ENOEXEC: return "ENOEXEC";
    default: return strerror(e);
    }
}

static void fail(const char *cmd)
{
    printf("%s: error %s\n", cmd, ename(errno));
}

static void status(const char *cmd, int st)
{
    if (WIFEXITED(st))
        printf("%s: exit %d\n", cmd, WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        printf("%s: signal %d\n", cmd, WTERMSIG(st));
    else
        printf("%s: status %d\n", cmd, st);
}

/* xstat: the pre-2.33 entry point, as an old program would call it */
typedef int (*xstat_fn)(int, const char *, struct stat *);

static int run(char **a, int n)
{
    const char *c = a[0];
    char buf[PATH_MAX + 1];
    struct stat st;
    if (!strcmp(c, "cwd")) {
        if (getcwd(buf, sizeof buf))
            printf("cwd: %s\n", buf);
        else
            fail(c);
    } else if (!strcmp(c, "exe")) {
        ssize_t r = readlink("/proc/self/exe", buf, sizeof buf - 1);
        if (r < 0)
            fail(c);
        else
            printf("exe: %.*s\n", (int)r, buf);
    } else if (!strcmp(c, "argv0")) {
        printf("argv0: %s\n", a[-1] ? a[-1] : "(null)");
    } else if (!strcmp(c, "env") && n > 1) {
        const char *v = getenv(a[1]);
        printf("env: %s\n", v ? v : "(unset)");
    } else if (!strcmp(c, "environ")) {
        for (char **e = environ; *e; e++)
            printf("environ: %s\n", *e);
    } else if (!strcmp(c, "maps") && n > 1) {
        FILE *f = fopen("/proc/self/maps", "r");
        if (!f) {
            fail(c);
            return 0;
        }
        while (fgets(buf, sizeof buf, f)) {
            char *p = strchr(buf, '/');
            if (p && strstr(p, a[1])) {
                printf("maps: %s", p);
                break;
            }
        }
        fclose(f);
    } else if (!strcmp(c, "chdir") && n > 1) {
        if (chdir(a[1]) < 0)
            fail(c);
        else
            printf("chdir: ok\n");
    } else if (!strcmp(c, "realpath") && n > 1) {
        char *r = realpath(a[1], NULL);
        if (r)
            printf("realpath: %s\n", r);
        else
            fail(c);
        free(r);
    } else if (!strcmp(c, "readlink") && n > 1) {
        ssize_t r = readlink(a[1], buf, sizeof buf - 1);
        if (r < 0)
            fail(c);
        else
            printf("readlink: %.*s\n", (int)r, buf);
    } else if (!strcmp(c, "stat") && n > 1) {
        if (stat(a[1], &st) < 0)
            fail(c);
        else
            printf("stat: %s size %lld\n", S_ISDIR(st.st_mode) ? "dir" : "file",
                   (long long)st.st_size);
    } else if (!strcmp(c, "lstat") && n > 1) {
        if (lstat(a[1], &st) < 0)
            fail(c);
        else
            printf("lstat: %s\n", S_ISLNK(st.st_mode) ? "link" : S_ISDIR(st.st_mode) ? "dir" : "file");
    } else if (!strcmp(c, "statx") && n > 1) {
        struct statx sx;
        if (statx(AT_FDCWD, a[1], 0, STATX_SIZE, &sx) < 0)
            fail(c);
        else
            printf("statx: size %llu\n", (unsigned long long)sx.stx_size);
    } else if (!strcmp(c, "xstat") && n > 1) {
        xstat_fn f = (xstat_fn)dlsym(RTLD_DEFAULT, "__xstat");
        if (!f)
            printf("xstat: missing\n");
        else if (f(1, a[1], &st) < 0)
            fail(c);
        else
            printf("xstat: size %lld\n", (long long)st.st_size);
    } else if (!strcmp(c, "access") && n > 1) {
        if (access(a[1], W_OK) < 0)
            fail(c);
        else
            printf("access: writable\n");
    } else if (!strcmp(c, "opendir") && n > 1) {
        DIR *d = opendir(a[1]);
        int count = 0;
        if (!d) {
            fail(c);
            return 0;
        }
        struct dirent *e;
        while ((e = readdir(d)))
            if (e->d_name[0] != '.')
                count++;
        closedir(d);
        printf("opendir: %d entries\n", count);
    } else if (!strcmp(c, "scandir") && n > 1) {
        struct dirent **list;
        int k = scandir(a[1], &list, NULL, alphasort);
        if (k < 0) {
            fail(c);
            return 0;
        }
        int count = 0;
        for (int i = 0; i < k; i++) {
            count += list[i]->d_name[0] != '.';
            free(list[i]);
        }
        free(list);
        printf("scandir: %d entries\n", count);
    } else if (!strcmp(c, "open") && n > 1) {
        int fd = open(a[1], O_RDONLY);
        if (fd < 0)
            fail(c);
        else {
            printf("open: ok\n");
            close(fd);
        }
    } else if (!strcmp(c, "cat") && n > 1) {
        FILE *f = fopen(a[1], "r");
        if (!f) {
            fail(c);
            return 0;
        }
        if (fgets(buf, sizeof buf, f))
            printf("cat: %s", buf);
        fclose(f);
    } else if (!strcmp(c, "write") && n > 1) {
        int fd = open(a[1], O_WRONLY | O_CREAT, 0644);
        if (fd < 0)
            fail(c);
        else {
            printf("write: ok\n");
            close(fd);
        }
    } else if (!strcmp(c, "mkdir") && n > 1) {
        if (mkdir(a[1], 0755) < 0)
            fail(c);
        else
            printf("mkdir: ok\n");
    } else if (!strcmp(c, "unlink") && n > 1) {
        if (unlink(a[1]) < 0)
            fail(c);
        else
            printf("unlink: ok\n");
    } else if (!strcmp(c, "rename") && n > 2) {
        if (rename(a[1], a[2]) < 0)
            fail(c);
        else
            printf("rename: ok\n");
    } else if (!strcmp(c, "closefds") && n > 1) {
        if (!strcmp(a[1], "range")) {
            if (close_range(3, ~0u, 0) < 0)
                fail(c);
        } else if (!strcmp(a[1], "from")) {
            closefrom(3);
        } else {
            for (int fd = 3; fd < FD_SCAN; fd++)
                close(fd);
        }
        printf("closefds: done\n");
    } else if (!strcmp(c, "dup2dirs")) {
        int null = open("/dev/null", O_RDONLY), count = 0, dirs[FD_SCAN], nd = 0;
        for (int fd = 3; null >= 0 && fd < FD_SCAN; fd++) {
            if (fd != null && is_dir_fd(fd))
                dirs[nd++] = fd;
        }
        for (int i = 0; i < nd; i++) {
            int fd = dirs[i];
            if (dup2(null, fd) < 0) {
                fail(c);
                return 0;
            }
            struct stat st;
            if (fstat(fd, &st) == 0 && S_ISCHR(st.st_mode))
                count++;
        }
        if (null >= 0)
            close(null);
        for (int i = 0; i < nd; i++)
            close(dirs[i]);
        printf("dup2dirs: %d replaced\n", count);
    } else if (!strcmp(c, "dirfds")) {
        int count = 0;
        for (int fd = 0; fd < FD_SCAN; fd++)
            count += is_dir_fd(fd);
        printf("dirfds: %d\n", count);
    } else if (!strcmp(c, "threads") && n > 2) {
        int k = atoi(a[1]), failed = 0;
        pthread_t tid[64];
        struct stat_thread t[64];
        pthread_barrier_t start;
        if (k < 1 || k > 64)
            k = 8;
        pthread_barrier_init(&start, NULL, (unsigned)k);
        for (int i = 0; i < k; i++) {
            t[i] = (struct stat_thread){&start, a[2], 0};
            pthread_create(&tid[i], NULL, stat_loop, &t[i]);
        }
        for (int i = 0; i < k; i++) {
            pthread_join(tid[i], NULL);
            failed += t[i].failed;
        }
        printf("threads: %d failed\n", failed);
    } else if (!strcmp(c, "fork") && n > 1) {
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0)
            _exit(stat_open(a[1]) == 0 ? 0 : 1);
        int st2;
        waitpid(pid, &st2, 0);
        status(c, st2);
    } else if (!strcmp(c, "vfork-dup2") && n > 1) {
        int dirs[FD_SCAN], nd = 0;
        int null = open("/dev/null", O_RDONLY);
        for (int fd = 3; fd < FD_SCAN; fd++) {
            if (fd != null && is_dir_fd(fd))
                dirs[nd++] = fd;
        }
        pid_t pid = vfork();
        if (pid == 0) {
            for (int i = 0; i < nd; i++)
                dup2(null, dirs[i]);
            _exit(0);
        }
        int st2;
        waitpid(pid, &st2, 0);
        close(null);
        int same = 1;
        for (int i = 0; i < nd; i++)
            same &= is_dir_fd(dirs[i]);
        if (stat_open(a[1]) < 0)
            fail(c);
        else
            printf("vfork-dup2: ok %s\n", same ? "kept" : "changed");
    } else if (!strcmp(c, "sigstat") && n > 1) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_alarm;
        sa.sa_flags = SA_RESTART;
        sigaction(SIGALRM, &sa, NULL);
        sig_path = a[1];
        struct itimerval it = {{0, 50}, {0, 50}};
        setitimer(ITIMER_REAL, &it, NULL);
        int failed = 0;
        for (int i = 0; i < 20000 || !sig_ran; i++) {
            if (stat(a[1], &st) < 0 || !S_ISREG(st.st_mode))
                failed++;
        }
        struct itimerval off = {{0, 0}, {0, 0}};
        setitimer(ITIMER_REAL, &off, NULL);
        signal(SIGALRM, SIG_DFL);
        printf("sigstat: %d failed, %d in the handler\n", failed, (int)sig_failed);
    } else if (!strcmp(c, "iconv")) {
        iconv_t cd = iconv_open("UTF-16LE", "UTF-8");
        if (cd == (iconv_t)-1) {
            fail(c);
            return 0;
        }
        char in[] = "h\xc3\xa9", out[16];
        char *ip = in, *op = out;
        size_t il = 3, ol = sizeof out;
        if (iconv(cd, &ip, &il, &op, &ol) == (size_t)-1)
            fail(c);
        else
            printf("iconv: %d bytes\n", (int)(sizeof out - ol));
        iconv_close(cd);
    } else if (!strcmp(c, "dlopen") && n > 1) {
        void *h = dlopen(a[1], RTLD_NOW);
        if (!h) {
            printf("dlopen: error %s\n", dlerror());
            return 0;
        }
        Dl_info info;
        void *sym = dlsym(h, "nbs_test_value");
        if (sym && dladdr(sym, &info))
            printf("dlopen: %s %d\n", info.dli_fname, ((int (*)(void))sym)());
        else
            printf("dlopen: ok\n");
    } else if (!strcmp(c, "exec") && n > 1) {
        fflush(stdout);
        execv(a[1], a + 1);
        fail(c);
    } else if (!strcmp(c, "execvp") && n > 1) {
        fflush(stdout);
        execvp(a[1], a + 1);
        fail(c);
    } else if ((!strcmp(c, "spawn") || !strcmp(c, "spawnp")) && n > 1) {
        pid_t pid;
        int st2, r;
        fflush(stdout);
        if (c[5] == 'p')
            r = posix_spawnp(&pid, a[1], NULL, NULL, a + 1, environ);
        else
            r = posix_spawn(&pid, a[1], NULL, NULL, a + 1, environ);
        if (r) {
            errno = r;
            fail(c);
            return 1;
        }
        waitpid(pid, &st2, 0);
        status(c, st2);
        return 1;
    } else if (!strcmp(c, "system") && n > 1) {
        fflush(stdout);
        status(c, system(a[1]));
    } else if (!strcmp(c, "popen") && n > 1) {
        fflush(stdout);
        FILE *f = popen(a[1], "r");
        if (!f) {
            fail(c);
            return 0;
        }
        while (fgets(buf, sizeof buf, f))
            printf("popen: %s", buf);
        status(c, pclose(f));
    } else {
        printf("%s: unknown command\n", c);
        return 2;
    }
    return 0;
}

int main(int argc, char **argv)
{
    int i = 1;
    setvbuf(stdout, NULL, _IOLBF, 0);
    while (i < argc) {
        int j = i;
        int takes_rest = !strcmp(argv[i], "exec") || !strcmp(argv[i], "execvp") ||
                         !strcmp(argv[i], "spawn") || !strcmp(argv[i], "spawnp");
        while (j < argc && (takes_rest || strcmp(argv[j], ",")))
            j++;
        char *saved = argv[j < argc ? j : argc];
        argv[j < argc ? j : argc] = NULL;
        char *prev = argv[i - 1];
        argv[i - 1] = argv[0];
        int r = run(argv + i, j - i);
        argv[i - 1] = prev;
        if (j < argc)
            argv[j] = saved;
        if (r == 2)
            return 2;
        i = j + 1;
    }
    return 0;
}
