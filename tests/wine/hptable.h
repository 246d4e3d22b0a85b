/*
 * hptable.h - a reader of the Hotpatch Table in a mapped image, written from
 * docs/FORMAT.md and the public winnt.h layout, independent of pehp's Python reader:
 * load config -> HotPatchTableOffset -> IMAGE_HOT_PATCH_INFO -> base list ->
 * IMAGE_HOT_PATCH_BASE -> chunks of records -> ULONG 0.
 */
#ifndef WINE_HPTABLE_H
#define WINE_HPTABLE_H

#include "common.h"

#define HP_INVERSE 0x80000000u
#define HP_OBLIGATORY 0x40000000u
#define HP_RESERVED 0x3FF03000u
#define HP_TYPE_MASK 0x000FC000u
#define HP_COUNT_MASK 0x00000FFFu
#define HP_FUNCTION 0x1C000u
#define HP_ABSOLUTE 0x2C000u
#define HP_CALL_TARGET 0x44000u
#define HP_INDIRECT 0x5C000u
#define HP_MACHINE_AMD64 0x10u

#define HP_MAX_RECORDS 4096

typedef struct hp_record {
    u32 inverse;
    u32 type;
    u32 site;  /* word 0: RVA written (patch image when inverse, base otherwise) */
    u32 value; /* word 1: RVA in the other image */
    u32 extra; /* word 2: first bytes of the redirected function (0 when absent) */
} hp_record;

typedef struct hp_table {
    u32 rva; /* of IMAGE_HOT_PATCH_INFO */
    u32 version, size, sequence, base_count, extra_words, flags;
    u32 base_sequence, base_flags, base_timestamp, base_checksum, patch_table;
    int nrecords;
    hp_record records[HP_MAX_RECORDS];
} hp_table;

/* Image header fields of a mapped x64 image. */
u32 image_size(const u8 *image);
u32 image_timestamp(const u8 *image);
u32 image_checksum(const u8 *image);

/* Reads the table of the mapped image PATCH; checks it against the running BASE.
 * Returns 0, or why the table is refused (the loader would not apply it). */
const char *hp_read(const u8 *patch, const u8 *base, hp_table *t);

const char *hp_kind(const hp_record *r); /* "iabs", "iind", "ifunc", "ict", "func" */

#endif /* WINE_HPTABLE_H */
