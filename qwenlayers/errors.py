"""The qwenlayers error tree.

Every message says what was wrong (with the offending value), what is allowed, and how to fix
it. All errors derive from :class:`QwenlayersError`, so a caller can catch one type; the CLI maps
each class to its own exit code (see ``qwenlayers.cli``).
"""

from __future__ import annotations


class QwenlayersError(Exception):
    """Base class of every error qwenlayers raises on purpose."""

    exit_code = 1


class InputError(QwenlayersError, ValueError):
    """A tensor, shape, dtype, length or option given by the caller is not acceptable."""

    exit_code = 2


class CheckpointError(InputError):
    """A checkpoint file (safetensors, index, ``config.json``) cannot be read, is corrupt, or
    points outside its folder. The message always names the file, because a truncated download
    otherwise surfaces as a parser error that names nothing."""


class TilingError(QwenlayersError, ValueError):
    """A tiling plan violates a platform budget, a hardware buffer or a divisibility rule."""

    exit_code = 2


class UnknownPlatformError(QwenlayersError, LookupError):
    """No installed plugin provides the requested platform name."""

    exit_code = 3


class PluginLoadError(QwenlayersError):
    """A platform plugin failed to import or to describe itself."""

    exit_code = 3


class PluginHookError(PluginLoadError):
    """A plugin's hook raised or returned a wrong type when called (after a clean import).

    A :class:`PluginLoadError`, so one ``except`` covers a plugin broken at import and one broken
    at call time; the message names the distribution, the hook and what it may return."""

    exit_code = 3


class DuplicatePlatformError(QwenlayersError):
    """Two installed distributions claim the same platform name."""

    exit_code = 3


class PlatformUnavailableError(QwenlayersError):
    """The platform is installed but cannot run on this machine (e.g. no NPU)."""

    exit_code = 3


class KernelError(QwenlayersError, RuntimeError):
    """Building or running a kernel failed (pypto error, worker crash, verification failure)."""

    exit_code = 4
