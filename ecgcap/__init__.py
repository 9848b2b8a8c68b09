"""ecgcap: recurrent and convolutional networks for ECG classification and image captioning.

The package has two independent wings that share only :mod:`ecgcap.runtime`:

- :mod:`ecgcap.ecg`: PhysioNet records to LSTM / SimpleRNN classifiers.
- :mod:`ecgcap.captioning`: a CNN encoder and an LSTM decoder that caption images.

Importing ``ecgcap`` does not import Keras; the wings do, when they are used, and TensorFlow's
start-up log lines are kept off the terminal (:mod:`ecgcap.runtime.quiet`; ``ECGCAP_DEBUG=1``
shows them).
"""

__version__ = "0.1.0"

from ecgcap.runtime import quiet as _quiet
from ecgcap.runtime.errors import EcgcapError

_quiet.install()

__all__ = ["EcgcapError", "__version__"]
