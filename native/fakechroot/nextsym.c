/* nbs_next_symbol: see nextsym.h.
 *
 * dl_iterate_phdr() (in libc since glibc 2.2.4) lists the loaded objects of
 * the caller's namespace in load order; each object's dynamic section gives
 * its symbol table, string table, hash table (GNU or SysV) and symbol version
 * table.  The lookup follows the rules dlsym uses for a name without a
 * version: a defined function or object, global or weak, whose version is
 * the default one (not hidden). */
#include <elf.h>
#include <link.h>
#include <stdint.h>
#include <string.h>
#if defined(__aarch64__)
#include <sys/auxv.h>
#endif

#include "nextsym.h"

#define HIDDEN __attribute__((visibility("hidden")))

struct lookup {
    const char *name;
    uint32_t gnu_hash;
    uint32_t sysv_hash;
    int after_self; /* the objects seen so far include this library */
    void *found;
};

static uint32_t gnu_hash(const char *s)
{
    uint32_t h = 5381;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        h = h * 33 + *p;
    return h;
}

static uint32_t sysv_hash(const char *s)
{
    uint32_t h = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        h = (h << 4) + *p;
        uint32_t g = h & 0xf0000000u;
        if (g)
            h ^= g >> 24;
        h &= ~g;
    }
    return h;
}

/* Whether ADDR lies in one of the object's loaded segments. */
static int contains(const struct dl_phdr_info *info, uintptr_t addr)
{
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        uintptr_t start = info->dlpi_addr + ph->p_vaddr;
        if (ph->p_type == PT_LOAD && addr >= start && addr - start < ph->p_memsz)
            return 1;
    }
    return 0;
}

struct tables {
    const ElfW(Sym) *symtab;
    const char *strtab;
    const uint32_t *gnu;
    const uint32_t *sysv;
    const ElfW(Half) *versym;
};

/* The loader rewrites most objects' dynamic entries to run-time addresses;
 * some (the vDSO's) keep the link-time ones. */
static const void *at(const struct dl_phdr_info *info, ElfW(Addr) ptr)
{
    return (const void *)(ptr < info->dlpi_addr ? ptr + info->dlpi_addr : ptr);
}

static int find_tables(const struct dl_phdr_info *info, struct tables *t)
{
    const ElfW(Dyn) *dyn = 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        if (info->dlpi_phdr[i].p_type == PT_DYNAMIC)
            dyn = (const ElfW(Dyn) *)(info->dlpi_addr + info->dlpi_phdr[i].p_vaddr);
    }
    if (!dyn)
        return 0;
    memset(t, 0, sizeof *t);
    for (; dyn->d_tag != DT_NULL; dyn++) {
        switch (dyn->d_tag) {
        case DT_SYMTAB: t->symtab = at(info, dyn->d_un.d_ptr); break;
        case DT_STRTAB: t->strtab = at(info, dyn->d_un.d_ptr); break;
        case DT_GNU_HASH: t->gnu = at(info, dyn->d_un.d_ptr); break;
        case DT_HASH: t->sysv = at(info, dyn->d_un.d_ptr); break;
        case DT_VERSYM: t->versym = at(info, dyn->d_un.d_ptr); break;
        default: break;
        }
    }
    return t->symtab && t->strtab && (t->gnu || t->sysv);
}

static void *resolve_ifunc(ElfW(Addr) addr)
{
#if defined(__aarch64__)
    /* glibc's resolvers take AT_HWCAP (and, flagged, a pointer to more) */
    return ((void *(*)(uint64_t, void *))addr)(getauxval(AT_HWCAP), 0);
#else
    return ((void *(*)(void))addr)();
#endif
}

/* The address of symbol I if it is the definition we want, else NULL. */
static void *match(const struct dl_phdr_info *info, const struct tables *t, uint32_t i,
                   const char *name)
{
    const ElfW(Sym) *sym = &t->symtab[i];
    unsigned type = ELF64_ST_TYPE(sym->st_info), bind = ELF64_ST_BIND(sym->st_info);
    if (sym->st_shndx == SHN_UNDEF || (sym->st_value == 0 && type != STT_TLS))
        return 0;
    if (type != STT_FUNC && type != STT_OBJECT && type != STT_NOTYPE && type != STT_GNU_IFUNC)
        return 0;
    if (bind != STB_GLOBAL && bind != STB_WEAK && bind != STB_GNU_UNIQUE)
        return 0;
    if (t->versym && (t->versym[i] & 0x8000))
        return 0; /* a hidden (non-default) version: dlsym does not return it */
    if (strcmp(t->strtab + sym->st_name, name) != 0)
        return 0;
    ElfW(Addr) addr = info->dlpi_addr + sym->st_value;
    return type == STT_GNU_IFUNC ? resolve_ifunc(addr) : (void *)addr;
}

static void *lookup_gnu(const struct dl_phdr_info *info, const struct tables *t,
                        const struct lookup *l)
{
    const uint32_t *h = t->gnu;
    uint32_t nbuckets = h[0], symoffset = h[1], bloom_size = h[2];
    if (nbuckets == 0)
        return 0;
    const uint32_t *buckets = (const uint32_t *)((const ElfW(Addr) *)(h + 4) + bloom_size);
    const uint32_t *chain = buckets + nbuckets;
    uint32_t i = buckets[l->gnu_hash % nbuckets];
    if (i < symoffset)
        return 0;
    for (;; i++) {
        uint32_t ch = chain[i - symoffset];
        if ((ch | 1) == (l->gnu_hash | 1)) {
            void *p = match(info, t, i, l->name);
            if (p)
                return p;
        }
        if (ch & 1)
            return 0;
    }
}

static void *lookup_sysv(const struct dl_phdr_info *info, const struct tables *t,
                         const struct lookup *l)
{
    uint32_t nbucket = t->sysv[0], nchain = t->sysv[1];
    if (nbucket == 0)
        return 0;
    const uint32_t *bucket = t->sysv + 2, *chain = bucket + nbucket;
    for (uint32_t i = bucket[l->sysv_hash % nbucket], n = 0; i && i < nchain && n < nchain;
         i = chain[i], n++) {
        void *p = match(info, t, i, l->name);
        if (p)
            return p;
    }
    return 0;
}

static int visit(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    struct lookup *l = data;
    if (!l->after_self) {
        l->after_self = contains(info, (uintptr_t)&visit);
        return 0;
    }
    struct tables t;
    if (!find_tables(info, &t))
        return 0;
    l->found = t.gnu ? lookup_gnu(info, &t, l) : lookup_sysv(info, &t, l);
    return l->found != 0;
}

HIDDEN void *nbs_next_symbol(const char *name)
{
    struct lookup l = {name, gnu_hash(name), sysv_hash(name), 0, 0};
    dl_iterate_phdr(visit, &l);
    return l.found;
}
