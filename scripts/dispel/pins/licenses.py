"""Licensing table: distribution metadata facts -> SPDX id, repository and the project's own short texts."""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class DistFacts:
    """What the CLI read about one installed distribution (importlib.metadata, license files)."""

    name: str
    version: str
    repository: str  # URL of the code (a pinned tree when the lock has one)
    license_expression: str = ""  # core metadata 2.4 License-Expression
    license: str = ""  # the older free-text License field
    classifiers: tuple[str, ...] = ()
    license_text: str = ""  # the text of the shipped license file(s)
    license_files: tuple[tuple[str, str], ...] = ()  # (path in the repository, its URL at the pinned commit)


@dataclass(frozen=True)
class LicenseRow:
    library: str
    version: str
    repository: str
    spdx: str  # an SPDX id, or a plain statement when the metadata does not settle one
    source: str  # which metadata the id was read from
    summary: str  # what sets the license apart
    restrictions: str
    license_files: tuple[tuple[str, str], ...] = ()  # (path in the repository, its URL at the pinned commit)


@dataclass(frozen=True)
class LicenseText:
    summary: str
    restrictions: str


# The project's own short, factual descriptions, one per license the chains meet.
LICENSE_TEXTS: dict[str, LicenseText] = {
    "MIT": LicenseText(
        "A short permissive license: use, copy, modify, merge, publish, distribute, sublicense and sell, "
        "in source or binary form, for any purpose. No patent clause and no copyleft.",
        "Keep the copyright notice and the permission notice in all copies or substantial portions. "
        "Provided \"as is\", without warranty or liability.",
    ),
    "BSD-2-Clause": LicenseText(
        "A permissive license of two conditions, close to MIT in effect. No patent clause and no copyleft.",
        "Source copies keep the copyright notice, the conditions and the disclaimer; binary copies "
        "reproduce them in their documentation or other materials. No warranty.",
    ),
    "BSD-3-Clause": LicenseText(
        "A permissive license like BSD-2-Clause with a third, non-endorsement clause. No patent clause and no copyleft.",
        "Keep the copyright notice, the conditions and the disclaimer (in the documentation for binary "
        "copies); the names of the copyright holder and contributors may not be used to endorse or "
        "promote derived products without written permission. No warranty.",
    ),
    "Apache-2.0": LicenseText(
        "A permissive license with an explicit patent grant from every contributor, which ends for "
        "anyone who sues claiming the work infringes a patent. No copyleft.",
        "Give recipients a copy of the license; state changes in modified files; keep copyright, patent, "
        "trademark and attribution notices and any NOTICE file. Grants no trademark rights. No warranty.",
    ),
    "PSF-2.0": LicenseText(
        "The Python Software Foundation License for CPython and its standard library: permissive, "
        "GPL-compatible, no copyleft.",
        "Keep the PSF copyright notice and the license in the Python software or derivative works, and "
        "summarize the changes made to Python in a derivative work. Provided \"as is\", without warranty; "
        "grants no right to use PSF trademarks.",
    ),
}
UNKNOWN = LicenseText("The metadata does not state a license this report can name.", "Read the license file shipped with the distribution.")

# Trove classifiers that name one license exactly.
CLASSIFIERS = {
    "License :: OSI Approved :: MIT License": "MIT",
    "License :: OSI Approved :: Python Software Foundation License": "PSF-2.0",
}
# Classifiers that name a family: the license file decides the member, or the row says so.
FAMILY_CLASSIFIERS = {
    "License :: OSI Approved :: BSD License": "BSD",
    "License :: OSI Approved :: Apache Software License": "Apache",
}
# Free-text License fields that are an SPDX id in all but spelling.
ALIASES = {
    "mit": "MIT",
    "mit license": "MIT",
    "bsd-3-clause": "BSD-3-Clause",
    "bsd 3-clause": "BSD-3-Clause",
    "bsd-2-clause": "BSD-2-Clause",
    "apache-2.0": "Apache-2.0",
    "apache 2.0": "Apache-2.0",
    "apache license 2.0": "Apache-2.0",
    "apache software license 2.0": "Apache-2.0",
    "psf-2.0": "PSF-2.0",
}


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).lower()


def family_member(family: str, license_text: str) -> str | None:
    """The exact license of a family, read from the license text itself; None when it does not say."""
    text = _squash(license_text)
    if family == "BSD" and "redistribution and use in source and binary forms" in text:
        # The third clause of BSD-3-Clause is the non-endorsement clause.
        if "may be used to endorse or promote products" in text:
            return "BSD-3-Clause"
        return "BSD-2-Clause"
    if family == "Apache" and "apache license" in text and "version 2.0" in text:
        return "Apache-2.0"
    return None


def spdx_id(facts: DistFacts) -> tuple[str, str]:
    """(SPDX id or a plain statement, the metadata it came from), trying the most exact source first."""
    if facts.license_expression.strip():
        return facts.license_expression.strip(), "License-Expression"
    alias = ALIASES.get(_squash(facts.license.strip()))
    if alias:
        return alias, "License"
    for classifier in facts.classifiers:
        if classifier in CLASSIFIERS:
            return CLASSIFIERS[classifier], "classifier"
    for classifier in facts.classifiers:
        family = FAMILY_CLASSIFIERS.get(classifier)
        if family:
            member = family_member(family, facts.license_text)
            if member:
                return member, "classifier + license file"
            return f"{family} (variant not stated)", "classifier"
    if facts.license_text:
        for family in ("BSD", "Apache"):
            member = family_member(family, facts.license_text)
            if member:
                return member, "license file"
        text = _squash(facts.license_text)
        if "permission is hereby granted, free of charge" in text:
            return "MIT", "license file"
        if "python software foundation license version 2" in text:
            return "PSF-2.0", "license file"
    return "not stated", "none"


def license_row(facts: DistFacts) -> LicenseRow:
    spdx, source = spdx_id(facts)
    texts = LICENSE_TEXTS.get(spdx, UNKNOWN)
    return LicenseRow(facts.name, facts.version, facts.repository, spdx, source, texts.summary, texts.restrictions, facts.license_files)


def license_rows(facts: Iterable[DistFacts]) -> list[LicenseRow]:
    """One row per distribution, ordered by name (case-insensitive) for a stable table."""
    return [license_row(f) for f in sorted(facts, key=lambda f: f.name.lower())]
