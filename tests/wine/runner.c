/*
 * runner.c - runs exports of a DLL under Wine, in order, and prints one result per call.
 *
 *   runner.exe DLL CALL...        CALL = [u64:|u32:|void:]NAME(ARG, ...)  (common.h)
 *
 * Output, one line each:
 *   LOADED <image base>
 *   RESULT <i> OK <hex> | OK void | FAULT <exception code> <address>
 * State carries from call to call (one process, the DLL loaded once, DllMain run).
 * Exit code: 0 every call returned; 1 at least one call faulted (all results are still
 * printed); 2 the runner could not do its job (usage, LoadLibrary, a bad CALL).
 */
#include "common.h"

static call calls[MAX_ARGS];

void runner_main(void)
{
    char *argv[MAX_ARGS];
    int argc = command_line(argv, MAX_ARGS);
    void *module;
    int faults = 0;
    if (argc < 3)
        fail("usage", "runner.exe DLL CALL...");
    calls_init();
    module = LoadLibraryA(argv[1]);
    if (module == 0) {
        out_str("ERROR LoadLibrary ");
        out_str(argv[1]);
        out_str(" failed, GetLastError ");
        out_u64(GetLastError());
        out_nl();
        ExitProcess(2u);
    }
    out_str("LOADED ");
    out_hex((u64)module);
    out_nl();
    for (int i = 2; i < argc; i++) {
        const char *why = call_parse(&calls[i - 2], argv[i], module);
        if (why != 0) {
            out_str("ERROR call ");
            out_str(argv[i]);
            out_str(": ");
            fail(why, 0);
        }
    }
    for (int i = 0; i < argc - 2; i++) {
        outcome o;
        call_run(&calls[i], &o);
        faults += o.fault != 0u;
        out_str("RESULT ");
        out_u64((u64)i);
        out_str(" ");
        outcome_print(&o, calls[i].type);
        out_nl();
    }
    ExitProcess(faults != 0 ? 1u : 0u);
}
