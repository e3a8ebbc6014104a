"""The end-to-end jobs behind the CLI (and the web app): folder of photos in, model + labels + report out.

One module per job over the shared skeleton in :mod:`lastlayer.jobs.base`; each returns a result
with ``to_dict`` / ``to_text`` and prints nothing itself.
"""
