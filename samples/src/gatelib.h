/*
 * gatelib.h - public interface of gatelib, the second sample library: small
 * functions, each the seed of one hard case for the gate (samples/README.md).
 * CRT-free, x64. Everything exported returns or takes unsigned integers so the
 * emulator can call it.
 */
#ifndef GATELIB_H
#define GATELIB_H

#define GATE_API __declspec(dllexport)

typedef unsigned int gate_u32;

GATE_API gate_u32 gate_arm(void);
GATE_API gate_u32 gate_fire(gate_u32 x);
GATE_API gate_u32 gate_select(gate_u32 fast);
GATE_API gate_u32 gate_is_default(void);
GATE_API gate_u32 gate_apply(gate_u32 x);
GATE_API gate_u32 gate_pool_put(gate_u32 i, gate_u32 key, gate_u32 value);
GATE_API gate_u32 gate_pool_get(gate_u32 i);
GATE_API gate_u32 gate_limit(void);
GATE_API gate_u32 gate_code_weight(gate_u32 code);
GATE_API gate_u32 gate_shared_a(gate_u32 i);
GATE_API gate_u32 gate_shared_b(gate_u32 i);
GATE_API gate_u32 gate_label_len(gate_u32 on);
GATE_API gate_u32 gate_scale(gate_u32 x);
GATE_API gate_u32 gate_sum(const gate_u32 *p, gate_u32 n);
GATE_API gate_u32 gate_sum_first(gate_u32 n);
GATE_API gate_u32 gate_count(void);
GATE_API gate_u32 gate_bump(gate_u32 by);
GATE_API gate_u32 gate_ticks(void);

#endif
