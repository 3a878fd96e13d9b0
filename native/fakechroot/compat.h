/* Pin the glibc symbol versions the preload library needs to the oldest
 * baseline, so that it loads into programs of every glibc since 2.17.
 *
 * Linking against a new glibc records the newest version of each symbol
 * (memcpy@GLIBC_2.14, dlsym@GLIBC_2.34...), which an older glibc does not
 * have.  On aarch64 the baseline is GLIBC_2.17, which every symbol used here
 * has, so nothing needs pinning there.  tests/test_fakechroot_native.py reads
 * the built library's .gnu.version_r and fails on anything newer than 2.17.
 */
#ifndef NBS_COMPAT_H
#define NBS_COMPAT_H

#if defined(__x86_64__)
#define NBS_PIN(sym) __asm__(".symver " #sym "," #sym "@GLIBC_2.2.5")
NBS_PIN(memcpy);
#endif

#endif
