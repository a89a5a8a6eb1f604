"""`python -m model.gate`: the gate's commands (model/gate/cli.py) and its calibration (probe, proof)."""
import sys

from model.gate import cli, probe, proof

sys.exit(cli.main(commands={"proof": proof, "probe": probe}))
