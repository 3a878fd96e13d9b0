/* pathmap: the pure core of the fakechroot engine.
 *
 * Everything here is a pure function of its arguments: no libc calls, no
 * global state, no allocation, fixed-size buffers only.  The same object file
 * is linked into the audit module (which has no libc at all), the preload
 * library, the standalone test harness and the libFuzzer target.
 *
 * Words: a *sandbox path* is what the program sees (/gnu/store/...); a *host
 * path* is where the file really is (/home/u/packs/py/gnu/store/...).  A
 * *mapping* says "sandbox directory FROM is host directory TO".
 */
#ifndef NBS_PATHMAP_H
#define NBS_PATHMAP_H

#include <stddef.h>

#define PM_PATH_MAX 4096       /* bytes, including the terminating NUL (Linux PATH_MAX) */
#define PM_MAX_MAPS 32
#define PM_MAX_SHELLS 16
#define PM_MAX_ENV 8
#define PM_MAX_LDSO 4
#define PM_MAX_LIBS 64         /* host libraries resolved by name (a GPU driver's) */
#define PM_ARENA 32768         /* decoded strings of one configuration */
#define PM_CONFIG_MAX 65536    /* longest accepted configuration text */
#define PM_MAX_SYMLINKS 40     /* as Linux */
#define PM_SHEBANG_MAX 256     /* Linux's BINPRM_BUF_SIZE */
#define PM_MAX_INTERP_DEPTH 4  /* Linux's BINPRM_MAX_RECURSION */

/* mapping flags */
#define PM_RO 1u        /* writes fail with EROFS */
#define PM_STORE 2u     /* a program whose ELF interpreter is here is a store program */
#define PM_ANCESTORS 4u /* TO ends with FROM: missing ancestors of FROM are taken from the root */

/* table flags */
#define PM_CFG_COMPAT 1u /* never use ld.so's --argv0/--preload (tests of the old-glibc path) */

/* ld.so features */
#define PM_LDSO_ARGV0 1u   /* --argv0 (glibc >= 2.33) */
#define PM_LDSO_PRELOAD 2u /* --preload (glibc >= 2.30) */
#define PM_LDSO_KNOWN 0x80u

struct pm_map {
    const char *from;
    const char *to;
    size_t from_len;
    size_t to_len;
    size_t anc_len; /* PM_ANCESTORS: length of TO without FROM (the root), else 0 */
    unsigned flags;
    int nested;     /* another mapping's FROM lies under this one's */
};

struct pm_ldso {
    const char *host;
    unsigned features;
};

/* A library name the loader resolves to a host file (a GPU driver's): only
 * this exact name, nothing else of the host. */
struct pm_lib {
    const char *name; /* e.g. libcuda.so.1: no '/' */
    const char *host; /* absolute host path */
};

struct pm_table {
    unsigned n;
    unsigned flags;
    struct pm_map map[PM_MAX_MAPS];
    const char *audit;   /* host path of the audit module */
    const char *preload; /* host path(s) of the preload library, ':'-separated */
    unsigned nshell;
    const char *shell[PM_MAX_SHELLS]; /* host programs that get the preload */
    unsigned nenv;
    const char *env[PM_MAX_ENV]; /* NAME=value the engine added for store programs */
    unsigned nldso;
    struct pm_ldso ldso[PM_MAX_LDSO];
    unsigned nlib;
    struct pm_lib lib[PM_MAX_LIBS];
    size_t used;
    char arena[PM_ARENA];
};

/* ---- small string helpers (also used by the audit module, which has no libc) ---- */
size_t pm_strlen(const char *s);
size_t pm_strnlen(const char *s, size_t max);
int pm_streq(const char *a, const char *b);
int pm_startswith(const char *s, const char *prefix);
/* Copy NUL-terminated src to dst of size n; -1 if it does not fit (dst then holds ""). */
int pm_copy(char *dst, size_t n, const char *src);
const char *pm_basename(const char *path);

/* ---- configuration ---- */
/* Parse the text of NBS_FC_CONFIG (LEN bytes, need not be NUL-terminated).
 * 0 on success, -EINVAL when malformed, -E2BIG when a limit is exceeded. */
int pm_config_parse(struct pm_table *t, const char *text, size_t len);

/* ---- translation ---- */
/* The mapping whose FROM contains absolute sandbox path PATH (longest match,
 * whole components; repeated slashes and "." components are skipped), or NULL.
 * *rest is set to the part of PATH after FROM (starts with '/' or is ""). */
const struct pm_map *pm_match(const struct pm_table *t, const char *path, const char **rest);

/* Results of pm_to_host */
#define PM_ASIS 0    /* not mapped: use PATH itself */
#define PM_MAPPED 1  /* OUT holds the host path */
#define PM_RESOLVE 2 /* mapped, but a ".." component needs pm_resolve() */
/* Translate an absolute sandbox path.  *mapping (may be NULL) gets the
 * mapping used.  -ENAMETOOLONG when OUT (of size OUTSZ) is too small. */
int pm_to_host(const struct pm_table *t, const char *path, char *out, size_t outsz,
               const struct pm_map **mapping);

/* The same without building the host path, for a caller that holds a
 * descriptor of the mapping's TO directory: *mapping as above and, when
 * mapped, *rel set to the part of PATH after FROM without its leading
 * slashes (a path relative to TO; "" for TO itself).  PM_ASIS, PM_MAPPED or
 * PM_RESOLVE (a ".." component: *rel must not be used). */
int pm_to_rel(const struct pm_table *t, const char *path, const struct pm_map **mapping,
              const char **rel);

/* Sandbox view of a host path: 1 and OUT set when HOST lies under a mapping's
 * TO (or is an ancestor directory taken from a root), 0 when not mapped
 * (OUT untouched), -ENAMETOOLONG. */
int pm_to_sandbox(const struct pm_table *t, const char *host, char *out, size_t outsz);

/* Whether sandbox PATH (clean: no "."/".."/"//") is a proper ancestor of a mapping's FROM. */
const struct pm_map *pm_ancestor_of(const struct pm_table *t, const char *path, size_t len);

/* Whether PATH has a ".." component. */
int pm_has_dotdot(const char *path);

/* ---- resolution in the sandbox's namespace ---- */
struct pm_fs {
    void *ctx;
    /* readlink(2) of a host path: the length of the target (>= 0, not
     * NUL-terminated) for a symbolic link, -EINVAL for anything else that
     * exists, or another -errno. */
    long (*readlink)(void *ctx, const char *host, char *buf, size_t bufsz);
};

#define PM_FOLLOW 1u /* follow a symbolic link in the last component */

/* Resolve absolute sandbox PATH like the kernel would in a mount namespace
 * where every mapping is bound at its FROM: symbolic links are followed in
 * the sandbox's view (absolute targets under FROM land under TO), ".." is
 * applied after links.  The last component is followed only with PM_FOLLOW
 * (or when PATH ends with '/').  A missing last component is not an error.
 * Writes the host path to OUT_HOST and, when OUT_SBX is not NULL, the
 * resolved sandbox path.  Returns 0 or -errno (ENOENT, ENOTDIR, ELOOP,
 * ENAMETOOLONG, EACCES...). */
int pm_resolve(const struct pm_table *t, const struct pm_fs *fs, const char *path, unsigned flags,
               char *out_host, size_t host_sz, char *out_sbx, size_t sbx_sz);

/* Join directory DIR (absolute) and relative PATH into OUT. -ENAMETOOLONG. */
int pm_join(char *out, size_t outsz, const char *dir, const char *path);

/* ---- program files ---- */
/* Parse a "#!" line as Linux does.  BUF holds the first N bytes of the file
 * (at most PM_SHEBANG_MAX are looked at).  Returns 1 (INTERP and, when
 * *has_arg, ARG set), 0 when BUF does not start with "#!", or the error
 * execve gives: -ENOEXEC (no interpreter), -EACCES (an empty name, as after
 * "#!" and a NUL), or -ENAMETOOLONG when INTERP or ARG is too small. */
int pm_shebang(const char *buf, size_t n, char *interp, size_t isz, char *arg, size_t asz,
               int *has_arg);

/* Find PT_INTERP in the ELF header and program headers held in HDR (N bytes).
 * Returns 1 with *off and *len set, 0 for an ELF file without an interpreter
 * (static), -ENOEXEC for what is not a 64-bit little-endian ELF executable,
 * -E2BIG when the program headers are not within the N bytes. */
int pm_elf_interp(const unsigned char *hdr, size_t n, unsigned long *off, unsigned long *len);

/* Scan for ld.so option names in a chunk of the ld.so file: returns the
 * PM_LDSO_* bits whose option string occurs in BUF. */
unsigned pm_ldso_scan(const char *buf, size_t n);

/* ---- exec command building ---- */
#define PM_EXEC_HOST 0         /* run as is, with the engine's variables removed */
#define PM_EXEC_HOST_PRELOAD 1 /* host program that gets the preload (shells) */
#define PM_EXEC_STORE 2        /* through the store's ld.so */

#define PM_ENV_PREFIX "NBS_FC_"
#define PM_ENV_CONFIG "NBS_FC_CONFIG="
#define PM_ENV_EXE "NBS_FC_EXE="
#define PM_ENV_ARGV0 "NBS_FC_ARGV0="
#define PM_ENV_CWD "NBS_FC_CWD="

struct pm_exec_in {
    const struct pm_table *t;
    int kind;
    const char *path;     /* what to execve: host path of the program, or ld.so for STORE */
    const char *program;  /* STORE: host path of the ELF program given to ld.so */
    const char *argv0;    /* argv[0] the program sees */
    unsigned features;    /* STORE: PM_LDSO_* of that ld.so */
    const char *const *pre; /* arguments between argv[0] and ARGV[1...] (from "#!" lines) */
    size_t npre;
    const char *const *argv; /* the caller's argv (argv[0] is replaced by ARGV0), may be NULL */
    const char *const *envp; /* the caller's environment, may be NULL */
    const char *config_var;  /* "NBS_FC_CONFIG=..." */
    const char *exe_var;     /* STORE: "NBS_FC_EXE=..." */
    /* When the access report is on (else NULL): "NBSANDBOX_REPORT_FD=..." and
     * "NBSANDBOX_REPORT_SKIP=...", added where ENVP lacks them; a host
     * program then keeps the preload library too (a pure recorder there). */
    const char *report_fd_var;
    const char *report_skip_var;
};

/* Number of entries of a NULL-terminated vector (NULL counts as 0). */
size_t pm_vlen(const char *const *v);
/* Room the output vectors need (entries, including the NULL). */
size_t pm_exec_argv_room(const struct pm_exec_in *in);
size_t pm_exec_envp_room(const struct pm_exec_in *in);
/* Build the argv and environment of the execve.  STR (STRSZ bytes) receives
 * generated strings.  0, or -E2BIG when something does not fit. */
int pm_build_exec(const struct pm_exec_in *in, const char **argv, size_t argv_cap,
                  const char **envp, size_t envp_cap, char *str, size_t strsz);

/* Whether environment entry E is one of the engine's own (NBS_FC_*). */
int pm_env_is_ours(const char *e);
/* LD_PRELOAD value VALUE without the leading PRELOAD entry: returns a
 * pointer into VALUE after it, or NULL when VALUE does not start with it. */
const char *pm_preload_strip(const char *value, const char *preload);

#endif
