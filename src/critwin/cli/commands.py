"""Imports every command module so that its commands register on `critwin.cli.app.app`."""

from critwin.cli import (  # noqa: F401
    critical,
    demo,
    diffusion,
    grade,
    jailbreak,
    report,
    scan,
    structured,
    testbed,
    theory,
)
