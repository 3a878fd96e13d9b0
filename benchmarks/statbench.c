/* statbench: time stat() on each path given, N times each.
 *
 *   statbench N PATH...
 *
 * Prints one line per path: "<path> <nanoseconds per call>".  Exits 1 if a
 * stat() fails, so a benchmark never times an error path by mistake. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fputs("usage: statbench N PATH...\n", stderr);
        return 2;
    }
    long n = strtol(argv[1], NULL, 10);
    if (n <= 0) {
        fputs("statbench: N must be a positive number\n", stderr);
        return 2;
    }
    for (int i = 2; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            perror(argv[i]);
            return 1;
        }
        double t0 = now_ns();
        for (long k = 0; k < n; k++)
            stat(argv[i], &st);
        printf("%s %.1f\n", argv[i], (now_ns() - t0) / (double)n);
    }
    return 0;
}
