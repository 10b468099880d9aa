"""The command line, ``python -m core``: :mod:`core.cli.main` (the registry, the experiment options, ``run``,
``bundle``, ``router`` and the entry point), :mod:`core.cli.jobs` (the job queue's commands),
:mod:`core.cli.reports` (the related reports' ``architectures``, ``sweep``, ``reports``, ``report``) and
:mod:`core.cli.summary` (the documentation's results tables).

Importing the package imports every module that registers sub-commands, so the parser is complete whichever
module a caller imports first; each one registers itself with :func:`core.cli.main.command`.
"""

from . import jobs, reports, summary  # noqa: F401 - registers their sub-commands
