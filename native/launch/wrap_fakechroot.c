/* Pack wrappers: the fakechroot engine.
 *
 * The same command as nbsandbox.engines.fakechroot.FakechrootEngine.command
 * builds for a plan without binds, hidden paths or an isolated home:
 *
 *   <root><ldso> [--argv0 ARGV0] --audit A [--preload P] <root><elf> PRE... ARG...
 *
 * with A and P the pack's own copies of the audit module and the preload
 * library (<root>/.nbsandbox/), and NBS_FC_CONFIG, NBS_FC_EXE, NBS_FC_CWD set
 * as the preload library expects them (native/fakechroot/pathmap.c).
 */
#include "wrap.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

extern char **environ;

#define ENV_PREFIX "NBS_FC_"

/* nbsandbox.engines.fakechroot.DEFAULT_SHELLS */
static const char *const shells[] = {"sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "env"};

static void lib_paths(const struct wrap_conf *conf, char audit[PATH_MAX], char preload[PATH_MAX])
{
    path_fmt(audit, "%s/" WRAP_AUDIT, conf->root);
    path_fmt(preload, "%s/" WRAP_PRELOAD, conf->root);
}

const char *wrap_fakechroot_refuses(const struct wrap_conf *conf,
                                    const struct wrap_program *prog, char *buf, size_t size)
{
#if !defined(__x86_64__) && !defined(__aarch64__)
    (void)conf;
    (void)prog;
    snprintf(buf, size, "the fakechroot engine supports x86_64 and aarch64 hosts only");
    return buf;
#else
    if (prog->refuse)
        return prog->refuse;
    char audit[PATH_MAX], preload[PATH_MAX], ldso[PATH_MAX];
    lib_paths(conf, audit, preload);
    const char *libs[] = {audit, preload};
    for (size_t i = 0; i < 2; i++) {
        if (access(libs[i], R_OK) != 0) {
            snprintf(buf, size, "%s is missing from the pack (%s); unpack the pack again",
                     libs[i], strerror(errno));
            return buf;
        }
    }
    if (strpbrk(conf->root, ": ")) {
        /* ld.so splits --audit on ':', --preload and LD_PRELOAD on ':' and ' '. */
        snprintf(buf, size, "the pack's path %s contains ':' or a space, which ld.so cannot "
                 "take; move the pack to a path without them", conf->root);
        return buf;
    }
    wrap_host_path(conf, prog->ldso, ldso);
    struct stat st;
    if (stat(ldso, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(buf, size, "the loader %s of %s is missing from the root (%s); the pack is "
                 "incomplete", prog->ldso, prog->elf, ldso);
        return buf;
    }
    return NULL;
#endif
}

/* GCONV_PATH, LOCPATH and GUIX_LOCPATH for the store's glibc, as
 * nbsandbox.engines.fakechroot._glibc_env: host paths, because glibc opens
 * those files with internal calls that no preload library sees.  The
 * defaults (the glibc's own directories) are computed by the packer with
 * that very function (launch.conf's glibc-default records). */
static void glibc_env(const struct wrap_conf *conf, const char *ldso, struct sbuf *config)
{
    static const char *const names[] = {"GCONV_PATH", "LOCPATH", "GUIX_LOCPATH"};
    size_t plen = strlen(conf->prefix);
    for (size_t i = 0; i < 3; i++) {
        const char *value = getenv(names[i]);
        struct sbuf v = {0};
        if (!value) {
            /* The packer recorded which of the glibc's directories exist. */
            const char *sbx = wrap_glibc_default(conf, ldso, names[i]);
            if (!sbx)
                continue;
            char host[PATH_MAX];
            wrap_host_path(conf, sbx, host);
            sbuf_add(&v, host);
        } else {
            bool changed = false;
            char *copy = xstrdup(value);
            char *rest = copy;
            for (bool first = true; rest; first = false) {
                char *part = strsep(&rest, ":");
                if (!first)
                    sbuf_add(&v, ":");
                if (!strncmp(part, conf->prefix, plen) && (!part[plen] || part[plen] == '/')) {
                    sbuf_add(&v, conf->store);
                    sbuf_add(&v, part + plen);
                    changed = true;
                } else {
                    sbuf_add(&v, part);
                }
            }
            free(copy);
            if (!changed)
                continue;
        }
        xsetenv(names[i], v.data);
        sbuf_add(config, "env ");
        struct sbuf kv = {0};
        sbuf_addf(&kv, "%s=%s", names[i], v.data);
        sbuf_add_escaped(config, kv.data);
        sbuf_add(config, "\n");
    }
}

int wrap_exec_fakechroot(const struct wrap_conf *conf, const struct wrap_program *prog,
                         const char *profile_path, int argc, char **argv)
{
    char audit[PATH_MAX], preload[PATH_MAX], ldso[PATH_MAX], elf[PATH_MAX], cwd[PATH_MAX];
    lib_paths(conf, audit, preload);
    wrap_host_path(conf, prog->ldso, ldso);
    wrap_host_path(conf, prog->elf, elf);
    if (!getcwd(cwd, sizeof cwd))
        strcpy(cwd, "/");
    const char *argv0 = prog->argv0 ? prog->argv0 : profile_path;

    /* The caller's own NBS_FC_ variables would confuse the preload library. */
    for (size_t i = 0; environ[i];) {
        if (!strncmp(environ[i], ENV_PREFIX, strlen(ENV_PREFIX))) {
            char name[256];
            size_t n = strcspn(environ[i], "=");
            snprintf(name, sizeof name, "%.*s", (int)(n < sizeof name ? n : sizeof name - 1),
                     environ[i]);
            if (unsetenv(name) != 0)
                die_err(errno, NULL, "unsetenv %s", name);
            continue;
        }
        i++;
    }

    struct sbuf config = {0};
    sbuf_add(&config, "nbs-fc 1\nmap rsa ");
    sbuf_add_escaped(&config, conf->prefix);
    sbuf_add(&config, " ");
    sbuf_add_escaped(&config, conf->store);
    sbuf_add(&config, "\naudit ");
    sbuf_add_escaped(&config, audit);
    sbuf_add(&config, "\npreload ");
    sbuf_add_escaped(&config, preload);
    sbuf_add(&config, "\n");
    for (size_t i = 0; i < sizeof shells / sizeof *shells; i++)
        sbuf_addf(&config, "shell %s\n", shells[i]);
    glibc_env(conf, prog->ldso, &config);
    sbuf_addf(&config, "ldso %d ", prog->features);
    sbuf_add_escaped(&config, ldso);
    sbuf_add(&config, "\n");
    xsetenv(ENV_PREFIX "CONFIG", config.data);
    xsetenv(ENV_PREFIX "EXE", prog->elf);
    xsetenv(ENV_PREFIX "CWD", cwd);

    char **args = xcalloc((size_t)argc + prog->pre.len + 8, sizeof *args);
    int n = 0;
    args[n++] = ldso;
    if (prog->features & LDSO_ARGV0) {
        args[n++] = "--argv0";
        args[n++] = (char *)argv0;
    } else {
        xsetenv(ENV_PREFIX "ARGV0", argv0);
    }
    args[n++] = "--audit";
    args[n++] = audit;
    if (prog->features & LDSO_PRELOAD) {
        args[n++] = "--preload";
        args[n++] = preload;
    } else {
        const char *old = getenv("LD_PRELOAD");
        struct sbuf p = {0};
        sbuf_add(&p, preload);
        if (old && *old) {
            sbuf_add(&p, ":");
            sbuf_add(&p, old);
        }
        xsetenv("LD_PRELOAD", p.data);
    }
    args[n++] = elf;
    for (size_t i = 0; i < prog->pre.len; i++)
        args[n++] = prog->pre.items[i];
    for (int i = 1; i < argc; i++)
        args[n++] = argv[i];
    return exec_program(ldso, args);
}
