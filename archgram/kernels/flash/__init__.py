"""Flash attention: ``reference`` (naive math), ``forward`` (Triton), ``dispatch``."""
