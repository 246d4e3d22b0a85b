#!/usr/bin/env bash
# Build pehp's sample corpus: for every scenario a base image and an intermediate
# image of pehplib or gatelib (samples/src), with PDBs and object files.
#
#   bash samples/build.sh                          rebuild every scenario in samples/
#   bash samples/build.sh --out DIR [ARCH/SCENARIO ...]
#                                                  build the named scenarios (default:
#                                                  all) into DIR/ARCH/SCENARIO/ and
#                                                  leave samples/ untouched
#   bash samples/build.sh --list                   print every ARCH/SCENARIO
#
# Output per scenario: base.dll base.pdb base.objs/*.obj, intermediate.dll
# intermediate.pdb intermediate.objs/*.obj, hotpatch_functions.txt (the exact
# file given to clang's -fms-secure-hotpatch-functions-file= for the
# intermediate).  expect.toml is written by hand and only copied by --out.
#
# The build is byte-for-byte reproducible from any directory: compilers run
# under `setarch -R` (clang-22's hot-patch pass emits code in an order that
# depends on heap addresses), in a scratch directory with relative paths,
# with -ffile-compilation-dir=. ; the linker gets /Brepro, /pdbaltpath:%_PDB%
# and a fixed /pdbsourcepath.
set -euo pipefail

SAMPLES_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SRC_DIR="$SAMPLES_DIR/src"
PDB_SOURCE_PATH='C:\pehp\samples\src'

CLANG_CL="${CLANG_CL:-clang-cl-22}"
LLD_LINK="${LLD_LINK:-lld-link-22}"
DLLTOOL="${DLLTOOL:-llvm-dlltool-22}"

ARCHES=(x64 x86 arm64)
X64_SCENARIOS=(body_fix fix_globals fix_calls_unchanged new_export removed_export new_import
    signature_change struct_layout data_init_change unmarked_change inline_pulls
    direct_global_access prologue_not_patchable no_change
    escape_callback fnptr_identity tls_ref hidden_layout init_once switch_table constants
    restrict_param ref_relocs)
X86_SCENARIOS=(body_fix fix_globals fix_calls_unchanged new_import direct_global_access
    prologue_not_patchable no_change)
ARM64_SCENARIOS=(body_fix fix_globals fix_calls_unchanged direct_global_access
    prologue_not_patchable no_change)

die() {
    echo "samples/build.sh: error: $*" >&2
    exit 1
}

all_scenarios() {
    local s
    for s in "${X64_SCENARIOS[@]}"; do echo "x64/$s"; done
    for s in "${X86_SCENARIOS[@]}"; do echo "x86/$s"; done
    for s in "${ARM64_SCENARIOS[@]}"; do echo "arm64/$s"; done
}

# arch_setup ARCH: sets TARGET MACHINE DLLTOOL_MACHINE DEF_FILE PADMIN
arch_setup() {
    case "$1" in
    x64)
        TARGET=x86_64-pc-windows-msvc MACHINE=x64 DLLTOOL_MACHINE=i386:x86-64
        DEF_FILE=kernel32.def PADMIN=6
        ;;
    x86)
        TARGET=i686-pc-windows-msvc MACHINE=x86 DLLTOOL_MACHINE=i386
        DEF_FILE=kernel32-x86.def PADMIN=6
        ;;
    arm64)
        TARGET=aarch64-pc-windows-msvc MACHINE=arm64 DLLTOOL_MACHINE=arm64
        DEF_FILE=kernel32.def PADMIN=8
        ;;
    *) die "unknown architecture '$1' (expected one of: ${ARCHES[*]})" ;;
    esac
}

# scenario_setup ARCH SCENARIO: sets
#   MACRO       the -D given to the intermediate (empty: none)
#   FUNCS       the functions listed in hotpatch_functions.txt (space separated)
#   BASE_MODE   normal | no_hotpatch (base compiled without /hotpatch)
#               | no_padding (base linked without /functionpadmin, /hotpatchcompatible)
#   UNMARKED_TU a translation unit the intermediate compiles WITHOUT the
#               functions file (the build mistake of direct_global_access)
#   SOURCES     the library's translation units (pehplib, or gatelib for the
#               gate scenarios)
scenario_setup() {
    local arch="$1" scenario="$2"
    MACRO="" FUNCS="" BASE_MODE=normal UNMARKED_TU=""
    SOURCES=(pehplib.c pehplib_report.c)
    case "$scenario" in
    body_fix) MACRO=PEHP_BODY_FIX FUNCS="telemetry_checksum" ;;
    fix_globals) MACRO=PEHP_FIX_GLOBALS FUNCS="telemetry_record" ;;
    fix_calls_unchanged) MACRO=PEHP_FIX_CALLS_UNCHANGED FUNCS="telemetry_flush" ;;
    new_export) MACRO=PEHP_NEW_EXPORT FUNCS="telemetry_clear_error" ;;
    removed_export) MACRO=PEHP_REMOVED_EXPORT FUNCS="" ;;
    new_import) MACRO=PEHP_NEW_IMPORT FUNCS="telemetry_wait_empty" ;;
    signature_change) MACRO=PEHP_SIGNATURE_CHANGE FUNCS="config_set config_reset" ;;
    struct_layout) MACRO=PEHP_STRUCT_LAYOUT FUNCS="telemetry_get_stats telemetry_stats_valid" ;;
    data_init_change) MACRO=PEHP_DATA_INIT_CHANGE FUNCS="" ;;
    unmarked_change) MACRO=PEHP_UNMARKED_CHANGE FUNCS="telemetry_kind_name" ;;
    inline_pulls) MACRO=PEHP_INLINE_PULLS FUNCS="telemetry_record" ;;
    direct_global_access)
        MACRO=PEHP_DIRECT_GLOBAL_ACCESS FUNCS="report_summary" UNMARKED_TU=pehplib_report.c
        ;;
    prologue_not_patchable)
        MACRO=PEHP_PROLOGUE_NOT_PATCHABLE FUNCS="telemetry_flush"
        if [ "$arch" = arm64 ]; then BASE_MODE=no_padding; else BASE_MODE=no_hotpatch; fi
        ;;
    no_change) MACRO="" FUNCS="" ;;
    escape_callback) gate_setup GATE_ESCAPE_CALLBACK "gate_arm" ;;
    fnptr_identity) gate_setup GATE_FNPTR_IDENTITY "gate_is_default" ;;
    tls_ref)
        gate_setup GATE_TLS_REF "gate_tls_enter"
        SOURCES=(gatelib.c gatetls.c)
        ;;
    hidden_layout) gate_setup GATE_HIDDEN_LAYOUT "gate_pool_put gate_pool_get" ;;
    init_once) gate_setup GATE_INIT_ONCE "gate_setup" ;;
    switch_table) gate_setup GATE_SWITCH_TABLE "gate_shared_a" ;;
    constants) gate_setup GATE_CONSTANTS "gate_label_len gate_scale" ;;
    restrict_param) gate_setup GATE_RESTRICT "gate_sum" ;;
    ref_relocs) gate_setup GATE_REF_RELOCS "gate_bump" ;;
    *) die "unknown scenario '$scenario'" ;;
    esac
}

# gate_setup MACRO FUNCS: a gatelib scenario
gate_setup() {
    MACRO="$1" FUNCS="$2"
    SOURCES=(gatelib.c)
}

check_tools() {
    local tool missing=()
    for tool in "$CLANG_CL" "$LLD_LINK" "$DLLTOOL" setarch; do
        command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
    if [ "${#missing[@]}" -ne 0 ]; then
        die "missing tool(s): ${missing[*]}. Install LLVM 22 (Debian/Ubuntu:" \
            "apt-get install clang-22 lld-22 llvm-22) and util-linux (setarch)."
    fi
    CLANG_CL_PATH="$(command -v "$CLANG_CL")"
    setarch "$(uname -m)" -R true 2>/dev/null ||
        die "'setarch $(uname -m) -R' does not work here; the build needs ASLR off" \
            "for reproducible output"
}

SOURCES=()

# compile_tu TARGET TU [EXTRA_FLAG ...]   (cwd: the image's scratch directory)
# The compiler runs with ASLR off, an empty environment and a working directory
# whose path always has the same length: with those fixed, the order in which
# clang-22's hot-patch pass emits __ref_ loads (a pointer-keyed map) repeats.
compile_tu() {
    local target="$1" tu="$2"
    shift 2
    env -i PATH=/usr/bin:/bin LC_ALL=C setarch "$(uname -m)" -R "$CLANG_CL_PATH" \
        --target="$target" /nologo /c /O2 /Z7 /GS- /Zl /Gy /Brepro -ffile-compilation-dir=. \
        "$@" "$tu" "/Fo${tu%.c}.obj"
}

# build_image KIND DIR   (KIND: base | intermediate; uses arch and scenario variables)
build_image() {
    local kind="$1" dir="$2" tu hotpatch=(/hotpatch) defines=() marks=()
    local link_pad=("/functionpadmin:$PADMIN" /hotpatchcompatible)
    mkdir -p "$dir"
    cp "$SRC_DIR"/*.c "$SRC_DIR"/*.h "$SAMPLES_DIR/$DEF_FILE" "$dir/"
    if [ "$kind" = base ]; then
        [ "$BASE_MODE" = no_hotpatch ] && hotpatch=()
        [ "$BASE_MODE" = no_padding ] && link_pad=()
    else
        [ -n "$MACRO" ] && defines=("-D$MACRO")
        if [ -n "$FUNCS" ]; then
            printf '%s\n' $FUNCS >"$dir/hotpatch_functions.txt"
        else
            : >"$dir/hotpatch_functions.txt"
        fi
    fi
    (
        cd "$dir"
        for tu in "${SOURCES[@]}"; do
            marks=()
            if [ "$kind" = intermediate ] && [ "$tu" != "$UNMARKED_TU" ]; then
                marks=(-fms-secure-hotpatch-functions-file=hotpatch_functions.txt)
            fi
            compile_tu "$TARGET" "$tu" "${hotpatch[@]}" ${defines[@]+"${defines[@]}"} \
                ${marks[@]+"${marks[@]}"}
        done
        if [ "$MACHINE" = x86 ]; then
            "$DLLTOOL" -m "$DLLTOOL_MACHINE" -k -d "$DEF_FILE" -l kernel32.lib
        else
            "$DLLTOOL" -m "$DLLTOOL_MACHINE" -d "$DEF_FILE" -l kernel32.lib
        fi
        "$LLD_LINK" /nologo /dll "/machine:$MACHINE" /entry:DllMain /nodefaultlib /noimplib \
            /debug "/pdb:$kind.pdb" /pdbaltpath:%_PDB% /Brepro \
            ${link_pad[@]+"${link_pad[@]}"} "/pdbsourcepath:$PDB_SOURCE_PATH" \
            "/out:$kind.dll" "${SOURCES[@]/%.c/.obj}" kernel32.lib
    )
}

# build_scenario ARCH SCENARIO DEST_ROOT
build_scenario() {
    local arch="$1" scenario="$2" dest="$3/$1/$2" work tu kind
    arch_setup "$arch"
    scenario_setup "$arch" "$scenario"
    # Always under /tmp with a fixed-length name (see compile_tu), whatever TMPDIR says.
    work="$(mktemp -d /tmp/pehp-samples.XXXXXXXXXX)"
    WORK_DIR="$work"
    build_image base "$work/base"
    build_image intermediate "$work/intermediate"
    mkdir -p "$dest"
    for kind in base intermediate; do
        rm -rf "$dest/$kind.objs"
        mkdir -p "$dest/$kind.objs"
        cp "$work/$kind/$kind.dll" "$work/$kind/$kind.pdb" "$dest/"
        for tu in "${SOURCES[@]}"; do
            cp "$work/$kind/${tu%.c}.obj" "$dest/$kind.objs/"
        done
    done
    cp "$work/intermediate/hotpatch_functions.txt" "$dest/"
    if [ "$dest" != "$SAMPLES_DIR/$arch/$scenario" ] && [ -f "$SAMPLES_DIR/$arch/$scenario/expect.toml" ]; then
        cp "$SAMPLES_DIR/$arch/$scenario/expect.toml" "$dest/"
    fi
    rm -rf "$work"
    WORK_DIR=""
    echo "built $arch/$scenario"
}

WORK_DIR=""
cleanup() {
    if [ -n "$WORK_DIR" ]; then rm -rf "$WORK_DIR"; fi
}
trap cleanup EXIT

main() {
    local out="$SAMPLES_DIR" selected=() item arch scenario
    while [ "$#" -gt 0 ]; do
        case "$1" in
        --out)
            [ "$#" -ge 2 ] || die "--out needs a directory"
            mkdir -p "$2"
            out="$(cd "$2" && pwd)"
            shift 2
            ;;
        --list)
            all_scenarios
            return 0
            ;;
        -h | --help)
            sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
            return 0
            ;;
        -*) die "unknown option '$1'" ;;
        *)
            selected+=("$1")
            shift
            ;;
        esac
    done
    if [ "${#selected[@]}" -eq 0 ]; then
        mapfile -t selected < <(all_scenarios)
    fi
    for item in "${selected[@]}"; do
        all_scenarios | grep -qx -- "$item" || die "unknown scenario '$item' (see --list)"
    done
    check_tools
    for item in "${selected[@]}"; do
        arch="${item%%/*}"
        scenario="${item#*/}"
        build_scenario "$arch" "$scenario" "$out"
    done
}

main "$@"
