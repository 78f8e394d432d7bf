# The C core is compiled by cffi (out-of-line API mode); everything else is
# declared in pyproject.toml.
from setuptools import setup

setup(cffi_modules=["pylog/_build.py:ffibuilder"])
