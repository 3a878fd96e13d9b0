"""``pytest --nbsandbox-verify notebooks/``: verify recorded notebooks and bundles in CI.

Registered under the ``pytest11`` entry point, inactive unless the option is
given.  Then every ``*.ipynb`` and ``*.bundle.tar`` file collected becomes one
test that runs :func:`nbsandbox.notebook.verify.verify`: it passes when every
compared cell is identical, and fails with the per-cell report (or the one
line saying why it could not run) otherwise.  ``--nbsandbox-engine`` and
``--nbsandbox-packs`` are ``nbsandbox verify``'s ``--engine`` and ``--packs``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("nbsandbox", "verify recorded notebooks (nbsandbox)")
    group.addoption("--nbsandbox-verify", action="store_true", default=False,
                    help="collect *.ipynb and *.bundle.tar files and verify each: re-run it "
                         "from its recorded packs and compare the outputs")
    group.addoption("--nbsandbox-engine", default=None, metavar="ENGINE",
                    help="engine or meta-engine for the re-runs (default: the policy's)")
    group.addoption("--nbsandbox-packs", action="append", default=[], metavar="DIR",
                    help="also look for packs here (repeatable)")
    group.addoption("--nbsandbox-timeout", type=int, default=600, metavar="SECONDS",
                    help="longest a cell may run (default: 600)")


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if not parent.config.getoption("nbsandbox_verify"):
        return None
    if file_path.suffix == ".ipynb" or file_path.name.endswith(".bundle.tar"):
        return NotebookFile.from_parent(parent, path=file_path)
    return None


class VerifyFailed(Exception):
    def __init__(self, report: Any) -> None:
        super().__init__(report.reason or report.text())
        self.report = report


class NotebookFile(pytest.File):
    def collect(self):
        yield NotebookItem.from_parent(self, name="nbsandbox-verify")


class NotebookItem(pytest.Item):
    def runtest(self) -> None:
        from nbsandbox.notebook.verify import verify

        config = self.config
        report = verify(self.path, engine=config.getoption("nbsandbox_engine"),
                        packs=list(config.getoption("nbsandbox_packs")),
                        timeout=config.getoption("nbsandbox_timeout"))
        self.user_properties.append(("nbsandbox_status", report.status))
        if report.exit_code != 0:
            raise VerifyFailed(report)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style=None) -> str:
        if isinstance(excinfo.value, VerifyFailed):
            report = excinfo.value.report
            if report.exit_code == 2:
                return f"could not verify {self.path.name}: {report.reason}"
            return f"{self.path.name} differs from its stored outputs:\n{report.text()}"
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"nbsandbox verify {self.path.name}"
