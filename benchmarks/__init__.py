"""Benchmarks of the project (run each as ``python benchmarks/<name>.py``) and, in
``benchmarks.reference``, the plain reference implementations they and the tests compare against.

A regular package, so that ``benchmarks.reference`` resolves here and not to the unrelated
top-level ``benchmarks`` package that opacus installs into site-packages.
"""
