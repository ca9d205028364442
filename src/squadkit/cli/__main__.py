"""``python -m squadkit.cli``: the command, as ``torchrun -m squadkit.cli train ...`` launches it."""

from . import main

main()
