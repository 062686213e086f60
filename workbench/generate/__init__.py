"""Generation for the compare view, the ``compare`` command and reports.

:mod:`workbench.generate.worker` is the long-lived subprocess that holds the
models (torch lives only there); :mod:`workbench.generate.client` starts it
and talks to it over JSON lines. Importing this package (or the client)
never imports torch.
"""
