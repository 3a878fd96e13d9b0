/* nbs-launch: shared declarations.
 *
 * nbs-launch is one small executable with three sub-commands (see
 * docs/architecture.md, section "nbs-launch"):
 *
 *   userns     user + mount namespace, then exec the program in place
 *   supervise  run a wrapper (PRoot, bubblewrap) and reproduce the status of
 *              the program it runs
 *   report     inside the wrapper: run the program, report pid and status
 */
#ifndef NBS_LAUNCH_H
#define NBS_LAUNCH_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* Exit statuses of the launcher itself, as a shell would use them. */
#define EXIT_SETUP_FAILED 125
#define EXIT_CANNOT_EXEC 126
#define EXIT_NOT_FOUND 127

/* The supervisor replaces an argument exactly equal to this by the number of
 * the status pipe's write end. */
#define STATUS_FD_PLACEHOLDER "@NBS_STATUS_FD@"

/* util.c ---------------------------------------------------------------- */

/* What messages start with: "nbs-launch", or "nbsandbox: NAME" in a pack's wrapper. */
extern const char *nbs_progname;

/* Print "nbs-launch: <what>\n" on stderr and _exit(125).  _exit, not exit:
 * die() is also called in forked children. */
_Noreturn void die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Print "nbs-launch: <what>: <strerror(err)>[ (<hint>)]\n" and _exit(125). */
_Noreturn void die_err(int err, const char *hint, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Like die_err, but only print (no exit). */
void warn_err(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* snprintf into a PATH_MAX buffer; die with ENAMETOOLONG if it does not fit. */
void path_fmt(char out[PATH_MAX], const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* write() all of buf, retrying on EINTR and short writes; 0 or -1/errno. */
int write_all(int fd, const void *buf, size_t len);

/* Read a small text file (e.g. under /proc/sys) into buf, without the
 * trailing newline; 0, or -1 with errno set. */
int read_small_file(const char *path, char *buf, size_t size);

/* Make sure fds 0, 1 and 2 are open (on /dev/null if not), so that pipes and
 * files we open never land there. */
void ensure_std_fds(void);

/* Parse a non-negative decimal int; false if malformed or out of range. */
bool parse_int(const char *s, int *out);

/* malloc/calloc/strdup that die on failure. */
void *xcalloc(size_t n, size_t size);
char *xstrdup(const char *s);

/* A growable array of strings / dev_t, freed never (the process execs). */
struct strvec {
    char **items;
    size_t len, cap;
};
void strvec_push(struct strvec *v, const char *s);

/* Execute FILE with ARGV and the current environment, searching PATH as
 * execvp does when FILE has no slash, but never falling back to a shell.
 * Returns only on failure, after printing one line on stderr, with the
 * status a shell would use: 127 (not found) or 126 (cannot execute). */
int exec_program(const char *file, char *const argv[]);

/* Leave with the same wait status as a child: the same exit code, or death by
 * the same signal (without a core dump). */
_Noreturn void reproduce_status(int status);

/* Sub-commands ---------------------------------------------------------- */

int cmd_userns(int argc, char **argv);
int cmd_supervise(int argc, char **argv);
int cmd_report(int argc, char **argv);

/* userns.c: unshare a user + mount namespace and map our uid/gid; dies on failure. */
void enter_user_namespace(void);

/* userns_view.c: build the sandbox's mount tree (see there). */
enum view_op_kind { OP_STORE, OP_BIND, OP_RO_BIND, OP_HIDE, OP_TMPFS };

struct view_op {
    enum view_op_kind kind;
    const char *option; /* "--store" ... */
    char what[256];     /* "--store HOSTDIR:PREFIX", for messages (may be cut) */
    const char *src;    /* host path (OP_STORE, OP_BIND, OP_RO_BIND) */
    const char *dst;    /* path inside the sandbox */
    int srcfd;          /* O_PATH fd of src, opened in the new namespace */
    bool src_is_dir;
};

/* Called in a fresh user + mount namespace: build the new root, pivot into it.
 * Returns with the process root and cwd at the new "/". */
void view_build(struct view_op *ops, size_t nops);

/* janitor.c: removal of the supervisor's scratch directory. */

/* Remove NAME (relative to directory fd DIRFD) recursively, without following
 * symlinks.  0, or -1 with errno of the first failure. */
int rmtree_at(int dirfd, const char *name);

/* Fork the janitor: a process in its own process group that ignores signals,
 * reads messages from LIFE_FD (the read end of a pipe only the supervisor
 * holds) and, when the pipe reaches EOF and the wrapper has exited, removes
 * PARENTFD/NAME if the supervisor created it and did not remove it itself. */
/* fork(): the child in a process group of its own (a ^C for the program is
 * forwarded to the program's group, not to the parent's), sent SIGKILL when
 * the parent dies. */
pid_t fork_tied(void);
pid_t janitor_start(int life_rd, int life_wr, int parentfd, const char *name, int close_fd);

/* Files a killed wrapper leaves outside the scratch directory, named
 * PREFIX<wrapper pid>-*, e.g. "/tmp/prooted-" for PRoot's extracted loader
 * and "/tmp/proot-" for its glue directory (PRoot releases that ignore
 * PROOT_TMP_DIR); the janitor removes them too.  Called once per PREFIX (at
 * most 4). */
void janitor_set_leftovers(const char *prefix);
void janitor_remove_leftovers(pid_t wrapper);

/* PRoot run by root makes the missing directories above a binding's
 * destination in the host's own tree (e.g. /gnu and /gnu/store, mode 000)
 * and removes them only when it exits normally.  PATH is the top one of
 * those; the janitor removes it after the wrapper when it is still such
 * glue.  Called once per PATH (at most 4). */
void janitor_set_glue(const char *path);
void janitor_remove_glue(void);

/* seccomp.c: make the system calls PRoot does not translate fail with
 * ENOSYS in this process and its descendants (sets no_new_privs).  0, or -1
 * with errno (EINVAL: the kernel has no seccomp filters). */
int seccomp_deny_untranslated(void);

/* landlock.c: restrictions applied just before exec (see there). */
struct landlock_req {
    bool active;
    bool no_network;
    struct strvec read, write;
    /* --allow-loader /DIR/PREFIX: DIR/PREFIX<parent pid>-* (PRoot's loader) are
     * added to READ. */
    const char *loader_prefix;
};
/* The kernel's Landlock ABI version, 0 if it has none. */
int landlock_abi(void);
/* If argv[*i] is --allow-read PATH, --allow-write PATH or --no-network, record
 * it in REQ, advance *i past its value and return true. */
bool landlock_option(struct landlock_req *req, int argc, char **argv, int *i);
/* Restrict this process and its future children as REQ says (nothing if no
 * option was given); dies if the kernel cannot. */
void landlock_apply(const struct landlock_req *req);
int cmd_restrict(int argc, char **argv);
int cmd_landlock_abi(void);

/* notify.c, notify_run.c: --report-seccomp (userns, report, restrict).  The
 * program runs under a seccomp filter that hands its path-taking and connect
 * system calls to a supervisor thread of the launcher (its parent), which
 * records them on $NBSANDBOX_REPORT_FD and lets them continue. */
#define REPORT_SECCOMP_OPTION "--report-seccomp"
/* While parsing: read and check $NBSANDBOX_REPORT_FD and $NBSANDBOX_REPORT_SKIP
 * (dies if the fd is missing or not writable). */
void report_seccomp_prepare(void);
/* Under PRoot (pid WRAPPER_PID): its loader's exec events are not recorded. */
void record_skip_loader(long wrapper_pid);
/* Before fork: the channel the listener travels on (SV[0] parent, SV[1] child). */
void report_seccomp_channel(int sv[2]);
/* In the child, last thing before exec: install the filter and hand its
 * listener to the parent over SOCK (closed).  Dies on failure. */
void report_seccomp_install(int sock);
/* In the parent: receive the listener over SOCK (closed) and serve it in a
 * thread of its own until no filtered process is left.  Nothing if the child
 * died before sending it. */
void report_seccomp_serve(int sock);
/* Serve listener FD in a thread (once per process; a second one is closed). */
void report_seccomp_start(int fd);
/* The descriptor an SCM_RIGHTS message in MSG carries, or -1. */
struct msghdr;
int report_seccomp_take_listener(struct msghdr *msg);
/* userns and restrict, which otherwise exec the program in place: fork it
 * under the filter (after REQ's Landlock restrictions), serve, forward
 * signals, and end with its status once it and its descendants have ended. */
_Noreturn void report_seccomp_run(const char *program, char **argv,
                                  const struct landlock_req *req);

/* reap.c: the program's descendants.  descendants_adopt() before starting
 * it (orphans in its tree become our children); descendants_end() once it
 * has ended: SIGTERM to each one left, SIGKILL after GRACE_MS, returns when
 * none is left. */
void descendants_adopt(void);
void descendants_end(int grace_ms);
/* From a signal handler: descendants_end() (running or to come) sends
 * SIGKILL at once; descendants_hurried() says whether that was asked. */
void descendants_hurry(void);
bool descendants_hurried(void);

#endif
