"""Runtime: runs pypto builds in a worker process prepared by the platform plugin.

pypto 0.2.0 fixes its compile target when it is imported, so the user's process never imports
pypto; each run starts a worker whose environment the selected plugin prepares.
"""
