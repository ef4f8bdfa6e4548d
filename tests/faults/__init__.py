"""The fault suite (issue 9): see tests/fault_suite.py for how to run it."""
