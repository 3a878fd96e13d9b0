"""What engines build for a plan (no process is started here)."""

from __future__ import annotations

import os

from nbsandbox.engines.bwrap import BwrapEngine
from nbsandbox.engines.proot import ProotEngine
from nbsandbox.engines.userns import UsernsEngine
from nbsandbox.engines.views import synthetic_dirs
from nbsandbox.launch import make_plan
from nbsandbox.plan import Bind
from nbsandbox.store import StoreRoot

H = "c" * 32


def make_root(tmp_path, prefix):
    item = tmp_path / prefix.lstrip("/") / f"{H}-tool"
    (item / "bin").mkdir(parents=True)
    (item / "bin" / "tool").write_text("#!/bin/sh\n")
    (item / "bin" / "tool").chmod(0o755)
    return StoreRoot.open(tmp_path, prefix=prefix)


def test_userns_runs_directly_when_the_store_is_already_at_its_prefix(tmp_path):
    host_prefix = tmp_path / "host" / "store"
    root = make_root(tmp_path / "root", str(host_prefix))
    (host_prefix / f"{H}-tool").mkdir(parents=True)  # the host has the same item
    plan = make_plan(root, f"{host_prefix}/{H}-tool/bin/tool", ["x"])
    cmd = UsernsEngine().command(plan)
    assert cmd.executable == plan.program and cmd.argv == [plan.program, "x"]


def test_userns_binds_the_store_and_the_plan_options_in_order(tmp_path):
    root = make_root(tmp_path / "root", "/gnu/store")
    data = tmp_path / "data"
    data.mkdir()
    plan = make_plan(root, f"/gnu/store/{H}-tool/bin/tool", [], cwd=str(tmp_path),
                     binds=[Bind.parse(f"{data}:/data", read_only=True)], hide=["/etc/motd"],
                     isolate_home=True, env={"HOME": str(tmp_path), "XDG_CONFIG_HOME": "/x"})
    argv = UsernsEngine().command(plan).argv
    options = argv[argv.index("userns") + 1:argv.index("--")]
    assert options == [
        "--store", f"{root.store_dir}:/gnu/store",
        "--tmpfs", str(tmp_path),
        "--bind", f"{tmp_path}:{tmp_path}",  # the working directory stays visible
        "--ro-bind", f"{data}:/data",
        "--hide", "/etc/motd",
        "--chdir", str(tmp_path),
        "--argv0", plan.argv[0],
    ]
    assert "XDG_CONFIG_HOME" not in plan.env  # isolated home: no pointers to the user's config


def test_profile_bin_comes_first_on_path(tmp_path):
    root = make_root(tmp_path / "root", "/gnu/store")
    os.makedirs(root.store_dir / f"{'d' * 32}-profile" / "bin")
    os.symlink(f"gnu/store/{'d' * 32}-profile/bin", root.path / "bin")
    root = StoreRoot.open(root.path)
    plan = make_plan(root, f"/gnu/store/{H}-tool/bin/tool", [], env={"PATH": "/usr/bin"})
    assert plan.env["PATH"] == f"/gnu/store/{'d' * 32}-profile/bin:/usr/bin"


def test_synthetic_dirs_only_where_a_mount_point_is_missing(tmp_path):
    existing = tmp_path / "exists"
    existing.mkdir()
    missing = tmp_path / "missing" / "deeper"
    dirs = synthetic_dirs([str(existing), str(missing)])
    assert str(existing) not in dirs
    assert str(tmp_path / "missing") in dirs and str(tmp_path) in dirs and dirs[0] == "/"


def test_supervised_engines_put_the_supervisor_first(tmp_path):
    root = make_root(tmp_path / "root", "/gnu/store")
    plan = make_plan(root, f"/gnu/store/{H}-tool/bin/tool", ["a"], cwd=str(tmp_path))
    for engine in (ProotEngine(), BwrapEngine()):
        if not engine.probe().available:
            continue
        argv = engine.command(plan).argv
        assert argv[1] == "supervise"
        report = argv.index("report")
        assert argv[report + 1:report + 3] == ["--fd", "@NBS_STATUS_FD@"]
        assert argv[-2:] == [plan.program, "a"]


def test_proot_as_root_names_the_glue_it_may_leave_on_the_host(tmp_path, monkeypatch):
    """Run by root, PRoot makes a binding's missing parents in the host's tree:
    the supervisor is told the top one, so that its janitor removes it."""
    from nbsandbox.engines.proot import first_missing

    assert first_missing(str(tmp_path)) is None
    assert first_missing(str(tmp_path / "a" / "b")) == str(tmp_path / "a")
    engine = ProotEngine()
    if not engine.probe().available:
        return
    prefix = tmp_path / "p" / "store"
    root = make_root(tmp_path / "root", str(prefix))
    plan = make_plan(root, f"{prefix}/{H}-tool/bin/tool", [], cwd=str(tmp_path))
    for euid, glue in ((1000, []), (0, ["--glue", str(tmp_path / "p")])):
        monkeypatch.setattr(os, "geteuid", lambda euid=euid: euid)
        argv = engine.command(plan).argv
        sup = argv[:argv.index("--")]
        assert sup[sup.index("--glue"):sup.index("--glue") + 2] == glue if glue else \
            "--glue" not in sup


def test_the_plan_computes_its_view_once_and_every_engine_translates_it(tmp_path):
    """One view: the namespace engines' mounts and the fakechroot engine's mappings
    come from the same entries, and so does "where is this file" for the provisioner."""
    from nbsandbox.engines.fakechroot import _mappings, empty_dir
    from nbsandbox.engines.views import mount_ops

    root = make_root(tmp_path / "root", "/gnu/store")
    home = tmp_path / "home"
    (home / "work").mkdir(parents=True)
    (home / "runtime").mkdir()
    plan = make_plan(root, f"/gnu/store/{H}-tool/bin/tool", [], cwd=str(home / "work"),
                     binds=[Bind.parse(str(home / "runtime"))], hide=[str(tmp_path / "root")],
                     isolate_home=True, env={"HOME": str(home)})
    assert plan.view is plan.view
    kinds = [(e.kind, e.dest) for e in plan.view.entries]
    assert kinds == [("store", "/gnu/store"), ("tmpfs", str(home)),
                     ("bind", str(home / "work")), ("bind", str(home / "runtime")),
                     ("hide", str(tmp_path / "root"))]
    assert mount_ops(plan) == list(plan.view.entries)
    maps = _mappings(plan)
    assert [m[1] for m in maps] == [e.dest for e in plan.view.entries]
    # a bind onto itself inside the private home must be mapped to show through it
    assert ("-", str(home / "runtime"), os.path.realpath(home / "runtime")) in maps
    assert ("r", str(home), empty_dir()) in maps
    view = plan.view
    assert view.host_path(f"/gnu/store/{H}-tool/bin/tool") == f"{root.store_dir}/{H}-tool/bin/tool"
    assert view.host_path(str(home / "runtime" / "k.json")) == str(home / "runtime" / "k.json")
    assert view.host_path(str(home / ".gitconfig")) is None  # the private home
    assert view.host_path(str(tmp_path / "root" / "x")) is None  # hidden
    assert view.host_path("/etc/hostname") == "/etc/hostname"
