"""Builds the optional Cython kernels (ext/_kernels.pyx); everything else lives in pyproject.toml.

The extension is optional on purpose: ``ext`` falls back to its pure-Python twin, so a machine
without Cython or a C compiler must still be able to install orderstream. Any failure here is
reported and swallowed instead of aborting ``pip install``.
"""

from __future__ import annotations

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
PYX = os.path.join("ext", "_kernels.pyx")
C_SOURCE = os.path.join("ext", "_kernels.c")


def _note(message: str) -> None:
    # stderr, so pip shows it with -v and it is not mistaken for build output.
    print(f"orderstream setup: {message}", file=sys.stderr, flush=True)


def _extensions() -> list[Extension]:
    try:
        from Cython.Build import cythonize
    except ImportError as exc:
        if os.path.exists(os.path.join(HERE, C_SOURCE)):
            _note(f"Cython is not installed ({exc}); compiling the pregenerated {C_SOURCE}")
            return [Extension("ext._kernels", [C_SOURCE])]
        _note(
            f"Cython is not installed ({exc}); skipping the compiled kernels, "
            "the pure-Python twin will be used"
        )
        return []
    try:
        return cythonize(
            [Extension("ext._kernels", [PYX])],
            compiler_directives={"language_level": "3"},
            quiet=True,
        )
    except Exception as exc:  # a Cython compile error must not break the install
        _note(f"cythonize failed ({exc}); the pure-Python twin will be used")
        return []


class OptionalBuildExt(build_ext):
    """build_ext that adds -O3 and turns compile failures into a message."""

    def build_extensions(self) -> None:
        compiler_type = getattr(self.compiler, "compiler_type", "")
        flags = ["/O2"] if compiler_type == "msvc" else ["-O3"]
        for ext in self.extensions:
            ext.extra_compile_args = [*flags, *(ext.extra_compile_args or [])]
        super().build_extensions()

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # no compiler, missing Python headers, ...
            _note(f"building the Cython kernels failed ({exc}); the pure-Python twin will be used")

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            _note(f"compiling {ext.name} failed ({exc}); the pure-Python twin will be used")


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
