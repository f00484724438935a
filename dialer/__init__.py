"""dialer: a bulk campaign dialer for Synthflow AI agents."""
