"""Build kpd-client's optional C accelerator (``kpd._accel``); everything else is in
pyproject.toml.

The extension is optional: when it cannot be built (no compiler, no Python headers) the
install still succeeds with a warning and the client runs its pure-Python twins
(``kpd.accel.IMPLEMENTATION`` says which runs). ``kpd/kpd_loops.h`` holds the loops the
daemon's own accelerator shares: its setup.py includes this directory.
"""

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """build_ext that turns a failed compile into a warning instead of a failed install."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # setuptools raises several unrelated types for "no compiler"
            self.warn(f"kpd-client: C accelerator not built ({exc}); pure Python will run")

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            self.warn(f"kpd-client: C accelerator not built ({exc}); pure Python will run")


setup(
    ext_modules=[
        Extension(
            "kpd._accel",
            ["kpd/_accel.c"],
            include_dirs=["kpd"],
            depends=["kpd/kpd_loops.h"],
            extra_compile_args=["-std=c11", "-O2"],
            optional=True,
        )
    ],
    cmdclass={"build_ext": OptionalBuildExt},
)
