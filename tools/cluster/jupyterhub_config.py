# JupyterHub of the test cluster (tools/cluster.sh fills in the @...@ values).
# A site's own configuration differs only in paths, ports and the authenticator.
c = get_config()  # noqa: F821

c.JupyterHub.bind_url = "http://127.0.0.1:@PORT@"
c.JupyterHub.hub_bind_url = "http://127.0.0.1:@HUBPORT@"
c.JupyterHub.hub_connect_ip = "127.0.0.1"
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:@PROXYPORT@"
c.ConfigurableHTTPProxy.command = ["@CHP@"]
c.ConfigurableHTTPProxy.pid_file = "@RUN@/hub/jupyterhub-proxy.pid"
c.JupyterHub.db_url = "sqlite:///@RUN@/hub/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "@RUN@/hub/jupyterhub_cookie_secret"
c.JupyterHub.pid_file = "@RUN@/hub/jupyterhub.pid"
c.JupyterHub.cleanup_servers = True

# A test authenticator: every user shares one password.
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = "@PASSWORD@"
c.Authenticator.allow_all = True

# The check drives the Hub through its REST API with this service's token.
c.JupyterHub.services = [{"name": "cluster-check", "api_token": "@TOKEN@"}]
c.JupyterHub.load_roles = [{"name": "admin", "services": ["cluster-check"]}]

# --- the part a site copies -----------------------------------------------------------
c.JupyterHub.spawner_class = "nbsandbox.site.spawner.PackSlurmSpawner"
c.PackSlurmSpawner.req_nbsandbox = "@NBSANDBOX@"
c.PackSlurmSpawner.req_site = "@SITE@"
c.PackSlurmSpawner.exec_prefix = "sudo -E -u {username}"
c.PackSlurmSpawner.req_partition = "main"  # a user may ask for another: {"partition": "nouserns"}
# this cluster's slurm.conf is not in /etc/slurm: the Slurm commands and jobs need its path
c.Spawner.env_keep = ["PATH", "LANG", "LC_ALL", "SLURM_CONF"]
# the check also starts servers against deliberately broken site directories
c.PackSlurmSpawner.allowed_user_options = ["partition", "site"]
c.Spawner.start_timeout = 180
c.Spawner.http_timeout = 120
# all nodes of this cluster are this host; a real site resolves node names instead
c.PackSlurmSpawner.state_exechost_exp = "127.0.0.1"

