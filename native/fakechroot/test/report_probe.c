/* A test program for the access recorders (tests/test_report_native.py).
 *
 *     report_probe CMD ARG... [, CMD ARG...]...
 *
 * Each command makes one kind of access and prints one line "CMD: result".
 * "run PROG ARG..." (fork and execv, then wait) takes the rest of the
 * command line.  "closerange" and "closefrom" close every descriptor from
 * 3 up, as a careful daemon or Python's subprocess does.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static void result(const char *cmd, int ok)
{
    printf("%s: %s\n", cmd, ok ? "ok" : strerror(errno));
}

static int run_child(char **argv)
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        execv(argv[0], argv);
        _exit(127);
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) < 0)
        return 0;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

static int one(char **a, int n)
{
    const char *c = a[0];
    if (!strcmp(c, "open") && n > 1) {
        int fd = open(a[1], O_RDONLY);
        result(c, fd >= 0);
        if (fd >= 0)
            close(fd);
    } else if (!strcmp(c, "fopen") && n > 1) {
        FILE *f = fopen(a[1], "r");
        result(c, f != NULL);
        if (f)
            fclose(f);
    } else if (!strcmp(c, "stat") && n > 1) {
        struct stat st;
        result(c, stat(a[1], &st) == 0);
    } else if (!strcmp(c, "statloop") && n > 2) {
        struct stat st;
        long count = atol(a[2]);
        for (long i = 0; i < count; i++)
            stat(a[1], &st);
        result(c, 1);
    } else if (!strcmp(c, "list") && n > 1) {
        DIR *d = opendir(a[1]);
        result(c, d != NULL);
        if (d)
            closedir(d);
    } else if (!strcmp(c, "write") && n > 1) {
        int fd = open(a[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
        result(c, fd >= 0 && write(fd, "x\n", 2) == 2);
        if (fd >= 0)
            close(fd);
    } else if (!strcmp(c, "mkdir") && n > 1) {
        result(c, mkdir(a[1], 0755) == 0);
    } else if (!strcmp(c, "chdir") && n > 1) {
        result(c, chdir(a[1]) == 0);
    } else if (!strcmp(c, "tcp") && n > 1) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sin = {.sin_family = AF_INET};
        sin.sin_port = htons((unsigned short)atoi(a[1]));
        sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        result(c, connect(s, (struct sockaddr *)&sin, sizeof sin) == 0);
        close(s);
    } else if (!strcmp(c, "unix") && n > 1) {
        int s = socket(AF_UNIX, SOCK_STREAM, 0);
        struct sockaddr_un sun = {.sun_family = AF_UNIX};
        strncpy(sun.sun_path, a[1], sizeof sun.sun_path - 1);
        result(c, connect(s, (struct sockaddr *)&sun, sizeof sun) == 0);
        close(s);
    } else if (!strcmp(c, "dlopen") && n > 1) {
        void *h = dlopen(a[1], RTLD_NOW);
        result(c, h != NULL);
    } else if (!strcmp(c, "closerange")) {
        /* the libc function (glibc 2.34), as Python's subprocess calls it */
        int (*cr)(unsigned, unsigned, int) =
            (int (*)(unsigned, unsigned, int))dlsym(RTLD_DEFAULT, "close_range");
        result(c, cr && cr(3, ~0u, 0) == 0);
    } else if (!strcmp(c, "closefrom")) {
        void (*cf)(int) = (void (*)(int))dlsym(RTLD_DEFAULT, "closefrom");
        if (cf)
            cf(3);
        result(c, cf != NULL);
    } else if (!strcmp(c, "closeall")) {
        for (int fd = 3; fd < 1024; fd++)
            close(fd);
        result(c, 1);
    } else if (!strcmp(c, "dup2") && n > 1) {
        result(c, dup2(1, atoi(a[1])) >= 0);
    } else if (!strcmp(c, "spawn") && n > 1) {
        pid_t pid;
        int status = 0;
        fflush(stdout);
        int r = posix_spawn(&pid, a[1], NULL, NULL, a + 1, environ);
        if (r == 0)
            waitpid(pid, &status, 0);
        errno = r;
        result(c, r == 0);
    } else if (!strcmp(c, "system") && n > 1) {
        fflush(stdout);
        result(c, system(a[1]) == 0);
    } else if (!strcmp(c, "run") && n > 1) {
        result(c, run_child(a + 1));
    } else {
        fprintf(stderr, "report_probe: bad command %s\n", c);
        return 2;
    }
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv)
{
    int i = 1;
    while (i < argc) {
        int j = i;
        int rest = !strcmp(argv[i], "run");
        while (j < argc && (rest || strcmp(argv[j], ",")))
            j++;
        char *saved = argv[j];
        argv[j] = NULL;
        int r = one(argv + i, j - i);
        argv[j] = saved;
        if (r)
            return r;
        i = j + 1;
    }
    return 0;
}
