"""Strong-coupling (small beta) expansion of the CP^{N-1} link energy (docs/physics.md#cpn).

At beta = 0 the z_x are independent Haar vectors and t = |z_x^dagger z_y|^2 ~ Beta(1, N-1), with
moments m_k = k! (N-1)! / (N+k-1)!. With K = beta N, <t> = sum_n K^n c_n with c_n = (1/n!) times
the connected correlation <t; S'; ...; S'> (n copies of S' = sum_links t_l). Any set of links
without a closed loop is independent of t at K = 0 (given z_x, t does not depend on z_x by U(N)
invariance), so only cumulants of t itself enter until a loop does; the smallest loop is a
plaquette, at order K^3:

    <t> = m_1 + K k_2 + K^2 k_3 / 2 + K^3 (k_4 / 6 + 2 (d - 1) c_P) + O(K^4),

k_n the cumulants of t and c_P = E[t_1 t_2 t_3 t_4] - m_1^4 the connected plaquette, from
E_z[(z^+ A z)(z^+ B z)] = (tr A tr B + tr AB) / (N (N + 1)) for Haar z applied to two opposite
corners: E[t_1 t_2 t_3 t_4] = E[(1 + s)^2] / (N (N + 1))^2 = (1 + 2 m_1 + m_2) / (N (N + 1))^2.
"""

from __future__ import annotations

import math


def beta_moments(n_comp: int, k_max: int = 4) -> list[float]:
    """m_k = E[t^k] for t ~ Beta(1, N-1), k = 1..k_max."""
    return [math.factorial(k) * math.factorial(n_comp - 1) / math.factorial(n_comp + k - 1)
            for k in range(1, k_max + 1)]


def series_coefficients(n_comp: int, ndim: int = 2) -> list[float]:
    """c_0..c_3 of <|z_x^dagger z_{x+mu}|^2> = sum_n (beta N)^n c_n on a d-dimensional lattice (L >= 3)."""
    m1, m2, m3, m4 = beta_moments(n_comp)
    k2 = m2 - m1**2
    k3 = m3 - 3 * m2 * m1 + 2 * m1**3
    k4 = m4 - 4 * m3 * m1 - 3 * m2**2 + 12 * m2 * m1**2 - 6 * m1**4
    plaquette = (1 + 2 * m1 + m2) / (n_comp * (n_comp + 1)) ** 2 - m1**4
    return [m1, k2, k3 / 2, k4 / 6 + 2 * (ndim - 1) * plaquette]


def link_energy_series(n_comp: int, beta: float, ndim: int = 2) -> tuple[float, float]:
    """(<|z_x^dagger z_{x+mu}|^2> to O((beta N)^3), an estimate of the O((beta N)^4) remainder).

    The remainder estimate is (beta N)^4 * 4 |c_3|: it assumes the coefficients grow at most like
    4^n (a radius of convergence K >= 1/4, the order of the strong-coupling radius in d = 2).
    """
    c = series_coefficients(n_comp, ndim)
    coupling = beta * n_comp
    return sum(cn * coupling**n for n, cn in enumerate(c)), coupling**4 * 4 * abs(c[3])


def link_form_energy_series(n_comp: int, beta: float) -> tuple[float, float]:
    """(<|z_x^dagger z_{x+mu}|^2> of the link form to O(K^4), K = beta N, an estimate of the remainder).

    S = -sum log I_0(2 K sqrt(t)) = -sum (K^2 t - K^4 t^2 / 4 + O(K^6)): the quartic series at
    coupling K^2, plus the t^2 term's first-order shift -(K^4 / 4) Cov(t, t^2) = -(K^4/4)(m_3 - m_1 m_2).
    Loops (plaquettes) enter at (K^2)^3. Remainder estimate: K^6 (4 |c_3| + m_4), the same rule.
    """
    m1, m2, m3, m4 = beta_moments(n_comp)
    c = series_coefficients(n_comp, 2)
    k = beta * n_comp
    series = m1 + k**2 * c[1] + k**4 * (c[2] - (m3 - m1 * m2) / 4)
    return series, k**6 * (4 * abs(c[3]) + m4)
