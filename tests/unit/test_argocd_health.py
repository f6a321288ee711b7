"""The Argo CD health check (manifests/argocd/health.lua) under a real Lua interpreter.

Argo CD only runs the script inside its own controller, so without this test a typo in the
Lua, or a fixture whose expected health nobody checked, would surface in a user's cluster.
Each case of health_test.yaml (Argo CD's own fixture format) is run through `lua5.4`: the
fixture YAML becomes JSON in Python, then a Lua table literal bound to the global `obj`,
and the script is run the way Argo CD runs it (a chunk returning `{status, message}`).
A missing interpreter fails the test instead of skipping it: `make system-deps` installs it.

Also checked: every fixture is a valid MLJob for the operator's own API model and is listed
once; the script stays within what Argo CD's gopher-lua offers (Lua 5.1, base and table
libraries only); and the argocd-cm patches (manifests/argocd/ and the chart's copy) are
generated from the script, not stale.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from mljob_operator.api import MLJob

REPO = Path(__file__).resolve().parents[2]
ARGOCD = REPO / "manifests" / "argocd"
SCRIPT = ARGOCD / "health.lua"
GENERATOR = REPO / "hack" / "argocd" / "generate.py"
PATCHES = (
    ARGOCD / "argocd-cm-patch.yaml",
    REPO / "charts" / "mljob-operator" / "argocd" / "argocd-cm-patch.yaml",
)
KEY = "resource.customizations.health.ml.mljob.dev_MLJob"
LUA = "lua5.4"
INSTALL_HINT = (
    f"{LUA} is not on PATH: the Argo CD health check must run under a real Lua interpreter. "
    "Install it with `make system-deps` (or: apt-get update && apt-get install -y lua5.4)."
)
STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}


def _cases() -> list[dict[str, Any]]:
    tests: list[dict[str, Any]] = yaml.safe_load((ARGOCD / "health_test.yaml").read_text())["tests"]
    return tests


CASES = _cases()


def _plain(value: Any) -> Any:
    """YAML → JSON types, as the apiserver sends them (timestamps as RFC 3339 strings)."""
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"not JSON: {value!r}")


def _lua_string(text: str) -> str:
    """A Lua string literal: printable ASCII as is, every other byte as a decimal escape."""
    out = []
    for byte in text.encode("utf-8"):
        char = chr(byte)
        out.append(char if 32 <= byte < 127 and char not in '"\\' else f"\\{byte:03d}")
    return '"' + "".join(out) + '"'


def lua_literal(value: Any) -> str:
    """A Lua table constructor for a JSON value (null → nil, so absent as in Argo CD)."""
    if value is None or isinstance(value, bool):
        return {None: "nil", True: "true", False: "false"}[value]
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"not JSON: {value!r}")
        return repr(value)
    if isinstance(value, str):
        return _lua_string(value)
    if isinstance(value, list):
        return "{" + ", ".join(lua_literal(v) for v in value) + "}"
    if isinstance(value, dict):
        fields = (f"[{_lua_string(k)}] = {lua_literal(v)}" for k, v in value.items())
        return "{" + ", ".join(fields) + "}"
    raise TypeError(f"not JSON: {value!r}")


# For argocd-cm scripts Argo CD's gopher-lua opens only the base and table libraries (and
# a safe os): take the rest away so a script that needs them fails here too. The result is
# written as status, NUL, message.
HARNESS = """\
local run, write = dofile, io.write
io, os, debug, package, require, dofile, loadfile = nil, nil, nil, nil, nil, nil, nil
string, math, utf8, coroutine = nil, nil, nil, nil
obj = {obj}
local hs = run({script})
if type(hs) ~= "table" then error("health.lua returned " .. type(hs) .. ", not a table") end
if type(hs.status) ~= "string" then error("hs.status is " .. type(hs.status)) end
if hs.message ~= nil and type(hs.message) ~= "string" then error("hs.message not a string") end
write(hs.status, "\\0", hs.message or "")
"""


@pytest.fixture(scope="module")
def lua() -> str:
    path = shutil.which(LUA)
    if path is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    return path


def run_health(lua: str, obj: Any, tmp_path: Path) -> tuple[str, str]:
    """Argo CD's (status, message) for `obj`, computed by health.lua under `lua`."""
    plain = json.loads(json.dumps(obj, default=_plain))
    harness = tmp_path / "harness.lua"
    harness.write_text(
        HARNESS.format(obj=lua_literal(plain), script=_lua_string(str(SCRIPT))), encoding="utf-8"
    )
    result = subprocess.run(
        [lua, str(harness)], capture_output=True, timeout=30, check=False, cwd=tmp_path
    )
    stderr = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 0, f"{LUA} failed on health.lua:\n{stderr}"
    status, _, message = result.stdout.decode("utf-8").partition("\0")
    return status, message


def load(case: dict[str, Any]) -> Any:
    return yaml.safe_load((ARGOCD / case["inputPath"]).read_text(encoding="utf-8"))


def fixture(name: str) -> Any:
    return load({"inputPath": f"testdata/{name}.yaml"})


@pytest.mark.parametrize("case", CASES, ids=[Path(c["inputPath"]).stem for c in CASES])
def test_fixture_health(lua: str, case: dict[str, Any], tmp_path: Path) -> None:
    expected = case["healthStatus"]
    status, message = run_health(lua, load(case), tmp_path)
    assert (status, message) == (expected["status"], expected.get("message", ""))


def test_unknown_state_is_unknown(lua: str, tmp_path: Path) -> None:
    obj = fixture("no-status") | {"status": {"state": "paused", "observedGeneration": 1}}
    assert run_health(lua, obj, tmp_path) == ("Unknown", "Unknown status.state paused.")


def test_empty_status_waits_for_the_operator(lua: str, tmp_path: Path) -> None:
    obj = fixture("no-status") | {"status": {}}
    status, message = run_health(lua, obj, tmp_path)
    assert (status, message) == (
        "Progressing",
        "Waiting for the operator to report the job's state.",
    )


def test_lua_literal_keeps_every_character(lua: str, tmp_path: Path) -> None:
    """The harness's YAML → Lua conversion is exact (quotes, newlines, non-ASCII)."""
    text = 'a "quoted" \\ back\nslash \0 nul — ü ✓'
    probe = tmp_path / "probe.lua"
    value = lua_literal({"k": [text, 3, 2.5, True]})
    probe.write_text(f"local t = {value}\nio.write(t.k[1], math.type(t.k[2]), t.k[3], #t.k)")
    result = subprocess.run([lua, str(probe)], capture_output=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr.decode("utf-8", "replace")
    assert result.stdout.decode("utf-8") == f"{text}integer2.54"


def test_fixtures_are_valid_mljobs_each_listed_once() -> None:
    listed = [case["inputPath"] for case in CASES]
    on_disk = sorted(f"testdata/{p.name}" for p in (ARGOCD / "testdata").glob("*.yaml"))
    assert sorted(listed) == on_disk, "every fixture is listed exactly once in health_test.yaml"
    for case in CASES:
        MLJob.model_validate(load(case))  # the operator's own API model accepts it
        assert case["healthStatus"]["status"] in STATUSES
    covered = {case["healthStatus"]["status"] for case in CASES}
    assert {"Healthy", "Progressing", "Degraded", "Suspended"} <= covered


def test_timed_out_close_is_progressing_and_names_force_close() -> None:
    case = next(c for c in CASES if c["inputPath"] == "testdata/closing-timed-out.yaml")
    closing = next(
        c for c in fixture("closing-timed-out")["status"]["conditions"] if c["type"] == "Closing"
    )
    assert closing["reason"] == "TimedOut"
    assert case["healthStatus"]["status"] == "Progressing"
    assert "ml.mljob.dev/force-close" in case["healthStatus"]["message"]


# Lua 5.2+ only (gopher-lua, Argo CD's interpreter, is Lua 5.1): goto, integer division,
# bitwise operators, attribs, table functions 5.1 lacks; and libraries Argo CD leaves out.
NEWER_LUA = re.compile(
    r"\bgoto\b|//|<const>|<close>|<<|>>|[&|]|~(?!=)|\btable\.(move|unpack|pack)\b"
    r"|\b(string|math|utf8|coroutine|io|debug)\."  # libraries Argo CD does not open
)


def test_script_stays_within_lua_5_1() -> None:
    code = [
        re.sub(r'"(?:[^"\\]|\\.)*"', '""', line.split("--", 1)[0])
        for line in SCRIPT.read_text(encoding="utf-8").splitlines()
    ]
    offending = [line for line in code if NEWER_LUA.search(line)]
    assert not offending, f"not Lua 5.1 (Argo CD runs gopher-lua): {offending}"


def test_argocd_cm_patches_embed_the_script() -> None:
    script = SCRIPT.read_text(encoding="utf-8")
    for patch in PATCHES:
        doc = yaml.safe_load(patch.read_text(encoding="utf-8"))
        assert (doc["apiVersion"], doc["kind"], doc["metadata"]["name"]) == (
            "v1",
            "ConfigMap",
            "argocd-cm",
        )
        assert doc["data"][KEY] == script, f"{patch.relative_to(REPO)} differs from health.lua"


def generate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(GENERATOR), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_argocd_cm_patches_are_not_stale() -> None:
    result = generate("--check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_generator_check_fails_after_a_script_change(tmp_path: Path) -> None:
    for path in (SCRIPT, *PATCHES):
        copy = tmp_path / path.relative_to(REPO)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, copy)
    script = tmp_path / SCRIPT.relative_to(REPO)
    script.write_text(script.read_text() + "-- changed\n")

    stale = generate("--check", "--root", str(tmp_path))
    assert stale.returncode == 1
    for patch in PATCHES:
        assert f"{patch.relative_to(REPO)} (generated) is stale" in stale.stdout
    assert "hack/argocd/generate.py" in stale.stderr

    assert generate("--root", str(tmp_path)).returncode == 0
    assert generate("--check", "--root", str(tmp_path)).returncode == 0
