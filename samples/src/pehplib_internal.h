/* pehplib_internal.h - state shared by the translation units of pehplib, and the
 * few kernel32 functions it imports (declared here: the build uses no SDK). */
#ifndef PEHPLIB_INTERNAL_H
#define PEHPLIB_INTERNAL_H

#include "pehplib.h"

#define PEHP_NOINLINE __declspec(noinline)
#define PEHP_WINAPI __stdcall

__declspec(dllimport) unsigned long PEHP_WINAPI GetTickCount(void);
__declspec(dllimport) int PEHP_WINAPI QueryPerformanceCounter(long long *count);
__declspec(dllimport) void PEHP_WINAPI Sleep(unsigned long milliseconds);

/* Mutable globals.  They have external linkage so that /O2 keeps each one whole
 * (with its own PDB record) instead of splitting a struct into scalars. */
extern pehp_ring g_ring;
extern pehp_config g_config;
extern unsigned int g_record_count;
extern unsigned int g_last_value;
extern unsigned int g_peak_value;
extern volatile unsigned int g_last_error;
extern long long g_start_counter;

#endif /* PEHPLIB_INTERNAL_H */
