"""critwin: find, measure and explain critical windows in generative models.

Implements Li, Karan & Chen, "Blink of an eye: a simple theory for feature localization in
generative models" (ICML 2025). Time t grows with degradation everywhere in the code.
"""

from critwin.errors import CritwinError

__version__ = "0.1.0"
__all__ = ["CritwinError", "__version__"]
