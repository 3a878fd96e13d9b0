"""nbsandbox: run Jupyter cells and whole kernels from relocatable software stores."""

__version__ = "0.1.0"
