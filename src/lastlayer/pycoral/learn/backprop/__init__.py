"""PyCoral's ``pycoral.learn.backprop``."""
