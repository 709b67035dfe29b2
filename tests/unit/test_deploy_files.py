"""Deployable as written, read from the files: requirements.txt against pyproject.toml and
the installed packages, app.json, .env.example and the README's settings table."""

from __future__ import annotations

import json
import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from bot.settings import Settings, load_settings
from testkit.env import ROOT

REQUIREMENTS = ROOT / "requirements.txt"
EXPORT_COMMAND = ("uv export --no-hashes --no-dev --no-emit-project --format requirements-txt "
                  "-o requirements.txt")
ALIASES = sorted(str(field.alias) for field in Settings.model_fields.values())


def pins() -> dict[str, list[Requirement]]:
    """requirements.txt's requirements by canonical name (one name may pin per marker)."""
    found: dict[str, list[Requirement]] = {}
    for raw in REQUIREMENTS.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            found.setdefault(canonicalize_name(requirement.name), []).append(requirement)
    return found



def pin_here(name: str) -> str | None:
    """The version requirements.txt pins `name` to on this Python, if it applies here."""
    for requirement in pins().get(canonicalize_name(name), []):
        if requirement.marker is None or requirement.marker.evaluate():
            (spec,) = requirement.specifier
            return spec.version
    return None



def direct_dependencies() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(d) for d in project["dependencies"]]



def test_requirements_pin_every_direct_dependency_as_pyproject_does() -> None:
    for requirement in direct_dependencies():
        (spec,) = requirement.specifier
        assert spec.operator == "==", f"pyproject.toml must pin {requirement} exactly"
        assert pin_here(requirement.name) == spec.version, (
            f"requirements.txt is out of date for {requirement.name} (pyproject.toml has "
            f"{spec.version}); regenerate it: {EXPORT_COMMAND}")



def test_requirements_pin_everything_exactly_and_name_no_index() -> None:
    text = REQUIREMENTS.read_text()
    assert EXPORT_COMMAND in text  # made by the command the README gives
    assert EXPORT_COMMAND in (ROOT / "README.md").read_text()
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        assert not line.startswith("-"), f"an option in requirements.txt: {line}"
        assert "://" not in line and "@" not in line, f"an address in requirements.txt: {line}"
        (spec,) = Requirement(line).specifier
        assert spec.operator == "==", line
    assert "--hash" not in text and "index-url" not in text



def test_requirements_hold_every_package_the_direct_ones_need_at_versions_they_accept() -> None:
    """Walks the dependency tree of the installed packages: every package reached must be
    pinned, and at a version its dependents accept. No network: CI runs it on every push."""
    environment = default_environment()
    todo = list(direct_dependencies())
    seen: set[str] = set()
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        version = pin_here(name)
        assert version is not None, (f"{name} is needed but not in requirements.txt; "
                                     f"regenerate it: {EXPORT_COMMAND}")
        assert requirement.specifier.contains(version, prereleases=True), (
            f"requirements.txt pins {name}=={version}, but something needs {requirement}")
        if name in seen:
            continue
        seen.add(name)
        if metadata.version(name) != version:
            # uv resolved another version here (uv.lock is not kept): its dependencies say
            # nothing about the pinned one's, and this test must not need the network.
            continue
        for text in metadata.requires(name) or []:
            needed = Requirement(text)
            if needed.marker is None or needed.marker.evaluate({**environment, "extra": ""}):
                todo.append(needed)
    assert len(seen) > len(direct_dependencies())  # the transitive ones were walked too



def test_python_version_file_names_3_11() -> None:
    assert (ROOT / ".python-version").read_text().strip() == "3.11"



def test_app_json_names_the_processes_the_redis_addon_and_every_required_setting() -> None:
    app = json.loads((ROOT / "app.json").read_text())
    assert set(app["formation"]) == {"web", "worker"}
    procfile = dict(line.split(": ", 1) for line in (ROOT / "Procfile").read_text().splitlines())
    assert set(procfile) == {"web", "worker"}
    plans = [addon["plan"] if isinstance(addon, dict) else addon for addon in app["addons"]]
    assert any(plan.startswith("heroku-redis") for plan in plans)
    env = app["env"]
    required = {str(f.alias) for f in Settings.model_fields.values() if f.is_required()}
    required.add("SLACK_SIGNING_SECRET")  # Heroku serves HTTP mode, which needs it
    assert {name for name, spec in env.items() if spec.get("required")} == required
    # Every setting described; REDIS_URL is the add-on's to set, PORT the platform's, and
    # WEB_HOST stays every interface there (loopback is for `python -m bot try`).
    assert set(env) == set(ALIASES) - {"REDIS_URL", "PORT", "WEB_HOST"}
    for name, spec in env.items():
        assert spec["description"].strip(), name
    # Heroku Redis signs its own certificate.
    assert env["REDIS_TLS_VERIFY"]["value"] == "false"



def test_every_setting_is_in_env_example_and_the_readme_table() -> None:
    example = (ROOT / ".env.example").read_text()
    in_example = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", example, re.MULTILINE))
    readme = (ROOT / "README.md").read_text()
    table = readme.split("### Settings", 1)[1].split("\n## ", 1)[0]
    in_table = {name for line in table.splitlines() if line.startswith("| `")
                for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", line.split("|")[1])}
    assert [a for a in ALIASES if a not in in_example] == [], ".env.example lacks these"
    assert [a for a in ALIASES if a not in in_table] == [], "the README's table lacks these"
    assert in_example <= set(ALIASES), "stale names in .env.example"



def test_env_example_as_a_dotenv_file_gives_the_defaults(tmp_path: Path) -> None:
    """Filled in, .env.example is a working .env: each commented default is the real one."""
    filled = (ROOT / ".env.example").read_text()
    for name, value in [("SLACK_BOT_TOKEN", "xoxb-1"), ("EXOTEL_API_KEY", "k"),
                        ("EXOTEL_API_TOKEN", "t"), ("EXOTEL_ACCOUNT_SID", "acme1")]:
        filled = re.sub(rf"^{name}=.*$", f"{name}={value}", filled, flags=re.MULTILINE)
    commented = dict(re.findall(r"^# ([A-Z][A-Z0-9_]+)=(.*)$", filled, re.MULTILINE))
    defaults = {"SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET", "REDIS_URL"}  # examples, no defaults
    uncommented = "\n".join(f"{k}={v}" for k, v in commented.items() if k not in defaults)
    env_file = tmp_path / ".env"
    env_file.write_text(filled + "\n" + uncommented + "\nSLACK_SIGNING_SECRET=s\n")
    from_file = load_settings(_env_file=str(env_file))
    plain = load_settings(_env_file=None, SLACK_BOT_TOKEN="xoxb-1", EXOTEL_API_KEY="k",
                          EXOTEL_API_TOKEN="t", EXOTEL_ACCOUNT_SID="acme1",
                          SLACK_SIGNING_SECRET="s")
    assert from_file == plain



def test_blank_variables_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    # Heroku's deploy form sets the optional settings left blank to "".
    for name, value in [("SLACK_BOT_TOKEN", "xoxb-1"), ("SLACK_SIGNING_SECRET", "s"),
                        ("EXOTEL_API_KEY", "k"), ("EXOTEL_API_TOKEN", "t"),
                        ("EXOTEL_ACCOUNT_SID", "acme1"), ("SLACK_APP_TOKEN", ""),
                        ("EXOTEL_BASE_URL", ""), ("REDIS_URL", ""), ("ALLOWED_USER_IDS", "")]:
        monkeypatch.setenv(name, value)
    settings = load_settings(_env_file=None)
    assert not settings.socket_mode  # an empty app token would otherwise mean Socket Mode
    assert settings.redis_url is None and settings.exotel_base_url is None
    assert settings.allowed_user_ids == []


def step_inputs(manifest: str) -> dict[str, dict[str, str]]:
    """The workflow step's input_parameters in manifest.yml, each with its scalar fields:
    just enough YAML (mappings by indentation) for this one block, as doctor reads scopes."""
    found: dict[str, dict[str, str]] = {}
    lines = iter(manifest.splitlines())
    for line in lines:
        if line.strip() == "input_parameters:":
            depth = len(line) - len(line.lstrip())
            break
    name = ""
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        indent = len(line) - len(line.lstrip())
        if indent <= depth:
            break
        key, _, value = line.strip().partition(":")
        if indent == depth + 2:
            name = key
            found[name] = {}
        else:
            found[name][key] = value.strip()
    return found


def test_the_manifest_declares_every_input_the_workflow_step_reads() -> None:
    declared = step_inputs((ROOT / "manifest.yml").read_text())
    read = set(re.findall(r'inputs\.get\("(\w+)"\)', (ROOT / "handlers/workflow.py").read_text()))
    assert set(declared) == read
    assert declared["customer_ref"] == {
        "type": "string", "title": "CRM reference", "is_required": "false",
        "description": "The customer's record id in your CRM, or their email, up to 200 "
                       "characters"}
    assert declared["user_id"]["is_required"] == "true"


def test_doctor_checks_the_scope_the_report_uploads_with() -> None:
    """`/onboard-link report` uploads its CSV (files.getUploadURLExternal and
    files.completeUploadExternal need files:write): the manifest asks for it, and doctor,
    which checks the token against the manifest's scopes, with it."""
    from bot.cli.doctor import check_scopes, manifest_bot_scopes

    wanted = manifest_bot_scopes(ROOT / "manifest.yml")
    assert wanted is not None and "files:write" in wanted
    without = ",".join(scope for scope in wanted if scope != "files:write")
    check = check_scopes(without, wanted)
    assert not check.ok and "files:write" in check.line()
    assert check_scopes(",".join(wanted), wanted).ok
