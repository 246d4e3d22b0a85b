/*
 * gatelib.c - the second sample library (x64). Each GATE_<SCENARIO> block is the
 * fix of one scenario under samples/x64/ (see samples/README.md); the base is
 * always built without any of them. The base has no base relocations at all: no
 * data holds an address, so every relocation of an intermediate is its own.
 */
#include "gatelib.h"

int _fltused; /* floating point without the CRT */

__declspec(dllimport) unsigned long __stdcall GetTickCount(void);

/* The one import (kernel32.dll, like pehplib): an IAT slot, no base relocation. */
GATE_API gate_u32 gate_ticks(void) { return (gate_u32)GetTickCount(); }

/* ------------------------------------------------------------ counters */
gate_u32 g_count;
gate_u32 g_events;

GATE_API gate_u32 gate_count(void) { return g_count; }

GATE_API gate_u32 gate_bump(gate_u32 by)
{
#ifdef GATE_REF_RELOCS
    if (by > 1000)
        by = 1000; /* the fix: cap the step */
#endif
    g_count += by;
    return g_count;
}

/* ------------------------------------------- a callback slot in base data */
typedef gate_u32 (*gate_callback)(gate_u32);
gate_callback g_callback;
gate_u32 g_armed;

#ifdef GATE_ESCAPE_CALLBACK
/* New in the fix and not in the functions file: compiled as ordinary code, so
 * it reaches g_events and g_count directly. */
static __declspec(noinline) gate_u32 on_event_counted(gate_u32 x)
{
    g_events += 1;
    g_count += x;
    return x + 1;
}
#endif

GATE_API gate_u32 gate_arm(void)
{
#ifdef GATE_ESCAPE_CALLBACK
    g_callback = on_event_counted; /* the fix: count the events */
#endif
    g_armed = 1;
    return g_armed;
}

GATE_API gate_u32 gate_fire(gate_u32 x)
{
    if (!g_armed || !g_callback)
        return x;
    return g_callback(x);
}

/* --------------------------------------------- function-pointer identity */
static __declspec(noinline) gate_u32 handler_default(gate_u32 x) { return x + 7; }
static __declspec(noinline) gate_u32 handler_fast(gate_u32 x) { return x * 3; }
gate_callback g_handler;

GATE_API gate_u32 gate_select(gate_u32 fast)
{
    g_handler = fast ? handler_fast : handler_default;
    return fast;
}

GATE_API gate_u32 gate_is_default(void)
{
#ifdef GATE_FNPTR_IDENTITY
    return g_handler == 0 || g_handler == handler_default; /* the fix: unset means default */
#else
    return g_handler == handler_default;
#endif
}

GATE_API gate_u32 gate_apply(gate_u32 x) { return g_handler ? g_handler(x) : x; }

/* ------------------------------------------------- records in a byte pool */
struct gate_rec {
    gate_u32 key;
#ifdef GATE_HIDDEN_LAYOUT
    gate_u32 stamp; /* the fix: remember when the record was written */
#endif
    gate_u32 value;
};

unsigned char g_pool[256];

GATE_API gate_u32 gate_pool_put(gate_u32 i, gate_u32 key, gate_u32 value)
{
    struct gate_rec *r = (struct gate_rec *)g_pool + (i & 7);
    r->key = key;
#ifdef GATE_HIDDEN_LAYOUT
    r->stamp = g_count;
#endif
    r->value = value;
    return i & 7;
}

GATE_API gate_u32 gate_pool_get(gate_u32 i)
{
    struct gate_rec *r = (struct gate_rec *)g_pool + (i & 7);
#ifdef GATE_HIDDEN_LAYOUT
    if (r->key == 0)
        return 0; /* the fix: an empty record has no value */
#endif
    return r->value;
}

/* -------------------------------------------------- run-once initialiser */
gate_u32 g_limit;

static __declspec(noinline) void gate_setup(void)
{
#ifdef GATE_INIT_ONCE
    g_limit = 64; /* the fix: a larger limit */
#else
    g_limit = 16;
#endif
}

GATE_API gate_u32 gate_limit(void) { return g_limit; }

/* ------------------------------------------- switch tables and constants */
GATE_API gate_u32 gate_code_weight(gate_u32 code)
{
    switch (code) {
    case 0: return 3;
    case 1: return 5;
#ifdef GATE_SWITCH_TABLE
    case 2: return 8; /* the fix: the weight of code 2 */
#else
    case 2: return 7;
#endif
    case 3: return 11;
    case 4: return 13;
    case 5: return 17;
    default: return 0;
    }
}

static const gate_u32 k_shared[8] = {
#ifdef GATE_SWITCH_TABLE
    2, 3, 5, 7, 11, 13, 17, 23, /* the fix: the last entry */
#else
    2, 3, 5, 7, 11, 13, 17, 19,
#endif
};

GATE_API gate_u32 gate_shared_a(gate_u32 i) { return k_shared[i & 7] + 1; }
GATE_API gate_u32 gate_shared_b(gate_u32 i) { return k_shared[i & 7] * 2; }

static __declspec(noinline) gate_u32 text_len(const char *s)
{
    gate_u32 n = 0;
    while (s[n])
        n++;
    return n;
}

GATE_API gate_u32 gate_label_len(gate_u32 on)
{
#ifdef GATE_CONSTANTS
    return text_len(on ? "on" : "off"); /* the fix: shorter labels */
#else
    return text_len(on ? "gate-enabled" : "gate-disabled");
#endif
}

GATE_API gate_u32 gate_scale(gate_u32 x)
{
#ifdef GATE_CONSTANTS
    return (gate_u32)((float)x * 1.5f); /* the fix: the factor */
#else
    return (gate_u32)((float)x * 1.25f);
#endif
}

/* ------------------------------------------------ ABI-neutral qualifiers */
gate_u32 g_values[16];

#ifdef GATE_RESTRICT
GATE_API gate_u32 gate_sum(const gate_u32 *restrict p, const gate_u32 n)
{
    gate_u32 s = 0;
    if (!p)
        return 0xFFFFFFFFu; /* the fix: reject a null array */
    for (gate_u32 i = 0; i < n && i < 64; i++) /* and bound the count */
        s += p[i];
    return s;
}
#else
GATE_API gate_u32 gate_sum(const gate_u32 *p, gate_u32 n)
{
    gate_u32 s = 0;
    for (gate_u32 i = 0; i < n; i++)
        s += p[i];
    return s;
}
#endif

GATE_API gate_u32 gate_sum_first(gate_u32 n) { return gate_sum(g_values, n > 16 ? 16 : n); }

/* ------------------------------------------------------------- DllMain */
int __stdcall DllMain(void *instance, unsigned long reason, void *reserved)
{
    (void)instance;
    (void)reserved;
    if (reason == 1) /* DLL_PROCESS_ATTACH */
        gate_setup();
    return 1;
}

/* A load configuration large enough for HotPatchTableOffset (0xF0), holding no
 * address (so the base needs no relocation). */
typedef struct gate_load_config {
    unsigned int Size;
    unsigned char rest[0x140 - 4];
} gate_load_config;

const gate_load_config _load_config_used = {.Size = sizeof(gate_load_config)};
