"""MATLAB cost functions checked where they run: GNU Octave evaluates the user's code.

``check(expr, path=..., variables=..., var="theta", shapes=...)`` returns the usual
``GradReport``; ``OctaveSession`` is the running Octave it uses (see ``session``).
"""

from gradproof.octave.check import check
from gradproof.octave.session import INSTALL_LINE, OctaveSession

__all__ = ["INSTALL_LINE", "OctaveSession", "check"]
