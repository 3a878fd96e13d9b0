"""Packed kernels for a site: a cluster's JupyterHub whose single-user servers run on
compute nodes from a shared pack directory.

- :mod:`~nbsandbox.site.layout`: the site directory (policy, kernelspecs) and its settings;
- :mod:`~nbsandbox.site.install`: ``nbsandbox site install``, the administrator's command;
- :mod:`~nbsandbox.site.singleuser`: ``nbsandbox site singleuser``, what a batch job runs;
- :mod:`~nbsandbox.site.spawner`: batchspawner's ``SlurmSpawner`` with a short batch script
  and the job's own failure reason shown in the Hub (imported only by JupyterHub).
"""
