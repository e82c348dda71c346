"""Builds the optional C cores: the featurizer's counting and Thompson sampling's Monte Carlo (everything else
is in pyproject.toml).

``optional=True``: where no C compiler is available the package installs without it and every
prompt takes the (identical, slower) Python path.
"""

from setuptools import Extension, setup

setup(ext_modules=[
    # -O3 vectorises the word cache's float32-to-float64 row sums (each element's additions stay in word
    # order); no fused multiply-add anywhere, so the C paths round exactly as the Python references do
    Extension("banditroute.core._featurize", ["banditroute/core/_featurize.c"], optional=True,
              extra_compile_args=["-O3", "-std=c11", "-ffp-contract=off"]),
    Extension("banditroute.core.policies._thompson", ["banditroute/core/policies/_thompson.c"], optional=True,
              extra_compile_args=["-O2", "-std=c11", "-ffp-contract=off"]),
])
