"""pypto kernel builders. Platform-neutral: everything target-specific arrives as arguments
(tiling plan, workarounds, run options). pypto is imported inside the builders only, so these
modules are safe to import in the user's process; they are *called* in the worker."""
