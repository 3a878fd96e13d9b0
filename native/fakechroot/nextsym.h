/* nbs_next_symbol: dlsym(RTLD_NEXT, name) without libdl.
 *
 * The preload library is loaded into programs of every glibc since 2.17.
 * Before glibc 2.34 dlsym lives in libdl.so.2, from 2.34 in libc.so.6; a
 * library that needs libdl makes the store's loader look for it, and a loader
 * built by a distribution finds the host's copy through the host's linker
 * cache and default directories.  So the preload library depends on libc.so.6
 * alone and finds the next definitions of the functions it interposes itself,
 * from the symbol tables of the objects loaded after it. */
#ifndef NBS_NEXTSYM_H
#define NBS_NEXTSYM_H

/* The address of the first default-version definition of NAME in the objects
 * of the program's namespace that were loaded after this library, in load
 * order (the order of the global scope that RTLD_NEXT searches); GNU indirect
 * functions are resolved.  NULL when there is none. */
void *nbs_next_symbol(const char *name);

#endif
