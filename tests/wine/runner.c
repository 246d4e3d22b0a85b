/*
 * runner.c - runs exports of a DLL under Wine, in order, and prints one result per call.
 *
 *   runner.exe [--repeat N] DLL CALL...     CALL = [u64:|u32:|void:]NAME(ARG, ...) or &NAME
 *                                           (common.h); --repeat runs the CALLs N times
 *
 * Output, one line each:
 *   LOADED <image base>
 *   RESULT <i> OK <hex> | OK void | FAULT <exception code> <address>   (i counts on
 *                                                                      across repeats)
 * State carries from call to call (one process, the DLL loaded once, DllMain run).
 * Exit code: 0 every call returned; 1 at least one call faulted (all results are still
 * printed); 2 the runner could not do its job (usage, LoadLibrary, a bad CALL).
 */
#include "common.h"

static call calls[MAX_ARGS];

void runner_main(void)
{
    char *argv[MAX_ARGS];
    int argc = command_line(argv, MAX_ARGS), first = 1, ncalls;
    u64 repeat = 1, index = 0;
    void *module;
    int faults = 0;
    if (argc > 3 && str_eq(argv[1], "--repeat")) {
        if (!parse_u64(argv[2], &repeat) || repeat == 0u || repeat > 1000u)
            fail("usage", "--repeat takes 1..1000");
        first = 3;
    }
    if (argc - first < 2)
        fail("usage", "runner.exe [--repeat N] DLL CALL...");
    calls_init();
    module = LoadLibraryA(argv[first]);
    if (module == 0) {
        out_str("ERROR LoadLibrary ");
        out_str(argv[first]);
        out_str(" failed, GetLastError ");
        out_u64(GetLastError());
        out_nl();
        ExitProcess(2u);
    }
    out_str("LOADED ");
    out_hex((u64)module);
    out_nl();
    ncalls = argc - first - 1;
    for (int i = 0; i < ncalls; i++) {
        const char *why = call_parse(&calls[i], argv[first + 1 + i], module);
        if (why != 0) {
            out_str("ERROR call ");
            out_str(argv[first + 1 + i]);
            out_str(": ");
            fail(why, 0);
        }
    }
    for (u64 k = 0; k < repeat; k++)
        for (int i = 0; i < ncalls; i++) {
            outcome o;
            call_run(&calls[i], &o);
            faults += o.fault != 0u;
            out_str("RESULT ");
            out_u64(index++);
            out_str(" ");
            outcome_print(&o, calls[i].type);
            out_nl();
        }
    ExitProcess(faults != 0 ? 1u : 0u);
}
