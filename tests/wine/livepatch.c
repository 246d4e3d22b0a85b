/*
 * livepatch.c - applies a final image's Hotpatch Table to a base DLL that a second thread
 * is running, in one Windows process under Wine, the way docs/FORMAT.md says the loader
 * does, then undoes it; prints what the thread observed.
 *
 *   livepatch.exe BASE FINAL [--iterations N] [--trap RVA]... [--global NAME:BRVA:PRVA:SIZE]...
 *                 CALL...
 *
 * 1. LoadLibrary(BASE) (its DllMain runs); LoadLibraryEx(FINAL, DONT_RESOLVE_DLL_REFERENCES)
 *    maps the patch image, relocated, without its entry point or imports.
 * 2. hptable.c reads the table from the mapped FINAL and checks it against BASE.
 * 3. A thread runs the CALLs through BASE's exports in a loop (common.h syntax); each
 *    iteration's results are one vector, counted per phase: 0 before the patch, 1 patched,
 *    2 after undo (an iteration during which the phase changed counts as a transition).
 * 4. After N clean iterations: every FUNCTION record's first bytes are checked (a mismatch
 *    refuses the whole table, nothing written); HPAT stub pages are allocated within
 *    +-2 GiB of each image that gets redirected; the INVERSE chunks are applied to the
 *    patch image (ABSOLUTE: slot = base + RVA; INDIRECT: slot = *(base + RVA); FUNCTION:
 *    redirect the patch copy to the base function; CALL_TARGET: nothing to write here);
 *    each --trap RVA of the patch image that was not redirected gets an int3 (a function
 *    that must never run there); then the FUNCTION chunks redirect the base:
 *    E9 rel32 to the stub at F-5, then EB F9 at F as one atomic write.
 * 5. After N patched iterations: the thread is held between iterations and each --global
 *    is read in both images; then undo restores the saved bytes (EB F9 first) and the
 *    base's code must be byte-identical to before; N more iterations.
 * 6. The patch image's writable sections must not have changed: a write there means code
 *    reached the patch image's copy of a global.
 *
 * Output (one fact per line; the test reads it):
 *   IMAGES base=<va> patch=<va>
 *   TABLE version=.. size=.. seq=.. extra=.. base_seq=.. base_flags=..
 *   RECORD <kind> <site> <value> <extra>          in table order
 *   REFUSED <reason>                              (exit 3)
 *   HPAT <image> <va> <records>
 *   TRAP <rva> planted|redirected
 *   APPLIED <records>
 *   GLOBAL <name> base=<v> patch=<v>
 *   UNDO base_code_identical=<0|1>
 *   PATCHDATA_CHANGED <rva> <bytes>
 *   PHASE <p> clean=<n> vectors=<n>  /  VECTOR <p> <count> <result>|<result>|...
 *   THREAD iterations=<n> transitions=<n> exit=<code>
 *   DONE
 */
#include "hptable.h"

#define MAX_CALLS 128
#define MAX_VECTORS 8
#define MAX_TRAPS 256
#define MAX_GLOBALS 32
#define MAX_SECTIONS 32

static call calls[MAX_CALLS];
static int ncalls;
static u8 *base_va, *patch_va;
static hp_table table;

/* ----------------------------------------------------------- the calling thread */

typedef struct vector {
    u32 count;
    outcome results[MAX_CALLS];
} vector;

static volatile int phase, stop, hold, held;
static volatile u32 iterations, transitions, clean[3];
static vector vectors[3][MAX_VECTORS];
static int nvectors[3];
static u32 dropped_vectors;
static outcome current[MAX_CALLS];

static int same_vector(const outcome *a, const outcome *b)
{
    for (int i = 0; i < ncalls; i++)
        if (a[i].value != b[i].value || a[i].fault != b[i].fault)
            return 0;
    return 1;
}

static void count_vector(int p)
{
    for (int v = 0; v < nvectors[p]; v++)
        if (same_vector(vectors[p][v].results, current)) {
            vectors[p][v].count++;
            return;
        }
    if (nvectors[p] == MAX_VECTORS) {
        dropped_vectors++;
        return;
    }
    mem_copy(vectors[p][nvectors[p]].results, current, sizeof(outcome) * (u64)ncalls);
    vectors[p][nvectors[p]++].count = 1u;
}

static u32 WINAPI caller(void *unused)
{
    (void)unused;
    while (!stop) {
        int p0, p1;
        if (hold) {
            held = 1;
            while (hold && !stop)
                Sleep(1u);
            held = 0;
            continue;
        }
        p0 = phase;
        for (int i = 0; i < ncalls; i++)
            call_run(&calls[i], &current[i]);
        p1 = phase;
        if (p0 == p1) {
            count_vector(p0);
            clean[p0]++;
        } else {
            transitions++;
        }
        iterations++;
    }
    return 7u;
}

static int wait_clean(int p, u32 n)
{
    u32 start = GetTickCount();
    while (clean[p] < n)
        if (GetTickCount() - start > 60000u)
            return 0;
        else
            Sleep(1u);
    return 1;
}

/* ------------------------------------------------------------- applying the table */

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

static int first_bytes_ok(void)
{
    int ok = 1;
    for (int i = 0; i < table.nrecords; i++) {
        const hp_record *r = &table.records[i];
        if (r->type != HP_FUNCTION)
            continue;
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

static u32 traps[MAX_TRAPS];
static int ntraps;

static void apply_table(void)
{
    hpat base_hpat, patch_hpat;
    u32 nforward = 0, ninverse_func = 0;
    for (int i = 0; i < table.nrecords; i++)
        if (table.records[i].type == HP_FUNCTION) {
            if (table.records[i].inverse)
                ninverse_func++;
            else
                nforward++;
        }
    if (ninverse_func != 0u)
        hpat_alloc(&patch_hpat, patch_va, ninverse_func, "patch");
    if (nforward != 0u)
        hpat_alloc(&base_hpat, base_va, nforward, "base");
    /* inverse chunks first: the patch image is bound to the base */
    for (int i = 0; i < table.nrecords; i++) {
        const hp_record *r = &table.records[i];
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
        for (int i = 0; i < table.nrecords; i++) {
            const hp_record *r = &table.records[i];
            if (!r->inverse && r->type == HP_FUNCTION)
                redirect(base_va + r->site, (u64)(patch_va + r->value), &base_hpat, 1);
        }
        hpat_seal(&base_hpat);
    }
    out_str("APPLIED ");
    out_u64((u64)table.nrecords);
    out_nl();
}

static void undo_table(void)
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

/* ------------------------------------------------------------ sections, snapshots */

typedef struct span {
    u32 rva, size;
    u8 *copy;
} span;

/* Copies the sections of IMAGE whose characteristics have any of the bits in WANT. */
static int snapshot(const u8 *image, u32 want, span *out)
{
    const u8 *nt = image + *(const u32 *)(image + 0x3C);
    u16 nsec = *(const u16 *)(nt + 6), optsize = *(const u16 *)(nt + 0x14);
    const u8 *sec = nt + 0x18 + optsize;
    int n = 0;
    for (u16 i = 0; i < nsec && n < MAX_SECTIONS; i++, sec += 40) {
        u32 vsize = *(const u32 *)(sec + 8), rva = *(const u32 *)(sec + 12);
        if ((*(const u32 *)(sec + 36) & want) == 0u || vsize == 0u)
            continue;
        out[n].rva = rva;
        out[n].size = vsize;
        out[n].copy = (u8 *)VirtualAlloc(0, vsize, MEM_COMMIT | MEM_RESERVE, PAGE_READWRITE);
        if (out[n].copy == 0)
            fail("VirtualAlloc", "snapshot");
        mem_copy(out[n].copy, image + rva, vsize);
        n++;
    }
    return n;
}

#define SCN_MEM_EXECUTE 0x20000000u
#define SCN_MEM_WRITE 0x80000000u

/* Prints PATCHDATA_CHANGED for each changed run of bytes; returns the number of runs. */
static int compare(const u8 *image, const span *s, int n, const char *label)
{
    int runs = 0;
    for (int k = 0; k < n; k++)
        for (u32 i = 0; i < s[k].size;) {
            u32 j = i;
            while (j < s[k].size && image[s[k].rva + j] != s[k].copy[j])
                j++;
            if (j == i) {
                i++;
                continue;
            }
            if (label != 0) {
                out_str(label);
                out_str(" ");
                out_hex(s[k].rva + i);
                out_str(" ");
                out_u64(j - i);
                out_nl();
            }
            runs++;
            i = j;
        }
    return runs;
}

/* ------------------------------------------------------------------------- main */

typedef struct watch {
    char *name;
    u32 base_rva, patch_rva, size;
} watch;

static watch globals[MAX_GLOBALS];
static int nglobals;

static void parse_global(char *spec)
{
    watch *w = &globals[nglobals];
    char *part[4];
    int n = 0;
    u64 v[3];
    if (nglobals == MAX_GLOBALS)
        fail("--global", "too many");
    part[n++] = spec;
    for (char *p = spec; *p != 0 && n < 4; p++)
        if (*p == ':') {
            *p = 0;
            part[n++] = p + 1;
        }
    if (n != 4 || !parse_u64(part[1], &v[0]) || !parse_u64(part[2], &v[1]) || !parse_u64(part[3], &v[2]) ||
        (v[2] != 4u && v[2] != 8u))
        fail("--global", "expected NAME:BASE_RVA:PATCH_RVA:4|8");
    w->name = part[0];
    w->base_rva = (u32)v[0];
    w->patch_rva = (u32)v[1];
    w->size = (u32)v[2];
    nglobals++;
}

static u64 read_global(const u8 *image, u32 rva, u32 size)
{
    return size == 4u ? *(const volatile u32 *)(image + rva) : *(const volatile u64 *)(image + rva);
}

static void print_vectors(void)
{
    for (int p = 0; p < 3; p++) {
        out_str("PHASE ");
        out_u64((u64)p);
        out_str(" clean=");
        out_u64(clean[p]);
        out_str(" vectors=");
        out_u64((u64)nvectors[p]);
        out_nl();
        for (int v = 0; v < nvectors[p]; v++) {
            out_str("VECTOR ");
            out_u64((u64)p);
            out_str(" ");
            out_u64(vectors[p][v].count);
            out_str(" ");
            for (int i = 0; i < ncalls; i++) {
                if (i != 0)
                    out_str("|");
                outcome_print(&vectors[p][v].results[i], calls[i].type);
            }
            out_nl();
        }
    }
}

void livepatch_main(void)
{
    static char *argv[MAX_ARGS];
    static span patch_data[MAX_SECTIONS], base_code[MAX_SECTIONS];
    int argc = command_line(argv, MAX_ARGS), npd, nbc, refused = 0;
    u64 per_phase = 200;
    void *thread;
    u32 thread_exit = 0;
    const char *why;
    if (argc < 4)
        fail("usage", "livepatch.exe BASE FINAL [--iterations N] [--trap RVA]... [--global N:B:P:S]... CALL...");
    calls_init();
    base_va = (u8 *)LoadLibraryA(argv[1]);
    if (base_va == 0)
        fail("LoadLibrary failed", argv[1]);
    patch_va = (u8 *)LoadLibraryExA(argv[2], 0, DONT_RESOLVE_DLL_REFERENCES);
    if (patch_va == 0)
        fail("LoadLibraryEx failed", argv[2]);
    out_str("IMAGES base=");
    out_hex((u64)base_va);
    out_str(" patch=");
    out_hex((u64)patch_va);
    out_nl();
    for (int i = 3; i < argc; i++) {
        u64 v;
        if (str_eq(argv[i], "--iterations") && i + 1 < argc && parse_u64(argv[i + 1], &v) && v != 0u) {
            per_phase = v;
            i++;
        } else if (str_eq(argv[i], "--trap") && i + 1 < argc && parse_u64(argv[i + 1], &v) && ntraps < MAX_TRAPS) {
            traps[ntraps++] = (u32)v;
            i++;
        } else if (str_eq(argv[i], "--global") && i + 1 < argc) {
            parse_global(argv[++i]);
        } else if (ncalls < MAX_CALLS) {
            why = call_parse(&calls[ncalls], argv[i], base_va);
            if (why != 0) {
                out_str("ERROR call ");
                out_str(argv[i]);
                out_str(": ");
                fail(why, 0);
            }
            ncalls++;
        } else {
            fail("too many calls", 0);
        }
    }
    if (ncalls == 0)
        fail("usage", "no CALL");

    why = hp_read(patch_va, base_va, &table);
    if (why != 0) {
        out_str("REFUSED ");
        out_str(why);
        out_nl();
        ExitProcess(3u);
    }
    out_str("TABLE version=");
    out_u64(table.version);
    out_str(" size=");
    out_u64(table.size);
    out_str(" seq=");
    out_u64(table.sequence);
    out_str(" extra=");
    out_u64(table.extra_words);
    out_str(" base_seq=");
    out_u64(table.base_sequence);
    out_str(" base_flags=");
    out_hex(table.base_flags);
    out_nl();
    for (int i = 0; i < table.nrecords; i++) {
        out_str("RECORD ");
        out_str(hp_kind(&table.records[i]));
        out_str(" ");
        out_hex(table.records[i].site);
        out_str(" ");
        out_hex(table.records[i].value);
        out_str(" ");
        out_hex(table.records[i].extra);
        out_nl();
    }

    npd = snapshot(patch_va, SCN_MEM_WRITE, patch_data);
    nbc = snapshot(base_va, SCN_MEM_EXECUTE, base_code);
    thread = CreateThread(0, 0, caller, 0, 0, 0);
    if (thread == 0)
        fail("CreateThread", 0);
    if (!wait_clean(0, (u32)per_phase))
        fail("the calling thread stalled", "before the patch");

    if (!first_bytes_ok()) {
        refused = 1;
    } else {
        apply_table();
        phase = 1;
        if (!wait_clean(1, (u32)per_phase)) {
            out_str("STALL phase=1");
            out_nl();
        }
        hold = 1;
        for (u32 start = GetTickCount(); !held && GetTickCount() - start < 60000u;)
            Sleep(1u);
        for (int i = 0; i < nglobals; i++) {
            out_str("GLOBAL ");
            out_str(globals[i].name);
            out_str(" base=");
            out_hex(read_global(base_va, globals[i].base_rva, globals[i].size));
            out_str(" patch=");
            out_hex(read_global(patch_va, globals[i].patch_rva, globals[i].size));
            out_nl();
        }
        undo_table();
        out_str("UNDO base_code_identical=");
        out_u64(compare(base_va, base_code, nbc, 0) == 0);
        out_nl();
        phase = 2;
        hold = 0;
        if (!wait_clean(2, (u32)per_phase)) {
            out_str("STALL phase=2");
            out_nl();
        }
    }
    stop = 1;
    if (WaitForSingleObject(thread, 60000u) != 0u)
        out_str("THREAD did not stop"), out_nl();
    GetExitCodeThread(thread, &thread_exit);
    compare(patch_va, patch_data, npd, "PATCHDATA_CHANGED");
    print_vectors();
    out_str("THREAD iterations=");
    out_u64(iterations);
    out_str(" transitions=");
    out_u64(transitions);
    out_str(" exit=");
    out_u64(thread_exit);
    out_str(" dropped_vectors=");
    out_u64(dropped_vectors);
    out_nl();
    out_str("DONE");
    out_nl();
    ExitProcess(refused ? 3u : 0u);
}
