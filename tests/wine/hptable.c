/*
 * hptable.c - reads and validates the Hotpatch Table of a mapped patch image (hptable.h),
 * with the checks the loader makes (hotpatch-format reference, docs/FORMAT.md): every
 * offset relative to IMAGE_HOT_PATCH_INFO and inside its Size, one base, the base's
 * identity, reserved and OBLIGATORY chunk bits clear, a forward chunk only of FUNCTION
 * records, INDIRECT only inverse, every RVA and write extent inside its image.
 */
#include "hptable.h"

static u32 rd32(const u8 *p) { return *(const u32 *)p; }

static const u8 *nt_headers(const u8 *image) { return image + rd32(image + 0x3C); }

u32 image_size(const u8 *image) { return rd32(nt_headers(image) + 0x18 + 0x38); }
u32 image_timestamp(const u8 *image) { return rd32(nt_headers(image) + 0x8); }
u32 image_checksum(const u8 *image) { return rd32(nt_headers(image) + 0x18 + 0x40); }

const char *hp_kind(const hp_record *r)
{
    switch (r->type) {
    case HP_ABSOLUTE:
        return r->inverse ? "iabs" : "abs";
    case HP_INDIRECT:
        return "iind";
    case HP_CALL_TARGET:
        return r->inverse ? "ict" : "ct";
    case HP_FUNCTION:
        return r->inverse ? "ifunc" : "func";
    default:
        return "?";
    }
}

/* A ULONG at OFF inside the table; 0 when it is outside Size. */
static int word(const u8 *info, u32 size, u32 off, u32 *out)
{
    if (off > size || size - off < 4u)
        return 0;
    *out = rd32(info + off);
    return 1;
}

const char *hp_read(const u8 *patch, const u8 *base, hp_table *t)
{
    const u8 *nt = nt_headers(patch);
    const u8 *opt = nt + 0x18;
    u32 patch_size = image_size(patch), base_size = image_size(base);
    u32 lc_rva, lc_dir_size, lc_size, list, base_off, off, stride;
    const u8 *lc, *info;

    if (*(const u16 *)opt != 0x20Bu || *(const u16 *)(nt + 4) != 0x8664u)
        return "not an x64 PE32+ image";
    if (rd32(opt + 0x6C) <= 10u) /* NumberOfRvaAndSizes */
        return "no load config directory";
    lc_rva = rd32(opt + 0x70 + 10 * 8);
    lc_dir_size = rd32(opt + 0x70 + 10 * 8 + 4);
    if (lc_rva == 0u || lc_rva > patch_size || patch_size - lc_rva < 0xF4u)
        return "no load config directory";
    lc = patch + lc_rva;
    lc_size = rd32(lc);
    if (lc_size != lc_dir_size || lc_size < 0xF4u)
        return "load config Size does not match its directory or has no HotPatchTableOffset";
    if (lc_size >= 0xD0u && *(const u64 *)(lc + 0xC8) != 0u)
        return "CHPEMetadataPointer is not 0";
    t->rva = rd32(lc + 0xF0);
    if (t->rva == 0u)
        return "HotPatchTableOffset is 0";
    if (t->rva > patch_size || patch_size - t->rva < 20u)
        return "HotPatchTableOffset outside the image";
    info = patch + t->rva;
    t->version = rd32(info);
    t->size = rd32(info + 4);
    if (t->version < 1u || t->version > 4u)
        return "IMAGE_HOT_PATCH_INFO Version not 1..4";
    {
        static const u32 header[5] = {0, 20, 24, 28, 36};
        if (t->size < header[t->version] || t->size > patch_size - t->rva)
            return "IMAGE_HOT_PATCH_INFO Size too small or past the image";
    }
    t->sequence = rd32(info + 8);
    list = rd32(info + 0xC);
    t->base_count = rd32(info + 0x10);
    t->extra_words = t->version >= 3u ? rd32(info + 0x18) : 0u;
    t->flags = t->version >= 4u ? rd32(info + 0x20) : 0u;
    if (t->sequence == 0u)
        return "SequenceNumber is 0";
    if (t->base_count != 1u)
        return "BaseImageCount is not 1";
    if (t->extra_words > 16u)
        return "ExtraPatchSize out of range";
    if (!word(info, t->size, list, &base_off))
        return "BaseImageList outside the table";
    if (base_off > t->size || t->size - base_off < 32u)
        return "IMAGE_HOT_PATCH_BASE outside the table";
    t->base_sequence = rd32(info + base_off);
    t->base_flags = rd32(info + base_off + 4);
    t->base_timestamp = rd32(info + base_off + 8);
    t->base_checksum = rd32(info + base_off + 0xC);
    t->patch_table = rd32(info + base_off + 0x18);
    if ((t->base_flags & 0x1Cu) != 0u && (t->base_flags & 0x1Cu) != HP_MACHINE_AMD64)
        return "base descriptor is for another machine";
    if (t->base_timestamp != image_timestamp(base) || t->base_checksum != image_checksum(base))
        return "base identity (TimeDateStamp, CheckSum) does not match the running base";

    stride = 2u + t->extra_words;
    t->nrecords = 0;
    off = t->patch_table;
    for (;;) {
        u32 header, inverse, type, count;
        if (!word(info, t->size, off, &header))
            return "patch table runs past Size (no terminating 0)";
        off += 4u;
        if (header == 0u)
            break;
        inverse = (header & HP_INVERSE) != 0u;
        type = header & HP_TYPE_MASK;
        count = header & HP_COUNT_MASK;
        if ((header & HP_RESERVED) != 0u)
            return "chunk header has reserved bits";
        if ((header & HP_OBLIGATORY) != 0u)
            return "chunk header has the OBLIGATORY bit";
        if (!inverse && type != HP_FUNCTION)
            return "forward chunk that is not FUNCTION";
        if (type == HP_INDIRECT && !inverse)
            return "INDIRECT chunk without INVERSE";
        if (type != HP_FUNCTION && type != HP_ABSOLUTE && type != HP_INDIRECT && type != HP_CALL_TARGET)
            return "chunk type that is not applied";
        for (u32 i = 0; i < count; i++) {
            hp_record *r;
            u32 site_size = inverse ? patch_size : base_size;
            u32 ref_size = inverse ? base_size : patch_size;
            if (t->nrecords == HP_MAX_RECORDS)
                return "too many records for this harness";
            r = &t->records[t->nrecords++];
            r->inverse = inverse;
            r->type = type;
            r->extra = 0u;
            if (!word(info, t->size, off, &r->site) || !word(info, t->size, off + 4u, &r->value) ||
                (t->extra_words != 0u && !word(info, t->size, off + 8u, &r->extra)) ||
                (stride * 4u > t->size - off))
                return "record runs past Size";
            off += stride * 4u;
            if (r->value > ref_size || ref_size - r->value < 8u)
                return "word 1 outside the referred image";
            if (type == HP_FUNCTION) {
                if (r->site < 0x10u || r->site - 6u > site_size || site_size - (r->site - 6u) < 8u)
                    return "FUNCTION site extent outside its image";
            } else if (r->site > site_size || site_size - r->site < 8u) {
                return "site outside its image";
            }
        }
    }
    return 0;
}
