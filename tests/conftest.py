"""Shared pytest configuration: the real-part harnesses are plugins so any test can ask for them."""
pytest_plugins = [
    "tests.harness.moto",
    "tests.harness.sshd",
    "tests.harness.collection",
    "tests.harness.backends",
    "tests.harness.service",
    "tests.harness.receiver",
    "tests.harness.refusing",
]
