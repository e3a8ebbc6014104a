"""The ``.tflite`` file as a plain object tree: where models come from, load and save, a readable view, editing helpers.

Nothing in this package knows about learning; heads are written through :mod:`lastlayer.model.edit`.
``zoo`` (known models, the search path, pinned downloads), ``io`` and ``validate/`` (read and check
before native code sees a model: :func:`~lastlayer.model.io.load_model`, ``save_model``,
``model_to_bytes``), ``file`` (:class:`~lastlayer.model.file.ModelFile`: a model opened once) and
``analysis`` (what it is, found once), ``view`` (:func:`~lastlayer.model.view.inspect_model`),
``edgetpu`` and ``edgetpu_versions`` (the Edge TPU's requirements), and the surgery, head and
metadata modules. Import the submodules directly: this package imports nothing on its own, so light
ones (``zoo``, ``edgetpu_versions``) load without LiteRT.
"""
