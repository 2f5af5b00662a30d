"""Griffe extension for the docs build: doctest examples render as code.

The package's docstrings put their doctests at the docstring's own indentation,
after an `Example:` line (see STYLE.md), which the Google-style parser reads as
plain text, and Markdown then reads `>>>` as nested block quotes. This wraps
each unindented doctest (from a `>>>` line to the next blank line) in a
```` ```pycon ```` fence, makes the `Example:` line a bold label, and puts a
blank line before a list that starts right under a paragraph (Markdown
needs one). Only the rendered text changes: `pytest --doctest-modules` still
reads the source.
"""

import griffe


def fence_doctests(text):
    out = []
    lines = text.split("\n")
    in_fence = in_doctest = False
    for line in lines:
        if line.startswith("```"):
            in_fence = not in_fence
        if in_doctest and not line.strip():
            out.extend(["```", ""])
            in_doctest = False
            continue
        if not in_fence and not in_doctest and line.startswith(">>>"):
            if out and out[-1].strip():
                out.append("")
            out.append("```pycon")
            in_doctest = True
        elif not in_fence and not in_doctest and line.rstrip() in ("Example:", "Examples:"):
            line = f"**{line.rstrip()}**"
        elif (not in_fence and not in_doctest and line.startswith(("- ", "1. "))
              and out and out[-1].strip() and not out[-1].startswith((" ", "- ", "1. "))):
            out.append("")
        out.append(line)
    if in_doctest:
        out.append("```")
    return "\n".join(out)


class DoctestFences(griffe.Extension):
    def on_instance(self, *, obj, **kwargs):
        if obj.docstring is not None:
            obj.docstring.value = fence_doctests(obj.docstring.value)
