/*
 * apply.h - applying a Hotpatch Table in-process, the way docs/FORMAT.md describes the
 * loader: HPAT stub pages (FF 25 FA 0F 00 00 = jmp [rip+0xFFA], the target pointer 0x1000
 * further) allocated within +-2 GiB of each image that gets redirected; the INVERSE chunks
 * into the patch image first (ABSOLUTE: slot = base + RVA; INDIRECT: slot = *(base + RVA);
 * FUNCTION: redirect the patch copy to the base function; CALL_TARGET: no write), then the
 * FUNCTION chunks into the base.  Redirecting F: E9 rel32 to its stub at F-5, then EB F9
 * at F as one atomic write, last.  Prints HPAT, TRAP and APPLIED lines (livepatch.c).
 */
#ifndef WINE_APPLY_H
#define WINE_APPLY_H

#include "hptable.h"

/* Compares the low two bytes of each FUNCTION record's extra word with the function it
 * redirects (as it was before any patch, for a base function an earlier patch redirected);
 * prints "REFUSED first bytes ..." for each mismatch; 1 when all match. */
int hp_first_bytes_ok(const hp_table *table, const u8 *base_va, const u8 *patch_va);

/* Applies TABLE (first bytes already checked).  Between the inverse and the forward
 * chunks, each of the TRAPS (patch image RVAs) not redirected gets an int3: a function
 * that must not run in the patch image faults instead of running silently.  Applied after
 * an earlier patch of the same base, it supersedes it: a base function both redirect gets
 * the new target in its stub (RETARGETED), one only the earlier patch redirected is
 * restored (REVERTED), the others are redirected as usual. */
void hp_apply(const hp_table *table, u8 *base_va, u8 *patch_va, const u32 *traps, int ntraps);

/* Restores the bytes the FUNCTION chunks overwrote in the base, the entry's two bytes first. */
void hp_undo(void);

#endif /* WINE_APPLY_H */
