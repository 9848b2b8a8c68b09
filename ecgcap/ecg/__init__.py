"""The ECG wing: PhysioNet records (via wfdb) to LSTM and SimpleRNN classifiers.

Split the wfdb way: ``databases`` (the registry), ``io`` (files), ``download``, ``processing``
(arrays + sampling rate only), ``dataset`` (beats to model inputs), ``recordings`` (whole
recordings to model inputs), ``models`` and ``layers`` (Keras builders), ``training`` (beats),
``rhythm_training`` (recordings), ``evaluation``, ``scoring`` (annotation files against the
reference, without Keras), ``plots`` and ``inference``. It imports only :mod:`ecgcap.runtime`,
never :mod:`ecgcap.captioning`.
"""
