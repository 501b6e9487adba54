"""`torchrun --standalone --nproc_per_node=N -m golf.trainer`: the bundled trainer, configured by env vars."""

import sys

from golf.trainer.train import main

sys.exit(main())
