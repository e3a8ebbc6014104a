"""Learners for the last layer: NumPy math only, no file formats.

Start with :mod:`lastlayer.learn.base`: the learner contract (scikit-learn's estimator
conventions, :class:`~lastlayer.learn.base.Learner`, the fit report and the parameter mixin).
:mod:`~lastlayer.learn.linear` is the dense + softmax head the backprop learners share
(:mod:`~lastlayer.learn.softmax`: mini-batch SGD; :mod:`~lastlayer.learn.tuned`: L-BFGS with the
L2 strength chosen by cross-validation), :mod:`~lastlayer.learn.registry` names them for
``lastlayer train --solver``, and :mod:`~lastlayer.learn.imprinting` is weight imprinting. Each
exports a :class:`~lastlayer.layer.DenseLayer`; :mod:`lastlayer.model.export` writes it into a model.
"""
