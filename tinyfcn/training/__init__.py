"""Training and scoring: ``optim`` (optimizers and schedules), ``train`` (one training step, ``fit``,
``evaluate``), ``metrics``, ``checkpoint`` and ``pretrain`` (a crop classifier for FCN to start from)."""
