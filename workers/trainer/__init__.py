"""The built-in PyTorch trainer behind ``mfms worker --backend torch``.

* :mod:`workers.trainer.model`: the GPT and its size ladder (``preset_for_size``).
* :mod:`workers.trainer.data`: text files -> per-domain token shards, and an example corpus.
* :mod:`workers.trainer.train`: ``train_trial``, one trial from mixture to reported losses.
* :mod:`workers.trainer.cli`: ``mfms data prepare`` / ``mfms data example``.

Nothing is imported here, so ``mfms data`` does not pay for importing torch.
"""
