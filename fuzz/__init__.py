"""pehp's fuzz harness: structure-aware mutation of PE images, PDBs and COFF objects,
run through every command in-process (with a per-input time limit and a memory cap)
and, now and then, through the real ``pehp`` CLI in a subprocess.

    python -m fuzz run --inputs 100000 --jobs 2      # the long run (make fuzz)
    python -m fuzz replay tests/data/fuzz             # replay the regression corpus

Every input is a :class:`~fuzz.cases.Case`: a command, a seed (a sample scenario or a
real DLL), the command's options, and per file a list of byte edits.  A case is fully
determined by ``(run seed, input number)``, and is stored as a small JSON recipe, so a
finding can be replayed without keeping the mutated files.  See docs/FUZZING.md.
"""
