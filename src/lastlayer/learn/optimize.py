"""Full-batch L-BFGS in NumPy, for the smooth convex objectives of the heads (no SciPy needed on the device).

The two-loop recursion (Nocedal & Wright, Algorithm 7.4) with a backtracking Armijo line search
that tries the unit step first. For L2-regularised softmax regression (strongly convex) every
accepted step has positive curvature, so no Wolfe search is needed; pairs without it are skipped.
It stops as scikit-learn's lbfgs solver does: when the largest gradient entry is below ``tol``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

Objective = Callable[[np.ndarray], "tuple[float, np.ndarray]"]


@dataclass
class LbfgsResult:
    """Where :func:`lbfgs` stopped: ``x``, its value ``fun``, ``n_iter`` steps, ``converged`` (gradient below ``tol``)."""

    x: np.ndarray
    fun: float
    n_iter: int
    converged: bool


def lbfgs(fun: Objective, x0: np.ndarray, *, max_iter: int = 500, tol: float = 1e-4, memory: int = 10,
          ftol: float = 64 * np.finfo(float).eps) -> LbfgsResult:
    """Minimise ``fun`` (returning value and gradient) from ``x0`` with L-BFGS.

    Args:
        fun: ``x -> (f(x), grad f(x))``, float64.
        x0: the start (copied).
        max_iter: most steps.
        tol: stop when ``max |grad| <= tol``.
        memory: number of curvature pairs kept.
        ftol: also stop when a step lowers ``f`` by less than ``ftol * max(|f|, 1)`` (no progress left).
    """
    x = np.array(x0, dtype=np.float64)
    f, g = fun(x)
    pairs: list[tuple[np.ndarray, np.ndarray, float]] = []
    for step in range(int(max_iter)):
        if float(np.max(np.abs(g))) <= tol:
            return LbfgsResult(x, f, step, True)
        direction = -_two_loop(g, pairs)
        slope = float(g @ direction)
        if slope >= 0:  # not a descent direction (rounding): restart from steepest descent
            pairs.clear()
            direction, slope = -g / max(float(np.linalg.norm(g)), 1.0), -float(g @ g) / max(float(np.linalg.norm(g)), 1.0)
        t = 1.0
        while True:
            x_new = x + t * direction
            f_new, g_new = fun(x_new)
            if f_new <= f + 1e-4 * t * slope:
                break
            # Minimum of the quadratic through f, slope and f_new, kept within [0.1 t, 0.5 t].
            t_quad = -slope * t * t / (2.0 * (f_new - f - slope * t))
            t = float(np.clip(t_quad, 0.1 * t, 0.5 * t)) if np.isfinite(t_quad) else 0.5 * t
            if t < 1e-12:
                return LbfgsResult(x, f, step, False)
        s, y = x_new - x, g_new - g
        curvature = float(s @ y)
        if curvature > 1e-10 * float(y @ y):
            pairs.append((s, y, 1.0 / curvature))
            if len(pairs) > memory:
                pairs.pop(0)
        decrease = f - f_new
        x, f, g = x_new, f_new, g_new
        if decrease <= ftol * max(abs(f), 1.0):
            return LbfgsResult(x, f, step + 1, float(np.max(np.abs(g))) <= tol)
    return LbfgsResult(x, f, int(max_iter), float(np.max(np.abs(g))) <= tol)


def _two_loop(g: np.ndarray, pairs: list[tuple[np.ndarray, np.ndarray, float]]) -> np.ndarray:
    """The L-BFGS approximation of ``H^-1 g`` from the stored pairs (scaled steepest descent without any)."""
    if not pairs:
        return g / max(float(np.linalg.norm(g)), 1.0)
    q = g.copy()
    alphas = []
    for s, y, rho in reversed(pairs):
        alpha = rho * float(s @ q)
        alphas.append(alpha)
        q -= alpha * y
    s, y, _ = pairs[-1]
    q *= float(s @ y) / float(y @ y)
    for (s, y, rho), alpha in zip(pairs, reversed(alphas)):
        q += (alpha - rho * float(y @ q)) * s
    return q
