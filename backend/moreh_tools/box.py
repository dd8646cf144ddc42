"""Tables in the box style of nvidia-smi and moreh-smi: ``+---+`` rules, ``|`` columns, ``+===+`` under
the header."""


def _cell(text, width, center):
    return f"  {text.center(width)}  " if center else f"  {text.ljust(width)}  "


def render(headers, rows, min_widths=None):
    """Lines of a table: centered headers, left-aligned cells padded by two spaces."""
    widths = [max([len(h)] + [len(str(r[i])) for r in rows] + [(min_widths or [0] * len(headers))[i]])
              for i, h in enumerate(headers)]
    inner = sum(w + 4 for w in widths) + len(widths) - 1
    rule, double = "+" + "-" * inner + "+", "+" + "=" * inner + "+"
    line = lambda cells, center: "|" + "|".join(_cell(str(c), w, center) for c, w in zip(cells, widths)) + "|"
    out = [rule, line(headers, True), double]
    for r in rows:
        out.append(line(r, False))
    if not rows:
        out.append(line(["-"] * len(headers), True))
    out.append(rule)
    return out


def banner(text, width):
    """A one-line box `width` wide with `text` right-aligned, as moreh-smi's version line."""
    inner = width - 2
    return ["+" + "-" * inner + "+", "|" + f"{text}  ".rjust(inner) + "|"]
