/*
 * apply.c - applies a Hotpatch Table read by hptable.c to a base and a patch image mapped
 * in this process, as docs/FORMAT.md describes the loader (apply.h), and undoes it.
 */
#include "apply.h"

typedef struct hpat {
    u8 *code; /* stubs: FF 25 FA 0F 00 00 = jmp [rip+0xFFA]; pointers at +0x1000 */
    u32 used, capacity;
} hpat;

/* A base function redirected by a forward FUNCTION record: its stub, and the bytes
 * F-5..F+1 from before any patch (kept across a superseding patch, for undo). */
typedef struct redirection {
    u8 *f;
    u32 rva;
    u8 *stub;
    u8 saved[7];
    int active, keep;
} redirection;

static redirection forward_log[HP_MAX_RECORDS];
static int nforward_log;

static void protect(void *at, u64 n, u32 prot, u32 *old)
{
    if (!VirtualProtect(at, n, prot, old))
        fail("VirtualProtect", 0);
}

/* Stub pages for COUNT redirections of IMAGE, within +-2 GiB of all of it. */
static void hpat_alloc(hpat *h, const u8 *image, u32 count, const char *label)
{
    u64 pairs = (count + 511u) / 512u, size = pairs * 0x2000u;
    u64 lo = (u64)image, hi = (u64)image + image_size(image);
    h->code = 0;
    for (u64 step = 1; step < 0x7000u && h->code == 0; step++) {
        u64 below = (lo & ~0xFFFFull) - step * 0x10000u;
        u64 above = ((hi + 0xFFFFu) & ~0xFFFFull) + (step - 1u) * 0x10000u;
        if (hi - below < 0x7FFF0000u)
            h->code = (u8 *)VirtualAlloc((void *)below, size, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
        if (h->code == 0 && above + size - lo < 0x7FFF0000u)
            h->code = (u8 *)VirtualAlloc((void *)above, size, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    }
    if (h->code == 0)
        fail("HPAT", "no free pages within 2 GiB of the image");
    h->used = 0u;
    h->capacity = (u32)pairs * 512u;
    out_str("HPAT ");
    out_str(label);
    out_str(" ");
    out_hex((u64)h->code);
    out_str(" ");
    out_u64(count);
    out_nl();
}

static u8 *hpat_stub(hpat *h, u64 target)
{
    u32 i = h->used++;
    u8 *stub = h->code + (i / 512u) * 0x2000u + (i % 512u) * 8u;
    static const u8 jmp[8] = {0xFF, 0x25, 0xFA, 0x0F, 0x00, 0x00, 0xCC, 0xCC};
    mem_copy(stub, jmp, 8);
    *(u64 *)(stub + 0x1000) = target;
    return stub;
}

static void hpat_seal(hpat *h)
{
    u32 old;
    for (u32 k = 0; k < h->capacity / 512u; k++) {
        protect(h->code + k * 0x2000u, 0x1000u, PAGE_EXECUTE_READ, &old);
        protect(h->code + k * 0x2000u + 0x1000u, 0x1000u, PAGE_READONLY, &old);
    }
    FlushInstructionCache(GetCurrentProcess(), h->code, h->capacity / 512u * 0x2000u);
}

/* The two-byte write at F as one atomic store: a locked compare-exchange of the aligned
 * quadword holding both bytes, or a plain 16-bit store when they straddle 8 bytes. */
static void write_entry(u8 *f, u16 value)
{
    u64 off = (u64)f & 7u;
    if (off == 7u) {
        *(volatile u16 *)f = value;
        return;
    }
    volatile u64 *q = (volatile u64 *)((u64)f - off);
    u64 mask = 0xFFFFull << (off * 8u), old, next;
    do {
        old = *q;
        next = (old & ~mask) | ((u64)value << (off * 8u));
    } while (__sync_val_compare_and_swap(q, old, next) != old);
}

/* Writes the jump from F to its (sealed) stub: E9 rel32 at F-5, then EB F9 at F, last. */
static void write_jump(u8 *f, const u8 *stub)
{
    long long rel = (long long)((u64)stub - (u64)f);
    u32 old;
    if (rel < -0x80000000ll || rel > 0x7FFFFFFFll)
        fail("HPAT", "stub out of rel32 range");
    protect(f - 5, 7u, PAGE_EXECUTE_READWRITE, &old);
    f[-5] = 0xE9;
    *(volatile u32 *)(f - 4) = (u32)rel;
    FlushInstructionCache(GetCurrentProcess(), f - 5, 5u);
    write_entry(f, 0xF9EBu); /* EB F9: jmp f-5 */
    FlushInstructionCache(GetCurrentProcess(), f, 2u);
    protect(f - 5, 7u, old, &old);
}

/* Puts back F-5..F+1 as they were before any patch, the entry's two bytes first. */
static void restore(redirection *r)
{
    u8 *at = r->f - 5;
    u32 old;
    protect(at, 7u, PAGE_EXECUTE_READWRITE, &old);
    write_entry(r->f, *(const u16 *)(r->saved + 5));
    FlushInstructionCache(GetCurrentProcess(), r->f, 2u);
    mem_copy(at, r->saved, 5);
    FlushInstructionCache(GetCurrentProcess(), at, 5u);
    protect(at, 7u, old, &old);
    r->active = 0;
}

static redirection *redirected(const u8 *f)
{
    for (int i = 0; i < nforward_log; i++)
        if (forward_log[i].active && forward_log[i].f == f)
            return &forward_log[i];
    return 0;
}

static void write_pointer(u8 *at, u64 value)
{
    u32 old;
    protect(at, 8u, PAGE_READWRITE, &old);
    *(volatile u64 *)at = value;
    protect(at, 8u, old, &old);
}

int hp_first_bytes_ok(const hp_table *table, const u8 *base_va, const u8 *patch_va)
{
    int ok = 1;
    for (int i = 0; i < table->nrecords; i++) {
        const hp_record *r = &table->records[i];
        const u8 *f = (r->inverse ? patch_va : base_va) + r->site;
        const redirection *earlier = r->inverse ? 0 : redirected(f);
        u16 found;
        if (r->type != HP_FUNCTION || table->extra_words == 0u)
            continue; /* without an extra word there are no first bytes to compare */
        /* a function an earlier patch redirected is compared as it was before it */
        found = earlier != 0 ? *(const u16 *)(earlier->saved + 5) : *(const u16 *)f;
        if (found != (u16)r->extra) {
            out_str("REFUSED first bytes ");
            out_str(hp_kind(r));
            out_str(" ");
            out_hex(r->site);
            out_str(" recorded ");
            out_hex(r->extra & 0xFFFFu);
            out_str(" found ");
            out_hex(found);
            out_nl();
            ok = 0;
        }
    }
    return ok;
}

static void print_rva(const char *what, u32 rva)
{
    out_str(what);
    out_str(" ");
    out_hex(rva);
    out_nl();
}

void hp_apply(const hp_table *table, u8 *base_va, u8 *patch_va, const u32 *traps, int ntraps)
{
    hpat base_hpat, patch_hpat;
    static u8 *inverse_stubs[HP_MAX_RECORDS];
    u32 nnew = 0, ninverse_func = 0;
    int first_new = nforward_log;
    for (int i = 0; i < table->nrecords; i++) {
        const hp_record *r = &table->records[i];
        if (r->type == HP_FUNCTION && r->inverse)
            ninverse_func++;
        else if (r->type == HP_FUNCTION && redirected(base_va + r->site) == 0)
            nnew++;
    }
    /* inverse chunks first: the patch image is bound to the base; stubs are filled and
     * made executable before any jump to them is written */
    if (ninverse_func != 0u) {
        hpat_alloc(&patch_hpat, patch_va, ninverse_func, "patch");
        for (int i = 0; i < table->nrecords; i++)
            if (table->records[i].inverse && table->records[i].type == HP_FUNCTION)
                inverse_stubs[i] = hpat_stub(&patch_hpat, (u64)(base_va + table->records[i].value));
        hpat_seal(&patch_hpat);
    }
    for (int i = 0; i < table->nrecords; i++) {
        const hp_record *r = &table->records[i];
        if (!r->inverse)
            continue;
        if (r->type == HP_ABSOLUTE)
            write_pointer(patch_va + r->site, (u64)(base_va + r->value));
        else if (r->type == HP_INDIRECT)
            write_pointer(patch_va + r->site, *(const u64 *)(base_va + r->value));
        else if (r->type == HP_FUNCTION)
            write_jump(patch_va + r->site, inverse_stubs[i]);
    }
    /* functions of the patch image that must never run there */
    for (int i = 0; i < ntraps; i++) {
        u8 *f = patch_va + traps[i];
        u32 old;
        out_str("TRAP ");
        out_hex(traps[i]);
        if (f[0] == 0xEB && f[1] == 0xF9) {
            out_str(" redirected");
        } else {
            protect(f, 1u, PAGE_EXECUTE_READWRITE, &old);
            *f = 0xCC;
            protect(f, 1u, old, &old);
            FlushInstructionCache(GetCurrentProcess(), f, 1u);
            out_str(" planted");
        }
        out_nl();
    }
    /* then the base: a function an earlier patch redirected only gets a new target in its
     * stub (one aligned 8-byte store); the others get new stubs, sealed before the jumps */
    for (int i = 0; i < nforward_log; i++)
        forward_log[i].keep = 0;
    if (nnew != 0u)
        hpat_alloc(&base_hpat, base_va, nnew, "base");
    for (int i = 0; i < table->nrecords; i++) {
        const hp_record *r = &table->records[i];
        redirection *e;
        if (r->inverse || r->type != HP_FUNCTION)
            continue;
        e = redirected(base_va + r->site);
        if (e != 0) {
            write_pointer(e->stub + 0x1000, (u64)(patch_va + r->value));
            e->keep = 1;
            print_rva("RETARGETED", r->site);
            continue;
        }
        e = &forward_log[nforward_log++];
        e->f = base_va + r->site;
        e->rva = r->site;
        e->stub = hpat_stub(&base_hpat, (u64)(patch_va + r->value));
        mem_copy(e->saved, e->f - 5, 7);
        e->active = e->keep = 1;
    }
    if (nnew != 0u)
        hpat_seal(&base_hpat);
    for (int i = first_new; i < nforward_log; i++)
        write_jump(forward_log[i].f, forward_log[i].stub);
    /* a superseding patch: what only the earlier patch redirected runs the base again */
    for (int i = 0; i < first_new; i++)
        if (forward_log[i].active && !forward_log[i].keep) {
            restore(&forward_log[i]);
            print_rva("REVERTED", forward_log[i].rva);
        }
    out_str("APPLIED ");
    out_u64((u64)table->nrecords);
    out_nl();
}

void hp_undo(void)
{
    for (int i = nforward_log - 1; i >= 0; i--)
        if (forward_log[i].active)
            restore(&forward_log[i]);
}
