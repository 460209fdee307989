"""Every document the code and the docs cite is in the repository, and every section they name is
one of its headings: `(docs/design.md, "Metrics")` must find a heading "Metrics" in docs/design.md."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS = ["README.md", "BENCHMARKS.md", "RELIABILITY.md", *(f"docs/{p.name}" for p in (REPO / "docs").glob("*.md"))]
CITATION = re.compile(r"((?:docs/)?[A-Za-z-]+\.md),? (?:section \d+|\\?\"([^\"\\]*[^\s\"\\][^\"\\]*)\\?\")")
SOURCES = [p for folder in ("core", "cluster", "actors", "build", "eval", "tests", "benchmarks")
           for p in (REPO / folder).rglob("*.py") if "fakes" not in p.parts] + [REPO / "pyproject.toml"]


def headings(doc: str) -> list[str]:
    text = (REPO / doc).read_text(encoding="utf-8")
    return [re.sub(r"^#+\s*(\d+\.\s*)?", "", line).strip() for line in text.splitlines() if line.startswith("#")]


def citations() -> list[tuple[Path, str, str | None]]:
    found = []
    for path in SOURCES + [REPO / d for d in DOCS]:
        text = path.read_text(encoding="utf-8").replace("\n", " ")
        text = re.sub(r"\s+#?\s*", " ", text)
        for match in CITATION.finditer(text):
            found.append((path, match.group(1), match.group(2)))
    return found


def resolve(doc: str, cited_from: Path) -> str | None:
    for candidate in (doc, f"docs/{doc}", str((cited_from.parent / doc).relative_to(REPO)) if
                      (cited_from.parent / doc).resolve().is_relative_to(REPO) else doc):
        if (REPO / candidate).is_file():
            return candidate
    return None


def test_the_repository_has_the_documents_its_code_cites():
    cited = citations()
    assert len(cited) > 30  # the pattern still finds the citations
    named = {(p, doc) for p in SOURCES for doc in re.findall(r"\b((?:docs/)?[A-Z][A-Za-z-]*\.md|docs/[a-z-]+\.md)\b",
                                                             p.read_text(encoding="utf-8"))}
    missing = sorted({f"{p.relative_to(REPO)}: {doc}" for p, doc in named | {(p, d) for p, d, _ in cited}
                      if resolve(doc, p) is None})
    assert not missing, missing


def test_every_cited_section_is_a_heading_of_its_document():
    wrong = []
    for path, doc, section in citations():
        target = resolve(doc, path)
        if section is None or target is None:
            continue
        if not any(section.lower() in h.lower() for h in headings(target)):
            wrong.append(f"{path.relative_to(REPO)}: {doc}, \"{section}\"")
    assert not wrong, sorted(set(wrong))


def test_every_relative_link_of_the_documents_points_at_a_file_of_the_repository():
    broken = []
    for doc in DOCS:
        text = (REPO / doc).read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if "://" not in target and not ((REPO / doc).parent / target).exists():
                broken.append(f"{doc}: {target}")
    assert not broken, broken


def test_every_file_path_the_documents_name_exists():
    folders = "tests|benchmarks|actors|build|cluster|core|eval|docs"
    pattern = re.compile(rf"\b((?:{folders})/[\w/.-]*\w\.(?:py|md|txt|ini))\b")
    missing = sorted({f"{doc}: {path}" for doc in DOCS
                      for path in pattern.findall((REPO / doc).read_text(encoding="utf-8"))
                      if not (REPO / path).exists()})
    assert not missing, missing
