"""Embeddings of a dataset, computed once: the cache database, content digests, and extraction through the cache.

``database`` (:class:`~lastlayer.embeddings.database.CacheDatabase`: the one owner of the cache's
SQLite file, its schema, pragmas and repair), ``digests`` (content hashes with the stat shortcut)
and ``cache`` (a dataset's embeddings: from the cache first, the rest through
:mod:`lastlayer.runtime.batch`). Import the submodules directly: this package imports nothing on
its own.
"""
