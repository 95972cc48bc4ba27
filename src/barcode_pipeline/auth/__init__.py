"""Who may send scans: scanner API keys, trusted networks for keyless scanners, per-key rate limits."""
