"""Builds the optional C counting core of the featurizer (everything else is in pyproject.toml).

``optional=True``: where no C compiler is available the package installs without it and every
prompt takes the (identical, slower) Python path.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("banditroute.core._featurize", ["banditroute/core/_featurize.c"], optional=True,
                             extra_compile_args=["-O2", "-std=c11"])])
