"""Exact critical-window theory: mixtures, forward processes, TV, window edges and bounds (DESIGN §1).

t is forward time everywhere and grows with degradation (OU time, tokens removed, masking time).
"""

from critwin.theory.discrete import MASK, DiscreteMixture, MarkovComponent, ProductComponent
from critwin.theory.forward import alpha_bar_from_ou_time, ou_time_from_alpha_bar, ou_variance
from critwin.theory.forward_reverse import forward_reverse_law, forward_reverse_tv
from critwin.theory.fullcov import FullCovGaussianMixture, class_windows
from critwin.theory.gaussian import GaussianMixture
from critwin.theory.mixtures import Mixture
from critwin.theory.speciation import Speciation, speciation_step, speciation_time
from critwin.theory.tv import TVEstimate, bc_exact, gaussian_tv_equal_variance, tv_exact
from critwin.theory.windows import (
    Edge,
    TheoryWindow,
    critical_window,
    pointwise_bound,
    staircase,
    t_after,
    t_before,
    theorem_bound,
)

__all__ = [
    "MASK",
    "DiscreteMixture",
    "Edge",
    "FullCovGaussianMixture",
    "GaussianMixture",
    "MarkovComponent",
    "Mixture",
    "ProductComponent",
    "Speciation",
    "TVEstimate",
    "TheoryWindow",
    "alpha_bar_from_ou_time",
    "bc_exact",
    "class_windows",
    "critical_window",
    "forward_reverse_law",
    "forward_reverse_tv",
    "gaussian_tv_equal_variance",
    "ou_time_from_alpha_bar",
    "ou_variance",
    "pointwise_bound",
    "speciation_step",
    "speciation_time",
    "staircase",
    "t_after",
    "t_before",
    "theorem_bound",
    "tv_exact",
]
