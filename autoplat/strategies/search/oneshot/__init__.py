"""One-shot NAS: one weight-sharing supernet trained once, architectures derived from it.

Unlike an ask/tell ``Strategy``, a ``OneShot`` strategy runs inside a single trial: it
asks the study's architecture (a ``SupernetArchitecture``, e.g. nb201) for a supernet
over the space's choices, trains it on the training split, selects paths on the
validation split and returns them as full params of the space, to be trained from
scratch as ordinary trials. ``SPOS`` samples one path per batch and then evolves paths
scored with inherited weights; ``DARTS`` relaxes each choice to a softmax mixture and
keeps the argmax.
"""
