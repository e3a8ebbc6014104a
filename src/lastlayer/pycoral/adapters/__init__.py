"""PyCoral's ``pycoral.adapters``: small functions over a LiteRT interpreter."""
