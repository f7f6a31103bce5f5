"""The user commands' front doors: each module parses its arguments and makes one call into the package
(``python scripts/NAME.py`` and the ``laser-*`` console commands run their ``main``)."""
