"""A Slurm spawner for single-user servers that run from the site's pack.

:class:`PackSlurmSpawner` is batchspawner's ``SlurmSpawner`` with

- a short batch script: the job execs ``nbsandbox site singleuser``, which chooses the
  engine on the node and runs the server from the pack (nothing else is needed there);
- the job's own reason in the Hub when it ends before the server is up:
  ``nbsandbox site singleuser`` writes a failure into the job's comment, and the
  spawner reports it (or the job's state, e.g. a cancelled job) in one line.

In ``jupyterhub_config.py``::

    c.JupyterHub.spawner_class = "nbsandbox.site.spawner.PackSlurmSpawner"
    c.PackSlurmSpawner.req_nbsandbox = "/shared/nbsandbox/bin/nbsandbox"
    c.PackSlurmSpawner.req_site = "/shared/site"

Imported only by JupyterHub (it needs ``batchspawner``).
"""

from __future__ import annotations

import asyncio

from batchspawner import SlurmSpawner
from batchspawner.batchspawner import format_template
from traitlets import List, Unicode

from nbsandbox.site.layout import BATCH_SCRIPT

#: Slurm job states after which no server will come (squeue's %T).
ENDED_STATES = frozenset({"FAILED", "CANCELLED", "COMPLETED", "TIMEOUT", "NODE_FAIL",
                          "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "PREEMPTED"})
ENDED_POLL_S = 2.0



class PackSlurmSpawner(SlurmSpawner):
    """Starts each single-user server as a Slurm job that runs it from the site's pack."""

    batch_script = Unicode(
        BATCH_SCRIPT,
        help="""Template of the job script (batchspawner's syntax: req_xyz traits as
        {{xyz}}).  The default execs `{{nbsandbox}} site singleuser --site {{site}} --
        {{cmd}}`, so that the job's process is the server.""",
    ).tag(config=True)

    req_nbsandbox = Unicode(
        "nbsandbox",
        help="""The nbsandbox command as compute nodes see it, e.g. on the shared file
        system (/shared/nbsandbox/bin/nbsandbox).""",
    ).tag(config=True)

    req_site = Unicode(
        "",
        help="""The site directory (nbsandbox site install) as compute nodes see it.""",
    ).tag(config=True)

    allowed_user_options = List(
        Unicode(),
        ["partition"],
        help="""Keys a user may give when starting a server (the Hub's form or REST API
        body).  batchspawner substitutes every user option into the batch script, so any
        other key is refused.""",
    ).tag(config=True)

    #: The job of the last submission (batchspawner clears ``job_id`` when it fails).
    submitted_job = ""

    async def submit_batch_script(self):
        self.submitted_job = await super().submit_batch_script()
        return self.submitted_job

    async def _job_field(self, fmt: str) -> str:
        subvars = self.get_req_subvars()
        cmd = " ".join((format_template(self.exec_prefix, **subvars),
                        f"squeue -h -t all -j {self.submitted_job} -o '{fmt}'"))
        try:
            return (await self.run_command(cmd)).strip()
        except Exception:  # the job is gone from the controller: nothing more to say
            return ""

    async def start(self):
        """Submit the job and wait for the server (batchspawner's ``start``); when the job
        ends first -- also after it was seen running, where batchspawner would wait for
        the server's port until the Hub's timeout -- raise one line with the job's reason."""
        for key in self.user_options or {}:
            if key not in self.allowed_user_options:
                raise RuntimeError(f"server option {key!r} is not allowed here; allowed: "
                                   f"{', '.join(self.allowed_user_options) or 'none'}")
        self.submitted_job = ""
        starting = asyncio.ensure_future(super().start())
        try:
            while True:
                done, _ = await asyncio.wait({starting}, timeout=ENDED_POLL_S)
                if done:
                    return starting.result()
                if self.job_id and await self._job_field("%T") in ENDED_STATES:
                    raise RuntimeError("the job ended")
        except RuntimeError as exc:
            if not self.submitted_job:
                raise
            raise RuntimeError(await self._reason(str(exc))) from None
        finally:
            if not starting.done():
                starting.cancel()

    async def _reason(self, detail: str) -> str:
        """One line: the job's comment (set by ``nbsandbox site singleuser``), else its state."""
        job = self.submitted_job
        comment = await self._job_field("%k")
        if comment and comment != "(null)":
            return f"Slurm job {job} on {await self._job_field('%N')} ended: {comment}"
        state = await self._job_field("%T")
        first = detail.strip().splitlines()[0] if detail.strip() else "no reason given"
        return f"Slurm job {job} ended before the server started (state {state or 'unknown'}): " \
            f"{first}"
