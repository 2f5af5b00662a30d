"""The plain-text tables that plans and reports print (one helper for all)."""


def print_table(headers, rows, print_fn=print):
    """Prints `headers` and `rows` as left-aligned columns, one call per line.

    Cells are shown with `str`; columns are two spaces apart; trailing spaces
    are dropped.

    >>> print_table(["layer", "rate"], [["dense", 0.5], ["out", "-"]])
    layer  rate
    dense  0.5
    out    -
    """
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
    for line in [headers, *rows]:
        print_fn("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip())
