"""The end-to-end jobs behind the CLI: folder of photos in, model + labels + report out.

One module per job over the shared skeleton in :mod:`lastlayer.jobs.base`; each returns a result
with ``to_dict`` / ``to_text``. A job's progress lines go to its ``log`` argument (one line on
stderr when none is given: :func:`lastlayer.jobs.base.stderr_log`; pass ``log=lambda line: None``
for silence); unreadable or skipped images are Python warnings. Two modules are parts of jobs rather
than jobs: ``keep`` (the keep-classes part of ``imprint``) and ``unknown`` (a model file's unknown
rule, applied by ``classify`` and ``evaluate``).
"""
