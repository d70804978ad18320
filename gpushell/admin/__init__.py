"""gpushell-admin: the administrator's commands (init, add, remove, set, apply, list, doctor)."""
