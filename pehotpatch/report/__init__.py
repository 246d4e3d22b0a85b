"""Review reports: everything a reviewer needs about one pair in one self-contained HTML
file (:mod:`.model` gathers it, :mod:`.html` writes it, :mod:`.graph` draws the patch plan,
:mod:`.pages` reads the rule pages, :mod:`.build` plans and writes the file)."""
