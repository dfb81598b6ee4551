"""einspace's fundamental operations (catalog row S57) and the common extras."""
from archgram.ops.primitives import branching, computation, routing  # noqa: F401
