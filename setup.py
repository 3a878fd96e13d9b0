"""Build hook: compile the C components in native/ into nbsandbox/_native/.

All metadata lives in pyproject.toml; this file only adds the native build to
``build_py`` so that ``pip install`` (regular or editable) needs no manual step.
"""

import importlib.util
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


def _native_builder():
    build_py_file = HERE / "native" / "build.py"
    spec = importlib.util.spec_from_file_location("nbsandbox_native_build", build_py_file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses need the module registered
    spec.loader.exec_module(module)
    return module


class BuildPyWithNative(build_py):
    def run(self):
        super().run()
        builder = _native_builder()
        if getattr(self, "editable_mode", False):
            out = HERE / "nbsandbox" / "_native"
        else:
            out = Path(self.build_lib) / "nbsandbox" / "_native"
        builder.build_all(out)


setup(cmdclass={"build_py": BuildPyWithNative})
