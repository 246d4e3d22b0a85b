/*
 * livepatch.c - applies a final image's Hotpatch Table to a base DLL that a second thread
 * is running, in one Windows process under Wine, the way docs/FORMAT.md says the loader
 * does, then undoes it; prints what the thread observed.
 *
 *   livepatch.exe BASE FINAL [--iterations N] [--trap RVA]... [--global NAME:BRVA:PRVA:SIZE]...
 *                 [--then FINAL2] CALL...
 *
 * 1. LoadLibrary(BASE) (its DllMain runs); LoadLibraryEx(FINAL, DONT_RESOLVE_DLL_REFERENCES)
 *    maps the patch image, relocated, without its entry point or imports.
 * 2. hptable.c reads the table from the mapped FINAL and checks it against BASE.
 * 3. A thread runs the CALLs through BASE's exports in a loop (common.h syntax); each
 *    iteration's results are one vector, counted per phase: 0 before the patch, 1 patched,
 *    the last one after undo (an iteration during which the phase changed counts in none:
 *    a transition).
 * 4. After N clean iterations: every FUNCTION record's first bytes are checked (a mismatch
 *    refuses the whole table, nothing written); HPAT stub pages are allocated within
 *    +-2 GiB of each image that gets redirected; the INVERSE chunks are applied to the
 *    patch image (ABSOLUTE: slot = base + RVA; INDIRECT: slot = *(base + RVA); FUNCTION:
 *    redirect the patch copy to the base function; CALL_TARGET: nothing to write here);
 *    each --trap RVA of the patch image that was not redirected gets an int3 (a function
 *    that must never run there); then the FUNCTION chunks redirect the base: stubs filled
 *    and made executable first, then E9 rel32 to the stub at F-5, then EB F9 at F as one
 *    atomic write.
 * 5. After N patched iterations: the thread is held between iterations and each --global
 *    is read in both images; then, the thread running again, undo restores the saved bytes
 *    (EB F9 first) and the base's code must be byte-identical to before; N more iterations.
 *    An iteration that overlaps the writes of applying or undoing counts as a transition.
 *    With --then, FINAL2 (a higher sequence number for the same base) is applied after
 *    phase 1 and supersedes FINAL (phase 2: RETARGETED, REVERTED; FINAL's functions get
 *    an int3, RETIRED: nothing may run them any more); undo is phase 3.
 * 6. The patch images' writable sections must not have changed: a write there means code
 *    reached a patch image's copy of a global.
 *
 * Output (one fact per line; the test reads it):
 *   IMAGES base=<va> patch=<va> [then=<va>]
 *   TABLE version=.. size=.. seq=.. extra=.. base_seq=.. base_flags=..
 *   RECORD <kind> <site> <value> <extra>          in table order
 *   REFUSED <reason>                              (exit 3)
 *   THEN_TABLE ..., THEN_RECORD ...               the --then image's table
 *   HPAT <image> <va> <records>
 *   TRAP <rva> planted|redirected
 *   RETARGETED <rva>  /  REVERTED <rva>           base functions, when superseding
 *   RETIRED <rva>                                 FINAL's function, int3 after superseding
 *   APPLIED <records>
 *   GLOBAL <name> base=<v> patch=<v>
 *   UNDO base_code_identical=<0|1>
 *   PATCHDATA_CHANGED <rva> <bytes>               (THEN_PATCHDATA_CHANGED: FINAL2's)
 *   PHASE <p> clean=<n> vectors=<n>  /  VECTOR <p> <count> <result>|<result>|...
 *   THREAD iterations=<n> transitions=<n> exit=<code> dropped_vectors=<n>
 *   DONE
 */
#include "apply.h"

#define MAX_CALLS 128
#define MAX_VECTORS 8
#define MAX_TRAPS 256
#define MAX_GLOBALS 32
#define MAX_SECTIONS 32

static call calls[MAX_CALLS];
static int ncalls;
static u8 *base_va, *patch_va;
static hp_table table;
static u32 traps[MAX_TRAPS];
static int ntraps;

/* ----------------------------------------------------------- the calling thread */

typedef struct vector {
    u32 count;
    outcome results[MAX_CALLS];
} vector;

#define PHASE_APPLYING 10
#define PHASE_UNDOING 11
/* phase: 0 before, 1 patched, (2 superseded by --then,) then undone */
static volatile int phase, stop, hold, held;
static volatile u32 iterations, transitions, clean[4];
static vector vectors[4][MAX_VECTORS];
static int nvectors[4];
static int last_phase;
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
        if (p0 == p1 && p0 <= 3) {
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
    for (int p = 0; p <= last_phase; p++) {
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

static void print_table(const char *prefix, const hp_table *t)
{
    out_str(prefix);
    out_str("TABLE version=");
    out_u64(t->version);
    out_str(" size=");
    out_u64(t->size);
    out_str(" seq=");
    out_u64(t->sequence);
    out_str(" extra=");
    out_u64(t->extra_words);
    out_str(" base_seq=");
    out_u64(t->base_sequence);
    out_str(" base_flags=");
    out_hex(t->base_flags);
    out_nl();
    for (int i = 0; i < t->nrecords; i++) {
        out_str(prefix);
        out_str("RECORD ");
        out_str(hp_kind(&t->records[i]));
        out_str(" ");
        out_hex(t->records[i].site);
        out_str(" ");
        out_hex(t->records[i].value);
        out_str(" ");
        out_hex(t->records[i].extra);
        out_nl();
    }
}

static void refuse(const char *why)
{
    out_str("REFUSED ");
    out_str(why);
    out_nl();
    ExitProcess(3u);
}

/* Applies T (the patch image at PATCH) while the thread runs, then waits for N clean
 * iterations in phase NEXT; 0 when the first bytes do not match (nothing written).
 * When T supersedes RETIRED (mapped at RETIRED_VA), the functions RETIRED redirected the
 * base to get an int3 in its image: after the supersede nothing may run them. */
static int apply_phase(const hp_table *t, u8 *patch, const u32 *trap_rvas, int ntrap, int next, u32 n,
                       const hp_table *retired, u8 *retired_va)
{
    if (!hp_first_bytes_ok(t, base_va, patch))
        return 0;
    phase = PHASE_APPLYING; /* an iteration overlapping the writes counts in no phase */
    hp_apply(t, base_va, patch, trap_rvas, ntrap);
    for (int i = 0; retired != 0 && i < retired->nrecords; i++) {
        const hp_record *r = &retired->records[i];
        u32 old;
        if (r->inverse || r->type != HP_FUNCTION)
            continue;
        if (!VirtualProtect(retired_va + r->value, 1u, PAGE_EXECUTE_READWRITE, &old))
            fail("VirtualProtect", 0);
        retired_va[r->value] = 0xCC;
        VirtualProtect(retired_va + r->value, 1u, old, &old);
        FlushInstructionCache(GetCurrentProcess(), retired_va + r->value, 1u);
        out_str("RETIRED ");
        out_hex(r->value);
        out_nl();
    }
    phase = last_phase = next;
    if (!wait_clean(next, n)) {
        out_str("STALL phase=");
        out_u64((u64)next);
        out_nl();
    }
    return 1;
}

static hp_table then_table;

void livepatch_main(void)
{
    static char *argv[MAX_ARGS];
    static span patch_data[MAX_SECTIONS], then_data[MAX_SECTIONS], base_code[MAX_SECTIONS];
    int argc = command_line(argv, MAX_ARGS), npd, ntd = 0, nbc, refused = 0;
    u64 per_phase = 200;
    void *thread;
    u32 thread_exit = 0;
    const char *why, *then_path = 0;
    u8 *then_va = 0;
    if (argc < 4)
        fail("usage", "livepatch.exe BASE FINAL [--iterations N] [--trap RVA]... [--global N:B:P:S]... "
                      "[--then FINAL2] CALL...");
    calls_init();
    base_va = (u8 *)LoadLibraryA(argv[1]);
    if (base_va == 0)
        fail("LoadLibrary failed", argv[1]);
    patch_va = (u8 *)LoadLibraryExA(argv[2], 0, DONT_RESOLVE_DLL_REFERENCES);
    if (patch_va == 0)
        fail("LoadLibraryEx failed", argv[2]);
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
        } else if (str_eq(argv[i], "--then") && i + 1 < argc) {
            then_path = argv[++i];
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
    if (then_path != 0 && (then_va = (u8 *)LoadLibraryExA(then_path, 0, DONT_RESOLVE_DLL_REFERENCES)) == 0)
        fail("LoadLibraryEx failed", then_path);
    out_str("IMAGES base=");
    out_hex((u64)base_va);
    out_str(" patch=");
    out_hex((u64)patch_va);
    if (then_va != 0) {
        out_str(" then=");
        out_hex((u64)then_va);
    }
    out_nl();

    why = hp_read(patch_va, base_va, &table);
    if (why != 0)
        refuse(why);
    print_table("", &table);
    if (then_va != 0) {
        why = hp_read(then_va, base_va, &then_table);
        if (why != 0)
            refuse(why);
        print_table("THEN_", &then_table);
        if (then_table.sequence <= table.sequence)
            refuse("the second patch's SequenceNumber is not higher than the first's");
    }

    npd = snapshot(patch_va, SCN_MEM_WRITE, patch_data);
    if (then_va != 0)
        ntd = snapshot(then_va, SCN_MEM_WRITE, then_data);
    nbc = snapshot(base_va, SCN_MEM_EXECUTE, base_code);
    thread = CreateThread(0, 0, caller, 0, 0, 0);
    if (thread == 0)
        fail("CreateThread", 0);
    if (!wait_clean(0, (u32)per_phase))
        fail("the calling thread stalled", "before the patch");

    if (!apply_phase(&table, patch_va, traps, ntraps, 1, (u32)per_phase, 0, 0)) {
        refused = 1;
    } else {
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
        hold = 0; /* the thread runs on while the base is patched again or restored */
        for (u32 start = GetTickCount(), seen = iterations; (held || iterations == seen) &&
                                                             GetTickCount() - start < 60000u;)
            Sleep(0u);
        if (then_va != 0 && !apply_phase(&then_table, then_va, 0, 0, 2, (u32)per_phase, &table, patch_va))
            refused = 1;
        phase = PHASE_UNDOING;
        hp_undo();
        phase = ++last_phase;
        out_str("UNDO base_code_identical=");
        out_u64(compare(base_va, base_code, nbc, 0) == 0);
        out_nl();
        if (!wait_clean(last_phase, (u32)per_phase)) {
            out_str("STALL phase=");
            out_u64((u64)last_phase);
            out_nl();
        }
    }
    stop = 1;
    if (WaitForSingleObject(thread, 60000u) != 0u)
        out_str("STALL the thread did not stop"), out_nl();
    GetExitCodeThread(thread, &thread_exit);
    compare(patch_va, patch_data, npd, "PATCHDATA_CHANGED");
    if (then_va != 0)
        compare(then_va, then_data, ntd, "THEN_PATCHDATA_CHANGED");
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
