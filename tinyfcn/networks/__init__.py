"""Networks as data: ``graph`` (named nodes and the one executor), ``coord_map`` (crop offsets and
receptive fields), ``models`` (the FCN declarations) and ``surgery`` (growing, convolutionalizing,
building from a config)."""
