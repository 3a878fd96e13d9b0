"""Engine policy: administrator's files restrict, later layers may only tighten."""

from __future__ import annotations

import json

import pytest
from traitlets.config import Config

from nbsandbox import engines
from nbsandbox.errors import EngineUnavailable, UsageError
from nbsandbox.policy import (
    ADMIN_BASENAME,
    ADMIN_ENV,
    POLICY_TRAITS,
    Layer,
    Policy,
    PolicyError,
    SandboxPolicy,
    admin_layers,
)


@pytest.fixture(autouse=True)
def _no_ambient_policy(monkeypatch, tmp_path):
    """No system-wide files, no variables: each test states its administrator."""
    monkeypatch.setattr("nbsandbox.policy.layers.system_config_dirs",
                        lambda: [str(tmp_path / "etc")])
    for name in (ADMIN_ENV, engines.ENV_VAR, "NBSANDBOX_ROOT"):
        monkeypatch.delenv(name, raising=False)


def admin(monkeypatch, tmp_path, settings: dict, *, system: bool = True) -> str:
    """Write an administrator's policy file (system-wide, or via $NBSANDBOX_ADMIN_CONFIG)."""
    directory = tmp_path / ("etc" if system else "extra")
    directory.mkdir(exist_ok=True)
    path = directory / f"{ADMIN_BASENAME}.json"
    path.write_text(json.dumps({"SandboxPolicy": settings}))
    if not system:
        monkeypatch.setenv(ADMIN_ENV, str(path))
    return str(path)


def user(settings: dict, cls: type = SandboxPolicy) -> SandboxPolicy:
    config = Config()
    for key, value in settings.items():
        config[cls.__name__][key] = value
    return cls(config=config)


def test_without_any_policy_everything_is_allowed():
    p = SandboxPolicy().effective_policy()
    assert p.allowed_engines is None and p.engine == "default" and not p.isolate_home
    for name in ("userns", "proot", "auto", "performance"):
        p.check_engine(name)


def test_administrator_restricts_engines_and_a_request_cannot_loosen(monkeypatch, tmp_path):
    path = admin(monkeypatch, tmp_path, {"allowed_engines": ["userns", "fakechroot"]})
    policy = SandboxPolicy()
    with pytest.raises(PolicyError) as info:
        policy.effective_policy({"engine": "proot"}, "this cell")
    msg = str(info.value)
    assert msg.startswith("this cell asks for engine 'proot', which is not allowed")
    assert "allowed engines are userns, fakechroot" in msg
    assert f"SandboxPolicy.allowed_engines in the administrator's {path}" in msg
    assert "\n" not in msg
    with pytest.raises(PolicyError, match="proot is not allowed; allowed engines: userns"):
        policy.effective_policy({"allowed_engines": ["userns", "proot"]})
    # tightening is fine
    p = policy.effective_policy({"allowed_engines": ["userns"], "engine": "userns"})
    assert p.allowed_engines == ("userns",) and p.engine == "userns"


def test_user_configuration_is_checked_like_a_request(monkeypatch, tmp_path):
    admin(monkeypatch, tmp_path, {"allowed_engines": ["userns"]})
    with pytest.raises(PolicyError, match="the configuration asks for engine 'bwrap'"):
        user({"engine": "bwrap"}).effective_policy()


def test_meta_engines_skip_forbidden_engines_and_fail_when_none_is_left(monkeypatch, tmp_path):
    admin(monkeypatch, tmp_path, {"allowed_engines": ["fakechroot"]})
    p = SandboxPolicy().effective_policy()
    p.check_engine("performance")  # userns, fakechroot: fakechroot is allowed
    with pytest.raises(PolicyError, match=r"'default' \(which tries userns, proot\), which is "
                                          "not allowed"):
        p.check_engine("default")


def test_isolated_home_cannot_be_turned_off(monkeypatch, tmp_path):
    admin(monkeypatch, tmp_path, {"isolate_home": True})
    with pytest.raises(PolicyError, match="isolate_home = False, but sandboxes must have"):
        SandboxPolicy().effective_policy({"isolate_home": False}, "kernel.json")
    assert SandboxPolicy().effective_policy({"isolate_home": True}).isolate_home


def test_user_settings_override_each_other_within_the_administrators_bounds():
    # without an administrator, a kernel.json may undo the user's own configuration
    p = user({"isolate_home": True}).effective_policy({"isolate_home": False})
    assert p.isolate_home is False


def test_environment_allow_list_narrows_and_filters(monkeypatch, tmp_path):
    admin(monkeypatch, tmp_path, {"env_allow": ["LANG", "LC_*", "MY_*"]})
    with pytest.raises(PolicyError, match=r"'\*' is wider than the allowed variables"):
        SandboxPolicy().effective_policy({"env_allow": ["*"]})
    p = SandboxPolicy().effective_policy({"env_allow": ["LC_ALL", "MY_*"]})
    env = {"LANG": "C", "LC_ALL": "C.UTF-8", "LC_CTYPE": "x", "MY_A": "1", "SECRET": "s",
           "PATH": "/bin", "HOME": "/h"}
    assert p.filter_env(env, keep=["SECRET"]) == {
        "LC_ALL": "C.UTF-8", "MY_A": "1", "SECRET": "s", "PATH": "/bin", "HOME": "/h"}


def test_admin_env_values_cannot_be_changed_but_others_can_be_added(monkeypatch, tmp_path):
    admin(monkeypatch, tmp_path, {"env": {"HTTP_PROXY": "http://proxy:3128"}})
    with pytest.raises(PolicyError, match="HTTP_PROXY is set by the administrator"):
        SandboxPolicy().effective_policy({"env": {"HTTP_PROXY": "none"}})
    p = SandboxPolicy().effective_policy({"env": {"FOO": "1"}})
    assert p.env == {"HTTP_PROXY": "http://proxy:3128", "FOO": "1"}


def test_named_roots_only(monkeypatch, tmp_path):
    (tmp_path / "py311").mkdir()
    admin(monkeypatch, tmp_path, {"roots": {"py311": str(tmp_path / "py311")},
                                  "allow_other_roots": False})
    p = SandboxPolicy().effective_policy()
    assert p.root_path("py311") == str(tmp_path / "py311")
    assert p.root_path(str(tmp_path / "py311")) == str(tmp_path / "py311")  # same, by path
    with pytest.raises(PolicyError, match="only the named roots may be used: py311"):
        p.root_path(str(tmp_path))
    with pytest.raises(PolicyError, match="root 'py311' is"):
        SandboxPolicy().effective_policy({"roots": {"py311": "/elsewhere"}})
    with pytest.raises(PolicyError, match="no roots may be added"):
        user({"roots": {"mine": "/home/me/pack"}}).effective_policy()
    with pytest.raises(PolicyError, match="allow_other_roots = True"):
        SandboxPolicy().effective_policy({"allow_other_roots": True})


def test_unknown_root_says_what_is_valid(tmp_path):
    p = user({"roots": {"a": "/x", "b": "/y"}}).effective_policy()
    with pytest.raises(UsageError, match="unknown root 'nope': named roots are a, b"):
        p.root_path("nope")
    with pytest.raises(UsageError, match=r"no store root given.*named roots: a, b"):
        p.root_path(None)


def test_binds_may_be_forbidden_and_never_expose_hidden_paths(monkeypatch, tmp_path):
    secret = tmp_path / "secret"
    secret.mkdir()
    admin(monkeypatch, tmp_path, {"allow_user_binds": False, "hide": [str(secret)]})
    with pytest.raises(PolicyError, match="binds may not be added"):
        SandboxPolicy().effective_policy({"binds": [str(tmp_path)]})
    monkeypatch.delenv(ADMIN_ENV, raising=False)
    p = Policy.fold([Layer("administrator", "admin", {"hide": [str(secret)]}),
                     Layer("request", "req", {"ro_binds": [f"{secret}:/mnt"]})])
    with pytest.raises(PolicyError, match=f"would expose {secret}, which is hidden"):
        p.bind_list()


def test_timeouts_of_the_administrator_are_maxima(monkeypatch, tmp_path):
    admin(monkeypatch, tmp_path, {"terminate_timeout": 5.0})
    assert SandboxPolicy().effective_policy({"terminate_timeout": 1.0}).terminate_timeout == 1.0
    with pytest.raises(PolicyError, match=r"the maximum is 5\.0 seconds"):
        SandboxPolicy().effective_policy({"terminate_timeout": 60.0})


def test_locked_settings_cannot_change_even_to_tighten(monkeypatch, tmp_path):
    admin(monkeypatch, tmp_path, {"engine": "userns", "locked": ["engine"]})
    with pytest.raises(PolicyError, match="engine is locked"):
        SandboxPolicy().effective_policy({"engine": "proot"})
    assert SandboxPolicy().effective_policy({"engine": "userns"}).engine == "userns"


def test_nbsandbox_admin_config_may_only_tighten_the_system_files(monkeypatch, tmp_path):
    admin(monkeypatch, tmp_path, {"allowed_engines": ["userns"]})
    admin(monkeypatch, tmp_path, {"allowed_engines": ["userns", "proot"]}, system=False)
    with pytest.raises(PolicyError, match=r"\$NBSANDBOX_ADMIN_CONFIG.*proot is not allowed"):
        SandboxPolicy().effective_policy()


def test_admin_python_config_and_per_class_sections(monkeypatch, tmp_path):
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / f"{ADMIN_BASENAME}.py").write_text(
        "c.SandboxPolicy.allowed_engines = ['userns']\n")
    [layer] = admin_layers()
    assert layer.kind == "administrator" and layer.settings == {"allowed_engines": ["userns"]}

    class Front(SandboxPolicy):
        pass

    config = Config()
    config.SandboxPolicy.isolate_home = True
    config.Front.engine = "userns"
    p = Front(config=config).effective_policy()
    assert p.isolate_home and p.engine == "userns"


def test_a_broken_admin_file_is_an_error_not_ignored(monkeypatch, tmp_path):
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / f"{ADMIN_BASENAME}.json").write_text("{not json")
    with pytest.raises(PolicyError, match="cannot read configuration file"):
        SandboxPolicy().effective_policy()
    (etc / f"{ADMIN_BASENAME}.json").unlink()
    monkeypatch.setenv(ADMIN_ENV, str(tmp_path / "missing.json"))
    with pytest.raises(PolicyError, match=r"\$NBSANDBOX_ADMIN_CONFIG names"):
        admin_layers()


def test_bad_values_are_usage_errors():
    with pytest.raises(UsageError, match=r"kernel\.json: bad value for isolate_home"):
        SandboxPolicy().effective_policy({"isolate_home": "yes please"}, "kernel.json")
    with pytest.raises(UsageError, match="unknown engine 'warp'; valid: default"):
        SandboxPolicy().effective_policy({"engine": "warp"})
    with pytest.raises(UsageError, match="allowed_engines names unknown engine"):
        SandboxPolicy().effective_policy({"allowed_engines": ["warp"]})


def test_chains_are_walked_within_the_policy(monkeypatch, tmp_path):
    """A custom chain tries its allowed engines in order and says why each was skipped."""
    from nbsandbox.engines.base import Command, Engine, Probe
    from nbsandbox.launch import prepare

    class Fake(Engine):
        summary = "fake"

        def __init__(self, name: str, ok: bool) -> None:
            self.name, self._ok = name, ok  # type: ignore[misc]

        def _probe(self) -> Probe:
            return Probe.ok() if self._ok else Probe.fail(f"{self.name} is off")

        def command(self, plan):
            return Command(["/bin/true"], {}, self.name)

    fakes = {"userns": Fake("userns", False), "bwrap": Fake("bwrap", True),
             "proot": Fake("proot", True)}
    monkeypatch.setattr(engines, "_instances", dict(fakes))
    monkeypatch.setattr("nbsandbox.launch.inspect_program", lambda root, path: _Program())
    monkeypatch.setattr("nbsandbox.launch.host_machine", lambda: "x86_64")
    admin(monkeypatch, tmp_path, {"allowed_engines": ["userns", "proot"]})
    p = user({"chains": {"mine": ["userns", "bwrap", "proot"]}}).effective_policy()
    launch = prepare(_Plan(), "mine", policy=p)
    assert launch.resolution.engine.name == "proot"
    assert launch.resolution.skipped == [
        ("userns", "userns is off"), ("bwrap", "not allowed by SandboxPolicy.allowed_engines")]
    fakes["proot"]._ok = False
    fakes["proot"]._probe_cache = None
    with pytest.raises(EngineUnavailable, match=r"no engine of 'mine'.*proot: proot is off"):
        prepare(_Plan(), "mine", policy=p)
    # --explain says who asked for the engine: the request, the variable, or the layer
    fakes["proot"]._ok, fakes["proot"]._probe_cache = True, None
    where = admin(monkeypatch, tmp_path, {"allowed_engines": ["userns", "proot"],
                                          "engine": "proot"})
    launch = prepare(_Plan(), None, policy=user({}).effective_policy())
    assert launch.resolution.asked_by == f"SandboxPolicy.engine (the administrator's {where})"
    assert launch.resolution.explain().startswith(
        f"engine: proot (requested: proot, by SandboxPolicy.engine (the administrator's {where}))")
    monkeypatch.setenv(engines.ENV_VAR, "proot")
    assert prepare(_Plan(), None, policy=p).resolution.asked_by == "$NBSANDBOX_ENGINE"
    assert prepare(_Plan(), "proot", policy=p, source="this cell").resolution.asked_by == \
        "this cell"


class _Elf:
    machine = "x86_64"


class _Program:
    elf = _Elf()
    path = "/gnu/store/x/bin/prog"
    chain = ()


class _Root:
    @staticmethod
    def in_store(path: str) -> bool:
        return False  # nothing to say about host libraries


class _Plan:
    root = _Root()
    program = "/gnu/store/x/bin/prog"


# -- the examples of docs/admin-guide.md --------------------------------------------------------


def doc_blocks(name: str) -> dict[str, str]:
    from jupyter_fixtures import doc_blocks as blocks  # imported late: a pytest plugin too

    return blocks(name)


def _admin_example(tmp_path, block: str, suffix: str) -> None:
    (tmp_path / "etc").mkdir(exist_ok=True)
    (tmp_path / "etc" / f"{ADMIN_BASENAME}{suffix}").write_text(block)


def test_admin_guide_json_example(tmp_path):
    _admin_example(tmp_path, doc_blocks("admin-guide.md")["example:admin-json"], ".json")
    p = SandboxPolicy().effective_policy()
    assert p.allowed_engines == ("userns", "fakechroot") and p.engine == "performance"
    assert p.isolate_home and not p.allow_other_roots and p.default_root == "py311"
    assert p.filter_env({"LANG": "C", "HTTPS_PROXY": "p", "AWS_SECRET": "s"}) == {
        "LANG": "C", "HTTPS_PROXY": "p"}
    with pytest.raises(PolicyError, match=r"terminate_timeout = 60\.0, but the maximum is 5\.0"):
        SandboxPolicy().effective_policy({"terminate_timeout": 60.0})


def test_admin_guide_python_and_locking_examples(tmp_path, monkeypatch):
    blocks = doc_blocks("admin-guide.md")
    _admin_example(tmp_path, blocks["example:admin-py"], ".py")
    p = SandboxPolicy().effective_policy()
    assert p.hide == ("/etc/ssh", "/srv/secrets") and not p.allow_user_binds
    with pytest.raises(PolicyError, match="engine is locked to 'userns'"):
        p.check_engine("fakechroot", "this cell")
    (tmp_path / "etc" / f"{ADMIN_BASENAME}.py").unlink()

    _admin_example(tmp_path, blocks["example:admin-locked"], ".json")
    p = SandboxPolicy().effective_policy()
    with pytest.raises(PolicyError) as info:
        p.check_engine("proot", "this cell")
    assert str(info.value).startswith("this cell asks for engine 'proot', but engine is locked "
                                      "to 'userns' (SandboxPolicy.locked in the administrator's")
    assert p.requested(None) == ("userns", f"SandboxPolicy.engine (the administrator's "
                                           f"{tmp_path}/etc/{ADMIN_BASENAME}.json)")
    monkeypatch.setenv(engines.ENV_VAR, "proot")
    with pytest.raises(PolicyError, match=r"\$NBSANDBOX_ENGINE asks for engine 'proot', but"):
        p.requested(None)
    with pytest.raises(PolicyError, match="engine = 'proot', but engine is locked"):
        SandboxPolicy().effective_policy({"engine": "proot"})


def test_admin_guide_server_config_example():
    from nbsandbox.provisioner import SandboxProvisioner

    config = Config()
    exec(doc_blocks("admin-guide.md")["example:server-config"], {"c": config})
    p = SandboxProvisioner(config=config).effective_policy()
    assert p.isolate_home and p.env == {"OMP_NUM_THREADS": "4"}


def test_configuration_reference_is_generated_from_the_traits():
    """docs/configuration.md is what tools/gen_config_docs.py makes of the help texts."""
    import subprocess
    import sys
    from pathlib import Path

    tool = Path(__file__).resolve().parents[1] / "tools" / "gen_config_docs.py"
    proc = subprocess.run([sys.executable, str(tool), "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    for name in POLICY_TRAITS:
        assert f"### `SandboxPolicy.{name}`" in (tool.parents[1] / "docs" / "configuration.md"
                                                 ).read_text()
