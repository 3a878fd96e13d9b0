"""nbsandbox: run Jupyter cells and whole kernels from relocatable software stores."""

__version__ = "0.1.0"


def load_ipython_extension(ipython):
    """``%load_ext nbsandbox``: register the ``%%sandbox`` magics (see :mod:`nbsandbox.magics`)."""
    from nbsandbox.magics import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython):
    """``%unload_ext nbsandbox``: stop background runs and remove the magics."""
    from nbsandbox.magics import unload_ipython_extension as unload

    unload(ipython)
