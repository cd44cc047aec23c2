"""Ray Tune over dotted config keys (KD weights, patch counts, learning rate): one Ray Train run
per trial, ASHA early stopping, and a results table, best config and plot at the end."""
