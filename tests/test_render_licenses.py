"""Licensing facts -> SPDX ids and the course template's rows."""
from __future__ import annotations

import pytest
from dispel.pins.licenses import (
    LICENSE_TEXTS,
    DistFacts,
    license_row,
    license_rows,
    spdx_id,
)

BSD3 = """Redistribution and use in source and binary forms, with or without modification, are
permitted provided that ... 3. Neither the name of the copyright holder nor the names of its
contributors may be used to endorse or promote products derived from this software ..."""
BSD2 = "Redistribution and use in source and binary forms, with or without modification, are permitted"
APACHE = "Apache License\n   Version 2.0, January 2004\n"
MIT_TEXT = "Permission is hereby granted, free of charge, to any person obtaining a copy"
PSF = "PYTHON SOFTWARE FOUNDATION LICENSE VERSION 2\n"


def facts(**kw) -> DistFacts:
    return DistFacts("lib", "1.0", "https://github.com/o/lib", **kw)


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({"license_expression": "BSD-3-Clause", "license": "MIT"}, ("BSD-3-Clause", "License-Expression")),
        ({"license": "MIT"}, ("MIT", "License")),
        ({"license": "  MIT License "}, ("MIT", "License")),
        ({"license": "Apache 2.0"}, ("Apache-2.0", "License")),
        ({"classifiers": ("License :: OSI Approved :: MIT License",)}, ("MIT", "classifier")),
        ({"classifiers": ("License :: OSI Approved :: BSD License",), "license_text": BSD3}, ("BSD-3-Clause", "classifier + license file")),
        ({"classifiers": ("License :: OSI Approved :: BSD License",), "license_text": BSD2}, ("BSD-2-Clause", "classifier + license file")),
        # The classifier alone does not say which BSD license: the row says so instead of guessing.
        ({"classifiers": ("License :: OSI Approved :: BSD License",)}, ("BSD (variant not stated)", "classifier")),
        ({"classifiers": ("License :: OSI Approved :: Apache Software License",), "license_text": APACHE}, ("Apache-2.0", "classifier + license file")),
        ({"classifiers": ("License :: OSI Approved :: Apache Software License",)}, ("Apache (variant not stated)", "classifier")),
        ({"license_text": MIT_TEXT}, ("MIT", "license file")),
        ({"license_text": PSF}, ("PSF-2.0", "license file")),
        ({"license": "a long custom license text"}, ("not stated", "none")),
        ({}, ("not stated", "none")),
    ],
)
def test_spdx_id(kw, expected):
    assert spdx_id(facts(**kw)) == expected


@pytest.mark.parametrize("spdx", ["MIT", "BSD-3-Clause", "Apache-2.0", "PSF-2.0"])
def test_every_license_on_the_chains_has_its_own_texts(spdx):
    row = license_row(facts(license_expression=spdx))
    assert row.summary == LICENSE_TEXTS[spdx].summary and row.restrictions == LICENSE_TEXTS[spdx].restrictions


def test_rows_are_sorted_by_name_and_keep_repository():
    rows = license_rows([DistFacts("Werkzeug", "3", "https://w"), DistFacts("h11", "0.1", "https://h", license="MIT")])
    assert [(r.library, r.repository, r.spdx) for r in rows] == [("h11", "https://h", "MIT"), ("Werkzeug", "https://w", "not stated")]
