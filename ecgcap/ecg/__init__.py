"""The ECG wing: PhysioNet records (via wfdb) to LSTM and SimpleRNN classifiers.

Split the wfdb way: ``databases`` (the registry), ``io`` (files), ``download``, ``processing``
(arrays + sampling rate only), ``splits``, ``dataset`` (records to model inputs), ``models``
(Keras builders), ``training``, ``evaluation``, ``plots`` and ``inference``. It imports only
:mod:`ecgcap.runtime`, never :mod:`ecgcap.captioning`.
"""
