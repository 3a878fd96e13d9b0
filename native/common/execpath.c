/* The PATH search of execvp, for the launcher and the preload library; see
 * execpath.h. */
#include "execpath.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#define CANDIDATE_MAX 4096 /* bytes with the NUL: Linux's PATH_MAX */

int nbs_search_path(const char *file, const char *path, nbs_try_fn try_one, void *ctx,
                    char *stopped_at, size_t size)
{
    if (!path)
        path = NBS_DEFAULT_PATH;
    size_t flen = strlen(file);
    int denied = 0;
    for (const char *p = path;;) {
        const char *end = strchrnul(p, ':');
        size_t dlen = (size_t)(end - p);
        char cand[CANDIDATE_MAX];
        if (dlen + 1 + flen + 1 <= sizeof cand) {
            size_t pos = dlen;
            memcpy(cand, p, dlen);
            if (dlen)
                cand[pos++] = '/';
            memcpy(cand + pos, file, flen + 1);
            int err = try_one(cand, ctx);
            switch (err) {
            case 0:
                return 0;
            case EACCES:
                /* Only a file that is there but may not run counts; a
                 * directory of PATH that may not be searched is no find. */
                if (access(cand, F_OK) == 0)
                    denied = 1;
                break;
            case ENOENT:
            case ENOTDIR:
            case ESTALE:
            case ENODEV:
            case ETIMEDOUT:
            case ENAMETOOLONG:
                break;
            default: /* found, but it cannot run: as execvp, stop here */
                if (stopped_at && size) {
                    size_t n = strnlen(cand, size - 1);
                    memcpy(stopped_at, cand, n);
                    stopped_at[n] = '\0';
                }
                return err < 0 ? -err : err;
            }
        }
        if (!*end)
            break;
        p = end + 1;
    }
    return denied ? EACCES : ENOENT;
}
