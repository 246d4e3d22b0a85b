/*
 * common.h - the pieces shared by the Wine test programs (runner.c, livepatch.c):
 * the few kernel32 functions they import (declared here: no SDK, no CRT), console
 * output, the command line, the call syntax and a call that survives a fault.
 *
 * Call syntax (one argument per call):  [TYPE:]NAME(ARG, ...)
 *   NAME   an export of the DLL;  ARG  an unsigned integer, decimal or 0x hex, or `buf` /
 *          `buf+N`: the address of (byte N of) a 4 KiB scratch buffer of the calling thread,
 *          zero at first, or `data+N`: the address of byte N of the process's read-only data,
 *          the contents of the file named by the environment variable PEHP_WINE_DATA
 *          (up to 16 MiB; loaded by calls_init) (up to 4 arguments,
 *          passed in RCX, RDX, R8, R9 as the x64 ABI does);
 *   TYPE   how the result (RAX) is shown and compared: u64 (default), u32 (low 32 bits)
 *          or void (nothing: the register holds whatever the callee left there).
 * or &NAME: the address GetProcAddress gives for the export, which is not called.
 */
#ifndef WINE_COMMON_H
#define WINE_COMMON_H

typedef unsigned long long u64;
typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned char u8;

#define WINAPI __stdcall
#define IMPORT __declspec(dllimport)

IMPORT void *WINAPI GetStdHandle(u32 which);
IMPORT int WINAPI WriteFile(void *file, const void *buf, u32 len, u32 *written, void *overlapped);
IMPORT char *WINAPI GetCommandLineA(void);
IMPORT __declspec(noreturn) void WINAPI ExitProcess(u32 code);
IMPORT void *WINAPI LoadLibraryA(const char *name);
IMPORT void *WINAPI LoadLibraryExA(const char *name, void *file, u32 flags);
IMPORT void *WINAPI GetProcAddress(void *module, const char *name);
IMPORT u32 WINAPI GetLastError(void);
IMPORT void *WINAPI AddVectoredExceptionHandler(u32 first, long(WINAPI *handler)(void *));
IMPORT u32 WINAPI TlsAlloc(void);
IMPORT void *WINAPI TlsGetValue(u32 index);
IMPORT int WINAPI TlsSetValue(u32 index, void *value);
IMPORT void *WINAPI VirtualAlloc(void *addr, u64 size, u32 type, u32 protect);
IMPORT int WINAPI VirtualProtect(void *addr, u64 size, u32 protect, u32 *old);
IMPORT void *WINAPI CreateThread(void *attrs, u64 stack, u32(WINAPI *start)(void *), void *arg,
                                 u32 flags, u32 *id);
IMPORT u32 WINAPI WaitForSingleObject(void *handle, u32 ms);
IMPORT int WINAPI GetExitCodeThread(void *thread, u32 *code);
IMPORT void WINAPI Sleep(u32 ms);
IMPORT u32 WINAPI GetTickCount(void);
IMPORT void *WINAPI GetCurrentProcess(void);
IMPORT int WINAPI FlushInstructionCache(void *process, const void *addr, u64 size);
IMPORT u32 WINAPI GetEnvironmentVariableA(const char *name, char *buf, u32 size);
IMPORT void *WINAPI CreateFileA(const char *name, u32 access, u32 share, void *security, u32 disposition,
                                u32 flags, void *template_file);
IMPORT int WINAPI ReadFile(void *file, void *buf, u32 len, u32 *read, void *overlapped);
IMPORT int WINAPI CloseHandle(void *handle);

#define MEM_COMMIT 0x1000u
#define MEM_RESERVE 0x2000u
#define PAGE_READONLY 0x02u
#define PAGE_READWRITE 0x04u
#define PAGE_EXECUTE_READ 0x20u
#define PAGE_EXECUTE_READWRITE 0x40u
#define DONT_RESOLVE_DLL_REFERENCES 0x1u

/* ---------------------------------------------------------------- output */
void out_str(const char *s);
void out_u64(u64 v);                 /* decimal */
void out_hex(u64 v);                 /* 0x... */
void out_nl(void);
__declspec(noreturn) void fail(const char *what, const char *detail);

/* ---------------------------------------------------------------- memory */
u64 str_len(const char *s);
int str_eq(const char *a, const char *b);
void mem_copy(void *dst, const void *src, u64 n);
int mem_eq(const void *a, const void *b, u64 n);

/* ------------------------------------------------------------ command line */
#define MAX_ARGS 256
/* Splits GetCommandLineA() into argv (quotes group, no escapes); returns argc. */
int command_line(char **argv, int max);
int parse_u64(const char *s, u64 *out);

/* ----------------------------------------------------------------- calls */
enum result_type { RT_U64, RT_U32, RT_VOID, RT_ADDR };

typedef struct call {
    const char *text; /* as given */
    char name[128];
    int type;
    int argc;
    u64 args[4];
    u32 bufs;  /* bit i: argument i is the scratch buffer */
    u32 datas; /* bit i: argument i is an offset into the data file */
    void *fn;
} call;

/* Parses TEXT into C and resolves the export in MODULE; 0 on success, else a reason. */
const char *call_parse(call *c, const char *text, void *module);

typedef struct outcome {
    u64 value;      /* RAX, masked by the call's type (0 for void) */
    u32 fault;      /* exception code, 0 when the call returned */
    u64 fault_addr; /* where it happened */
} outcome;

/* Installs the fault handler; call once per process before call_run. */
void calls_init(void);
/* Calls C; a fault inside the call (access violation, int3, ...) is caught and returned. */
void call_run(const call *c, outcome *o);
/* Prints "OK <hex>", "OK void" or "FAULT <code> <addr>" (no newline). */
void outcome_print(const outcome *o, int type);

#endif /* WINE_COMMON_H */
