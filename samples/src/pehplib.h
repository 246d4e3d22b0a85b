/*
 * pehplib.h - public interface of pehplib, a small CRT-free telemetry library:
 * a ring buffer of events, a CRC-32 checksum, a configuration block and a
 * text report.  It is the source of pehp's sample corpus (see samples/README.md):
 * every sample image is built from this code, and each scenario changes it
 * through one PEHP_<SCENARIO> macro.
 */
#ifndef PEHPLIB_H
#define PEHPLIB_H

#define PEHP_API __declspec(dllexport)

#define PEHP_RING_CAPACITY 32u /* a power of two */
#define PEHP_KIND_COUNT 4u

enum pehp_kind {
    PEHP_KIND_INFO = 0,
    PEHP_KIND_WARN = 1,
    PEHP_KIND_ERROR = 2,
    PEHP_KIND_METRIC = 3
};

enum pehp_config_key {
    PEHP_CFG_SCALE_SHIFT = 0,
    PEHP_CFG_MAX_VALUE = 1,
    PEHP_CFG_FLUSH_THRESHOLD = 2,
    PEHP_CFG_FLAGS = 3
};

#define PEHP_CFG_FLAG_LOCKED 0x1u
#define PEHP_SET_FORCE 0x1u

typedef struct pehp_event {
    unsigned int timestamp;
    unsigned short kind;
    unsigned short flags;
    unsigned int value;
} pehp_event;

typedef struct pehp_ring {
    unsigned int head;
    unsigned int tail;
    unsigned int count;
    unsigned int dropped;
    pehp_event events[PEHP_RING_CAPACITY];
} pehp_ring;

typedef struct pehp_config {
    unsigned int scale_shift;
    unsigned int max_value;
    unsigned int flush_threshold;
    unsigned int flags;
} pehp_config;

typedef struct pehp_stats {
    unsigned int recorded;
    unsigned int dropped;
    unsigned int pending;
#ifdef PEHP_STRUCT_LAYOUT
    unsigned int peak_value; /* struct_layout: a field added in the middle */
#endif
    unsigned int last_value;
} pehp_stats;

PEHP_API unsigned int pehp_version(void);
PEHP_API void telemetry_init(void);
PEHP_API int telemetry_record(unsigned int kind, unsigned int value);
PEHP_API unsigned int telemetry_count(void);
PEHP_API unsigned int telemetry_flush(pehp_event *out, unsigned int max);
PEHP_API int telemetry_wait_empty(unsigned int timeout_ms);
PEHP_API unsigned int telemetry_peek_scaled(unsigned int index);
PEHP_API unsigned int telemetry_checksum(const void *data, unsigned int len);
PEHP_API const char *telemetry_kind_name(unsigned int kind);
PEHP_API unsigned int telemetry_dispatch(unsigned int kind, unsigned int value);
PEHP_API int telemetry_get_stats(pehp_stats *out);
PEHP_API int telemetry_stats_valid(const pehp_stats *stats);
PEHP_API unsigned int telemetry_elapsed(void);
#ifndef PEHP_REMOVED_EXPORT
PEHP_API unsigned int telemetry_legacy_count(void);
#endif
#ifdef PEHP_NEW_EXPORT
PEHP_API void telemetry_clear_error(void);
#endif
#ifdef PEHP_SIGNATURE_CHANGE
PEHP_API int config_set(unsigned int key, unsigned int value, unsigned int flags);
#else
PEHP_API int config_set(unsigned int key, unsigned int value);
#endif
PEHP_API unsigned int config_get(unsigned int key);
PEHP_API void config_reset(void);
PEHP_API unsigned int report_format_u32(char *buf, unsigned int cap, unsigned int value);
PEHP_API unsigned int report_summary(char *buf, unsigned int cap);
PEHP_API unsigned int report_kind_line(char *buf, unsigned int cap, unsigned int kind);

#endif /* PEHPLIB_H */
