"""Kubernetes resource quantities (``25Mi``, ``1Gi``, ``500M``) as bytes, and back."""
from __future__ import annotations

import re
from decimal import Decimal

_SUFFIX = {
    "": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50,
}
_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$")


def parse_bytes(value: str | int) -> int:
    """``"25Mi"`` → 26214400. Raises ValueError for anything else."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a quantity")
    if isinstance(value, int):
        return value
    m = _RE.match(str(value).strip())
    if not m:
        raise ValueError(f"{value!r} is not a quantity such as 512Mi or 2Gi")
    return int(Decimal(m.group(1)) * _SUFFIX[m.group(2) or ""])


def format_bytes(n: int) -> str:
    """26214400 → ``"25Mi"``; 1.5 GiB → ``"1.5Gi"``; for people, in status."""
    for suffix in ("Ti", "Gi", "Mi", "Ki"):
        unit = _SUFFIX[suffix]
        if n >= unit:
            value = n / unit
            text = f"{value:.1f}".rstrip("0").rstrip(".")
            return f"{text}{suffix}"
    return str(n)
