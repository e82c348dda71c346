"""Builds the optional C cores: the featurizer's counting and Thompson sampling's Monte Carlo (everything else
is in pyproject.toml).

``optional=True``: where no C compiler is available the package installs without it and every
prompt takes the (identical, slower) Python path.
"""

from setuptools import Extension, setup

setup(ext_modules=[
    Extension("banditroute.core._featurize", ["banditroute/core/_featurize.c"], optional=True,
              extra_compile_args=["-O2", "-std=c11"]),
    # no fused multiply-add: the Monte Carlo scores keep numpy's two roundings, so both paths agree exactly
    Extension("banditroute.core.policies._thompson", ["banditroute/core/policies/_thompson.c"], optional=True,
              extra_compile_args=["-O2", "-std=c11", "-ffp-contract=off"]),
])
