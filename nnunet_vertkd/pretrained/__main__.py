import sys

from nnunet_vertkd.pretrained import main

sys.exit(main())
