"""What a run measured, in numbers and pictures: metrics, intervals of counts, plots.

``metrics`` (confusion matrices, top-k accuracy, per-class reports, rejection curves), ``intervals``
(95 % Clopper-Pearson intervals of counts) and ``plot`` (confusion and threshold-curve PNGs, with
Pillow). Import the submodules directly: this package imports nothing on its own.
"""
