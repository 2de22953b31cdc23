"""The simulator: a synthetic event stream and the closed loop of simulated users."""
