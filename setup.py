# Thin shim: metadata, dependencies and tool settings live in pyproject.toml.
from setuptools import setup

setup()
