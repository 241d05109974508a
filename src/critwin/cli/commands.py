"""Imports every command module so that its commands register on `critwin.cli.app.app`."""

from critwin.cli import (  # noqa: F401
    compare,
    demo,
    diffusion,
    grade,
    jailbreak,
    methods,
    report,
    scan,
    structured,
    testbed,
    theory,
)
