# file: tests/test_hello.py
"""The compliance suite that ships with Palaestra, run on this plugin's environment."""

from palaestra.testing import ComplianceSuite


class TestHello(ComplianceSuite):
    env_ids = ["hello/guess-the-number"]  # empty: every environment the server registers
