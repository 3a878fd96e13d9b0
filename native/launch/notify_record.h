/* --report-seccomp: records, skip list and path helpers (notify_record.c). */
#ifndef NBS_NOTIFY_RECORD_H
#define NBS_NOTIFY_RECORD_H

#include "notify.h"

#include <stdbool.h>
#include <stddef.h>

/* The longest line the contract allows, newline included. */
#define RECORD_MAX 4096

/* Whether PATH (absolute, normalised) is under a $NBSANDBOX_REPORT_SKIP prefix. */
bool record_skipped(const char *path);

/* PRoot executes its loader, DIR/prooted-<PRoot's pid>-*, in place of every
 * program: those exec events are not the program's (record_is_loader). */
bool record_is_loader(const char *path);

/* One record line: "seccomp\tOP\tRESULT\tPID\tPROGRAM\tPATH\n", escaped and cut
 * as the contract says, with one write(2). */
void record_write(enum notify_op op, const char *result, long pid, const char *program,
                  const char *path);

/* Lexical normalisation of an absolute path, in place ("//", ".", ".."). */
void path_normalize(char *path);

/* OUT = REL if absolute, else BASE/REL; normalised.  False if it does not fit. */
bool path_join(char *out, size_t size, const char *base, const char *rel);

#endif
