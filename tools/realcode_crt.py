"""The stand-in C runtime of the real-code builds (tools/realcode.py).

There is no Windows SDK here, and the DLLs are built without the C runtime (``/Zl``,
``/nodefaultlib``): a support unit gives what the runtime would give a DLL (DllMain, a
load configuration, ``_fltused``), stand-in headers declare only what the libraries use
(clang's own headers supply stddef.h, stdint.h, limits.h, intrin.h), and import
libraries made by llvm-dlltool-22 from the definitions below resolve the runtime
functions the code calls against the DLLs that export them on Windows.
"""

SUPPORT_C = r"""
/* DllMain, a load configuration large enough for HotPatchTableOffset, and _fltused:
   what the C runtime would otherwise supply to a DLL. */
int _fltused;
int __stdcall DllMain(void *instance, unsigned long reason, void *reserved)
{
    (void)instance; (void)reason; (void)reserved;
    return 1;
}
typedef struct { unsigned int Size; unsigned char rest[0x140 - 4]; } pehp_load_config;
const pehp_load_config _load_config_used = {.Size = sizeof(pehp_load_config)};
"""

# There is no Windows SDK here: the few C runtime headers the libraries include, declaring
# only what they use (clang's own headers supply stddef.h, stdint.h, limits.h, intrin.h).
HEADERS = {
    "stdlib.h": """#pragma once
#include <stddef.h>
void *malloc(size_t n);
void *calloc(size_t n, size_t m);
void *realloc(void *p, size_t n);
void free(void *p);
unsigned short _byteswap_ushort(unsigned short v);
unsigned long _byteswap_ulong(unsigned long v);
unsigned long long _byteswap_uint64(unsigned long long v);
unsigned int _rotl(unsigned int v, int s);
unsigned long long _rotl64(unsigned long long v, int s);
void exit(int status);
void abort(void);
void qsort(void *base, size_t n, size_t size, int (*cmp)(const void *, const void *));
void *bsearch(const void *key, const void *base, size_t n, size_t size, int (*cmp)(const void *, const void *));
long long llabs(long long v);
#define EXIT_FAILURE 1
""",
    "string.h": """#pragma once
#include <stddef.h>
void *memcpy(void *d, const void *s, size_t n);
void *memmove(void *d, const void *s, size_t n);
void *memset(void *d, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
void *memchr(const void *s, int c, size_t n);
size_t strlen(const char *s);
char *strchr(const char *s, int c);
char *strstr(const char *s, const char *t);
char *strcpy(char *d, const char *s);
int strcmp(const char *a, const char *b);
int strncmp(const char *a, const char *b, size_t n);
int _strnicmp(const char *a, const char *b, size_t n);
""",
    "ctype.h": "#pragma once\nint tolower(int c);\n",
    "memory.h": "#pragma once\n#include <string.h>\n",
    "math.h": """#pragma once
double log2(double x);
#define HUGE_VAL __builtin_huge_val()
""",
    "stdio.h": """#pragma once
#include <stddef.h>
typedef struct _iobuf FILE;
int fprintf(FILE *f, const char *fmt, ...);
FILE *__acrt_iob_func(unsigned i);
#define stderr (__acrt_iob_func(2))
int fflush(FILE *f);
size_t fread(void *p, size_t size, size_t n, FILE *f);
size_t fwrite(const void *p, size_t size, size_t n, FILE *f);
int snprintf(char *s, size_t n, const char *fmt, ...);
""",
    "assert.h": "#pragma once\n#define assert(x) ((void)0)\n",
    "sys/types.h": "#pragma once\ntypedef long off_t;\n",
    "malloc.h": """#pragma once
#include <stdlib.h>
void *_aligned_malloc(size_t n, size_t alignment);
void _aligned_free(void *p);
""",
    "setjmp.h": """#pragma once
typedef struct { unsigned long long part[2]; } __attribute__((aligned(16))) _JBTYPE;
typedef _JBTYPE jmp_buf[16];
""",
}

CRT_DEFS = {
    "vcruntime140": ("vcruntime140.dll", ("memcpy", "memmove", "memset", "memcmp", "memchr", "strlen", "strchr",
                                       "strstr")),
    "ucrt_heap": ("api-ms-win-crt-heap-l1-1-0.dll", ("malloc", "calloc", "realloc", "free", "_aligned_malloc",
                                                     "_aligned_free")),
    "ucrt_math": ("api-ms-win-crt-math-l1-1-0.dll", ("log2",)),
    "ucrt_runtime": ("api-ms-win-crt-runtime-l1-1-0.dll", ("exit", "abort")),
    # snprintf is inline in the real stdio.h (over __stdio_common_vsprintf): a stand-in import here
    "ucrt_stdio": ("api-ms-win-crt-stdio-l1-1-0.dll", ("__acrt_iob_func", "fflush", "fprintf", "fwrite",
                                                        "fread", "snprintf")),
    "ucrt_string": ("api-ms-win-crt-string-l1-1-0.dll", ("strcpy", "strcmp", "strncmp", "_strnicmp",
                                                         "tolower")),
    "ucrt_utility": ("api-ms-win-crt-utility-l1-1-0.dll", ("qsort", "bsearch")),
}
