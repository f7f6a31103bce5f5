"""How the front doors end on bad input: a one-line ``error: ...`` on stderr and exit status 1."""

from __future__ import annotations

import contextlib
import sys
from typing import Iterator, Type


@contextlib.contextmanager
def exit_on(*errors: Type[BaseException]) -> Iterator[None]:
    """Turn any of ``errors`` raised inside the block into ``sys.exit("error: <message>")``."""
    try:
        yield
    except errors as error:
        sys.exit(f"error: {error}")

