"""The root helper: the verbs a student may ask for, and the work behind them."""
