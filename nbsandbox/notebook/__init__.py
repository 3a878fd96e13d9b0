"""Reproducible notebooks: record the runtime a notebook ran in, bundle it, verify it.

A notebook executed through nbsandbox carries, under ``metadata.nbsandbox``,
the digests (:mod:`nbsandbox.identity`) of the packs its kernel and its
``%%sandbox`` cells ran from, the engines chosen and why, and the host facts
that can change results.  Anyone can then re-run it from the same packs,
under whatever engine works on their host, and compare the outputs.

Modules, one concept each:

``hostfacts``  what of the host can change results (kernel, CPU, glibc)
``cellrun``    what the ``%%sandbox`` magic records in its cell's outputs
``record``     the notebook's record: build, seal, read back, validate
``kernel``     a kernel for a store root, as nbclient needs it
``params``     papermill-style parameters
``execute``    ``nbsandbox execute`` and ``nbsandbox record``
``cache``      the pack cache: packs found by digest
``bundle``     one deterministic file with the notebook and its packs
``compare``    outputs compared after normalizing what is volatile
``verify``     ``nbsandbox verify``: find packs, check, re-run, compare, report
``commands``   the sub-commands
``pytest_plugin``  ``pytest --nbsandbox-verify``
"""
