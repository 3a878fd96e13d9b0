/* Pack wrappers: nbs-launch started under another name, from a pack's bin/.
 *
 * A pack made by `nbsandbox pack` holds one static nbs-launch binary,
 * <root>/.nbsandbox/nbs-launch, and a hard link to it in <root>/bin/ for every
 * program of the pack's profile (plus bin/nbsandbox-kernel-install).  Started
 * as <root>/bin/NAME, it finds the root from its own location
 * (/proc/self/exe: symbolic links to it anywhere are resolved by the
 * kernel), reads <root>/.nbsandbox/launch.conf (written by the packer) and
 * starts NAME through an engine, as nbsandbox's Python engines would: see
 * docs/packs.md, "Self-running packs".
 */
#ifndef NBS_WRAP_H
#define NBS_WRAP_H

#include "nbs.h"

/* The configuration the packer writes, relative to the root. */
#define WRAP_CONF ".nbsandbox/launch.conf"
#define WRAP_LAUNCHER ".nbsandbox/nbs-launch"
#define WRAP_AUDIT ".nbsandbox/nbs-audit.so"
#define WRAP_PRELOAD ".nbsandbox/nbs-preload.so"
#define KERNEL_INSTALL_NAME "nbsandbox-kernel-install"

/* One program of the profile, as the fakechroot engine must start it (the
 * packer follows its #! lines and symbolic links once, at pack time). */
struct wrap_program {
    char *name;     /* the name in bin/ */
    char *elf;      /* sandbox path of the ELF file that runs */
    char *argv0;    /* argv[0] given to it ("-": the program's profile path) */
    char *ldso;     /* sandbox path of its loader, NULL when refuse is set */
    int features;   /* LDSO_ARGV0 | LDSO_PRELOAD */
    char *refuse;   /* why the fakechroot engine cannot run it, or NULL */
    struct strvec pre; /* arguments before the caller's (interpreters of scripts) */
};

#define LDSO_ARGV0 1
#define LDSO_PRELOAD 2

struct wrap_conf {
    char root[PATH_MAX];  /* host path of the pack's root, no trailing slash */
    char store[PATH_MAX]; /* host path of the store: root + prefix */
    char *prefix;         /* e.g. /gnu/store */
    char *profile;        /* sandbox path of the profile item */
    char *kernel_python;  /* name in bin/ of the kernel's python, or NULL */
    char *kernel_display; /* display name of the kernel */
    char *kernel_language;
    struct strvec kernel_files; /* sandbox paths of logo files */
    struct wrap_program *programs;
    size_t nprograms, cap;
    /* The store glibc's own GCONV_PATH, LOCPATH...: "LDSO\tNAME\tSANDBOX-PATH". */
    struct strvec glibc_defaults;
};

/* wrap_conf.c */
void wrap_conf_read(struct wrap_conf *conf, const char *exe);
const struct wrap_program *wrap_conf_program(const struct wrap_conf *conf, const char *name);
/* The sandbox path recorded as variable NAME's default for loader LDSO, or NULL. */
const char *wrap_glibc_default(const struct wrap_conf *conf, const char *ldso, const char *name);
/* The host path of a sandbox path under the prefix. */
void wrap_host_path(const struct wrap_conf *conf, const char *sandbox, char out[PATH_MAX]);

/* A growable string (freed never: the process execs). */
struct sbuf {
    char *data;
    size_t len, cap;
};
void sbuf_add(struct sbuf *b, const char *text);
void sbuf_addf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Percent-escape a configuration token (as nbsandbox.engines.fakechroot does). */
void sbuf_add_escaped(struct sbuf *b, const char *text);

/* wrap_fakechroot.c: exec the program through the store's ld.so. */
int wrap_exec_fakechroot(const struct wrap_conf *conf, const struct wrap_program *prog,
                         const char *profile_path, int argc, char **argv);
/* NULL, or why the fakechroot engine cannot run PROG here. */
const char *wrap_fakechroot_refuses(const struct wrap_conf *conf,
                                    const struct wrap_program *prog, char *buf, size_t size);

/* wrap.c */
int cmd_wrap(const char *exe, int argc, char **argv);
bool wrap_invoked(const char *exe);

/* kernel_install.c */
int cmd_kernel_install(const struct wrap_conf *conf, int argc, char **argv);

/* Set or replace a variable of the environment; die on failure. */
void xsetenv(const char *name, const char *value);

#endif
