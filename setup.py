"""Declares yzcore's compiled extensions; all metadata lives in pyproject.toml.

The extensions are optional. When Cython or a C++ compiler is missing, or the
build fails, the package installs its pure-Python twins and works the same,
only slower. Set ``YZCORE_BUILD_EXTENSION=yes`` to make a failed build an
error (wheels and CI do), or ``YZCORE_BUILD_EXTENSION=no`` to skip it.
"""

import os
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

MODULES = ("_xor", "_kbucket", "_ratelimit")
MODE = os.environ.get("YZCORE_BUILD_EXTENSION", "auto").lower()
if MODE not in ("auto", "yes", "no"):
    sys.exit(f"YZCORE_BUILD_EXTENSION must be auto, yes or no, not {MODE!r}")


class OptionalBuildExt(build_ext):
    """Build the extensions, falling back to the twins unless told otherwise."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # compiler missing or broken
            self._give_up(exc)

    def build_extension(self, ext) -> None:  # type: ignore[no-untyped-def]
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._give_up(exc)

    @staticmethod
    def _give_up(exc: BaseException) -> None:
        if MODE == "yes":
            raise exc
        print(
            f"warning: yzcore extension not built ({exc}); "
            "installing the pure-Python twins instead",
            file=sys.stderr,
        )


def extensions() -> list:
    if MODE == "no":
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        if MODE == "yes":
            raise
        print("warning: Cython not found; installing the pure-Python twins", file=sys.stderr)
        return []
    from setuptools import Extension

    # -ffp-contract=off keeps float arithmetic bit-identical to the twins
    # (no fused multiply-add), which the differential tests rely on.
    flags = [] if os.name == "nt" else ["-ffp-contract=off"]
    exts = [
        Extension(
            f"yzcore.{name}",
            [f"yzcore/{name}.pyx"],
            language="c++",
            extra_compile_args=flags + ([] if os.name == "nt" else ["-std=c++17"]),
        )
        for name in MODULES
    ]
    return cythonize(
        exts,
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "embedsignature": True,
        },
    )


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
