/*
 * common.c - console output, command line, call parsing and fault-tolerant calls for
 * the Wine test programs (see common.h).  Built without a CRT: no C library function
 * is called, and the few loops below are kept simple enough not to become one.
 */
#include "common.h"

/* the PEHP_WINE_DATA file (see common.h), read by calls_init */
static u8 *data_base;
static u64 data_size;

/* ------------------------------------------------------------------ output */

static char out_buf[4096];
static u32 out_len;

static void out_flush(void)
{
    u32 written = 0;
    if (out_len != 0u)
        WriteFile(GetStdHandle((u32)-11), out_buf, out_len, &written, 0);
    out_len = 0u;
}

static void out_char(char c)
{
    if (out_len == sizeof(out_buf))
        out_flush();
    out_buf[out_len++] = c;
}

void out_str(const char *s)
{
    while (*s != 0)
        out_char(*s++);
}

void out_u64(u64 v)
{
    char digits[24];
    int n = 0;
    do {
        digits[n++] = (char)('0' + v % 10u);
        v /= 10u;
    } while (v != 0u);
    while (n != 0)
        out_char(digits[--n]);
}

void out_hex(u64 v)
{
    char digits[16];
    int n = 0;
    do {
        digits[n++] = "0123456789abcdef"[v & 15u];
        v >>= 4;
    } while (v != 0u);
    out_str("0x");
    while (n != 0)
        out_char(digits[--n]);
}

void out_nl(void)
{
    out_char('\n');
    out_flush();
}

void fail(const char *what, const char *detail)
{
    out_str("ERROR ");
    out_str(what);
    if (detail != 0) {
        out_str(": ");
        out_str(detail);
    }
    out_nl();
    ExitProcess(2u);
}

/* ------------------------------------------------------------------ memory */

u64 str_len(const char *s)
{
    u64 n = 0;
    while (s[n] != 0)
        n++;
    return n;
}

int str_eq(const char *a, const char *b)
{
    while (*a != 0 && *a == *b) {
        a++;
        b++;
    }
    return *a == *b;
}

void mem_copy(void *dst, const void *src, u64 n)
{
    volatile u8 *d = (volatile u8 *)dst;
    const volatile u8 *s = (const volatile u8 *)src;
    while (n-- != 0u)
        *d++ = *s++;
}

int mem_eq(const void *a, const void *b, u64 n)
{
    const volatile u8 *x = (const volatile u8 *)a;
    const volatile u8 *y = (const volatile u8 *)b;
    for (u64 i = 0; i < n; i++)
        if (x[i] != y[i])
            return 0;
    return 1;
}

/* ------------------------------------------------------------ command line */

static char cmdline_copy[32768];

int command_line(char **argv, int max)
{
    const char *src = GetCommandLineA();
    char *dst = cmdline_copy;
    char *end = cmdline_copy + sizeof(cmdline_copy) - 1;
    int argc = 0;
    while (*src != 0) {
        int quoted = 0;
        while (*src == ' ' || *src == '\t')
            src++;
        if (*src == 0)
            break;
        if (argc == max)
            fail("command line", "too many arguments");
        argv[argc++] = dst;
        while (*src != 0 && (quoted || (*src != ' ' && *src != '\t'))) {
            if (*src == '"')
                quoted = !quoted;
            else if (dst < end)
                *dst++ = *src;
            src++;
        }
        if (dst >= end)
            fail("command line", "too long");
        *dst++ = 0;
    }
    return argc;
}

int parse_u64(const char *s, u64 *out)
{
    u64 v = 0;
    int base = 10, any = 0;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        s += 2;
    }
    for (;; s++) {
        u32 d;
        if (*s >= '0' && *s <= '9')
            d = (u32)(*s - '0');
        else if (base == 16 && *s >= 'a' && *s <= 'f')
            d = (u32)(*s - 'a' + 10);
        else if (base == 16 && *s >= 'A' && *s <= 'F')
            d = (u32)(*s - 'A' + 10);
        else
            break;
        if (v > (~0ull - d) / (u64)base)
            return 0;
        v = v * (u64)base + d;
        any = 1;
    }
    if (!any || *s != 0)
        return 0;
    *out = v;
    return 1;
}

/* ------------------------------------------------------------------- calls */

static int starts_with(const char *s, const char *prefix, const char **rest)
{
    while (*prefix != 0)
        if (*s++ != *prefix++)
            return 0;
    *rest = s;
    return 1;
}

const char *call_parse(call *c, const char *text, void *module)
{
    const char *p = text;
    u32 n = 0;
    c->text = text;
    c->type = RT_U64;
    c->argc = 0;
    c->bufs = 0u;
    c->datas = 0u;
    if (*p == '&') { /* the export's address: resolved, not called */
        c->type = RT_ADDR;
        p++;
        while (*p != 0) {
            if (n + 1u >= sizeof(c->name))
                return "export name too long";
            c->name[n++] = *p++;
        }
        c->name[n] = 0;
        c->fn = GetProcAddress(module, c->name);
        return n == 0u ? "expected &NAME" : c->fn == 0 ? "no such export" : 0;
    }
    if (starts_with(p, "u64:", &p))
        c->type = RT_U64;
    else if (starts_with(p, "u32:", &p))
        c->type = RT_U32;
    else if (starts_with(p, "void:", &p))
        c->type = RT_VOID;
    while (*p != '(' && *p != 0) {
        if (n + 1u >= sizeof(c->name))
            return "export name too long";
        c->name[n++] = *p++;
    }
    c->name[n] = 0;
    if (*p != '(' || n == 0u)
        return "expected NAME(ARG, ...)";
    p++;
    while (*p == ' ')
        p++;
    while (*p != ')') {
        char num[32];
        const char *rest;
        u64 offset = 0;
        u32 k = 0;
        if (c->argc == 4)
            return "more than 4 arguments";
        while (*p != ',' && *p != ')' && *p != ' ' && *p != 0) {
            if (k + 1u >= sizeof(num))
                return "argument too long";
            num[k++] = *p++;
        }
        num[k] = 0;
        while (*p == ' ')
            p++;
        if (starts_with(num, "buf", &rest) && (*rest == 0 || (*rest == '+' && parse_u64(rest + 1, &offset) &&
                                                            offset < 0x1000u))) {
            c->bufs |= 1u << c->argc;
            c->args[c->argc] = *rest == 0 ? 0u : offset; /* offset into the buffer */
        } else if (starts_with(num, "data", &rest) && (*rest == 0 || (*rest == '+' && parse_u64(rest + 1, &offset)))) {
            if (offset > data_size)
                return "data offset beyond the data file";
            c->datas |= 1u << c->argc;
            c->args[c->argc] = offset;
        } else if (!parse_u64(num, &c->args[c->argc]))
            return "argument is not an unsigned integer";
        c->argc++;
        if (*p == ',') {
            p++;
            while (*p == ' ')
                p++;
        } else if (*p != ')') {
            return "expected ',' or ')'";
        }
    }
    if (p[1] != 0)
        return "text after ')'";
    for (int i = c->argc; i < 4; i++)
        c->args[i] = 0;
    c->fn = GetProcAddress(module, c->name);
    if (c->fn == 0)
        return "no such export";
    return 0;
}

/* A fault inside a call: call_run() captures the thread's registers (RtlCaptureContext)
 * before the call; the vectored handler resumes the faulting thread from that capture,
 * with every callee-saved register as it was, and call_run() sees the fault flag. */
typedef struct guard {
    u8 context[0x4D0];   /* CONTEXT (x64), 16-byte aligned: first in a fresh page */
    volatile int active; /* inside a guarded call */
    volatile int faulted;
    volatile u32 code;
    volatile u64 addr;
    u8 scratch[0x1000] __attribute__((aligned(16))); /* the `buf` argument */
} guard;

__attribute__((returns_twice)) IMPORT void WINAPI RtlCaptureContext(void *context);

static u32 guard_tls = 0xFFFFFFFFu;

static long WINAPI call_fault_handler(void *pointers)
{
    void **ep = (void **)pointers; /* EXCEPTION_POINTERS: record, context */
    u8 *record = (u8 *)ep[0];
    u32 code = *(u32 *)record;
    guard *g = (guard *)TlsGetValue(guard_tls);
    if (g == 0 || !g->active || (code & 0x80000000u) == 0u)
        return 0; /* EXCEPTION_CONTINUE_SEARCH: not ours, or not an error */
    g->active = 0;
    g->code = code;
    g->addr = *(u64 *)(record + 0x10);
    g->faulted = 1;
    mem_copy(ep[1], g->context, sizeof(g->context));
    return -1; /* EXCEPTION_CONTINUE_EXECUTION: back to the capture in call_run */
}

#define DATA_MAX 0x1000000u

/* PEHP_WINE_DATA's file, read into a read-only region (nothing when the variable is unset). */
static void data_load(void)
{
    char path[1024];
    u32 n = GetEnvironmentVariableA("PEHP_WINE_DATA", path, sizeof(path)), got = 0, old;
    void *file;
    if (n == 0u || n >= sizeof(path))
        return;
    file = CreateFileA(path, 0x80000000u /* GENERIC_READ */, 1u, 0, 3u /* OPEN_EXISTING */, 0x80u, 0);
    if (file == (void *)-1)
        fail("PEHP_WINE_DATA", "cannot open the data file");
    data_base = (u8 *)VirtualAlloc(0, DATA_MAX, MEM_COMMIT | MEM_RESERVE, PAGE_READWRITE);
    if (data_base == 0)
        fail("PEHP_WINE_DATA", "cannot allocate");
    do {
        if (!ReadFile(file, data_base + data_size, DATA_MAX - (u32)data_size, &got, 0))
            fail("PEHP_WINE_DATA", "cannot read the data file");
        data_size += got;
    } while (got != 0u && data_size < DATA_MAX);
    CloseHandle(file);
    if (!VirtualProtect(data_base, DATA_MAX, PAGE_READONLY, &old))
        fail("PEHP_WINE_DATA", "cannot protect");
}

void calls_init(void)
{
    data_load();
    guard_tls = TlsAlloc();
    if (guard_tls == 0xFFFFFFFFu)
        fail("TlsAlloc", 0);
    if (AddVectoredExceptionHandler(1u, call_fault_handler) == 0)
        fail("AddVectoredExceptionHandler", 0);
}

typedef u64 (*fn4)(u64, u64, u64, u64);

__declspec(noinline) void call_run(const call *c, outcome *o)
{
    guard *g = (guard *)TlsGetValue(guard_tls);
    if (g == 0) {
        g = (guard *)VirtualAlloc(0, sizeof(guard), MEM_COMMIT | MEM_RESERVE, PAGE_READWRITE);
        if (g == 0 || !TlsSetValue(guard_tls, g))
            fail("fault guard", "cannot allocate");
    }
    o->fault = 0u;
    o->fault_addr = 0u;
    o->value = 0u;
    if (c->type == RT_ADDR) {
        o->value = (u64)c->fn;
        return;
    }
    g->faulted = 0;
    RtlCaptureContext(g->context);
    if (g->faulted) {
        o->fault = g->code;
        o->fault_addr = g->addr;
        return;
    }
    g->active = 1;
    u64 a[4];
    for (int i = 0; i < 4; i++)
        a[i] = (c->bufs >> i) & 1u    ? (u64)g->scratch + c->args[i]
               : (c->datas >> i) & 1u ? (u64)data_base + c->args[i]
                                      : c->args[i];
    u64 r = ((fn4)c->fn)(a[0], a[1], a[2], a[3]);
    g->active = 0;
    o->value = c->type == RT_VOID ? 0u : c->type == RT_U32 ? (r & 0xFFFFFFFFu) : r;
}

void outcome_print(const outcome *o, int type)
{
    if (o->fault != 0u) {
        out_str("FAULT ");
        out_hex(o->fault);
        out_str(" ");
        out_hex(o->fault_addr);
    } else if (type == RT_VOID) {
        out_str("OK void");
    } else {
        out_str("OK ");
        out_hex(o->value);
    }
}
