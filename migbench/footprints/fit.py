"""Predict the footprint of runs never measured from the measured runs of their group.

The analytic model (docs/memory-estimation.md) says a training run's peak is a constant (weights,
optimizer states, context) plus activations that grow with batch size × sequence length (× layers,
hidden size, ...). So the fit is a linear model in the group's numeric parameters and their pairwise
products, chosen by forward selection: start from a constant, add the term that cuts the error most,
stop when the largest relative error on the measured points is within `max_error` (default 10 %) or
when another term would leave fewer than one spare point. Least squares are weighted by 1/peak², so
the relative errors are what is minimised.

A fit is *usable* (`ok`) when it has at least one more point than terms and its worst relative
error on the measured points is within `max_error`; otherwise runs of the group that were not
measured keep their declared memory, and the fit says why.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

MAX_ERROR = 0.10
MAX_PAIR_PARAMS = 6  # above this many candidate parameters, products of pairs are not tried

Term = tuple[str, ...]  # a product of parameters; () is the constant


@dataclass(frozen=True)
class Fit:
    """A group's fitted footprint: peak ≈ Σ coef·term (MiB)."""

    group: str
    terms: tuple[Term, ...]
    coef: tuple[float, ...]
    points: int
    max_error: float
    mean_error: float
    ok: bool
    reason: str = ""
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)

    def predict(self, params: Mapping[str, Any]) -> float | None:
        """The fitted peak for these parameters (MiB), or None when one of the terms' parameters is
        missing or not a number."""
        total = 0.0
        for t, c in zip(self.terms, self.coef):
            v = _term_value(t, params)
            if v is None:
                return None
            total += c * v
        return total

    def extrapolates(self, params: Mapping[str, Any]) -> bool:
        """Whether a parameter the fit uses lies outside the measured range."""
        for name, (lo, hi) in self.ranges.items():
            v = _num(params.get(name))
            if v is None or v < lo or v > hi:
                return True
        return False

    def formula(self) -> str:
        parts = []
        for t, c in zip(self.terms, self.coef):
            if not t:
                parts.append(f"{c:.0f}")
            else:
                parts.append(f"{c:.4g}·{'·'.join(t)}")
        return " + ".join(parts).replace("+ -", "- ") + " MiB"

    def describe(self) -> str:
        err = f"max error {self.max_error * 100:.1f} %, mean {self.mean_error * 100:.1f} % on {self.points} measured run(s)"
        if self.ok:
            return f"peak ≈ {self.formula()} ({err})"
        return f"no usable fit ({self.reason}; {err if self.points else 'no measured runs'})"


def candidate_params(runs_params: Sequence[Mapping[str, Any]], only: Sequence[str] | None = None) -> list[str]:
    """Parameters that are numbers in every run and take more than one value (restricted to `only`)."""
    if not runs_params:
        return []
    names = sorted(set.intersection(*(set(p) for p in runs_params)))
    out = []
    for n in names:
        if only is not None and n not in only:
            continue
        vals = [_num(p.get(n)) for p in runs_params]
        if all(v is not None for v in vals) and len(set(vals)) > 1:
            out.append(n)
    return out


def fit_group(
    group: str,
    points: Sequence[tuple[Mapping[str, Any], float]],
    candidates: Sequence[str],
    *,
    max_error: float = MAX_ERROR,
) -> Fit:
    """Fit `points` ((parameters, peak MiB) of the measured runs) with terms over `candidates`."""
    n = len(points)
    if n == 0:
        return Fit(group, (), (), 0, math.inf, math.inf, False, "nothing measured")
    pool: list[Term] = [(c,) for c in candidates]
    if len(candidates) <= MAX_PAIR_PARAMS:
        pool += [(a, b) for i, a in enumerate(candidates) for b in candidates[i + 1 :]]
    terms: list[Term] = [()]
    coef = _solve(points, terms)
    errs = _errors(points, terms, coef) if coef is not None else [math.inf]
    while max(errs) > max_error and n >= len(terms) + 2:
        best: tuple[float, float, Term, tuple[float, ...]] | None = None
        for t in pool:
            if t in terms:
                continue
            c = _solve(points, terms + [t])
            if c is None:
                continue
            e = _errors(points, terms + [t], c)
            key = (max(e), sum(x * x for x in e))
            if best is None or key < best[:2]:
                best = (key[0], key[1], t, c)
        if best is None or best[0] >= max(errs) - 1e-12:
            break
        terms.append(best[2])
        coef, errs = best[3], _errors(points, terms, best[3])
    used = sorted({p for t in terms for p in t})
    ranges = {}
    for p in used:
        vals = [v for v in (_num(pt[0].get(p)) for pt in points) if v is not None]
        ranges[p] = (min(vals), max(vals))
    worst = max(errs)
    mean = sum(errs) / len(errs)
    reason = ""
    if coef is None:
        reason = "the measured points are degenerate"
    elif n < len(terms) + 1:
        reason = f"{n} measured run(s) cannot check a fit of {len(terms)} term(s)"
    elif worst > max_error:
        reason = f"its worst error {worst * 100:.1f} % is over {max_error * 100:.0f} %"
    ok = not reason
    return Fit(group, tuple(terms), tuple(coef or ()), n, worst, mean, ok, reason, ranges)


def loo_errors(points: Sequence[tuple[Mapping[str, Any], float]], fit: Fit) -> list[float]:
    """Leave-one-out relative errors of `fit`'s terms: each point predicted from the others."""
    out = []
    terms = list(fit.terms)
    for i in range(len(points)):
        rest = [p for j, p in enumerate(points) if j != i]
        if len(rest) < len(terms):
            continue
        c = _solve(rest, terms)
        if c is None:
            continue
        params, y = points[i]
        pred = sum(cc * (_term_value(t, params) or 0.0) for t, cc in zip(terms, c))
        out.append(abs(pred - y) / y if y else math.inf)
    return out


# ---------------------------------------------------------------------------------------------


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _term_value(t: Term, params: Mapping[str, Any]) -> float | None:
    v = 1.0
    for name in t:
        x = _num(params.get(name))
        if x is None:
            return None
        v *= x
    return v


def _errors(points: Sequence[tuple[Mapping[str, Any], float]], terms: Sequence[Term], coef: Sequence[float]) -> list[float]:
    out = []
    for params, y in points:
        pred = sum(c * (_term_value(t, params) or 0.0) for t, c in zip(terms, coef))
        out.append(abs(pred - y) / y if y > 0 else (0.0 if pred == 0 else math.inf))
    return out


def _solve(points: Sequence[tuple[Mapping[str, Any], float]], terms: Sequence[Term]) -> tuple[float, ...] | None:
    """Weighted least squares (weights 1/y²) by the normal equations on scaled columns; None when
    the columns are (nearly) dependent or a point lacks a term's parameter."""
    k = len(terms)
    rows = []
    for params, y in points:
        r = [_term_value(t, params) for t in terms]
        if any(v is None for v in r) or y <= 0:
            return None
        rows.append(([float(v) for v in r if v is not None], float(y)))
    if len(rows) < k:
        return None
    scale = [max(abs(r[0][j]) for r in rows) or 1.0 for j in range(k)]
    a = [[0.0] * k for _ in range(k)]
    b = [0.0] * k
    for x, y in rows:
        w = 1.0 / (y * y)
        xs = [x[j] / scale[j] for j in range(k)]
        for i in range(k):
            b[i] += w * xs[i] * y
            for j in range(k):
                a[i][j] += w * xs[i] * xs[j]
    sol = _gauss(a, b)
    if sol is None:
        return None
    return tuple(sol[j] / scale[j] for j in range(k))


def _gauss(a: list[list[float]], b: list[float]) -> list[float] | None:
    n = len(b)
    m = [row[:] + [b[i]] for i, row in enumerate(a)]
    norm = max((abs(v) for row in a for v in row), default=0.0) or 1.0
    for col in range(n):
        piv = max(range(col, n), key=lambda r: abs(m[r][col]))
        if abs(m[piv][col]) < 1e-10 * norm:
            return None
        m[col], m[piv] = m[piv], m[col]
        for r in range(n):
            if r != col:
                f = m[r][col] / m[col][col]
                if f:
                    for c in range(col, n + 1):
                        m[r][c] -= f * m[col][c]
    return [m[i][n] / m[i][i] for i in range(n)]
