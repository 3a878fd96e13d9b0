/* Pack wrappers: <root>/bin/nbsandbox-kernel-install.
 *
 *   nbsandbox-kernel-install [--user | --prefix DIR] [--name NAME]
 *                            [--display-name TEXT] [--engine ENGINE]
 *
 * Writes a kernelspec (kernel.json and the logos) whose argv runs the pack's
 * python wrapper by its absolute path: jupyter_client copies kernelspec
 * directories, so a spec cannot refer to the pack relatively.  Needs neither
 * nbsandbox nor Python on the host.  The file is written beside its final
 * name and renamed: never half-written.
 */
#include "wrap.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char usage[] =
    "usage: nbsandbox-kernel-install [--user | --prefix DIR] [--name NAME] "
    "[--display-name TEXT] [--engine ENGINE]\n"
    "  Register this pack's Python as a Jupyter kernel (no nbsandbox needed).\n"
    "  --user          in your Jupyter data directory (the default):\n"
    "                  $JUPYTER_DATA_DIR, else ${XDG_DATA_HOME:-~/.local/share}/jupyter\n"
    "  --prefix DIR    in DIR/share/jupyter (e.g. a virtual environment or sys.prefix)\n"
    "  --name NAME     kernel name (letters, digits, '.', '_', '-'); default: nbsandbox-<dir>\n"
    "  --engine E      engine of the kernel (NBSANDBOX_ENGINE in its env): default,\n"
    "                  performance, auto, host, userns, fakechroot, proot\n";

static _Noreturn void fail(const char *fmt, const char *arg)
{
    fputs("nbsandbox-kernel-install: ", stderr);
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
    exit(2);
}

/* A JSON string; false if TEXT is not UTF-8. */
static bool json_string(struct sbuf *out, const char *text)
{
    sbuf_add(out, "\"");
    for (const unsigned char *p = (const unsigned char *)text; *p;) {
        unsigned c = *p;
        if (c < 0x80) {
            char one[8];
            if (c == '"' || c == '\\')
                snprintf(one, sizeof one, "\\%c", c);
            else if (c < 0x20)
                snprintf(one, sizeof one, "\\u%04x", c);
            else
                snprintf(one, sizeof one, "%c", c);
            sbuf_add(out, one);
            p++;
            continue;
        }
        size_t len = c >= 0xf0 && c < 0xf5 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 && c < 0xe0 ? 2 : 0;
        if (!len)
            return false;
        char seq[5] = {0};
        for (size_t k = 0; k < len; k++) {
            if (k && (p[k] & 0xc0) != 0x80)
                return false;
            seq[k] = (char)p[k];
        }
        sbuf_add(out, seq);
        p += len;
    }
    sbuf_add(out, "\"");
    return true;
}

static void mkdirs(char *path)
{
    for (char *p = path + 1;; p++) {
        if (*p != '/' && *p)
            continue;
        char saved = *p;
        *p = '\0';
        if (mkdir(path, 0755) != 0 && errno != EEXIST) {
            int e = errno;
            fprintf(stderr, "nbsandbox-kernel-install: cannot create %s: %s; choose another "
                    "place with --prefix DIR, or --user\n", path, strerror(e));
            exit(1);
        }
        *p = saved;
        if (!saved)
            break;
    }
}

static void write_file(const char *dir, const char *name, const void *data, size_t len)
{
    char tmp[PATH_MAX], dest[PATH_MAX];
    path_fmt(dest, "%s/%s", dir, name);
    path_fmt(tmp, "%s/.%s.tmp-%ld", dir, name, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0 || write_all(fd, data, len) != 0 || fsync(fd) != 0 || close(fd) != 0 ||
        rename(tmp, dest) != 0) {
        int e = errno;
        unlink(tmp);
        fprintf(stderr, "nbsandbox-kernel-install: cannot write %s: %s; choose another place "
                "with --prefix DIR, or --user\n", dest, strerror(e));
        exit(1);
    }
}

static void copy_file(const char *src, const char *dir, const char *name)
{
    int fd = open(src, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return; /* a logo is optional */
    char buf[65536];
    size_t total = 0;
    char *bytes = NULL;
    for (;;) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        bytes = realloc(bytes, total + (size_t)r);
        if (!bytes)
            die_err(ENOMEM, NULL, "allocating memory");
        memcpy(bytes + total, buf, (size_t)r);
        total += (size_t)r;
        if (total > (1 << 24))
            break;
    }
    close(fd);
    write_file(dir, name, bytes ? bytes : "", total);
    free(bytes);
}

static bool valid_name(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '.' || *s == '_' || *s == '-'))
            return false;
    return true;
}

static void default_name(const struct wrap_conf *conf, char *out, size_t size)
{
    const char *base = strrchr(conf->root, '/');
    base = base ? base + 1 : conf->root;
    size_t n = 0;
    n += (size_t)snprintf(out, size, "nbsandbox-");
    bool dash = true;
    for (const char *p = base; *p && n + 1 < size; p++) {
        char ch = *p >= 'A' && *p <= 'Z' ? (char)(*p - 'A' + 'a') : *p;
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' ||
                  ch == '-';
        if (!ok) {
            if (!dash)
                out[n++] = '-';
            dash = true;
            continue;
        }
        out[n++] = ch;
        dash = false;
    }
    while (n > 10 && strchr("-._", out[n - 1]))
        n--;
    out[n] = '\0';
    if (n == 10)
        snprintf(out, size, "nbsandbox-root");
}

static const char *const engines[] = {"default", "performance", "auto", "host",
                                      "userns", "fakechroot", "proot"};

int cmd_kernel_install(const struct wrap_conf *conf, int argc, char **argv)
{
    const char *prefix = NULL, *name = NULL, *engine = NULL, *display = NULL;
    bool user = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(usage, stdout);
            return 0;
        }
        if (!strcmp(a, "--user")) {
            user = true;
            continue;
        }
        const char **slot = !strcmp(a, "--prefix")         ? &prefix
                            : !strcmp(a, "--name")         ? &name
                            : !strcmp(a, "--engine")       ? &engine
                            : !strcmp(a, "--display-name") ? &display
                                                           : NULL;
        if (!slot)
            fail("unknown argument %s; see nbsandbox-kernel-install --help", a);
        if (i + 1 >= argc || !*argv[i + 1])
            fail("%s needs a value; see nbsandbox-kernel-install --help", a);
        *slot = argv[++i];
    }
    if (user && prefix)
        fail("%s: give --user or --prefix DIR, not both", "--user");
    if (!conf->kernel_python)
        fail("this pack (%s) has no Python with ipykernel, so it cannot run a kernel; pack an "
             "environment that has it (pip install ipykernel, then nbsandbox pack)", conf->root);
    char defname[256];
    if (!name) {
        default_name(conf, defname, sizeof defname);
        name = defname;
    }
    if (!valid_name(name))
        fail("kernel name '%s' may only contain letters, digits, '.', '_', '-'", name);
    if (engine) {
        bool known = false;
        for (size_t k = 0; k < sizeof engines / sizeof *engines; k++)
            known |= !strcmp(engine, engines[k]);
        if (!known)
            fail("unknown engine '%s'; valid engines: default, performance, auto, host, userns, "
                 "fakechroot, proot", engine);
    }

    char dir[PATH_MAX];
    if (prefix) {
        if (prefix[0] != '/') {
            char cwd[PATH_MAX];
            if (!getcwd(cwd, sizeof cwd))
                fail("cannot tell the current directory to place %s in; give an absolute path",
                     prefix);
            path_fmt(dir, "%s/%s/share/jupyter/kernels/%s", cwd, prefix, name);
        } else {
            path_fmt(dir, "%s/share/jupyter/kernels/%s", prefix, name);
        }
    } else {
        const char *data = getenv("JUPYTER_DATA_DIR");
        const char *xdg = getenv("XDG_DATA_HOME");
        const char *home = getenv("HOME");
        if (data && *data)
            path_fmt(dir, "%s/kernels/%s", data, name);
        else if (xdg && *xdg)
            path_fmt(dir, "%s/jupyter/kernels/%s", xdg, name);
        else if (home && *home == '/')
            path_fmt(dir, "%s/.local/share/jupyter/kernels/%s", home, name);
        else
            fail("%s: HOME is not set; give --prefix DIR, or set HOME or JUPYTER_DATA_DIR",
                 "--user");
    }

    char python[PATH_MAX];
    path_fmt(python, "%s/bin/%s", conf->root, conf->kernel_python);
    if (access(python, X_OK) != 0)
        fail("%s is missing from the pack; unpack it again", python);

    struct sbuf j = {0};
    sbuf_add(&j, "{\n \"argv\": [\n  ");
    if (!json_string(&j, python))
        fail("the pack's path %s is not UTF-8 text, which kernel.json cannot hold; move the "
             "pack to another directory", conf->root);
    sbuf_add(&j, ",\n  \"-m\",\n  \"ipykernel_launcher\",\n  \"-f\",\n  \"{connection_file}\","
                 "\n  \"--HistoryManager.hist_file=:memory:\"\n ],\n \"display_name\": ");
    struct sbuf disp = {0};
    if (display)
        sbuf_add(&disp, display);
    else {
        const char *base = strrchr(conf->root, '/');
        sbuf_addf(&disp, "%s (pack: %s)", conf->kernel_display, base ? base + 1 : conf->root);
    }
    if (!json_string(&j, disp.data))
        fail("the display name %s is not UTF-8 text", disp.data);
    sbuf_add(&j, ",\n \"language\": ");
    json_string(&j, conf->kernel_language);
    sbuf_add(&j, ",\n \"interrupt_mode\": \"signal\",\n");
    if (engine) {
        sbuf_add(&j, " \"env\": {\n  \"NBSANDBOX_ENGINE\": ");
        json_string(&j, engine);
        sbuf_add(&j, "\n },\n");
    }
    sbuf_add(&j, " \"metadata\": {\n  \"debugger\": true,\n  \"nbsandbox\": {\n   \"root\": ");
    json_string(&j, conf->root);
    sbuf_add(&j, ",\n   \"prefix\": ");
    json_string(&j, conf->prefix);
    sbuf_add(&j, ",\n   \"wrapper\": ");
    json_string(&j, python);
    sbuf_add(&j, "\n  }\n }\n}\n");

    mkdirs(dir);
    for (size_t i = 0; i < conf->kernel_files.len; i++) {
        char host[PATH_MAX];
        wrap_host_path(conf, conf->kernel_files.items[i], host);
        const char *base = strrchr(host, '/');
        copy_file(host, dir, base + 1);
    }
    write_file(dir, "kernel.json", j.data, j.len);
    printf("Installed kernelspec %s in %s\n", name, dir);
    return 0;
}
