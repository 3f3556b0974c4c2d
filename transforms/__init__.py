"""PTransforms and DoFns of tropemix, one family per module."""
