"""Client programs and runners for tests/e2e/test_clients.py."""
