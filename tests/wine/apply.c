/*
 * apply.c - applies a Hotpatch Table read by hptable.c to a base and a patch image mapped
 * in this process, as docs/FORMAT.md describes the loader (apply.h), and undoes it.
 */
#include "apply.h"

typedef struct hpat {
    u8 *code; /* stubs: FF 25 FA 0F 00 00 = jmp [rip+0xFFA]; pointers at +0x1000 */
    u32 used, capacity;
} hpat;

typedef struct undo_entry {
    u8 *at; /* F - 5 */
    u8 saved[7];
} undo_entry;

static undo_entry undo_log[HP_MAX_RECORDS];
static int nundo;

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

/* Redirects the function at F to TARGET through a stub of H, keeping F-5..F+1 for undo. */
static void redirect(u8 *f, u64 target, hpat *h, int keep_undo)
{
    u8 *stub = hpat_stub(h, target);
    long long rel = (long long)((u64)stub - (u64)f);
    u32 old;
    if (rel < -0x80000000ll || rel > 0x7FFFFFFFll)
        fail("HPAT", "stub out of rel32 range");
    if (keep_undo) {
        undo_log[nundo].at = f - 5;
        mem_copy(undo_log[nundo++].saved, f - 5, 7);
    }
    protect(f - 5, 7u, PAGE_EXECUTE_READWRITE, &old);
    f[-5] = 0xE9;
    *(volatile u32 *)(f - 4) = (u32)rel;
    FlushInstructionCache(GetCurrentProcess(), f - 5, 5u);
    write_entry(f, 0xF9EBu); /* EB F9: jmp f-5, written last */
    FlushInstructionCache(GetCurrentProcess(), f, 2u);
    protect(f - 5, 7u, old, &old);
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
        if (r->type != HP_FUNCTION || table->extra_words == 0u)
            continue; /* without an extra word there are no first bytes to compare */
        const u8 *f = (r->inverse ? patch_va : base_va) + r->site;
        if (*(const u16 *)f != (u16)r->extra) {
            out_str("REFUSED first bytes ");
            out_str(hp_kind(r));
            out_str(" ");
            out_hex(r->site);
            out_str(" recorded ");
            out_hex(r->extra & 0xFFFFu);
            out_str(" found ");
            out_hex(*(const u16 *)f);
            out_nl();
            ok = 0;
        }
    }
    return ok;
}

void hp_apply(const hp_table *table, u8 *base_va, u8 *patch_va, const u32 *traps, int ntraps)
{
    hpat base_hpat, patch_hpat;
    u32 nforward = 0, ninverse_func = 0;
    for (int i = 0; i < table->nrecords; i++)
        if (table->records[i].type == HP_FUNCTION) {
            if (table->records[i].inverse)
                ninverse_func++;
            else
                nforward++;
        }
    if (ninverse_func != 0u)
        hpat_alloc(&patch_hpat, patch_va, ninverse_func, "patch");
    if (nforward != 0u)
        hpat_alloc(&base_hpat, base_va, nforward, "base");
    /* inverse chunks first: the patch image is bound to the base */
    for (int i = 0; i < table->nrecords; i++) {
        const hp_record *r = &table->records[i];
        if (!r->inverse)
            continue;
        if (r->type == HP_ABSOLUTE)
            write_pointer(patch_va + r->site, (u64)(base_va + r->value));
        else if (r->type == HP_INDIRECT)
            write_pointer(patch_va + r->site, *(const u64 *)(base_va + r->value));
        else if (r->type == HP_FUNCTION)
            redirect(patch_va + r->site, (u64)(base_va + r->value), &patch_hpat, 0);
    }
    if (ninverse_func != 0u)
        hpat_seal(&patch_hpat);
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
    /* then the base: stubs ready before any entry is written */
    if (nforward != 0u) {
        for (int i = 0; i < table->nrecords; i++) {
            const hp_record *r = &table->records[i];
            if (!r->inverse && r->type == HP_FUNCTION)
                redirect(base_va + r->site, (u64)(patch_va + r->value), &base_hpat, 1);
        }
        hpat_seal(&base_hpat);
    }
    out_str("APPLIED ");
    out_u64((u64)table->nrecords);
    out_nl();
}

void hp_undo(void)
{
    for (int i = nundo - 1; i >= 0; i--) {
        u8 *at = undo_log[i].at;
        u32 old;
        protect(at, 7u, PAGE_EXECUTE_READWRITE, &old);
        write_entry(at + 5, *(const u16 *)(undo_log[i].saved + 5)); /* the entry first */
        FlushInstructionCache(GetCurrentProcess(), at + 5, 2u);
        mem_copy(at, undo_log[i].saved, 5);
        FlushInstructionCache(GetCurrentProcess(), at, 5u);
        protect(at, 7u, old, &old);
    }
}

