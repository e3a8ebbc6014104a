"""PyCoral's ``pycoral.learn``: on-device imprinting and last-layer backpropagation."""
