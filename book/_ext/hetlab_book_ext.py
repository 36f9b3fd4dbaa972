"""Local Sphinx extension for the hetlab book.

It does two small things.

1. Make ``hide_solutions = True`` (the student build) work with the *gated*
   solution directives of sphinx-exercise::

       ```{solution-start} ex-label
       ```
       text and {code-cell} blocks ...
       ```{solution-end}
       ```

   sphinx-exercise 1.2.1 drops the ``solution-start`` node when solutions are
   hidden but keeps everything between start and end plus the ``solution-end``
   node, so the answer leaks into the page and the HTML writer then fails on the
   orphan end node (upstream issue executablebooks/sphinx-exercise#89).

   Here ``solution-start`` is replaced by a subclass that, when the solution is
   hidden (globally through ``hide_solutions`` or by its ``:hidden:`` option),
   leaves a marker node; a transform that runs before sphinx-exercise merges the
   gated blocks then deletes the marker, everything after it up to the matching
   ``solution-end`` and that end node. With ``hide_solutions = False`` nothing
   changes.

   When solutions are hidden, the page sources are also not copied into the
   HTML output (``html_copy_source = False``): ``_sources/*.md`` would hand the
   complete solutions to anyone who presses the theme's download button.

2. Drop duplicate ``<script>`` entries from each page. Inline scripts added by
   extensions after the builder starts (sphinx-thebe's configuration, for one)
   end up twice in a page's script list (Sphinx only de-duplicates exact
   matches, and the copies differ in filename ``None`` versus ``''``).
   sphinx-thebe's duplicated configuration declares ``const THEBE_JS_URL``
   twice, a JavaScript error in the browser console on every page.
"""

from __future__ import annotations

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.transforms import SphinxTransform
from sphinx.util import logging

from sphinx_exercise.directive import SolutionStartDirective
from sphinx_exercise.nodes import solution_end_node

logger = logging.getLogger(__name__)


class hidden_solution_marker(nodes.Element):
    """Placeholder for a gated solution that must not be rendered."""


class HidingSolutionStartDirective(SolutionStartDirective):
    """``solution-start`` that leaves a marker when the solution is hidden."""

    def run(self):
        result = super().run()
        if result:
            return result
        # The parent returned nothing: the solution is hidden (or its label is
        # a duplicate, which sphinx-exercise reports itself). Remove the body.
        marker = hidden_solution_marker()
        marker.source, marker.line = self.get_source_info()
        return [marker]


class RemoveHiddenGatedSolutions(SphinxTransform):
    """Delete hidden gated solutions: marker ... solution-end, inclusive."""

    # after sphinx-exercise's CheckGatedDirectives (1), before its merges (10)
    default_priority = 5

    def apply(self, **kwargs) -> None:
        for marker in list(self.document.findall(hidden_solution_marker)):
            parent = marker.parent
            start = parent.index(marker)
            end = None
            for i in range(start + 1, len(parent.children)):
                if isinstance(parent.children[i], solution_end_node):
                    end = i
                    break
            if end is None:
                logger.warning(
                    "hidden gated solution has no solution-end at the same level",
                    location=marker,
                )
                parent.remove(marker)
                continue
            for child in list(parent.children[start : end + 1]):
                parent.remove(child)


def dedupe_scripts(app: Sphinx, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not isinstance(scripts, list):
        return
    seen = set()
    unique = []
    for js in scripts:
        filename = getattr(js, "filename", js) or ""
        attributes = getattr(js, "attributes", {}) or {}
        key = (str(filename), tuple(sorted((k, str(v)) for k, v in attributes.items())))
        if key in seen:
            continue
        seen.add(key)
        unique.append(js)
    context["script_files"] = unique


def no_sources_without_solutions(app: Sphinx, config) -> None:
    if config.hide_solutions:
        config.html_copy_source = False


def setup(app: Sphinx):
    app.setup_extension("sphinx_exercise")
    app.add_node(hidden_solution_marker)
    app.add_directive("solution-start", HidingSolutionStartDirective, override=True)
    app.add_transform(RemoveHiddenGatedSolutions)
    app.connect("config-inited", no_sources_without_solutions)
    app.connect("html-page-context", dedupe_scripts)
    return {"version": "0.1", "parallel_read_safe": True, "parallel_write_safe": True}
