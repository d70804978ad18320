"""The host edge: running programs, files, locks, netfilter, accounts, the registry store."""
