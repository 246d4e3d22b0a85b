/*
 * gatetls.c - a thread-local counter for gatelib's tls_ref scenario, with the TLS
 * directory the CRT would otherwise provide (_tls_used, _tls_index).
 */
#include "gatelib.h"

typedef unsigned long long gate_u64;

#pragma section(".tls", read, write)
#pragma section(".tls$ZZZ", read, write)
#pragma section(".CRT$XLA", read)
#pragma section(".CRT$XLZ", read)
__declspec(allocate(".tls")) char _tls_start = 0;
__declspec(allocate(".tls$ZZZ")) char _tls_end = 0;
__declspec(allocate(".CRT$XLA")) const gate_u64 __xl_a = 0;
__declspec(allocate(".CRT$XLZ")) const gate_u64 __xl_z = 0;
unsigned long _tls_index = 0;

struct gate_tls_directory {
    gate_u64 StartAddressOfRawData, EndAddressOfRawData, AddressOfIndex, AddressOfCallBacks;
    unsigned int SizeOfZeroFill, Characteristics;
};
const struct gate_tls_directory _tls_used = {
    (gate_u64)&_tls_start, (gate_u64)&_tls_end, (gate_u64)&_tls_index, (gate_u64)(&__xl_a + 1), 0, 0,
};

__declspec(thread) gate_u32 t_depth = 1;

GATE_API gate_u32 gate_tls_enter(void)
{
#ifdef GATE_TLS_REF
    if (t_depth >= 100)
        return t_depth; /* the fix: bound the depth */
#endif
    return ++t_depth;
}
