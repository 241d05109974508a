"""Imports every command module so that its commands register on `critwin.cli.app.app`."""

from critwin.cli import demo, diffusion, grade, jailbreak, report, scan, structured, testbed, theory  # noqa: F401
