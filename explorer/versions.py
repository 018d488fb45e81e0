"""The versions of the libraries a record was made with, read from the installed packages'
metadata (no import of torch, diffusers or transformers)."""

from __future__ import annotations

from functools import cache
from importlib.metadata import PackageNotFoundError, version

PACKAGES = ("sd-explorer", "torch", "diffusers", "transformers")


def package_versions() -> dict[str, str]:
    return dict(_installed())


@cache  # read once a process: 10 ms of metadata parsing a call
def _installed() -> dict[str, str]:
    found = {}
    for package in PACKAGES:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "none"
    return found
