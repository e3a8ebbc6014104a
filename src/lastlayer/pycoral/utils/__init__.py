"""PyCoral's ``pycoral.utils``: interpreters, the Edge TPU delegate and label files."""
