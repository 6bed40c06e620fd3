"""Helpers shared by the test suites: free ports, real peers, synthetic images, fault injection."""
