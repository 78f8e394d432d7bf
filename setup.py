# Three compiled modules: the C core, compiled by cffi (out-of-line API
# mode); pylog._records, a small CPython extension that builds Record
# objects and frames batches in C (csrc/pyrecords.c, pygetter.c,
# pysinks.c); pylog.forward._ndjson, which encodes the NDJSON body of an
# HTTP upload (csrc/ndjson.c).
# Everything else is declared in pyproject.toml.
import runpy

from setuptools import Extension, setup

# The same flags (and PYLOG_SANITIZE switch) as the cffi build.
build = runpy.run_path("pylog/_build.py")

setup(
    cffi_modules=["pylog/_build.py:ffibuilder"],
    ext_modules=[Extension(
        "pylog._records", ["csrc/pyrecords.c", "csrc/pygetter.c",
                           "csrc/pysinks.c"],
        extra_compile_args=build["cflags"],
        extra_link_args=build["ldflags"],
    ), Extension(
        "pylog.forward._ndjson", ["csrc/ndjson.c"],
        extra_compile_args=build["cflags"],
        extra_link_args=build["ldflags"],
    )],
)
