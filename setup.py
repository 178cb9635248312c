"""Build kpd's optional C accelerator (``daemon.accel._accel``); everything else is in
pyproject.toml.

It includes ``kpd_loops.h`` from kpd-client (clients/python/kpd/): the loops the client's
accelerator and this one share live there once.

The extension is optional: when it cannot be built (no compiler, no Python headers) the
install still succeeds with a warning and kpd runs its pure-Python path, saying so in its
start-up log ("accelerator: pure Python").
"""

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """build_ext that turns a failed compile into a warning instead of a failed install."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # setuptools raises several unrelated types for "no compiler"
            self.warn(f"kpd: C accelerator not built ({exc}); the pure-Python path will run")

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            self.warn(f"kpd: C accelerator not built ({exc}); the pure-Python path will run")


setup(
    ext_modules=[
        Extension(
            "daemon.accel._accel",
            ["daemon/accel/_accel.c"],
            include_dirs=["clients/python/kpd"],
            depends=["clients/python/kpd/kpd_loops.h"],
            extra_compile_args=["-std=c11", "-O2"],
            optional=True,
        )
    ],
    cmdclass={"build_ext": OptionalBuildExt},
)
