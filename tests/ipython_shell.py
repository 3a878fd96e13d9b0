"""The one in-process IPython shell of a test session, leaving nothing on the machine.

``InteractiveShell.instance()`` is a singleton: whoever creates it first decides where
it keeps its profile and history.  :func:`shell` creates it with a private IPython
directory (removed when the test process ends, after IPython's own exit handlers ran)
and its history in memory, so that no test writes to the home directory, nor to a
directory that pytest removes before IPython writes its history at exit.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile

from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config


def shell() -> InteractiveShell:
    if InteractiveShell.initialized():
        return InteractiveShell.instance()
    ipython_dir = tempfile.mkdtemp(prefix="ipython-test-shell-")
    # Registered first, so it runs after IPython's handlers (atexit is last in, first out).
    atexit.register(shutil.rmtree, ipython_dir, True)
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    return InteractiveShell.instance(config=config, ipython_dir=ipython_dir)
