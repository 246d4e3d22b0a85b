/*
 * pehplib.c - core of pehplib: event ring, checksum, configuration, DllMain and
 * the load-config directory.  Built without a CRT (/Zl, /nodefaultlib), so it
 * calls no C library function and avoids loops that the optimizer would turn
 * into memset/memcpy/strlen calls.
 *
 * Each PEHP_<SCENARIO> block below is one scenario of the sample corpus; the
 * base image is always built with none of them defined.
 */
#include "pehplib_internal.h"

/* ------------------------------------------------------------------ globals */

pehp_ring g_ring; /* zero-initialized (.bss) */
#ifdef PEHP_DATA_INIT_CHANGE
pehp_config g_config = {0u, 65535u, 8u, 0u}; /* data_init_change: new default limit */
#else
pehp_config g_config = {0u, 100000u, 8u, 0u}; /* initialized (.data) */
#endif
unsigned int g_record_count;
unsigned int g_last_value;
unsigned int g_peak_value;
volatile unsigned int g_last_error;
long long g_start_counter;

/* A constant table without pointers: hot-patched code may read it directly. */
static const unsigned int crc32_nibble[16] = {
    0x00000000u, 0x1DB71064u, 0x3B6E20C8u, 0x26D930ACu, 0x76DC4190u, 0x6B6B51F4u,
    0x4DB26158u, 0x5005713Cu, 0xEDB88320u, 0xF00F9344u, 0xD6D6A3E8u, 0xCB61B38Cu,
    0x9B64C2B0u, 0x86D3D2D4u, 0xA00AE278u, 0xBDBDF21Cu};

static const unsigned char kind_weight[PEHP_KIND_COUNT] = {1, 2, 4, 1};

/* Constant tables with pointers: hot-patched code must reach them via __ref_. */
static const char *const kind_names[PEHP_KIND_COUNT] = {"info", "warn", "error", "metric"};

typedef unsigned int (*pehp_handler)(unsigned int value);

static unsigned int handle_info(unsigned int value) { return value; }

static unsigned int handle_warn(unsigned int value)
{
    g_last_error = 3u;
    return value;
}

static unsigned int handle_error(unsigned int value)
{
    g_last_error = value | 0x80000000u;
    return 0u;
}

static unsigned int handle_metric(unsigned int value)
{
    if (value > g_peak_value)
        g_peak_value = value;
    return value;
}

static const pehp_handler kind_handlers[PEHP_KIND_COUNT] = {handle_info, handle_warn, handle_error,
                                                            handle_metric};

/* ---------------------------------------------------------- internal helpers */

static PEHP_NOINLINE unsigned int now_ticks(void) { return (unsigned int)GetTickCount(); }

static PEHP_NOINLINE long long now_counter(void)
{
    long long counter = 0;
    if (!QueryPerformanceCounter(&counter))
        return 0;
    return counter;
}

static PEHP_NOINLINE unsigned int clamp_value(unsigned int value)
{
    unsigned int limit = g_config.max_value;
    return value > limit ? limit : value;
}

/* Inlined into both of its callers (telemetry_record, telemetry_peek_scaled). */
static inline unsigned int scale_value(unsigned int value, unsigned int shift)
{
#ifdef PEHP_INLINE_PULLS
    if (shift > 31u) /* inline_pulls: a shift of 32 or more is undefined */
        return 0u;
#endif
    return value >> shift;
}

static PEHP_NOINLINE void ring_reset(pehp_ring *ring)
{
    ring->head = 0u;
    ring->tail = 0u;
    ring->count = 0u;
    ring->dropped = 0u;
}

static PEHP_NOINLINE int ring_push(pehp_ring *ring, const pehp_event *event)
{
    pehp_event *slot;
    if (ring->count == PEHP_RING_CAPACITY) {
        ring->dropped++;
        return 0;
    }
    slot = &ring->events[ring->head];
    slot->timestamp = event->timestamp;
    slot->kind = event->kind;
    slot->flags = event->flags;
    slot->value = event->value;
    ring->head = (ring->head + 1u) & (PEHP_RING_CAPACITY - 1u);
    ring->count++;
    return 1;
}

static PEHP_NOINLINE int ring_pop(pehp_ring *ring, pehp_event *out)
{
    const pehp_event *slot;
    if (ring->count == 0u)
        return 0;
    slot = &ring->events[ring->tail];
    out->timestamp = slot->timestamp;
    out->kind = slot->kind;
    out->flags = slot->flags;
    out->value = slot->value;
    ring->tail = (ring->tail + 1u) & (PEHP_RING_CAPACITY - 1u);
    ring->count--;
    return 1;
}

static PEHP_NOINLINE void telemetry_startup(void)
{
    ring_reset(&g_ring);
    g_start_counter = now_counter();
}

/* ------------------------------------------------------------------ exports */

PEHP_API unsigned int pehp_version(void) { return 0x00010003u; }

PEHP_API void telemetry_init(void)
{
    ring_reset(&g_ring);
    g_record_count = 0u;
    g_last_value = 0u;
    g_peak_value = 0u;
    g_last_error = 0u;
    g_start_counter = now_counter();
}

PEHP_API int telemetry_record(unsigned int kind, unsigned int value)
{
    pehp_event event;
    if (kind >= PEHP_KIND_COUNT) {
        g_last_error = 1u;
        return 0;
    }
    event.timestamp = now_ticks();
    event.kind = (unsigned short)kind;
    event.flags = 0u;
    event.value = scale_value(clamp_value(value), g_config.scale_shift);
    g_last_value = event.value;
#ifdef PEHP_FIX_GLOBALS
    /* fix_globals: count only what was stored, and track the peak */
    if (event.value > g_peak_value)
        g_peak_value = event.value;
    if (!ring_push(&g_ring, &event)) {
        g_last_error = 2u;
        return 0;
    }
    g_record_count++;
#else
    g_record_count++;
    if (!ring_push(&g_ring, &event)) {
        g_last_error = 2u;
        return 0;
    }
#endif
    return 1;
}

PEHP_API unsigned int telemetry_count(void) { return g_record_count; }

#ifndef PEHP_REMOVED_EXPORT
/* Kept for old callers; removed_export drops it. */
PEHP_API unsigned int telemetry_legacy_count(void) { return g_record_count + g_ring.dropped; }
#endif

PEHP_API unsigned int telemetry_flush(pehp_event *out, unsigned int max)
{
    unsigned int n = 0u;
#if defined(PEHP_FIX_CALLS_UNCHANGED) || defined(PEHP_PROLOGUE_NOT_PATCHABLE)
    /* fix: never write out[max] */
    if (out == 0)
        return 0u;
    while (n < max && ring_pop(&g_ring, &out[n]))
        n++;
#else
    while (n <= max && ring_pop(&g_ring, &out[n]))
        n++;
#endif
    if (n != 0u)
        g_last_value = out[n - 1u].value;
    return n;
}

PEHP_API int telemetry_wait_empty(unsigned int timeout_ms)
{
    unsigned int start = now_ticks();
    while (g_ring.count != 0u) {
        if (now_ticks() - start >= timeout_ms)
            return 0;
#ifdef PEHP_NEW_IMPORT
        Sleep(1u); /* new_import: stop spinning while the consumer drains */
#endif
    }
    return 1;
}

PEHP_API unsigned int telemetry_peek_scaled(unsigned int index)
{
    const pehp_event *event;
    if (index >= g_ring.count)
        return 0u;
    event = &g_ring.events[(g_ring.tail + index) & (PEHP_RING_CAPACITY - 1u)];
    return scale_value(event->value, g_config.scale_shift);
}

PEHP_API unsigned int telemetry_checksum(const void *data, unsigned int len)
{
    const unsigned char *p = (const unsigned char *)data;
    unsigned int crc = 0xFFFFFFFFu;
    unsigned int i;
#ifdef PEHP_BODY_FIX
    if (p == 0) /* body_fix: a NULL buffer used to crash */
        return 0u;
#endif
    for (i = 0u; i < len; ++i) {
        crc ^= p[i];
        crc = (crc >> 4) ^ crc32_nibble[crc & 15u];
        crc = (crc >> 4) ^ crc32_nibble[crc & 15u];
    }
    return ~crc;
}

PEHP_API const char *telemetry_kind_name(unsigned int kind)
{
#ifdef PEHP_UNMARKED_CHANGE
    if (kind >= PEHP_KIND_COUNT) /* unmarked_change: off by one */
#else
    if (kind > PEHP_KIND_COUNT)
#endif
        return "unknown";
    return kind_names[kind];
}

PEHP_API unsigned int telemetry_dispatch(unsigned int kind, unsigned int value)
{
    if (kind >= PEHP_KIND_COUNT)
        return 0u;
    return kind_handlers[kind](value) * kind_weight[kind];
}

PEHP_API int telemetry_get_stats(pehp_stats *out)
{
    if (out == 0)
        return 0;
    out->recorded = g_record_count;
    out->dropped = g_ring.dropped;
    out->pending = g_ring.count;
#ifdef PEHP_STRUCT_LAYOUT
    out->peak_value = g_peak_value;
#endif
    out->last_value = g_last_value;
    return 1;
}

PEHP_API int telemetry_stats_valid(const pehp_stats *stats)
{
    if (stats == 0)
        return 0;
    if (stats->pending > PEHP_RING_CAPACITY)
        return 0;
    return stats->last_value <= g_config.max_value;
}

PEHP_API unsigned int telemetry_elapsed(void)
{
    return (unsigned int)(now_counter() - g_start_counter);
}

#ifdef PEHP_NEW_EXPORT
PEHP_API void telemetry_clear_error(void) { g_last_error = 0u; }
#endif

/* config_set is noinline so that config_reset really calls it. */
#ifdef PEHP_SIGNATURE_CHANGE
/* signature_change: a third parameter lets callers override the lock */
PEHP_API PEHP_NOINLINE int config_set(unsigned int key, unsigned int value, unsigned int flags)
{
    if ((g_config.flags & PEHP_CFG_FLAG_LOCKED) != 0u && (flags & PEHP_SET_FORCE) == 0u)
        return 0;
#else
PEHP_API PEHP_NOINLINE int config_set(unsigned int key, unsigned int value)
{
    if ((g_config.flags & PEHP_CFG_FLAG_LOCKED) != 0u && key != PEHP_CFG_FLAGS)
        return 0;
#endif
    switch (key) {
    case PEHP_CFG_SCALE_SHIFT:
        g_config.scale_shift = value;
        return 1;
    case PEHP_CFG_MAX_VALUE:
        g_config.max_value = value;
        return 1;
    case PEHP_CFG_FLUSH_THRESHOLD:
        g_config.flush_threshold = value;
        return 1;
    case PEHP_CFG_FLAGS:
        g_config.flags = value;
        return 1;
    default:
        g_last_error = 4u;
        return 0;
    }
}

PEHP_API unsigned int config_get(unsigned int key)
{
    switch (key) {
    case PEHP_CFG_SCALE_SHIFT:
        return g_config.scale_shift;
    case PEHP_CFG_MAX_VALUE:
        return g_config.max_value;
    case PEHP_CFG_FLUSH_THRESHOLD:
        return g_config.flush_threshold;
    case PEHP_CFG_FLAGS:
        return g_config.flags;
    default:
#ifdef PEHP_UNMARKED_CHANGE
        g_last_error = 4u; /* unmarked_change: report unknown keys like config_set */
#endif
        return 0u;
    }
}

PEHP_API void config_reset(void)
{
#ifdef PEHP_SIGNATURE_CHANGE
    config_set(PEHP_CFG_FLAGS, 0u, PEHP_SET_FORCE);
    config_set(PEHP_CFG_SCALE_SHIFT, 0u, PEHP_SET_FORCE);
    config_set(PEHP_CFG_MAX_VALUE, 100000u, PEHP_SET_FORCE);
    config_set(PEHP_CFG_FLUSH_THRESHOLD, 8u, PEHP_SET_FORCE);
#else
    config_set(PEHP_CFG_FLAGS, 0u);
    config_set(PEHP_CFG_SCALE_SHIFT, 0u);
    config_set(PEHP_CFG_MAX_VALUE, 100000u);
    config_set(PEHP_CFG_FLUSH_THRESHOLD, 8u);
#endif
}

/* ------------------------------------------------------------------- DllMain */

int PEHP_WINAPI DllMain(void *instance, unsigned long reason, void *reserved)
{
    (void)instance;
    (void)reserved;
    if (reason == 1u) /* DLL_PROCESS_ATTACH */
        telemetry_startup();
    return 1;
}

/* ------------------------------------------------------- load configuration */

/* IMAGE_LOAD_CONFIG_DIRECTORY32/64 as in winnt.h, written out because the build
 * uses no SDK.  The linker points the load-config data directory at the symbol
 * _load_config_used (x86: __load_config_used). */
#if defined(_M_IX86)
typedef unsigned int pehp_uptr;
#else
typedef unsigned long long pehp_uptr;
#endif

typedef struct pehp_load_config {
    unsigned int Size;
    unsigned int TimeDateStamp;
    unsigned short MajorVersion;
    unsigned short MinorVersion;
    unsigned int GlobalFlagsClear;
    unsigned int GlobalFlagsSet;
    unsigned int CriticalSectionDefaultTimeout;
    pehp_uptr DeCommitFreeBlockThreshold;
    pehp_uptr DeCommitTotalFreeThreshold;
    pehp_uptr LockPrefixTable;
    pehp_uptr MaximumAllocationSize;
    pehp_uptr VirtualMemoryThreshold;
#if defined(_M_IX86)
    unsigned int ProcessHeapFlags;
    pehp_uptr ProcessAffinityMask;
#else
    pehp_uptr ProcessAffinityMask;
    unsigned int ProcessHeapFlags;
#endif
    unsigned short CSDVersion;
    unsigned short DependentLoadFlags;
    pehp_uptr EditList;
    pehp_uptr SecurityCookie;
    pehp_uptr SEHandlerTable;
    pehp_uptr SEHandlerCount;
    pehp_uptr GuardCFCheckFunctionPointer;
    pehp_uptr GuardCFDispatchFunctionPointer;
    pehp_uptr GuardCFFunctionTable;
    pehp_uptr GuardCFFunctionCount;
    unsigned int GuardFlags;
    unsigned short CodeIntegrityFlags;
    unsigned short CodeIntegrityCatalog;
    unsigned int CodeIntegrityCatalogOffset;
    unsigned int CodeIntegrityReserved;
    pehp_uptr GuardAddressTakenIatEntryTable;
    pehp_uptr GuardAddressTakenIatEntryCount;
    pehp_uptr GuardLongJumpTargetTable;
    pehp_uptr GuardLongJumpTargetCount;
    pehp_uptr DynamicValueRelocTable;
    pehp_uptr CHPEMetadataPointer;
    pehp_uptr GuardRFFailureRoutine;
    pehp_uptr GuardRFFailureRoutineFunctionPointer;
    unsigned int DynamicValueRelocTableOffset;
    unsigned short DynamicValueRelocTableSection;
    unsigned short Reserved2;
    pehp_uptr GuardRFVerifyStackPointerFunctionPointer;
    unsigned int HotPatchTableOffset;
    unsigned int Reserved3;
    pehp_uptr EnclaveConfigurationPointer;
    pehp_uptr VolatileMetadataPointer;
    pehp_uptr GuardEHContinuationTable;
    pehp_uptr GuardEHContinuationCount;
    pehp_uptr GuardXFGCheckFunctionPointer;
    pehp_uptr GuardXFGDispatchFunctionPointer;
    pehp_uptr GuardXFGTableDispatchFunctionPointer;
    pehp_uptr CastGuardOsDeterminedFailureMode;
    pehp_uptr GuardMemcpyFunctionPointer;
} pehp_load_config;

#if defined(_M_IX86)
_Static_assert(sizeof(pehp_load_config) == 0xC0, "IMAGE_LOAD_CONFIG_DIRECTORY32 size");
_Static_assert(__builtin_offsetof(pehp_load_config, HotPatchTableOffset) == 0x94, "x86 layout");

/* Filled in by the linker (/SAFESEH). */
extern void *__safe_se_handler_table[];
extern unsigned char __safe_se_handler_count;

const pehp_load_config _load_config_used = {
    .Size = sizeof(pehp_load_config),
    .SEHandlerTable = (pehp_uptr)__safe_se_handler_table,
    .SEHandlerCount = (pehp_uptr)&__safe_se_handler_count,
};
#else
_Static_assert(sizeof(pehp_load_config) == 0x140, "IMAGE_LOAD_CONFIG_DIRECTORY64 size");
_Static_assert(__builtin_offsetof(pehp_load_config, HotPatchTableOffset) == 0xF0, "64-bit layout");

const pehp_load_config _load_config_used = {
    .Size = sizeof(pehp_load_config),
};
#endif
