"""matplotlib's pyplot on the file-only Agg backend (reports are written to PNG files; no display needed)."""


def pyplot():
    """``matplotlib.pyplot`` with the Agg backend selected, imported on first use (matplotlib is slow to
    import and only the report writers need it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
