"""Course tooling: execute every notebook into ``results/`` (``report``, ``labkit report`` / ``make
results``), write its ``README.md`` (``summary``), check students' executed notebooks (``grade``), write the
student release (``release``) and grade a class (``autograde``, running student code in a ``sandbox``)."""
