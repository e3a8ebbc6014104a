"""PyCoral's ``pycoral.learn.imprinting``."""
