"""The pure core: the registry's data and rules, policy, text in and text out; no side effects."""
