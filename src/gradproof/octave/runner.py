"""One running GNU Octave that evaluates the user's MATLAB expression, in batches.

Contract: ``OctaveRunner(expr, path=..., variables=..., var=..., timeout=...)`` starts
``octave-cli`` with the user's folders on its path, loads the variables and makes the
expression a function of the parameter vector ``var`` (its value read from the variables);
``first()`` returns what one call gives, ``(J, grad)`` as Octave returned them;
``moves(positions, start, values)`` returns J at many points near the starting vector, each
point given as the entries it changes (see ``gp_batch__.m``), evaluated by a loop on the Octave
side so that one exchange serves hundreds of points. Arrays cross through .mat files in a
temporary directory; commands go to Octave's stdin and each ends with a line on its stdout.

No Octave command may run longer than ``timeout`` seconds: past it the process group (Octave
and anything it started) is killed and an ``OctaveError`` says so. On Linux, Octave is also
killed when the thread that started it ends, which covers the Python process dying by SIGKILL,
which no handler can catch (an Octave busy in the user's code would otherwise run until its
command ends); so a runner is used while the thread that made it lives. ``close()`` (or leaving the
``with`` block) ends Octave and removes the temporary directory. Every failure of the user's
code is an ``OctaveError`` (an ``InputError``) with Octave's own message and the file and line
it names.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from gradproof import blas
from gradproof.errors import InputError

INSTALL_LINE = "apt-get install -y --no-install-recommends octave libopenblas0-pthread"

# How long a single Octave command may run, in seconds, unless the caller says otherwise.
DEFAULT_TIMEOUT = 60.0

# A batch is sized so that it should take at most this fraction of the timeout.
_BATCH_SHARE = 0.1

# At most this many points per batch (the .mat file of moves stays small).
_MAX_BATCH = 4096

# Seconds Octave gets to exit by itself at ``close`` before its process group is killed.
_GRACE = 2.0

# prctl(2)'s option that sends the child a signal when the thread that started it ends.
_PR_SET_PDEATHSIG = 1

_DONE = "__gradproof_done__"
_DRIVER = Path(__file__).parent / "driver"

# What Octave says when an expression gives fewer outputs than asked for.
_ONE_OUTPUT = ("element number 2 undefined in return list", "called with too many outputs")


class OctaveError(InputError):
    """Octave, or the user's code in it, failed: an error raised, a timeout, Octave exiting."""


def octave_executable() -> str:
    """The path of ``octave-cli``, or an InputError saying how to install it."""
    found = shutil.which("octave-cli")
    if found is None:
        raise InputError(
            "GNU Octave is not installed (octave-cli was not found on PATH); on Debian or "
            f"Ubuntu install it with: {INSTALL_LINE}"
        )
    return found


def _quote(text: str) -> str:
    """``text`` as an Octave single-quoted string literal."""
    return "'" + text.replace("'", "''") + "'"


def _dies_with_parent(parent: int) -> Any:
    """A ``preexec_fn`` that has the kernel kill the child when ``parent`` dies (Linux), or
    ``None`` where ``prctl`` is not available."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name or not hasattr(ctypes.CDLL(libc_name), "prctl"):
        return None
    prctl = ctypes.CDLL(libc_name, use_errno=True).prctl

    def set_parent_death_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the signal was set
            os._exit(1)

    return set_parent_death_signal


class OctaveRunner:
    """A running Octave with the user's expression ready to evaluate.

    Parameters
    ----------
    expr : str
        A MATLAB expression returning ``[J, grad]``, e.g. ``"costFunction(theta, X, y)"``.
    path : sequence of str or Path
        Folders to add to Octave's path (where the user's ``.m`` files are).
    variables : str, Path or mapping of str to array, optional
        A .mat file to load, or the variables themselves; the expression sees them by name.
    var : str
        The name of the parameter vector among the variables.
    timeout : float
        Seconds any one Octave command may run before Octave is killed.

    Attributes
    ----------
    theta : ndarray of shape (n,)
        The starting parameter vector (float64).
    theta_shape : tuple of int
        Its shape in Octave, ``(n, 1)`` or ``(1, n)``.
    """

    def __init__(
        self,
        expr: str,
        *,
        path: Any = (),
        variables: str | Path | Mapping[str, Any] | None = None,
        var: str = "theta",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if not var.isidentifier():
            raise InputError(f"var must name a MATLAB variable, got {var!r}")
        if not (isinstance(timeout, (int, float)) and timeout > 0):
            raise InputError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self.expr = expr
        self.var = var
        self.timeout = float(timeout)
        self.seconds_per_call = 0.0
        self._known: dict[bytes, float] = {}
        executable = octave_executable()
        folders = [Path(p) for p in ([path] if isinstance(path, (str, Path)) else path)]
        for folder in folders:
            if not folder.is_dir():
                raise InputError(f"--path {folder}: not a folder")
        self._dir = Path(tempfile.mkdtemp(prefix="gradproof-octave-"))
        self._process: subprocess.Popen[str] | None = None
        try:
            vars_file = self._variables_file(variables)
            env = dict(os.environ)
            threads = blas.resolve("octave")
            if threads is not None:
                # The user's cost alternates BLAS products with elementwise work, as numpy's
                # hot paths do: gradproof.blas's policy (and $GRADPROOF_BLAS_THREADS) holds.
                env["OPENBLAS_NUM_THREADS"] = str(threads)
            self._process = subprocess.Popen(
                [executable, "--quiet", "--norc", "--no-history", "--no-line-editing"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                cwd=self._dir,
                start_new_session=True,  # its own process group, killed as one
                env=env,
                preexec_fn=_dies_with_parent(os.getpid()),
            )
            self._lines: queue.Queue[str | None] = queue.Queue()
            threading.Thread(target=self._read, daemon=True).start()
            folders_literal = ", ".join(_quote(str(f.resolve())) for f in [_DRIVER, *folders])
            self._command(f"more off; addpath({folders_literal})", "starting Octave")
            self._command(
                f"[gp_f__, gp_theta__] = gp_make__({_quote(expr)}, {_quote(var)}, "
                f"{_quote(vars_file)})",
                f"loading the variables and making {expr} a function of {var}",
            )
            theta = scipy.io.loadmat(self._exchange("theta"))["gp_theta__"]
            self.theta_shape = theta.shape
            self.theta = np.asarray(theta, dtype=np.float64).reshape(-1, order="F")
        except BaseException:
            self.close()
            raise

    def _variables_file(self, variables: Any) -> str:
        if variables is None:
            return ""
        if isinstance(variables, (str, Path)):
            if not Path(variables).is_file():
                raise InputError(f"--load {variables}: no such file")
            return str(Path(variables).resolve())
        if not isinstance(variables, Mapping):
            raise InputError(
                "variables must be a .mat file's path or a dict of name -> array, got "
                f"{type(variables).__name__}"
            )
        target = self._dir / "variables.mat"
        try:
            scipy.io.savemat(target, dict(variables))
        except Exception as exc:
            raise InputError(f"the variables cannot be stored for Octave: {exc}") from exc
        return str(target)

    # --------------------------------------------------------------- protocol

    def _read(self) -> None:
        for line in self._process.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _exchange(self, name: str) -> str:
        """Save base-workspace variable ``gp_<name>__`` to a .mat file; return its path."""
        target = self._dir / f"{name}.mat"
        self._command(f"save('-mat', {_quote(str(target))}, 'gp_{name}__')", f"reading {name}")
        return str(target)

    def _command(self, statement: str, doing: str) -> None:
        """Run ``statement`` in Octave and wait for it; any Octave error becomes an OctaveError."""
        error_file = self._dir / "error.txt"
        error_file.unlink(missing_ok=True)
        line = (
            f"try; {statement}; gp_reply__({_quote(str(self._dir))}, []); "
            f"catch gp_err__; gp_reply__({_quote(str(self._dir))}, gp_err__); end\n"
        )
        try:
            self._process.stdin.write(line)
            self._process.stdin.flush()
        except OSError:
            raise self._died(doing) from None
        deadline = time.monotonic() + self.timeout
        output: list[str] = []
        while True:
            remaining = deadline - time.monotonic()
            try:
                received = self._lines.get(timeout=max(remaining, 0.0))
            except queue.Empty:
                self._kill()
                raise OctaveError(
                    f"{self.expr} did not finish within {self.timeout:g} s ({doing}); Octave "
                    "was stopped (give --timeout more seconds if it needs longer)"
                ) from None
            if received is None:
                raise self._died(doing, output)
            if received == _DONE:
                break
            output.append(received)
        if error_file.exists():
            raise OctaveError(self._octave_error(error_file.read_text(), doing))

    def _octave_error(self, message: str, doing: str) -> str:
        text = f"Octave failed while {doing}: {message.strip()}"
        if any(words in message for words in _ONE_OUTPUT):
            text += (
                f"\n{self.expr} must return two outputs, [J, grad] (the cost and its gradient); "
                "it returned fewer"
            )
        return text

    def _died(self, doing: str, output: list[str] | None = None) -> OctaveError:
        tail = "\n".join((output or [])[-10:])
        self._kill()
        return OctaveError(f"Octave exited while {doing}" + (f"; its last output:\n{tail}" if tail else ""))

    @property
    def pid(self) -> int | None:
        """Octave's process id, which is also its process group's."""
        return self._process.pid if self._process is not None else None

    @property
    def directory(self) -> Path:
        """The temporary directory the arrays cross through (gone after ``close``)."""
        return self._dir

    # ---------------------------------------------------------- evaluations

    def first(self) -> tuple[Any, Any]:
        """``[J, grad]`` at the starting vector, as Octave returned them."""
        started = time.perf_counter()
        self._command(
            f"gp_first__(gp_f__, gp_theta__, {_quote(str(self._dir))})",
            f"evaluating [J, grad] = {self.expr}",
        )
        self.seconds_per_call = time.perf_counter() - started
        out = scipy.io.loadmat(self._dir / "out.mat")
        return out["J"], out["grad"]

    def moves(self, positions: np.ndarray, start: np.ndarray, values: np.ndarray) -> np.ndarray:
        """J at each point k: the starting vector with ``positions[start[k]:start[k+1]]``
        (0-based, flat column-major) set to the same entries of ``values``."""
        count = len(start) - 1
        per_batch = _MAX_BATCH
        if self.seconds_per_call > 0:
            per_batch = int(min(_MAX_BATCH, max(1, _BATCH_SHARE * self.timeout / self.seconds_per_call)))
        out = np.empty(count)
        for first in range(0, count, per_batch):
            last = min(first + per_batch, count)
            piece = slice(int(start[first]), int(start[last]))
            out[first:last] = self._batch(
                positions[piece] + 1, start[first : last + 1] - start[first], values[piece]
            )
        return out

    def _batch(self, positions: np.ndarray, start: np.ndarray, values: np.ndarray) -> np.ndarray:
        scipy.io.savemat(
            self._dir / "in.mat",
            {
                "positions": positions.astype(np.float64),
                "start": start.astype(np.float64),
                "values": values.astype(np.float64),
            },
        )
        self._command(
            f"gp_batch__(gp_f__, gp_theta__, {_quote(str(self._dir))})",
            f"evaluating J = {self.expr} at {len(start) - 1} points near {self.var}",
        )
        return scipy.io.loadmat(self._dir / "out.mat")["J"].reshape(-1)

    def many(self, points: Sequence[Any]) -> np.ndarray:
        """J at each parameter vector of ``points`` (flat), in one exchange; each is sent as the
        entries that differ from the starting vector. A point asked for in an earlier call is
        not evaluated again (identification reads the same seeded points once to identify and
        once to check); one asked for twice in the same call is, so that a loss that does not
        repeat itself shows."""
        flats = [np.asarray(point, dtype=np.float64).reshape(-1) for point in points]
        keys = [hashlib.sha1(flat.tobytes()).digest() for flat in flats]
        asked = [i for i, key in enumerate(keys) if key not in self._known]
        changed = [np.flatnonzero(flats[i] != self.theta) for i in asked]
        start = np.concatenate([[0], np.cumsum([c.size for c in changed], dtype=np.int64)])
        values = self.moves(
            np.concatenate([np.zeros(0, np.int64), *changed]),
            start,
            np.concatenate([np.zeros(0), *(flats[i][c] for i, c in zip(asked, changed))]),
        ) if asked else np.zeros(0)
        out = np.array([self._known.get(key, np.nan) for key in keys])
        out[asked] = values
        self._known.update((keys[i], float(value)) for i, value in zip(asked, values))
        return out

    def __call__(self, theta: np.ndarray) -> float:
        """J at ``theta`` (flat), sent as the entries that differ from the starting vector;
        always evaluated (the engine calls twice at the same point to see nondeterminism)."""
        changed = np.flatnonzero(theta != self.theta)
        return float(self.moves(changed, np.array([0, changed.size]), theta[changed])[0])

    def captured(self) -> dict[str, np.ndarray]:
        """The numeric arrays the expression names (those it captured from the variables),
        by name: where identification looks for the data."""
        target = self._dir / "captured.mat"
        self._command(
            "gp_captured__ = functions(gp_f__).workspace{1}; "
            f"save('-mat', {_quote(str(target))}, '-struct', 'gp_captured__')",
            f"reading the variables {self.expr} names",
        )
        return {
            name: value for name, value in scipy.io.loadmat(target).items()
            if not name.startswith("__") and isinstance(value, np.ndarray)
            and value.dtype.kind in "biuf"
        }

    # -------------------------------------------------------------- cleanup

    def _kill(self) -> None:
        """Kill Octave's process group (Octave and anything it started, ``system('... &')``),
        then reap Octave: until it is reaped its id, which names the group, cannot be taken by
        another process, so the kill reaches this group alone."""
        if self._process is None or self._process.returncode is not None:
            return  # never started, or killed and reaped already
        try:
            os.killpg(self._process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._process.wait()

    def _exited(self) -> bool:
        """Whether Octave has ended, without reaping it (see ``_kill``)."""
        try:
            ended = os.waitid(os.P_PID, self._process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True  # already reaped
        return ended is not None

    def close(self) -> None:
        """End Octave (and whatever it started) and remove the temporary files.

        Octave reads the end of its input and exits by itself after the command it runs; past
        ``_GRACE`` seconds, or once it has exited, its process group is killed, so that nothing
        it started outlives it."""
        process = self._process
        if process is not None and process.returncode is None:
            try:
                process.stdin.close()
            except OSError:
                pass  # Octave already gone: its pipe is broken
            deadline = time.monotonic() + _GRACE
            while not self._exited() and time.monotonic() < deadline:
                time.sleep(0.01)
        self._kill()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> OctaveRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
