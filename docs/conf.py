"""Sphinx configuration for memdump's documentation: the HTML site and the memdump(8) man page.

Both are built from this directory:

    python3 -m sphinx -W --keep-going -b html docs docs/_build/html
    python3 -m sphinx -W --keep-going -b man  docs docs/_build/man

The command-line reference is generated from the click definitions in ``memdump/cli/`` (and
``emulator/cli.py``) by sphinx-click, so it follows the code; ``check_cli_reference.py`` checks
that every option made it into the built site.
"""

from __future__ import annotations

import os
import re
import sys

DOCS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(DOCS)
# Document the checkout beside this file, not whatever copy of memdump happens to be installed.
sys.path.insert(0, REPO)

from memdump import __version__  # noqa: E402

project = "memdump"
author = "the memdump developers"
copyright = "the memdump developers"
version = release = __version__

extensions = ["sphinx_click"]

# docs/performance.md belongs to the benchmark and is written in Markdown: read it with MyST when
# it exists (pip install '.[docs]' brings myst-parser); without MyST it is shown as plain text.
PERFORMANCE_MD = os.path.join(DOCS, "performance.md")
HAVE_PERFORMANCE = os.path.exists(PERFORMANCE_MD)
try:
    import myst_parser  # noqa: F401

    HAVE_MYST = True
except ImportError:
    HAVE_MYST = False
if HAVE_PERFORMANCE and HAVE_MYST:
    extensions.append("myst_parser")
    source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
    # Markdown written to be read on a forge jumps heading levels and links to files of the
    # repository outside docs/ (../bench/run); neither is worth failing -W over: such a link is
    # shown as its text. reStructuredText pages keep every check.
    suppress_warnings = ["myst.header", "myst.xref_missing"]
else:
    source_suffix = {".rst": "restructuredtext"}

root_doc = "index"
exclude_patterns = ["_build", "_include"]
templates_path: list[str] = []
language = "en"
nitpicky = False
highlight_language = "none"
pygments_style = "sphinx"

# -- HTML ---------------------------------------------------------------------------------------

html_theme = "furo"
html_title = f"memdump {release}"
html_short_title = "memdump"
html_static_path: list[str] = []
html_show_sourcelink = False
html_copy_source = False

# -- man page -----------------------------------------------------------------------------------

# (source document, name, description, authors, section): man.rst is the page's own text; its
# OPTIONS come from the same click definitions as `memdump --help` and the HTML reference.
man_pages = [
    ("man", "memdump", "acquire physical or kernel memory for forensics, skipping holes",
     [author], 8),
]
man_show_urls = False
man_make_section_directory = False

# -- the two builds share sources but not every page ---------------------------------------------

PERFORMANCE_MARKER = ".. performance-figures-go-here"


def _exclude_per_builder(app) -> None:
    """man.rst repeats the generated option reference for the man page; in the HTML site the
    reference lives on cli.rst only (one target per option, so :option: links are unambiguous)."""
    if app.builder.name != "man":
        app.config.exclude_patterns.append("man.rst")


def _performance_figures(app, docname: str, source: list[str]) -> None:
    """Put the benchmark's own page (docs/performance.md) under the benchmarking page when it
    exists; say where the figures will be when it does not."""
    if docname != "benchmarking" or PERFORMANCE_MARKER not in source[0]:
        return
    if HAVE_PERFORMANCE and HAVE_MYST:
        text = (".. toctree::\n   :maxdepth: 2\n   :caption: Measured figures\n\n   performance\n")
    elif HAVE_PERFORMANCE:
        text = ("The measured figures (``docs/performance.md``; install ``myst-parser`` to have it\n"
                "rendered as a page):\n\n.. literalinclude:: performance.md\n   :language: markdown\n")
    else:
        text = ("The measured figures go to ``docs/performance.md``, which the benchmark's owner\n"
                "writes from a run of ``bench/run``; it is not in this checkout yet, so this page\n"
                "gives the method only.\n")
    source[0] = source[0].replace(PERFORMANCE_MARKER, text)


# -- click help is plain text ------------------------------------------------------------------------

# sphinx-click hands help strings to reStructuredText as they are, but they are written for
# `--help`, which prints them literally: "boot/config-*" or "p_paddr" must not become markup (or a
# warning, which -W turns into a failed build). Escape what reST would interpret, keeping the
# structure sphinx-click itself adds.
_RST_SPECIAL = re.compile(r"([\\*`_|])")
_GENERATED = (".. option::", ".. program::", ":default:", ":options:")


def _literal(line: str) -> str:
    body = line.lstrip(" ")
    prefix = line[:len(line) - len(body)]
    for marker in ("| ", "**Required** "):  # click's \b paragraphs; sphinx-click's required flag
        if body.startswith(marker):
            prefix, body = prefix + marker, body[len(marker):]
    if body == "**Required**":
        return line
    body = _RST_SPECIAL.sub(r"\\\1", body)
    if body.endswith("::"):  # would start a literal block
        body = body[:-1] + "\\:"
    return prefix + body


def _plain_help(app, ctx, lines: list[str]) -> None:
    for index, line in enumerate(lines):
        if line.strip() and not line.strip().startswith(_GENERATED):
            lines[index] = _literal(line)


def _command_paths() -> dict[str, str]:
    """Section id sphinx-click gives each command -> its full path ("memdump module build")."""
    import click
    from docutils import nodes

    from emulator.cli import cli as emulator_cli
    from memdump.cli import cli as memdump_cli

    paths: dict[str, str] = {}

    def walk(command, path: str, parent=None) -> None:
        ctx = click.Context(command, info_name=path.split()[-1], parent=parent)
        paths[nodes.make_id(path)] = path
        if isinstance(command, click.Group):
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                if sub is not None:
                    walk(sub, f"{path} {name}", ctx)

    walk(memdump_cli, "memdump")
    walk(emulator_cli, "memdump-emulator")
    return paths


def _full_command_titles(app, doctree) -> None:
    """sphinx-click titles a subcommand's section with its last word ("build"); in a man page,
    where every level is a flat subsection, and in the table of contents, "memdump module build"
    says which command it is."""
    from docutils import nodes

    paths = None
    for section in doctree.findall(nodes.section):
        if not section["ids"] or not section.children or not isinstance(section[0], nodes.title):
            continue
        if paths is None:
            paths = _command_paths()
        path = paths.get(section["ids"][0])
        if path and section[0].astext() == path.split()[-1] and path != section[0].astext():
            section[0].children = [nodes.Text(path)]


def setup(app):
    app.connect("builder-inited", _exclude_per_builder)
    app.connect("source-read", _performance_figures)
    # before the table-of-contents collector reads the titles
    app.connect("doctree-read", _full_command_titles, priority=400)
    for event in ("description", "options", "arguments", "epilog"):
        app.connect(f"sphinx-click-process-{event}", _plain_help)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
