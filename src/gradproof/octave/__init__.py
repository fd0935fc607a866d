"""MATLAB cost functions checked where they run: GNU Octave evaluates the user's code.

``check(expr, path=..., variables=..., var="theta", shapes=...)`` returns the usual
``GradReport``; ``OctaveRunner`` is the running Octave it uses (see ``runner``).
"""

from gradproof.octave.check import check
from gradproof.octave.runner import INSTALL_LINE, OctaveRunner

__all__ = ["INSTALL_LINE", "OctaveRunner", "check"]
