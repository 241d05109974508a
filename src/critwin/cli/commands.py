"""Imports every command module so that its commands register on `critwin.cli.app.app`."""
from critwin.cli import theory  # noqa: F401
from critwin.cli import demo  # noqa: F401
from critwin.cli import report  # noqa: F401
from critwin.cli import structured  # noqa: F401
from critwin.cli import jailbreak  # noqa: F401
