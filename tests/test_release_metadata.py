"""One version and one license everywhere: pyproject.toml, CITATION.cff, CHANGELOG.md, LICENSE, docs/citing.md.

The policy is in docs/contributing.md ("Versions, tags and the changelog").
"""

import os
import re
import tomllib

import yaml
from laser_fairseq.checkout import REPO

VERSION_HEADING = re.compile(r"^## \[(\d+\.\d+\.\d+)\] - (unreleased|\d{4}-\d{2}-\d{2})$")
BIBTEX_ENTRY = re.compile(r"@(\w+)\{([^,]+),(.*?)\n\}", re.DOTALL)
BIBTEX_FIELD = re.compile(r"^\s*(\w+)\s*=\s*\{(.*)\},?\s*$", re.MULTILINE)


def read(name: str) -> str:
    with open(os.path.join(REPO, name), encoding="utf-8") as handle:
        return handle.read()


def project() -> dict:
    return tomllib.loads(read("pyproject.toml"))["project"]


def citation() -> dict:
    return yaml.safe_load(read("CITATION.cff"))


def changelog_versions(text: str):
    """(version, date or 'unreleased') of every '## [x.y.z] - ...' heading, top first."""
    return [match.groups() for match in map(VERSION_HEADING.match, text.splitlines()) if match]


def bibtex_entries(markdown: str) -> dict:
    """key -> {field: value} of the ```bibtex blocks of a markdown text (outer braces kept out)."""
    blocks = re.findall(r"```bibtex\n(.*?)```", markdown, re.DOTALL)
    entries = {}
    for block in blocks:
        for kind, key, body in BIBTEX_ENTRY.findall(block):
            entries[key] = {"@type": kind, **dict(BIBTEX_FIELD.findall(body))}
    return entries


def plain(bibtex_value: str) -> str:
    return bibtex_value.replace("{", "").replace("}", "")


def test_citation_cff_is_valid_yaml_with_the_required_fields():
    cff = citation()
    for key in ("cff-version", "message", "title", "authors", "version", "license", "references"):
        assert cff.get(key), f"CITATION.cff: no {key}"
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software"
    assert all(author.get("name") or author.get("family-names") for author in cff["authors"])


def test_one_version_in_pyproject_citation_and_changelog():
    version = project()["version"]
    assert str(citation()["version"]) == version
    versions = changelog_versions(read("CHANGELOG.md"))
    assert versions, "CHANGELOG.md has no '## [x.y.z] - date|unreleased' heading"
    assert versions[0][0] == version, f"CHANGELOG.md's top entry is {versions[0][0]}, pyproject says {version}"
    assert len({v for v, _ in versions}) == len(versions), "a version appears twice in CHANGELOG.md"
    released = citation().get("date-released")
    if versions[0][1] == "unreleased":
        assert released is None, "CITATION.cff has a date-released for an unreleased version"
    else:
        assert str(released) == versions[0][1], "CITATION.cff's date-released differs from the changelog's date"


def test_one_license_in_pyproject_citation_and_license_file():
    assert project()["license"] == {"text": "MIT"}
    assert citation()["license"] == "MIT"
    text = read("LICENSE")
    assert text.startswith("MIT License\n") and "the laser-fairseq authors" in text


def test_the_bibtex_in_the_docs_says_what_citation_cff_says():
    entries = bibtex_entries(read("docs/citing.md"))
    cff = citation()
    software, paper = entries["laser_fairseq"], entries["meghanani2024laser"]
    assert plain(software["title"]) == cff["title"]
    assert software["version"] == cff["version"]
    assert plain(software["author"]) == " and ".join(author["name"] for author in cff["authors"])
    reference = cff["references"][0]
    assert plain(paper["title"]) == reference["title"]
    assert paper["author"] == " and ".join(f"{a['family-names']}, {a['given-names']}" for a in reference["authors"])
    assert int(paper["year"]) == reference["year"]
    assert f"arXiv:{paper['eprint']}" == reference["identifiers"][0]["value"]
    assert reference["url"].endswith(paper["eprint"])


def test_the_parsers_see_a_mismatch():
    log = "# Changelog\n\n## [0.2.0] - unreleased\n\n## [0.1.0] - 2026-12-06\n"
    assert changelog_versions(log) == [("0.2.0", "unreleased"), ("0.1.0", "2026-12-06")]
    assert changelog_versions("## 0.1.0\n## [0.1] - unreleased\n") == []
    entries = bibtex_entries("```bibtex\n@misc{k,\n  title = {{A} b},\n  year = {2024},\n}\n```\n")
    assert entries == {"k": {"@type": "misc", "title": "{A} b", "year": "2024"}}
    assert plain(entries["k"]["title"]) == "A b"
