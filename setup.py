"""Build configuration beyond pyproject.toml: the optional C extension.

``trainguard.ledger._speedups`` does ledger verification's per-entry work (leaf
and node hashing with OpenSSL, the canonical edge parse). It is optional: where
no C compiler or OpenSSL headers exist, the build warns and trainguard runs the
same checks in pure Python (``trainguard.ledger._fast``).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "trainguard.ledger._speedups",
            sources=["src/trainguard/ledger/_speedups.c"],
            libraries=["crypto"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        )
    ]
)
