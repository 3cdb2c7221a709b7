"""Package layout: every package under aigw_proxy/, plus the top-level addons/ folder installed as
`aigw_proxy.addons`. The addon stack keeps its own folder (it also loads into a plain mitmproxy), but a top-level
`addons` package in site-packages could collide with anything. The web console's templates and static files are
data-only packages (no __init__.py), listed by name so setuptools ships them as packages, not as stray data of
their parent. Everything else is in pyproject.toml."""

from setuptools import find_packages, setup

setup(
    packages=[
        *find_packages(include=["aigw_proxy", "aigw_proxy.*"]),
        "aigw_proxy.admin.console.static",
        "aigw_proxy.admin.console.templates",
        "aigw_proxy.addons",
    ],
    package_dir={"aigw_proxy.addons": "addons"},
)
