/*
 * pehplib_report.c - text formatting for pehplib (second translation unit).
 * No C library: the helpers below copy bytes one at a time with a bound, which
 * the optimizer does not turn into strcpy/memcpy calls.
 */
#include "pehplib_internal.h"

static PEHP_NOINLINE unsigned int put_str(char *buf, unsigned int cap, unsigned int pos,
                                          const char *text)
{
    while (*text != 0 && pos + 1u < cap)
        buf[pos++] = *text++;
    return pos;
}

static PEHP_NOINLINE unsigned int put_u32(char *buf, unsigned int cap, unsigned int pos,
                                          unsigned int value)
{
    char digits[10];
    unsigned int n = 0u;
    do {
        digits[n++] = (char)('0' + value % 10u);
        value /= 10u;
    } while (value != 0u);
    while (n != 0u && pos + 1u < cap)
        buf[pos++] = digits[--n];
    return pos;
}

PEHP_API unsigned int report_format_u32(char *buf, unsigned int cap, unsigned int value)
{
    unsigned int pos;
    if (buf == 0 || cap == 0u)
        return 0u;
    pos = put_u32(buf, cap, 0u, value);
    buf[pos] = 0;
    return pos;
}

PEHP_API unsigned int report_summary(char *buf, unsigned int cap)
{
    unsigned int pos = 0u;
    if (buf == 0 || cap == 0u)
        return 0u;
    pos = put_str(buf, cap, pos, "recorded=");
    pos = put_u32(buf, cap, pos, g_record_count);
    pos = put_str(buf, cap, pos, " dropped=");
#ifdef PEHP_DIRECT_GLOBAL_ACCESS
    pos = put_u32(buf, cap, pos, g_ring.dropped); /* fix: it printed the pending count */
#else
    pos = put_u32(buf, cap, pos, g_ring.count);
#endif
    buf[pos] = 0;
    return pos;
}

PEHP_API unsigned int report_kind_line(char *buf, unsigned int cap, unsigned int kind)
{
    unsigned int pos = 0u;
    if (buf == 0 || cap == 0u)
        return 0u;
    pos = put_str(buf, cap, pos, telemetry_kind_name(kind));
    pos = put_str(buf, cap, pos, ": ");
    pos = put_u32(buf, cap, pos, telemetry_dispatch(kind, g_last_value));
    buf[pos] = 0;
    return pos;
}
