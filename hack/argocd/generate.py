"""Embed manifests/argocd/health.lua into ready-made argocd-cm patches.

The patch is what users apply, the script is what the tests run under Lua; generating one
from the other means they cannot drift apart. Writes the copy in manifests/argocd/ and the
one shipped with the chart (charts/mljob-operator/argocd/); `--check` writes nothing and
fails when either is stale (tests/unit/test_argocd_health.py runs it).

    python3 hack/argocd/generate.py          # regenerate
    python3 hack/argocd/generate.py --check  # exit 1 if a copy is stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
SCRIPT = Path("manifests/argocd/health.lua")
OUTPUTS = (
    Path("manifests/argocd/argocd-cm-patch.yaml"),
    Path("charts/mljob-operator/argocd/argocd-cm-patch.yaml"),
)
KEY = "resource.customizations.health.ml.mljob.dev_MLJob"
INDENT = "    "

HEADER = f"""\
# Generated from {SCRIPT} by `python3 hack/argocd/generate.py`: do not edit.
# Adds the MLJob health check to Argo CD (see manifests/argocd/README.md). Either
#   kubectl -n argocd patch configmap argocd-cm --patch-file argocd-cm-patch.yaml
# or list this file under `patches:` in the kustomization that installs Argo CD.
apiVersion: v1
kind: ConfigMap
metadata:
  name: argocd-cm
data:
  {KEY}: |
"""


def render(script: str) -> str:
    """The patch with `script` as a literal block; checked to load back unchanged."""
    if not script.endswith("\n") or script.endswith("\n\n") or script[:1].isspace():
        raise ValueError(f"{SCRIPT} must start with a non-blank and end with one newline")
    body = "".join(INDENT + line if line.strip() else "\n" for line in script.splitlines(True))
    text = HEADER + body
    if yaml.safe_load(text)["data"][KEY] != script:
        raise ValueError(f"{SCRIPT} does not survive a YAML literal block round trip")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a copy is stale")
    parser.add_argument("--root", type=Path, default=REPO, help="repository root")
    args = parser.parse_args(argv)
    expected = render((args.root / SCRIPT).read_text(encoding="utf-8"))
    stale = []
    for out in OUTPUTS:
        path = args.root / out
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == expected:
            continue
        stale.append(out)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(expected, encoding="utf-8")
            print(f"wrote {out}")
    if args.check and stale:
        for out in stale:
            print(f"{out} (generated) is stale")
        print("run: python3 hack/argocd/generate.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
