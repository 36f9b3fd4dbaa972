"""Tests for the executable book in ``book/``.

* every MyST notebook page (a ``book/**/*.md`` file whose front matter has a
  jupytext ``kernelspec``) is converted with jupytext and executed with nbclient,
  in its own folder, without Sphinx: a failing cell names the chapter;
* the two jupyter-book builds (full and student) run through ``book/build.sh``
  and their HTML is checked: no asset loaded from the network, MathJax served
  from the build folder, solutions present in the full build only.

The build test is skipped when jupyter-book is not installed.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
FULL_HTML = BOOK / "_build" / "html"
STUDENT_HTML = BOOK / "_build_student" / "html"
BUILD_DIRS = {"_build", "_build_student", ".ipynb_checkpoints", "_ext"}

# Strings that occur only inside the solution of the exercise in
# book/chapters/how_to_read.md: prose, and the printed output of its code cell.
SOLUTION_MARKERS = ("balances the two extreme eigenvalues", "grid-search optimum")
EXERCISE_MARKER = 'id="ex-best-step"'

# Config keys allowed to differ between book/_config.yml and _config_student.yml.
STUDENT_ONLY_KEYS = (("title",), ("sphinx", "config", "hide_solutions"))


def _front_matter(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    if not text.startswith("---"):
        return ""
    end = text.find("\n---", 3)
    return text[3:end] if end != -1 else ""


def _notebook_pages() -> list[Path]:
    pages = []
    for path in sorted(BOOK.rglob("*.md")):
        if BUILD_DIRS.intersection(path.relative_to(BOOK).parts):
            continue
        if re.search(r"^kernelspec\s*:", _front_matter(path), flags=re.M):
            pages.append(path)
    return pages


NOTEBOOK_PAGES = _notebook_pages()


# --------------------------------------------------------------------------- #
# fast checks (no Sphinx)
# --------------------------------------------------------------------------- #


def test_book_has_notebook_pages():
    assert NOTEBOOK_PAGES, "no executable MyST page found under book/"


@pytest.mark.parametrize(
    "page", NOTEBOOK_PAGES, ids=[str(p.relative_to(BOOK)) for p in NOTEBOOK_PAGES]
)
def test_notebook_page_executes(page: Path):
    jupytext = pytest.importorskip("jupytext")
    nbclient = pytest.importorskip("nbclient")
    nb = jupytext.read(page)
    env_backend = os.environ.pop("MPLBACKEND", None)  # keep the inline backend
    try:
        client = nbclient.NotebookClient(
            nb,
            timeout=600,
            kernel_name=nb.metadata.get("kernelspec", {}).get("name", "python3"),
            resources={"metadata": {"path": str(page.parent)}},
        )
        client.execute()
    except nbclient.exceptions.CellExecutionError as err:
        pytest.fail(f"{page.relative_to(ROOT)} failed:\n{err}", pytrace=False)
    finally:
        if env_backend is not None:
            os.environ["MPLBACKEND"] = env_backend
    # an exception raised while a figure renders does not fail the cell: nbclient stores an "error"
    # output and the page silently loses the figure, so look for such outputs explicitly
    errs = [(i, o.get("ename"), o.get("evalue")) for i, c in enumerate(nb.cells) if c.cell_type == "code"
            for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errs, f"{page.relative_to(ROOT)}: outputs with errors (e.g. a figure that failed to render): {errs}"


def _load_yaml(path: Path):
    yaml = pytest.importorskip("yaml")
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _drop(cfg: dict, keys: tuple) -> None:
    for k in keys[:-1]:
        cfg = cfg.get(k, {})
    cfg.pop(keys[-1], None)


def test_student_config_matches_full_config():
    full = _load_yaml(BOOK / "_config.yml")
    student = _load_yaml(BOOK / "_config_student.yml")
    assert full["sphinx"]["config"]["hide_solutions"] is False
    assert student["sphinx"]["config"]["hide_solutions"] is True
    assert full["sphinx"]["config"]["nb_execution_raise_on_error"] is True
    # executions are cached only so that the student build can reuse the full build's; build.sh
    # empties the cache before every other build, so no page shows outputs of an older library
    assert full["execute"]["execute_notebooks"] == "cache"
    assert full["execute"]["cache"] == "book/_build/.jupyter_cache"
    script = (BOOK / "build.sh").read_text(encoding="utf-8")
    assert 'rm -rf book/_build/.jupyter_cache' in script
    for keys in STUDENT_ONLY_KEYS:
        _drop(full, keys)
        _drop(student, keys)
    assert student == full, (
        "book/_config_student.yml has drifted from book/_config.yml: apply the "
        "same change to both files (only the title and hide_solutions may differ)"
    )


def test_toc_lists_only_existing_files():
    toc = _load_yaml(BOOK / "_toc.yml")
    files = [toc["root"]]

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                files.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc)
    missing = [
        f
        for f in files
        if not any((BOOK / f"{f}{ext}").exists() for ext in ("", ".md", ".ipynb"))
    ]
    assert not missing, f"_toc.yml lists files that do not exist: {missing}"


# --------------------------------------------------------------------------- #
# full jupyter-book builds
# --------------------------------------------------------------------------- #

REMOTE = r"""["'](?:https?:)?//"""
REMOTE_SCRIPT = re.compile(r"<script\b[^>]*\bsrc\s*=\s*" + REMOTE, re.I)
LINK_TAG = re.compile(r"<link\b[^>]*>", re.I)
REMOTE_HREF = re.compile(r"\bhref\s*=\s*" + REMOTE, re.I)
FETCHING_REL = re.compile(
    r"""\brel\s*=\s*["'][^"']*\b(stylesheet|preload|modulepreload|prefetch|icon|manifest)\b""",
    re.I,
)
SCRIPT_SRC = re.compile(r"""<script\b[^>]*\bsrc\s*=\s*["']([^"']+)["']""", re.I)


def _run_build(*args: str) -> None:
    env = dict(os.environ)
    # make sure the jupyter-book next to this interpreter is found
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    proc = subprocess.run(
        ["bash", str(BOOK / "build.sh"), *args],
        cwd=str(ROOT),
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-6000:]
        pytest.fail(
            f"bash book/build.sh {' '.join(args)} exited {proc.returncode}:\n{tail}",
            pytrace=False,
        )


def _html_pages(html_dir: Path) -> list[Path]:
    return sorted(html_dir.rglob("*.html"))


def _check_offline(html_dir: Path) -> None:
    pages = _html_pages(html_dir)
    assert pages, f"no HTML written to {html_dir}"
    remote = []
    mathjax_refs = set()
    for page in pages:
        text = page.read_text(encoding="utf-8", errors="replace")
        rel = page.relative_to(html_dir)
        remote += [f"{rel}: {m.group(0)}" for m in REMOTE_SCRIPT.finditer(text)]
        for tag in LINK_TAG.findall(text):
            if REMOTE_HREF.search(tag) and FETCHING_REL.search(tag):
                remote.append(f"{rel}: {tag}")
        for src in SCRIPT_SRC.findall(text):
            if "mathjax" in src.lower():
                mathjax_refs.add((page, src))
    assert not remote, "remote assets in the built HTML:\n" + "\n".join(remote)

    assert mathjax_refs, f"no page of {html_dir} loads MathJax"
    for page, src in sorted(mathjax_refs):
        assert "://" not in src and not src.startswith("//"), f"{page}: {src}"
        target = (page.parent / urlsplit(src).path).resolve()
        assert target.is_file(), f"{page.relative_to(html_dir)} loads missing {src}"
        assert html_dir.resolve() in target.parents, f"{src} is outside {html_dir}"
        fonts = target.parent / "output" / "chtml" / "fonts" / "woff-v2"
        assert fonts.is_dir() and any(fonts.iterdir()), f"no MathJax fonts in {fonts}"


TEXT_SUFFIXES = {".html", ".js", ".md", ".txt", ".ipynb", ".py", ".json"}


def _all_text(html_dir: Path) -> str:
    """Every text file of a build except the bundled MathJax (pages, search
    index, copied sources, downloadable notebooks)."""
    mathjax = html_dir / "_static" / "mathjax"
    return "\n".join(
        p.read_text(encoding="utf-8", errors="replace")
        for p in sorted(html_dir.rglob("*"))
        if p.is_file() and p.suffix in TEXT_SUFFIXES and mathjax not in p.parents
    )


@pytest.mark.skipif(
    importlib.util.find_spec("jupyter_book") is None,
    reason="jupyter-book is not installed (pip install -e '.[book]')",
)
def test_book_builds_full_and_student():
    _run_build()
    _run_build("--student", "--reuse-cache")  # the executions of the full build, not a second run

    for html_dir in (FULL_HTML, STUDENT_HTML):
        assert (html_dir / "index.html").is_file(), f"{html_dir}/index.html missing"
        _check_offline(html_dir)

    full = (FULL_HTML / "chapters" / "how_to_read.html").read_text(encoding="utf-8")
    student_page = (STUDENT_HTML / "chapters" / "how_to_read.html").read_text(encoding="utf-8")
    student_all = _all_text(STUDENT_HTML)
    for marker in SOLUTION_MARKERS:
        assert marker in full, f"solution text {marker!r} missing from the full build"
        assert marker not in student_all, (
            f"solution text {marker!r} leaked into the student build (pages, search "
            "index or copied sources)"
        )
    assert EXERCISE_MARKER in full and EXERCISE_MARKER in student_page, (
        "the exercise itself must be in both builds"
    )
    assert 'class="solution' in full
    assert 'class="solution' not in student_all
