"""Live teaching: read frames from cameras, video files, streams or image folders, classify, teach.

:mod:`lastlayer.teach.sources` opens frame sources (:func:`~lastlayer.teach.sources.open_source`);
:mod:`lastlayer.teach.render` renders synthetic scenes of parts for tests and demos. Import the
submodules directly: this package imports nothing heavy on its own.
"""
