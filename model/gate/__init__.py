"""The benchmark regression gate: same-job comparison of base and head (or of a checkout against a
stored baseline), decided per benchmark by significance *and* effect size beyond the measured noise."""
