"""Real authorization and resource servers, started by the tests on loopback."""
