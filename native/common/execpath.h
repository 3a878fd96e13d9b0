/* The PATH search of execvp, shared by the launcher (nbs-launch) and the
 * preload library (nbs-preload), so that a program not found, or found but
 * not runnable, fails the same way whichever of them looks for it.
 *
 * Safe in a vfork() child: no allocation, no lock, stack buffers only.
 */
#ifndef NBS_EXECPATH_H
#define NBS_EXECPATH_H

#include <stddef.h>

/* Glibc's default search path when PATH is unset (confstr(_CS_PATH)). */
#define NBS_DEFAULT_PATH "/bin:/usr/bin"

/* Try one candidate: CANDIDATE is a directory of PATH joined with the name
 * searched for.  Returns 0 when the candidate was used (a spawn that
 * succeeded; an exec that succeeds does not return), else the errno that
 * says why it could not be (judged as below), or minus an errno to end the
 * search with that error whatever it is. */
typedef int (*nbs_try_fn)(const char *candidate, void *ctx);

/* Search FILE (a name without '/') in PATH (NULL: NBS_DEFAULT_PATH) as
 * execvp does, calling TRY on each candidate in turn; an empty element of
 * PATH means the current directory.  A candidate that is missing
 * (ENOENT, ENOTDIR, ESTALE, ENODEV, ETIMEDOUT, ENAMETOOLONG, or too long to
 * build) is passed over; one that exists but may not be run (EACCES) is
 * passed over and remembered; any other error ends the search.
 *
 * Returns 0 when TRY used a candidate, else the errno of the whole search:
 * the error that ended it, else EACCES when some candidate existed but was
 * denied (a directory of PATH that may not be searched does not count),
 * else ENOENT.  When the search ends on a candidate's error, that candidate
 * is copied into STOPPED_AT (SIZE bytes; may be NULL). */
int nbs_search_path(const char *file, const char *path, nbs_try_fn try_one, void *ctx,
                    char *stopped_at, size_t size);

#endif
