"""PTransforms and DoFns of tropemix, one family per module."""

from transforms.io.storage import use_emulator_credentials

# Every process that runs tropemix code imports this package before touching a file
# (the driver, and each SDK worker when it unpickles a DoFn), so this is the one
# place that covers all of them; it does nothing unless STORAGE_EMULATOR_HOST is set.
use_emulator_credentials()
