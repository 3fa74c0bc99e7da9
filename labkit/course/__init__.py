"""Course tooling: execute every notebook into ``results/`` (``report``, ``labkit report`` / ``make
results``), write its ``README.md`` (``summary``), and check students' executed notebooks (``grade``)."""
