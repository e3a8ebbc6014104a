"""PyCoral's module paths over lastlayer: port a PyCoral script by replacing ``pycoral.`` with ``lastlayer.pycoral.``.

=========================================  ==================================================
``lastlayer.pycoral.adapters.common``      ``pycoral.adapters.common``
``lastlayer.pycoral.adapters.classify``    ``pycoral.adapters.classify``
``lastlayer.pycoral.utils.edgetpu``        ``pycoral.utils.edgetpu``
``lastlayer.pycoral.utils.dataset``        ``pycoral.utils.dataset``
``lastlayer.pycoral.learn.imprinting.engine``            ``pycoral.learn.imprinting.engine``
``lastlayer.pycoral.learn.backprop.softmax_regression``  ``pycoral.learn.backprop.softmax_regression``
=========================================  ==================================================

The names, signatures, exception types and messages are PyCoral's. Where PyCoral crashed, misbehaved
or needed an Edge TPU for no reason, these modules behave better in ways ported code cannot notice
(each module's docstring lists them). New code should use the modern API (``lastlayer.ImprintingHead``,
``lastlayer.SoftmaxRegression``, ``lastlayer.write_head``).
"""
